// Package nslab builds the multicast lab of issue 10 out of network
// namespaces: one switch namespace holding a Linux bridge with IGMP
// snooping and its own querier, one server namespace whose link to the
// bridge is shaped by tc tbf (so the link, not the two CPUs, is the
// bottleneck), and N receiver namespaces. The Go tests of package e2e and
// the benchmark in bench/multicast use it.
//
//	preboot-mc-<id>-srv            preboot-mc-<id>-sw             preboot-mc-<id>-r0 … rN-1
//	┌───────────────────────┐      ┌──────────────────────┐       ┌─────────────────────────────┐
//	│ eth0 10.124.0.1/24    ├──────┤ vsrv ─ br0 ─ vr0 …   ├───────┤ eth0 10.124.0.10+i/24 brd + │
//	│ tbf RATE on egress    │ veth │ mcast_snooping 1     │ veth  │ route 224.0.0.0/4 dev eth0  │
//	│ route 224.0.0.0/4     │      │ mcast_querier 1      │       │ nft table ip nslab (impair) │
//	│                       │      │ response interval 1s │       │                             │
//	└───────────────────────┘      └──────────────────────┘       └─────────────────────────────┘
//
// Namespaces are named PREFIX-<random>-{sw,srv,r0,r1,…} (PREFIX defaults
// to "preboot-mc"); nothing routes out of them (no default route, no link
// to the host), and [Lab.Close] (registered with t.Cleanup by [New])
// kills every process the lab started, by PID, then deletes them.
//
// Needs root and ip(8), tc(8) and nft(8) (Debian: iproute2, nftables);
// [New] skips the test when any is missing.
package nslab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Lab addressing: every lab lives in namespaces of its own, so parallel
// labs reuse the same numbers without seeing each other.
const (
	// ServerIP is the server namespace's address on eth0.
	ServerIP = "10.124.0.1"
	// Iface is the name of the lab interface in the server and receiver
	// namespaces.
	Iface = "eth0"
	// PrefixLen is the lab subnet's prefix length.
	PrefixLen = 24
	// MaxReceivers is the largest number of receivers one lab can have.
	MaxReceivers = 200
	// DefaultRate is the server link's rate when Options.Rate is empty.
	DefaultRate = "20mbit"
	// DefaultQuerierWait is how long [Build] waits for the bridge's IGMP
	// querier. Until the querier counts as present the bridge floods
	// multicast to every port, for mcast_query_response_interval after
	// the querier is switched on: 10 s by default, 1 s in this lab
	// (measured: with a 1.5 s wait a port that never joined receives
	// nothing of a group's traffic).
	DefaultQuerierWait = 2 * time.Second
)

// ReceiverIP is the address of receiver i.
func ReceiverIP(i int) string { return "10.124.0." + strconv.Itoa(10+i) }

// Options configure a lab. The zero value is a lab with no receivers,
// a 20 Mbit/s server link and a 2 s wait for the querier.
type Options struct {
	// Receivers is the number of receiver namespaces (0..MaxReceivers).
	Receivers int
	// Rate is the tbf rate of the server's egress, in tc's syntax
	// ("20mbit", "500kbit"); "" = DefaultRate, "none" = not shaped.
	Rate string
	// Prefix of the namespace names; "" = "preboot-mc". Must start with
	// "preboot-".
	Prefix string
	// QuerierWait is how long Build waits after creating the bridge for its
	// IGMP querier to count as present; 0 = DefaultQuerierWait, negative =
	// no wait (multicast is flooded to every port for the first ~1 s).
	QuerierWait time.Duration
	// Logf, if set, receives one line per step and per process started.
	Logf func(format string, args ...any)
}

// Receiver is one receiver namespace.
type Receiver struct {
	Index int
	NS    string // namespace name
	IP    string // address of its eth0
	Port  string // its bridge port (the veth's end in the switch namespace)
}

// Lab is a built lab. Its fields are read-only.
type Lab struct {
	ID        string     // random suffix shared by the lab's namespaces
	SwitchNS  string     // holds br0 and the bridge ports
	ServerNS  string     // the server: eth0 = ServerIP
	ServerIP  string     // = ServerIP
	Rate      string     // the server link's tbf rate ("none" = unshaped)
	Receivers []Receiver // index i: namespace PREFIX-ID-r<i>, address ReceiverIP(i)

	logf func(format string, args ...any)

	mu     sync.Mutex
	procs  []*Proc
	nss    []string // created, in order
	closed bool
}

