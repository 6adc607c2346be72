package dhcp6

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
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/preboot/preboot/proxydhcp"
	"github.com/preboot/preboot/store/sqlstore"
)

// These tests run the real server on the real port 547 inside a network
// namespace ("preboot-dhcp6-<rand>-srv") joined by a veth pair to a client
// namespace ("...-cli") where Debian's dhclient -6 runs. Nothing leaves
// the namespaces: they have no route out and are removed afterwards. The
// server is this test binary re-executed under `ip netns exec`
// (TestHelperDHCP6Server), logging JSON lines the test reads; every
// process is stopped by its PID.

const helperEnv = "PREBOOT_DHCP6_HELPER"

// testBooter answers like the policy: iPXE clients get the script URL,
// PXE firmware ipxe.efi.
type testBooter struct{}

func (testBooter) BootFor(_ context.Context, c proxydhcp.Client) (proxydhcp.Boot, error) {
	if c.IsIPXE() {
		return proxydhcp.Boot{Filename: "http://" + net.JoinHostPort(c.ServerIP.String(), "8080") + "/boot.ipxe"}, nil
	}
	return proxydhcp.Boot{Filename: "ipxe.efi"}, nil
}

// TestHelperDHCP6Server is not a test: it is the server process of the
// namespace tests.
func TestHelperDHCP6Server(t *testing.T) {
	if os.Getenv(helperEnv) != "1" {
		t.Skip("helper process for the namespace tests")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	log := slog.New(slog.NewJSONHandler(os.Stdout, &slog.HandlerOptions{Level: slog.LevelDebug}))
	start, end, _ := strings.Cut(os.Getenv("PREBOOT_DHCP6_RANGE"), "-")
	st, err := sqlstore.OpenSQLite(ctx, os.Getenv("PREBOOT_DHCP6_DB"))
	if err != nil {
		log.Error("helper server: lease store", "err", err)
		os.Exit(1)
	}
	defer st.Close()
	s := &Server{
		Leases: st, Name: "helper",
		Booter: testBooter{}, Logger: log, Interface: os.Getenv("PREBOOT_DHCP6_IFACE"),
		Ranges: []Range{{Start: netip.MustParseAddr(start), End: netip.MustParseAddr(end)}},
		DNS:    []netip.Addr{netip.MustParseAddr(start).Prev()},
	}
	conn, err := s.Listen()
	if err == nil {
		err = s.Serve(ctx, conn)
	}
	if err != nil {
		log.Error("helper server failed", "err", err)
		os.Exit(1)
	}
	os.Exit(0)
}

type lab struct {
	srvNS, cliNS string
	srvIf, cliIf string
	prefix       string // "fd00:pb:N::"
	dir          string

	logsMu sync.Mutex
	logs   []map[string]any
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
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2")
	}
	var rb [3]byte
	if _, err := rand.Read(rb[:]); err != nil {
		t.Fatal(err)
	}
	id := hex.EncodeToString(rb[:])
	l := &lab{
		srvNS: "preboot-dhcp6-" + id + "-srv", cliNS: "preboot-dhcp6-" + id + "-cli",
		srvIf: "pb6s" + id, cliIf: "pb6c" + id,
		prefix: fmt.Sprintf("fd00:6b:%x::", rb[0]),
		dir:    t.TempDir(),
	}
	run(t, "ip", "netns", "add", l.srvNS)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", l.srvNS).Run() })
	run(t, "ip", "netns", "add", l.cliNS)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", l.cliNS).Run() })
	for _, ns := range []string{l.srvNS, l.cliNS} {
		// No duplicate address detection: link-local addresses are
		// usable at once (no timed wait for DAD).
		run(t, "ip", "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0")
	}
	run(t, "ip", "link", "add", l.srvIf, "netns", l.srvNS, "type", "veth", "peer", "name", l.cliIf, "netns", l.cliNS)
	for _, c := range [][]string{
		{l.srvNS, "addr", "add", l.prefix + "1/64", "dev", l.srvIf, "nodad"},
		{l.srvNS, "link", "set", l.srvIf, "up"},
		{l.srvNS, "link", "set", "lo", "up"},
		{l.cliNS, "link", "set", l.cliIf, "up"},
		{l.cliNS, "link", "set", "lo", "up"},
	} {
		run(t, "ip", append([]string{"-n"}, c...)...)
	}
	waitLinkLocal(t, l.srvNS, l.srvIf)
	waitLinkLocal(t, l.cliNS, l.cliIf)
	return l
}

// waitLinkLocal waits (bounded) until the kernel has given dev its
// link-local address (once the veth's carrier is up).
func waitLinkLocal(t *testing.T, ns, dev string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		out, _ := exec.Command("ip", "-n", ns, "-6", "addr", "show", "dev", dev, "scope", "link").CombinedOutput()
		if strings.Contains(string(out), "inet6 fe80") && !strings.Contains(string(out), "tentative") {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s in %s never got a link-local address", dev, ns)
}

// startServer runs the helper server in the server namespace and stops it
// by its PID at cleanup.
func (l *lab) startServer(t *testing.T) {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", l.srvNS, os.Args[0], "-test.run=^TestHelperDHCP6Server$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"=1", "PREBOOT_DHCP6_RANGE="+l.prefix+"100-"+l.prefix+"101", "PREBOOT_DHCP6_IFACE="+l.srvIf,
		"PREBOOT_DHCP6_DB="+filepath.Join(l.dir, "leases.db"))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	listening := make(chan struct{}, 1)
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
			if m["msg"] == "dhcp6 listening" {
				listening <- struct{}{}
			}
		}
	}()
	t.Cleanup(func() {
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
		if t.Failed() {
			l.logsMu.Lock()
			for _, m := range l.logs {
				t.Logf("server log: %v", m)
			}
			l.logsMu.Unlock()
		}
	})
	select {
	case <-listening:
	case <-done:
		t.Fatalf("server exited early: %s", stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("server not listening: %s", stderr.String())
	}
}

