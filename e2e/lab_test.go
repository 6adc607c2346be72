package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Lab addressing. Every lab lives in namespaces of its own, so parallel labs
// reuse the same numbers without seeing each other.
const (
	labPrefixLen = "24"
	labServerIP  = "10.123.0.2"
	labDHCPIP    = "10.123.0.3"
	labPoolStart = "10.123.0.100"
	labPoolEnd   = "10.123.0.200"
	labULA       = "fd51:7e57:b007::" // /64 advertised by router advertisements
	labServerIP6 = labULA + "2"
	labDHCPIP6   = labULA + "3"
)

// topology says where the site DHCP server runs.
type topology int

const (
	// separateDHCP: dnsmasq in its own namespace, Preboot's proxyDHCP on 67.
	separateDHCP topology = iota
	// sameHost: dnsmasq beside Preboot in the server namespace, answering
	// with option 60 "PXEClient"; Preboot only listens on 4011.
	sameHost
)

// lab is one isolated PXE network:
//
//	[net ns: br0] --veth-- [srv ns: eth0 10.123.0.2, preboot serve (+ dnsmasq if sameHost)]
//	     |  \------veth-- [dhcp ns: eth0 10.123.0.3, dnsmasq]   (separateDHCP only)
//	   tap0..tapN -- QEMU guests
//
// Nothing routes out of it. Everything is removed in t.Cleanup.
type lab struct {
	t      testing.TB
	ID     string
	Dir    string
	NetNS  string // the bridge and the VMs' taps; QEMU runs here
	SrvNS  string // Preboot
	DHCPNS string // site DHCP server (== SrvNS for sameHost)
	Topo   topology
	taps   int

	siteDHCP *process // set by the scenarios that start it
}

// requireRoot skips the test when the lab cannot be built (not root, no
// /dev/net/tun): the only reasons a lab test may skip.
func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the VM lab needs root (network namespaces, tap devices)")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skip("the VM lab needs /dev/net/tun")
	}
	requireQEMU(t)
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return hex.EncodeToString(b)
}

// workDir is t.TempDir(), or a kept directory under $PREBOOT_E2E_KEEP
// (for looking at consoles and logs after a run).
func workDir(t testing.TB) string {
	t.Helper()
	if keep := os.Getenv("PREBOOT_E2E_KEEP"); keep != "" {
		name := strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())
		d := filepath.Join(keep, name+"-"+randomHex(3))
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Logf("work dir (kept): %s", d)
		return d
	}
	return t.TempDir()
}

// newLab creates the namespaces, bridge and links of one lab.
func newLab(t testing.TB, topo topology) *lab {
	t.Helper()
	requireRoot(t)
	id := randomHex(3)
	l := &lab{
		t:     t,
		ID:    id,
		Dir:   workDir(t),
		NetNS: "preboot-lab-" + id + "-net",
		SrvNS: "preboot-lab-" + id + "-srv",
		Topo:  topo,
	}
	l.DHCPNS = l.SrvNS
	if topo == separateDHCP {
		l.DHCPNS = "preboot-lab-" + id + "-dhcp"
	}
	for _, ns := range l.namespaces() {
		l.ip("netns", "add", ns)
		t.Cleanup(func() {
			if _, err := run(context.Background(), "ip", "netns", "del", ns); err != nil {
				t.Errorf("remove namespace: %v", err)
			}
		})
		// No duplicate address detection: addresses are usable at once.
		l.nsRun(ns, "sysctl", "-q", "-w", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0")
		l.ip("-n", ns, "link", "set", "lo", "up")
	}
	l.ip("-n", l.NetNS, "link", "add", "br0", "type", "bridge", "stp_state", "0", "forward_delay", "0", "mcast_snooping", "0")
	l.ip("-n", l.NetNS, "link", "set", "br0", "up")
	l.attach(l.SrvNS, "vsrv", labServerIP, labServerIP6)
	if topo == separateDHCP {
		l.attach(l.DHCPNS, "vdhcp", labDHCPIP, labDHCPIP6)
	}
	t.Logf("lab %s: namespaces %v, files in %s", id, l.namespaces(), l.Dir)
	return l
}

func (l *lab) namespaces() []string {
	if l.Topo == separateDHCP {
		return []string{l.NetNS, l.SrvNS, l.DHCPNS}
	}
	return []string{l.NetNS, l.SrvNS}
}

// attach links namespace ns to the bridge with a veth pair whose inside end
// is eth0 with the given addresses.
func (l *lab) attach(ns, outside, ip4, ip6 string) {
	l.ip("-n", l.NetNS, "link", "add", outside, "type", "veth", "peer", "name", "eth0", "netns", ns)
	l.ip("-n", l.NetNS, "link", "set", outside, "master", "br0", "up")
	l.ip("-n", ns, "addr", "add", ip4+"/"+labPrefixLen, "dev", "eth0")
	l.ip("-n", ns, "addr", "add", ip6+"/64", "dev", "eth0", "nodad")
	l.ip("-n", ns, "link", "set", "eth0", "up")
}

// addTap creates a persistent tap on the bridge for one QEMU NIC and
// returns the QEMU arguments for it (-netdev plus -device nicDevice).
func (l *lab) addTap(nicDevice string) []string {
	name := fmt.Sprintf("tap%d", l.taps)
	l.taps++
	l.ip("-n", l.NetNS, "tuntap", "add", "dev", name, "mode", "tap")
	l.ip("-n", l.NetNS, "link", "set", name, "master", "br0", "up")
	id := "n" + name
	return []string{
		"-netdev", "tap,id=" + id + ",ifname=" + name + ",script=no,downscript=no",
		"-device", nicDevice + ",netdev=" + id,
	}
}

// ip runs ip(8) and fails the test on error.
func (l *lab) ip(args ...string) {
	l.t.Helper()
	if _, err := run(context.Background(), "ip", args...); err != nil {
		l.t.Fatal(err)
	}
}

// nsRun runs a command inside a namespace and fails the test on error.
func (l *lab) nsRun(ns string, args ...string) string {
	l.t.Helper()
	out, err := run(context.Background(), "ip", append([]string{"netns", "exec", ns}, args...)...)
	if err != nil {
		l.t.Fatal(err)
	}
	return out
}

// process is a long-running helper (dnsmasq, preboot serve) started inside
// a namespace, logging to a file, stopped by PID in t.Cleanup.
type process struct {
	*running
	name string
	Log  string
}

// running is a started child process; it is stopped by its PID.
type running struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	err  error         // Wait's result, set before done is closed
}

