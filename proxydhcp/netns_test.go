package proxydhcp

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"golang.org/x/sys/unix"
)

// These tests run the real server on the real ports 67 and 4011 inside a
// network namespace ("preboot-dhcp-<rand>-srv") connected by a veth pair to
// a client namespace ("...-cli"), where real clients run: a Go PXE client,
// Debian's dhclient and busybox udhcpc. Nothing leaves the namespaces: they
// have no route out and are removed afterwards.
//
// The server runs as a child process (this test binary re-executed under
// `ip netns exec`, see TestHelperProxyServer) so that everything it does,
// including netlink look-ups of interface addresses, happens in its own
// namespace. It logs JSON lines on stdout, which the test reads.

const helperEnv = "PREBOOT_PROXYDHCP_HELPER"

// TestHelperProxyServer is not a test: it is the server process started by
// the namespace tests.
func TestHelperProxyServer(t *testing.T) {
	if os.Getenv(helperEnv) != "1" {
		t.Skip("helper process for the namespace tests")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	log := slog.New(slog.NewJSONHandler(os.Stdout, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s := &Server{Booter: &fakeBooter{}, Interface: os.Getenv("PREBOOT_PROXYDHCP_IFACE"), Logger: log}
	if v := os.Getenv("PREBOOT_PROXYDHCP_IFACES"); v != "" {
		s.Interfaces = strings.Split(v, ",")
	}
	if v := os.Getenv("PREBOOT_PROXYDHCP_SUBNETS"); v != "" {
		for _, p := range strings.Split(v, ",") {
			s.Subnets = append(s.Subnets, netip.MustParsePrefix(p))
		}
	}
	if err := s.ListenAndServe(ctx); err != nil {
		log.Error("helper server failed", "err", err)
		os.Exit(1)
	}
	os.Exit(0)
}

type lab struct {
	srvNS, cliNS   string
	srvIf, cliIf   string
	srvIP, cliIP   net.IP
	cliMAC         net.HardwareAddr
	logsMu         sync.Mutex
	logs           []map[string]any
	listening      chan struct{}
	listeningCount int
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2")
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func newLab(t *testing.T) *lab {
	t.Helper()
	requireRoot(t)
	var rb [3]byte
	if _, err := rand.Read(rb[:]); err != nil {
		t.Fatal(err)
	}
	id := hex.EncodeToString(rb[:])
	l := &lab{
		srvNS: "preboot-dhcp-" + id + "-srv", cliNS: "preboot-dhcp-" + id + "-cli",
		srvIf: "pbds" + id, cliIf: "pbdc" + id,
		srvIP: net.IPv4(10, 213, rb[0], 1).To4(), cliIP: net.IPv4(10, 213, rb[0], 2).To4(),
		listening: make(chan struct{}, 4),
	}
	run(t, "ip", "netns", "add", l.srvNS)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", l.srvNS).Run() })
	run(t, "ip", "netns", "add", l.cliNS)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", l.cliNS).Run() })
	run(t, "ip", "link", "add", l.srvIf, "netns", l.srvNS, "type", "veth", "peer", "name", l.cliIf, "netns", l.cliNS)
	for _, c := range [][]string{
		{l.srvNS, "addr", "add", l.srvIP.String() + "/24", "dev", l.srvIf},
		{l.srvNS, "link", "set", l.srvIf, "up"},
		{l.srvNS, "link", "set", "lo", "up"},
		{l.cliNS, "addr", "add", l.cliIP.String() + "/24", "dev", l.cliIf},
		{l.cliNS, "link", "set", l.cliIf, "up"},
		{l.cliNS, "link", "set", "lo", "up"},
	} {
		run(t, "ip", append([]string{"-n"}, c...)...)
	}
	out := run(t, "ip", "-n", l.cliNS, "-o", "link", "show", l.cliIf)
	for _, f := range strings.Fields(out) {
		if m, err := net.ParseMAC(f); err == nil && len(m) == 6 && f != "ff:ff:ff:ff:ff:ff" {
			l.cliMAC = m
			break
		}
	}
	if l.cliMAC == nil {
		t.Fatalf("no MAC for %s in %q", l.cliIf, out)
	}
	return l
}

// startServer runs the helper server in the server namespace and waits until
// both ports are open.
func (l *lab) startServer(t *testing.T, iface string, env ...string) {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", l.srvNS, os.Args[0], "-test.run=^TestHelperProxyServer$", "-test.count=1")
	cmd.Env = append(append(os.Environ(), helperEnv+"=1", "PREBOOT_PROXYDHCP_IFACE="+iface), env...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) != nil {
				continue
			}
			l.logsMu.Lock()
			l.logs = append(l.logs, m)
			l.logsMu.Unlock()
			if m["msg"] == "proxydhcp listening" {
				l.listening <- struct{}{}
			}
			if testing.Verbose() {
				t.Logf("server: %s", sc.Text())
			}
		}
	}()
	t.Cleanup(func() {
		if t.Failed() && !testing.Verbose() {
			l.logsMu.Lock()
			for _, m := range l.logs {
				t.Logf("server log: %v", m)
			}
			l.logsMu.Unlock()
		}
		cmd.Process.Signal(syscall.SIGTERM)
		waited := make(chan error, 1)
		go func() { <-done; waited <- cmd.Wait() }()
		select {
		case err := <-waited:
			if err != nil {
				t.Errorf("server process: %v\n%s", err, stderr.String())
			}
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-waited
			t.Errorf("server process did not stop on SIGTERM")
		}
	})
	for range 2 {
		select {
		case <-l.listening:
		case <-done:
			t.Fatalf("server exited early: %s", stderr.String())
		case <-time.After(30 * time.Second):
			t.Fatalf("server not listening: %s", stderr.String())
		}
	}
}

// logsFor returns the server log records with msg and mac.
func (l *lab) logsFor(msg, mac string) []map[string]any {
	l.logsMu.Lock()
	defer l.logsMu.Unlock()
	var out []map[string]any
	for _, m := range l.logs {
		if m["msg"] == msg && (mac == "" || m["mac"] == mac) {
			out = append(out, m)
		}
	}
	return out
}

// waitLog waits (bounded) for a server log record.
func (l *lab) waitLog(t *testing.T, msg, mac, result string) map[string]any {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, m := range l.logsFor(msg, mac) {
			if result == "" || m["result"] == result {
				return m
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("server never logged %q for %s (result %q)", msg, mac, result)
	return nil
}

// inNetns runs f on an OS thread switched into the named namespace. Sockets
// created in f stay in that namespace when used from other threads.
func inNetns(name string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// The thread is not unlocked if switching back fails, so that
		// the runtime discards it instead of reusing it.
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		target, err := os.Open(filepath.Join("/var/run/netns", name))
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("setns %s: %w", name, err)
			return
		}
		ferr := f()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns back: %w", err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// cliSocket opens a UDP socket in the client namespace, bound to the client
// veth (as firmware would send on its one NIC).
func (l *lab) cliSocket(t *testing.T, port int) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	err := inNetns(l.cliNS, func() error {
		var err error
		c, err = ListenUDP(context.Background(), l.cliIf, fmt.Sprintf("0.0.0.0:%d", port))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// exchangeRetry sends req and waits for the reply with its xid,
// retransmitting like PXE firmware does (the PXE spec retries DISCOVERs
// after 4, 8, 16 and 32 s; this client every 2 s, 5 times).
func exchangeRetry(t *testing.T, c *net.UDPConn, dst *net.UDPAddr, req *dhcpv4.DHCPv4) *dhcpv4.DHCPv4 {
	t.Helper()
	buf := make([]byte, 2048)
	for attempt := range 5 {
		if _, err := c.WriteToUDP(req.ToBytes(), dst); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(2 * time.Second)
		if err := c.SetReadDeadline(deadline); err != nil {
			t.Fatal(err)
		}
		for {
			n, _, err := c.ReadFromUDP(buf)
			if err != nil {
				t.Logf("attempt %d: no reply to xid %v: %v", attempt, req.TransactionID, err)
				break
			}
			p, err := dhcpv4.FromBytes(buf[:n])
			if err != nil {
				t.Fatalf("reply does not parse: %v", err)
			}
			if p.TransactionID == req.TransactionID {
				return p
			}
		}
	}
	t.Fatalf("no reply to xid %v after 5 attempts", req.TransactionID)
	return nil
}

func TestNetnsGoPXEClient(t *testing.T) {
	l := newLab(t)
	l.startServer(t, "")
	c68 := l.cliSocket(t, ClientPort)
	c4011 := l.cliSocket(t, PXEPort)
	bcast := &net.UDPAddr{IP: net.IPv4bcast, Port: DHCPPort}
	pxe := &net.UDPAddr{IP: l.srvIP, Port: PXEPort}

	for i, k := range pxeKinds {
		t.Run(k.name, func(t *testing.T) {
			mac := net.HardwareAddr{0x52, 0x54, 0x00, 0xee, 0, byte(i)}
			c := Client{MAC: mac, Arch: k.arch, VendorClass: k.vendorClass, UserClass: k.userClass, ServerIP: l.srvIP}
			want := expectedBoot(c).Filename

			// DISCOVER broadcast from :68, OFFER broadcast back to :68.
			disc := pxeRequest(k, mac, uint32(0x51000+i), dhcpv4.MessageTypeDiscover)
			offer := exchangeRetry(t, c68, bcast, disc)
			checkReply(t, offer, disc, k, l.srvIP, dhcpv4.MessageTypeOffer, want)
			ans := l.waitLog(t, "proxydhcp answer", mac.String(), "")
			if ans["dst"] != "255.255.255.255:68" || ans["port"] != float64(67) {
				t.Errorf("answer log %v: want broadcast to :68 from port 67", ans)
			}

			// REQUEST to 4011 from 4011 (OVMF): ACK to 4011.
			req := pxeRequest(k, mac, uint32(0x52000+i), dhcpv4.MessageTypeRequest)
			req.ClientIPAddr = l.cliIP
			ack := exchangeRetry(t, c4011, pxe, req)
			checkReply(t, ack, req, k, l.srvIP, dhcpv4.MessageTypeAck, want)

			// REQUEST to 4011 from 68 (BIOS PXE): ACK to 68.
			req2 := pxeRequest(k, mac, uint32(0x53000+i), dhcpv4.MessageTypeRequest)
			req2.ClientIPAddr = l.cliIP
			ack2 := exchangeRetry(t, c68, pxe, req2)
			checkReply(t, ack2, req2, k, l.srvIP, dhcpv4.MessageTypeAck, want)
		})
	}
}

func TestNetnsBoundInterface(t *testing.T) {
	l := newLab(t)
	l.startServer(t, l.srvIf)
	c68 := l.cliSocket(t, ClientPort)
	k := pxeKinds[1]
	mac := net.HardwareAddr{0x52, 0x54, 0x00, 0xef, 0, 1}
	disc := pxeRequest(k, mac, 0x61000, dhcpv4.MessageTypeDiscover)
	offer := exchangeRetry(t, c68, &net.UDPAddr{IP: net.IPv4bcast, Port: DHCPPort}, disc)
	checkReply(t, offer, disc, k, l.srvIP, dhcpv4.MessageTypeOffer, "snponly.efi")
}

// TestNetnsRealClients runs Debian's dhclient and busybox udhcpc against the
// proxy: plain DHCP clients must get no answer, udhcpc claiming to be a PXE
// client must.
func TestNetnsRealClients(t *testing.T) {
	l := newLab(t)
	l.startServer(t, "")
	mac := l.cliMAC.String()
	dir := t.TempDir()

	t.Run("dhclient", func(t *testing.T) {
		if _, err := exec.LookPath("dhclient"); err != nil {
			t.Skip("isc-dhcp-client not installed")
		}
		conf := filepath.Join(dir, "dhclient.conf")
		if err := os.WriteFile(conf, []byte("timeout 4;\nretry 1;\ninitial-interval 1;\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, "ip", "netns", "exec", l.cliNS, "dhclient", "-4", "-1", "-d", "-v",
			"-cf", conf, "-sf", "/bin/true", "-lf", filepath.Join(dir, "dhclient.leases"), "-pf", filepath.Join(dir, "dhclient.pid"), l.cliIf).CombinedOutput()
		t.Logf("dhclient: %v\n%s", err, out)
		if err == nil {
			t.Fatal("dhclient got a lease from a proxy")
		}
		if !strings.Contains(string(out), "DHCPDISCOVER") {
			t.Fatalf("dhclient sent no DISCOVER")
		}
		if strings.Contains(string(out), "DHCPOFFER of") || strings.Contains(string(out), "DHCPOFFER from") || !strings.Contains(string(out), "No DHCPOFFERS received") {
			t.Fatal("dhclient received an offer")
		}
		l.waitLog(t, "proxydhcp ignored", mac, ResultIgnoredNotPXE)
		if a := l.logsFor("proxydhcp answer", mac); len(a) != 0 {
			t.Fatalf("server answered dhclient: %v", a)
		}
	})

	t.Run("udhcpc", func(t *testing.T) {
		if _, err := exec.LookPath("udhcpc"); err != nil {
			t.Skip("udhcpc not installed")
		}
		before := len(l.logsFor("proxydhcp ignored", mac))
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, "ip", "netns", "exec", l.cliNS, "udhcpc", "-f", "-n", "-q", "-t", "2", "-T", "1", "-A", "1",
			"-i", l.cliIf, "-s", "/bin/true").CombinedOutput()
		t.Logf("udhcpc: %v\n%s", err, out)
		if err == nil {
			t.Fatal("udhcpc got a lease from a proxy")
		}
		if !strings.Contains(string(out), "discover") || strings.Contains(string(out), "select for") {
			t.Fatal("udhcpc did not send a discover, or received an offer")
		}
		l.waitLog(t, "proxydhcp ignored", mac, ResultIgnoredNotPXE)
		if n := len(l.logsFor("proxydhcp ignored", mac)); n <= before {
			t.Fatal("server did not see udhcpc's discover")
		}
		if a := l.logsFor("proxydhcp answer", mac); len(a) != 0 {
			t.Fatalf("server answered udhcpc: %v", a)
		}
	})

	t.Run("udhcpc-as-pxe-client", func(t *testing.T) {
		if _, err := exec.LookPath("udhcpc"); err != nil {
			t.Skip("udhcpc not installed")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, "ip", "netns", "exec", l.cliNS, "udhcpc", "-f", "-n", "-q", "-t", "2", "-T", "1", "-A", "1",
			"-V", "PXEClient:Arch:00000:UNDI:002001", "-x", "0x5d:0000", "-O", "43", "-O", "60", "-O", "67",
			"-i", l.cliIf, "-s", "/bin/true").CombinedOutput()
		t.Logf("udhcpc: %v\n%s", err, out)
		// udhcpc received the proxy OFFER (no address in it: it selects 0.0.0.0).
		if !strings.Contains(string(out), "select for 0.0.0.0, server "+l.srvIP.String()) {
			t.Fatal("udhcpc did not receive the proxy offer")
		}
		ans := l.waitLog(t, "proxydhcp answer", mac, "")
		if ans["vendor_class"] != "PXEClient:Arch:00000:UNDI:002001" || ans["filename"] != "undionly.kpxe" || ans["type"] != "OFFER" {
			t.Fatalf("answer %v", ans)
		}
		// Its REQUEST on 67 (selecting the proxy offer) must be ignored.
		l.waitLog(t, "proxydhcp ignored", mac, ResultIgnoredMsgType)
	})
}

// TestNetnsMultiHomed serves two networks from one server (Interface ""):
// each client must be offered the server address of its own network, and a
// broadcast answer must leave only through the interface the request came
// in on.
func TestNetnsMultiHomed(t *testing.T) {
	l := newLab(t)
	cli2NS := l.cliNS + "2"
	srv2If, cli2If := l.srvIf+"b", l.cliIf+"b"
	srv2IP := net.IPv4(10, 214, l.srvIP[2], 1).To4()
	run(t, "ip", "netns", "add", cli2NS)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", cli2NS).Run() })
	run(t, "ip", "link", "add", srv2If, "netns", l.srvNS, "type", "veth", "peer", "name", cli2If, "netns", cli2NS)
	run(t, "ip", "-n", l.srvNS, "addr", "add", srv2IP.String()+"/24", "dev", srv2If)
	run(t, "ip", "-n", l.srvNS, "link", "set", srv2If, "up")
	run(t, "ip", "-n", cli2NS, "addr", "add", net.IPv4(10, 214, l.srvIP[2], 2).String()+"/24", "dev", cli2If)
	run(t, "ip", "-n", cli2NS, "link", "set", cli2If, "up")
	l.startServer(t, "")

	c1 := l.cliSocket(t, ClientPort)
	var c2 *net.UDPConn
	if err := inNetns(cli2NS, func() error {
		var err error
		c2, err = ListenUDP(context.Background(), cli2If, "0.0.0.0:68")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c2.Close() })

	bcast := &net.UDPAddr{IP: net.IPv4bcast, Port: DHCPPort}
	k := pxeKinds[0]
	d2 := pxeRequest(k, net.HardwareAddr{0x52, 0x54, 0, 0xdd, 0, 2}, 0x72000, dhcpv4.MessageTypeDiscover)
	offer2 := exchangeRetry(t, c2, bcast, d2)
	checkReply(t, offer2, d2, k, srv2IP, dhcpv4.MessageTypeOffer, "undionly.kpxe")

	// Both veths receive anything broadcast through the wrong interface at
	// once: by now a leaked copy would be queued on the other network.
	noLeak := func(c *net.UDPConn, foreign dhcpv4.TransactionID) {
		t.Helper()
		if err := c.SetReadDeadline(time.Now().Add(300 * time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 1500)
		for {
			n, _, err := c.ReadFromUDP(buf)
			if err != nil {
				return // nothing queued: good
			}
			if p, perr := dhcpv4.FromBytes(buf[:n]); perr == nil && p.TransactionID == foreign {
				t.Fatalf("%s received the answer meant for the other network", c.LocalAddr())
			}
		}
	}
	noLeak(c1, d2.TransactionID)

	d1 := pxeRequest(k, net.HardwareAddr{0x52, 0x54, 0, 0xdd, 0, 1}, 0x71000, dhcpv4.MessageTypeDiscover)
	offer1 := exchangeRetry(t, c1, bcast, d1)
	checkReply(t, offer1, d1, k, l.srvIP, dhcpv4.MessageTypeOffer, "undionly.kpxe")
	noLeak(c2, d1.TransactionID)
}