// waitLog waits (bounded) for a server log record whose fields include want.
func (l *lab) waitLog(t *testing.T, want map[string]any) map[string]any {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		l.logsMu.Lock()
		for _, m := range l.logs {
			match := true
			for k, v := range want {
				if m[k] != v {
					match = false
					break
				}
			}
			if match {
				l.logsMu.Unlock()
				return m
			}
		}
		l.logsMu.Unlock()
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("server never logged %v", want)
	return nil
}

// waitFile waits (bounded) until a file has a line starting with prefix,
// and returns it.
func waitFile(t *testing.T, path, prefix string) string {
	t.Helper()
	deadline := time.Now().Add(40 * time.Second)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(path)
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, prefix) {
				return l
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	b, _ := os.ReadFile(path)
	t.Fatalf("client never reported %q; it reported:\n%s", prefix, b)
	return ""
}

// dhclient runs Debian's dhclient -6 once (-1: one try) in the client
// namespace with conf, and returns what its script saw.
func (l *lab) dhclient(t *testing.T, name, conf string) string {
	t.Helper()
	events := filepath.Join(l.dir, name+".events")
	script := filepath.Join(l.dir, name+".sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho \"$reason $new_ip6_address $new_dhcp6_bootfile_url $new_dhcp6_name_servers\" >> "+events+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cf := filepath.Join(l.dir, name+".conf")
	if err := os.WriteFile(cf, []byte("timeout 30;\n"+conf), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// -1: try once and exit on failure; the client forks into the
	// background once bound (-pf names its PID, stopped below).
	pid := filepath.Join(l.dir, name+".pid")
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", l.cliNS, "dhclient", "-6", "-1", "-v", "-cf", cf, "-sf", script,
		"-lf", filepath.Join(l.dir, name+".leases"), "-pf", pid, l.cliIf).CombinedOutput()
	t.Cleanup(func() {
		if b, err := os.ReadFile(pid); err == nil {
			var p int
			if _, err := fmt.Sscan(string(b), &p); err == nil && p > 0 {
				syscall.Kill(p, syscall.SIGTERM)
			}
		}
	})
	if err != nil {
		t.Fatalf("dhclient -6: %v\n%s", err, out)
	}
	return waitFile(t, events, "BOUND6 ")
}

const dhclientPXE = `option dhcp6.bootfile-url code 59 = string;
option dhcp6.client-arch-type code 61 = unsigned integer 16;
option dhcp6.vendor-class-pxe code 16 = { unsigned integer 32, unsigned integer 16, string };
send dhcp6.client-arch-type 7;
send dhcp6.vendor-class-pxe 343 32 "PXEClient:Arch:00007:UNDI:003016";
also request dhcp6.bootfile-url, dhcp6.name-servers;
`

func TestNetnsDhclient6(t *testing.T) {
	if _, err := exec.LookPath("dhclient"); err != nil {
		t.Skip("isc-dhcp-client not installed")
	}
	l := newLab(t)
	l.startServer(t)
	first, second := l.prefix+"100", l.prefix+"101"

	// A PXE firmware (arch 7, vendor class 343 PXEClient): an address
	// and tftp://[server]/ipxe.efi.
	got := l.dhclient(t, "pxe", dhclientPXE)
	want := "BOUND6 " + first + " tftp://[" + l.prefix + "1]/ipxe.efi " + strings.TrimSuffix(l.prefix, ":") + ":ff"
	if got != want {
		t.Fatalf("PXE client got %q, want %q", got, want)
	}
	l.waitLog(t, map[string]any{"msg": "dhcp6 answer", "request": "REQUEST", "ip": first, "boot_file_url": "tftp://[" + l.prefix + "1]/ipxe.efi"})

	// iPXE (user class "iPXE", another DUID): the next address and the
	// script's URL over HTTP.
	got = l.dhclient(t, "ipxe", dhclientPXE+`option dhcp6.user-class-ipxe code 15 = { unsigned integer 16, string };
send dhcp6.user-class-ipxe 4 "iPXE";
send dhcp6.client-id 00:04:00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff;
`)
	want = "BOUND6 " + second + " http://[" + l.prefix + "1]:8080/boot.ipxe "
	if !strings.HasPrefix(got, want) {
		t.Fatalf("iPXE client got %q, want %q...", got, want)
	}

	// A plain client (no PXE options): an address, no boot file; the
	// range (two addresses) is exhausted.
	cf := filepath.Join(l.dir, "plain.conf")
	if err := os.WriteFile(cf, []byte("timeout 3;\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", l.cliNS, "dhclient", "-6", "-1", "-v", "-cf", cf,
		"-lf", filepath.Join(l.dir, "plain.leases"), "-pf", filepath.Join(l.dir, "plain.pid"),
		"-sf", "/bin/true", "-D", "LL", l.cliIf).CombinedOutput()
	if err == nil {
		t.Fatalf("dhclient got an address from an exhausted range:\n%s", out)
	}
	a := l.waitLog(t, map[string]any{"msg": "dhcp6 answer", "result": ResultExhausted})
	if _, ok := a["boot_file_url"]; ok {
		t.Fatalf("exhausted answer with a boot file: %v", a)
	}
}