// startRunning starts cmd and closes the given files once it has exited.
func startRunning(cmd *exec.Cmd, closers ...io.Closer) (*running, error) {
	r := &running{cmd: cmd, done: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		r.err = cmd.Wait()
		for _, c := range closers {
			c.Close()
		}
		close(r.done)
	}()
	return r, nil
}

func (l *lab) startProcess(ns, name string, argv ...string) *process {
	l.t.Helper()
	p := &process{name: name, Log: filepath.Join(l.Dir, name+".log")}
	f, err := os.Create(p.Log)
	if err != nil {
		l.t.Fatal(err)
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, argv...)...)
	cmd.Stdout = f
	cmd.Stderr = f
	l.t.Logf("%s: ip netns exec %s %s", name, ns, strings.Join(argv, " "))
	if p.running, err = startRunning(cmd, f); err != nil {
		f.Close()
		l.t.Fatalf("start %s: %v", name, err)
	}
	l.t.Cleanup(func() {
		p.stop()
		if l.t.Failed() {
			l.t.Logf("%s log (tail):\n%s", name, tailFile(p.Log, 40))
		}
	})
	return p
}

// stop kills the process by PID (ip netns exec execs it: same PID) and
// waits for it.
func (r *running) stop() {
	select {
	case <-r.done:
		return
	default:
	}
	_ = r.cmd.Process.Kill()
	<-r.done
}

// exited reports whether the process has exited.
func (r *running) exited() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

// waitLog waits for a substring in the process's log.
func (p *process) waitLog(ctx context.Context, substr string) error {
	for {
		b, _ := os.ReadFile(p.Log)
		if strings.Contains(string(b), substr) {
			return nil
		}
		if p.exited() {
			return fmt.Errorf("%s exited (%v) before logging %q", p.name, p.err, substr)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s did not log %q: %w", p.name, substr, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (p *process) logText() string {
	b, _ := os.ReadFile(p.Log)
	return string(b)
}

// startSiteDHCP runs Debian's dnsmasq as the site's plain DHCP server (no
// boot options) with IPv6 router advertisements on the lab ULA (so iPXE
// does not wait for IPv6). In the sameHost topology it also sends option 60
// "PXEClient", which sends PXE clients to the server's port 4011.
func (l *lab) startSiteDHCP(extra ...string) *process {
	l.t.Helper()
	args := []string{
		"/usr/sbin/dnsmasq",
		"--no-daemon",
		"--conf-file=/dev/null",
		"--port=0", // no DNS
		"--interface=eth0",
		"--bind-interfaces",
		"--user=root",
		"--pid-file=" + filepath.Join(l.Dir, "dnsmasq.pid"),
		"--leasefile-ro",
		"--log-facility=-",
		"--log-dhcp",
		"--no-ping",
		"--dhcp-authoritative",
		"--dhcp-range=" + labPoolStart + "," + labPoolEnd + ",255.255.255.0,10m",
		"--enable-ra",
		"--dhcp-range=" + labULA + ",ra-only",
	}
	if l.Topo == sameHost {
		args = append(args, "--dhcp-option-force=60,PXEClient")
	}
	args = append(args, extra...)
	p := l.startProcess(l.DHCPNS, "dnsmasq", args...)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.waitLog(ctx, "DHCP, IP range"); err != nil {
		l.t.Fatal(err)
	}
	return p
}
