package dhcpserver

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

	"github.com/preboot/preboot/store"
	"github.com/preboot/preboot/store/sqlstore"
)

// These tests run the real server on the real port 67 inside a network
// namespace ("preboot-dhcps-<rand>-srv") joined by a veth pair to a client
// namespace ("...-cli") where Debian's dhclient and busybox udhcpc run.
// Nothing leaves the namespaces: they have no route out and are removed
// afterwards. The server is this test binary re-executed under `ip netns
// exec` (TestHelperDHCPServer), logging JSON lines the test reads; every
// process is stopped by its PID.

const helperEnv = "PREBOOT_DHCPSERVER_HELPER"

// TestHelperDHCPServer is not a test: it is the server process of the
// namespace tests.
func TestHelperDHCPServer(t *testing.T) {
	if os.Getenv(helperEnv) != "1" {
		t.Skip("helper process for the namespace tests")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	log := slog.New(slog.NewJSONHandler(os.Stdout, &slog.HandlerOptions{Level: slog.LevelDebug}))
	st, err := sqlstore.OpenSQLite(ctx, os.Getenv("PREBOOT_DHCPSERVER_DB"))
	if err != nil {
		log.Error("helper store", "err", err)
		os.Exit(1)
	}
	defer st.Close()
	start, end, _ := strings.Cut(os.Getenv("PREBOOT_DHCPSERVER_RANGE"), "-")
	s := &Server{
		Leases: st, Events: st, Booter: testBooter{}, Logger: log,
		Ranges:  []Range{{LeaseRange: store.LeaseRange{Start: netip.MustParseAddr(start), End: netip.MustParseAddr(end)}}},
		Routers: []netip.Addr{netip.MustParseAddr(start).Prev()},
	}
	if err := s.ListenAndServe(ctx); err != nil {
		log.Error("helper server failed", "err", err)
		os.Exit(1)
	}
	os.Exit(0)
}

type lab struct {
	srvNS, cliNS string
	srvIf, cliIf string
	srvIP        net.IP
	prefix       string // "10.215.N."
	db           string
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
		srvNS: "preboot-dhcps-" + id + "-srv", cliNS: "preboot-dhcps-" + id + "-cli",
		srvIf: "pbss" + id, cliIf: "pbsc" + id,
		prefix: fmt.Sprintf("10.215.%d.", rb[0]),
		dir:    t.TempDir(),
	}
	l.srvIP = net.ParseIP(l.prefix + "1").To4()
	l.db = filepath.Join(l.dir, "leases.db")
	run(t, "ip", "netns", "add", l.srvNS)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", l.srvNS).Run() })
	run(t, "ip", "netns", "add", l.cliNS)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", l.cliNS).Run() })
	run(t, "ip", "link", "add", l.srvIf, "netns", l.srvNS, "type", "veth", "peer", "name", l.cliIf, "netns", l.cliNS)
	for _, c := range [][]string{
		{l.srvNS, "addr", "add", l.srvIP.String() + "/24", "dev", l.srvIf},
		{l.srvNS, "link", "set", l.srvIf, "up"},
		{l.srvNS, "link", "set", "lo", "up"},
		{l.cliNS, "link", "set", l.cliIf, "up"},
		{l.cliNS, "link", "set", "lo", "up"},
	} {
		run(t, "ip", append([]string{"-n"}, c...)...)
	}
	return l
}

// startServer runs the helper server in the server namespace until the
// returned function (also a cleanup) stops it by its PID.
func (l *lab) startServer(t *testing.T) (stop func()) {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", l.srvNS, os.Args[0], "-test.run=^TestHelperDHCPServer$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"=1", "PREBOOT_DHCPSERVER_DB="+l.db, "PREBOOT_DHCPSERVER_RANGE="+l.prefix+"100-"+l.prefix+"101")
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
			if m["msg"] == "dhcpserver listening" {
				listening <- struct{}{}
			}
		}
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
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
	}
	t.Cleanup(func() {
		if t.Failed() {
			l.logsMu.Lock()
			for _, m := range l.logs {
				t.Logf("server log: %v", m)
			}
			l.logsMu.Unlock()
		}
		stop()
	})
	select {
	case <-listening:
	case <-done:
		t.Fatalf("server exited early: %s", stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("server not listening: %s", stderr.String())
	}
	return stop
}