// Require skips the test unless the lab can be built here: root, and the
// ip, tc and nft commands.
func Require(t testing.TB) {
	t.Helper()
	if err := Available(); err != nil {
		t.Skip(err.Error())
	}
}

// Available says why a lab cannot be built here (nil: it can): not root,
// or ip, tc or nft missing.
func Available() error {
	if os.Geteuid() != 0 {
		return errors.New("the namespace lab needs root (network namespaces, tc, nftables)")
	}
	for _, tool := range []string{"ip", "tc", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("the namespace lab needs %s (Debian: apt-get install iproute2 nftables): %w", tool, err)
		}
	}
	return nil
}

// New builds a lab for a test: it skips the test when Available says no,
// fails it when the lab cannot be built, and removes the lab in t.Cleanup.
// Steps and processes are logged with t.Logf unless opts.Logf is set.
func New(t testing.TB, opts Options) *Lab {
	t.Helper()
	Require(t)
	if opts.Logf == nil {
		opts.Logf = t.Logf
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute+opts.querierWait())
	defer cancel()
	l, err := Build(ctx, opts)
	if l != nil {
		t.Cleanup(func() {
			if err := l.Close(); err != nil {
				t.Errorf("nslab: %v", err)
			}
		})
	}
	if err != nil {
		t.Fatalf("nslab: %v", err)
	}
	return l
}

func (o Options) querierWait() time.Duration {
	switch {
	case o.QuerierWait == 0:
		return DefaultQuerierWait
	case o.QuerierWait < 0:
		return 0
	}
	return o.QuerierWait
}

// Build creates the lab's namespaces, links, shaping and routes, then
// waits for the bridge's querier. The caller must Close the lab, also when
// Build fails with a non-nil Lab (it removes what was made).
func Build(ctx context.Context, opts Options) (*Lab, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	if opts.Receivers < 0 || opts.Receivers > MaxReceivers {
		return nil, fmt.Errorf("receivers %d: want 0..%d", opts.Receivers, MaxReceivers)
	}
	prefix := opts.Prefix
	if prefix == "" {
		prefix = "preboot-mc"
	}
	if !strings.HasPrefix(prefix, "preboot-") {
		return nil, fmt.Errorf("namespace prefix %q: must start with preboot-", prefix)
	}
	rate := opts.Rate
	if rate == "" {
		rate = DefaultRate
	}
	id := randomHex(3)
	base := prefix + "-" + id
	l := &Lab{
		ID:       id,
		SwitchNS: base + "-sw",
		ServerNS: base + "-srv",
		ServerIP: ServerIP,
		Rate:     rate,
		logf:     opts.Logf,
	}
	if l.logf == nil {
		l.logf = func(string, ...any) {}
	}
	for i := range opts.Receivers {
		l.Receivers = append(l.Receivers, Receiver{
			Index: i,
			NS:    fmt.Sprintf("%s-r%d", base, i),
			IP:    ReceiverIP(i),
			Port:  fmt.Sprintf("vr%d", i),
		})
	}
	start := time.Now()
	if err := l.build(ctx); err != nil {
		return l, err
	}
	l.logf("nslab %s: %d receivers, server link %s, built in %v", id, len(l.Receivers), rate, time.Since(start).Round(time.Millisecond))
	if w := opts.querierWait(); w > 0 {
		l.logf("nslab %s: waiting %v for the bridge's IGMP querier", id, w)
		select {
		case <-time.After(w):
		case <-ctx.Done():
			return l, fmt.Errorf("wait for the querier: %w", ctx.Err())
		}
	}
	return l, nil
}

func (l *Lab) build(ctx context.Context) error {
	all := []string{l.SwitchNS, l.ServerNS}
	for _, r := range l.Receivers {
		all = append(all, r.NS)
	}
	for _, ns := range all {
		if err := l.addNS(ctx, ns); err != nil {
			return err
		}
	}
	// The bridge: IGMP snooping with its own querier, so that multicast
	// reaches only the ports that joined once the querier counts as
	// present; no STP delay. The querier is switched on after the bridge
	// is up, with a query response interval of 1 s (100 cs) instead of
	// 10 s: the bridge then stops flooding after ~1 s (set at creation,
	// the 10 s default applies).
	if err := l.batch(ctx, l.SwitchNS,
		"link add br0 type bridge stp_state 0 forward_delay 0 mcast_snooping 1 mcast_query_response_interval 100",
		"link set br0 up",
		"link set br0 type bridge mcast_querier 1",
	); err != nil {
		return err
	}
	if err := l.attach(ctx, l.ServerNS, "vsrv", l.ServerIP); err != nil {
		return err
	}
	if l.Rate != "none" {
		if err := l.tbf(ctx, l.ServerNS, Iface, l.Rate); err != nil {
			return err
		}
	}
	for _, r := range l.Receivers {
		if err := l.attach(ctx, r.NS, r.Port, r.IP); err != nil {
			return err
		}
	}
	return nil
}

// addNS creates one namespace: loopback up, IPv6 off (no router
// solicitations or MLD reports on the lab's links).
func (l *Lab) addNS(ctx context.Context, ns string) error {
	if _, err := run(ctx, "ip", "netns", "add", ns); err != nil {
		return err
	}
	l.mu.Lock()
	l.nss = append(l.nss, ns)
	l.mu.Unlock()
	if _, err := run(ctx, "ip", "netns", "exec", ns, "sysctl", "-q", "-w",
		"net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"); err != nil {
		return err
	}
	return l.batch(ctx, ns, "link set lo up")
}

// attach links namespace ns to the bridge with a veth pair: port in the
// switch namespace, eth0 inside ns with ip/24 and a broadcast address
// (udp-receiver sends its connect request there), and a route for
// multicast (without one, sendto to a group fails with ENETUNREACH and
// joining on INADDR_ANY with ENODEV). No other route: nothing leaves.
func (l *Lab) attach(ctx context.Context, ns, port, ip string) error {
	if err := l.batch(ctx, l.SwitchNS,
		fmt.Sprintf("link add %s type veth peer name %s netns %s", port, Iface, ns),
		fmt.Sprintf("link set %s master br0 up", port),
	); err != nil {
		return err
	}
	return l.batch(ctx, ns,
		fmt.Sprintf("addr add %s/%d brd + dev %s", ip, PrefixLen, Iface),
		fmt.Sprintf("link set %s up", Iface),
		fmt.Sprintf("route add 224.0.0.0/4 dev %s", Iface),
	)
}

// tbf shapes dev's egress in ns to rate (tc tbf; this kernel has no netem).
func (l *Lab) tbf(ctx context.Context, ns, dev, rate string) error {
	_, err := run(ctx, "ip", "netns", "exec", ns, "tc", "qdisc", "replace", "dev", dev, "root",
		"tbf", "rate", rate, "burst", "32kb", "latency", "50ms")
	return err
}

// batch runs ip commands (one per line, without "ip") in namespace ns.
func (l *Lab) batch(ctx context.Context, ns string, cmds ...string) error {
	cmd := exec.CommandContext(ctx, "ip", "-n", ns, "-batch", "-")
	cmd.Stdin = strings.NewReader(strings.Join(cmds, "\n") + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("ip -n %s -batch (%s): %w: %s", ns, strings.Join(cmds, "; "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Namespaces lists the lab's namespaces: switch, server, receivers.
func (l *Lab) Namespaces() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.nss...)
}

// Close kills every process the lab started that is still running (SIGKILL
// to its process group, by PID), waits for them, and deletes the lab's
// namespaces. It is safe to call more than once.
func (l *Lab) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	procs := l.procs
	nss := l.nss
	l.mu.Unlock()
	for _, p := range procs {
		p.stop()
	}
	var errs []error
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := len(nss) - 1; i >= 0; i-- {
		if _, err := run(ctx, "ip", "netns", "del", nss[i]); err != nil {
			errs = append(errs, fmt.Errorf("remove namespace: %w", err))
		}
	}
	return errors.Join(errs...)
}

// receiver returns receiver i or an error.
func (l *Lab) receiver(i int) (Receiver, error) {
	if i < 0 || i >= len(l.Receivers) {
		return Receiver{}, fmt.Errorf("receiver %d: the lab has %d", i, len(l.Receivers))
	}
	return l.Receivers[i], nil
}

// run runs a command and returns its combined output; the error names the
// command and carries its output.
func run(ctx context.Context, name string, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return hex.EncodeToString(b)
}