// waitLog waits (bounded) for a server log record whose fields include
// want.
func (l *lab) waitLog(t *testing.T, want map[string]any) map[string]any {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
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

// waitFile waits (bounded) until a client's event file has a line.
func waitFile(t *testing.T, path, line string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(path)
		for _, l := range strings.Split(string(b), "\n") {
			if l == line {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	b, _ := os.ReadFile(path)
	t.Fatalf("client never reported %q; it reported:\n%s", line, b)
}

// syncBuffer is a client's output, written by os/exec while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startClient starts a long-running client in the client namespace and
// stops it by its PID at cleanup.
func (l *lab) startClient(t *testing.T, name string, args ...string) (*exec.Cmd, *syncBuffer) {
	t.Helper()
	out := &syncBuffer{}
	cmd := exec.Command("ip", append([]string{"netns", "exec", l.cliNS, name}, args...)...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Signal(syscall.SIGTERM)
			cmd.Wait()
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", name, out.String())
		}
	})
	return cmd, out
}

func TestNetnsUdhcpc(t *testing.T) {
	if _, err := exec.LookPath("udhcpc"); err != nil {
		t.Skip("udhcpc not installed")
	}
	l := newLab(t)
	l.startServer(t)
	events := filepath.Join(l.dir, "udhcpc.events")
	script := filepath.Join(l.dir, "udhcpc.sh")
	if err := os.WriteFile(script, []byte(`#!/bin/sh
case "$1" in
bound|renew) ip addr replace "$ip/$mask" dev "$interface" ;;
deconfig) ip addr flush dev "$interface" ;;
esac
echo "$1 $ip $router" >> `+events+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	first, second, gw := l.prefix+"100", l.prefix+"101", l.prefix+"99"

	// Obtain, renew (unicast, SIGUSR1), release (SIGUSR2).
	cmd, _ := l.startClient(t, "udhcpc", "-f", "-i", l.cliIf, "-s", script, "-t", "5", "-T", "1", "-x", "hostname:box-1")
	waitFile(t, events, "bound "+first+" "+gw)
	bound := l.waitLog(t, map[string]any{"msg": "dhcpserver answer", "result": ResultAcked, "ip": first})
	if bound["dst"] != "255.255.255.255:68" {
		t.Fatalf("first ACK %v: want broadcast", bound)
	}
	if err := cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	waitFile(t, events, "renew "+first+" "+gw)
	l.waitLog(t, map[string]any{"msg": "dhcpserver answer", "result": ResultAcked, "ip": first, "dst": first + ":68"})
	if err := cmd.Process.Signal(syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	l.waitLog(t, map[string]any{"msg": "dhcpserver release", "ip": first})
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()

	// Decline: another host answers ARP for the address udhcpc is
	// offered (its own, released one): udhcpc -a declines it, the server
	// quarantines it and offers the next one.
	run(t, "ip", "-n", l.srvNS, "addr", "add", first+"/32", "dev", l.srvIf)
	cmd, _ = l.startClient(t, "udhcpc", "-f", "-i", l.cliIf, "-s", script, "-t", "8", "-T", "1", "-a", "-q", "-n")
	waitFile(t, events, "bound "+second+" "+gw)
	l.waitLog(t, map[string]any{"msg": "dhcpserver: client declined its address (in use by another host?): quarantined", "ip": first})
	cmd.Wait()
}

func TestNetnsDhclientRestart(t *testing.T) {
	if _, err := exec.LookPath("dhclient"); err != nil {
		t.Skip("isc-dhcp-client not installed")
	}
	l := newLab(t)
	stop := l.startServer(t)
	first, second := l.prefix+"100", l.prefix+"101"
	// The script configures the address, so that dhclient -r can send
	// its RELEASE (unicast from the leased address).
	script := filepath.Join(l.dir, "dhclient.sh")
	if err := os.WriteFile(script, []byte(`#!/bin/sh
case "$reason" in
PREINIT) ip addr flush dev "$interface" ;;
BOUND|RENEW|REBIND|REBOOT) ip addr replace "$new_ip_address/24" dev "$interface" ;;
esac
`), 0o755); err != nil {
		t.Fatal(err)
	}
	conf := func(name, extra string) []string {
		c := filepath.Join(l.dir, name+".conf")
		if err := os.WriteFile(c, []byte("timeout 20;\nretry 1;\ninitial-interval 1;\n"+extra), 0o644); err != nil {
			t.Fatal(err)
		}
		return []string{"-4", "-d", "-v", "-cf", c, "-sf", script, "-lf", filepath.Join(l.dir, name+".leases"), "-pf", filepath.Join(l.dir, name+".pid")}
	}
	// dhclient prints "bound to ADDR" once it has its lease.
	waitBound := func(out *syncBuffer, ip string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			if strings.Contains(out.String(), "bound to "+ip+" ") {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Fatalf("dhclient not bound to %s:\n%s", ip, out)
	}
	a := conf("a", "")
	cmd, out := l.startClient(t, "dhclient", append(a, l.cliIf)...)
	waitBound(out, first)
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()

	// Restart the server on the same database: the address stays a's.
	stop()
	l.logsMu.Lock()
	l.logs = nil
	l.logsMu.Unlock()
	l.startServer(t)
	b := conf("b", `send dhcp-client-identifier "another-machine";`+"\n")
	cmd, out = l.startClient(t, "dhclient", append(b, l.cliIf)...)
	waitBound(out, second)
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()

	// a comes back with its lease file: INIT-REBOOT, same address.
	cmd, out = l.startClient(t, "dhclient", append(a, l.cliIf)...)
	waitBound(out, first)
	if !strings.Contains(out.String(), "DHCPREQUEST for "+first) || strings.Contains(out.String(), "DHCPDISCOVER") {
		t.Fatalf("dhclient did not reuse its lease by INIT-REBOOT:\n%s", out)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
	// dhclient -r releases the lease from its lease file.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rel, err := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", l.cliNS, "dhclient", "-r"}, append(a[:1], append(a[2:], l.cliIf)...)...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("dhclient -r: %v\n%s", err, rel)
	}
	l.waitLog(t, map[string]any{"msg": "dhcpserver release", "ip": first})
}
