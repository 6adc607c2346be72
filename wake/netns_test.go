package wake

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// These tests send real magic packets inside network namespaces the test
// creates ("preboot-wol-<rand>-srv" and one client namespace per segment,
// veth pairs, no route out, removed afterwards). The sender runs on a
// thread moved into the server namespace; listeners are UDP sockets on
// port 9 opened inside the client namespaces, which check every packet
// byte for byte.

type segment struct {
	ns       string // client namespace
	srvIf    string // server end of the veth pair
	srvIP    netip.Prefix
	cliIP    netip.Prefix
	listener *net.UDPConn
}

type lab struct {
	srvNS    string
	segments []*segment
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// inNetns runs fn on an OS thread moved into the namespace ns. Sockets fn
// opens stay in that namespace.
func inNetns(t *testing.T, ns string, fn func() error) error {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		target, err := os.Open("/run/netns/" + ns)
		if err != nil {
			errc <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err == nil {
			runtime.UnlockOSThread() // else the thread ends with this goroutine
		}
		errc <- ferr
	}()
	return <-errc
}

func newLab(t *testing.T, segments int) *lab {
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
	l := &lab{srvNS: "preboot-wol-" + id + "-srv"}
	run(t, "ip", "netns", "add", l.srvNS)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", l.srvNS).Run() })
	run(t, "ip", "-n", l.srvNS, "link", "set", "lo", "up")
	for i := range segments {
		s := &segment{
			ns:    "preboot-wol-" + id + "-c" + string(rune('0'+i)),
			srvIf: "pbws" + id + string(rune('0'+i)),
			srvIP: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 214 + byte(i), rb[0], 1}), 24),
			cliIP: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 214 + byte(i), rb[0], 20}), 24),
		}
		run(t, "ip", "netns", "add", s.ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", s.ns).Run() })
		run(t, "ip", "link", "add", s.srvIf, "netns", l.srvNS, "type", "veth", "peer", "name", "pbwc"+id+string(rune('0'+i)), "netns", s.ns)
		for _, c := range [][]string{
			{l.srvNS, "addr", "add", s.srvIP.String(), "brd", "+", "dev", s.srvIf},
			{l.srvNS, "link", "set", s.srvIf, "up"},
			{s.ns, "addr", "add", s.cliIP.String(), "brd", "+", "dev", "pbwc" + id + string(rune('0'+i))},
			{s.ns, "link", "set", "pbwc" + id + string(rune('0'+i)), "up"},
			{s.ns, "link", "set", "lo", "up"},
		} {
			run(t, "ip", append([]string{"-n"}, c...)...)
		}
		if err := inNetns(t, s.ns, func() error {
			c, err := net.ListenUDP("udp4", &net.UDPAddr{Port: Port})
			s.listener = c
			return err
		}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.listener.Close() })
		l.segments = append(l.segments, s)
	}
	return l
}

// receive reads the next datagram on the segment (the test sends before
// it reads: a missing packet fails on the read deadline of the test).
func (s *segment) receive(t *testing.T) ([]byte, netip.AddrPort) {
	t.Helper()
	if dl, ok := t.Deadline(); ok {
		s.listener.SetReadDeadline(dl)
	}
	buf := make([]byte, 1500)
	n, from, err := s.listener.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("listener in %s: %v", s.ns, err)
	}
	return buf[:n], from
}

func (l *lab) wake(t *testing.T, snd *Sender, d Device) []Target {
	t.Helper()
	var got []Target
	err := inNetns(t, l.srvNS, func() error {
		ts, err := snd.Targets(d)
		if err != nil {
			return err
		}
		got, err = snd.Send(context.Background(), d.MAC, ts)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func wantPacket(t *testing.T, s *segment, mac string, from netip.Addr) {
	t.Helper()
	hw, _ := net.ParseMAC(mac)
	want := append(bytes.Repeat([]byte{0xff}, 6), bytes.Repeat(hw, 16)...)
	got, src := s.receive(t)
	if !bytes.Equal(got, want) {
		t.Fatalf("packet in %s:\n got %x\nwant %x", s.ns, got, want)
	}
	if len(got) != 102 {
		t.Fatalf("packet of %d bytes", len(got))
	}
	if src.Addr() != from {
		t.Fatalf("packet from %s, want %s", src, from)
	}
}

func TestMagicPacketOnTheInterfaceThatSawTheDevice(t *testing.T) {
	l := newLab(t, 2)
	snd := &Sender{}
	a, b := l.segments[0], l.segments[1]

	// Device last seen on the second interface: only that segment hears
	// it; the next packet the first segment hears is the one for the
	// device seen there.
	ts := l.wake(t, snd, Device{MAC: "52:54:00:aa:bb:01", Interface: b.srvIf})
	if len(ts) != 1 || ts[0].Interface != b.srvIf || ts[0].Addr != Broadcast(b.srvIP) || ts[0].How != HowInterface || ts[0].Error != "" {
		t.Fatalf("targets %+v", ts)
	}
	l.wake(t, snd, Device{MAC: "52:54:00:aa:bb:02", Interface: a.srvIf})
	wantPacket(t, a, "52:54:00:aa:bb:02", a.srvIP.Addr())
	wantPacket(t, b, "52:54:00:aa:bb:01", b.srvIP.Addr())

	// Only an address known: the interface on its subnet.
	ts = l.wake(t, snd, Device{MAC: "52:54:00:aa:bb:03", IP: b.cliIP.Addr().String()})
	if len(ts) != 1 || ts[0].Interface != b.srvIf || ts[0].How != HowAddress {
		t.Fatalf("targets by address %+v", ts)
	}
	wantPacket(t, b, "52:54:00:aa:bb:03", b.srvIP.Addr())

	// Nothing known: every interface, or the configured ones.
	ts = l.wake(t, snd, Device{MAC: "52:54:00:aa:bb:04"})
	if len(ts) != 2 || ts[0].How != HowFallback {
		t.Fatalf("fallback targets %+v", ts)
	}
	wantPacket(t, a, "52:54:00:aa:bb:04", a.srvIP.Addr())
	wantPacket(t, b, "52:54:00:aa:bb:04", b.srvIP.Addr())
	ts = l.wake(t, &Sender{Interfaces: []string{a.srvIf}}, Device{MAC: "52:54:00:aa:bb:05", Interface: "gone0"})
	if len(ts) != 1 || ts[0].Interface != a.srvIf {
		t.Fatalf("fallback to configured interfaces %+v", ts)
	}
	l.wake(t, snd, Device{MAC: "52:54:00:aa:bb:06", Interface: b.srvIf})
	wantPacket(t, a, "52:54:00:aa:bb:05", a.srvIP.Addr())
	wantPacket(t, b, "52:54:00:aa:bb:06", b.srvIP.Addr())
}

func TestRoutedSubnet(t *testing.T) {
	l := newLab(t, 1)
	s := l.segments[0]
	// A routed subnet reached through the segment (the client namespace
	// plays the router that forwards directed broadcasts: here it owns
	// an address in it, so it receives the broadcast itself).
	routed := netip.MustParsePrefix("10.99.7.0/24")
	run(t, "ip", "-n", s.ns, "addr", "add", "10.99.7.1/24", "brd", "+", "dev", "lo")
	run(t, "ip", "-n", l.srvNS, "route", "add", routed.String(), "via", s.cliIP.Addr().String())
	ts := l.wake(t, &Sender{Subnets: []netip.Prefix{routed}}, Device{MAC: "52:54:00:aa:bb:07", IP: "10.99.7.50"})
	if len(ts) != 1 || ts[0].Interface != "" || ts[0].Addr != netip.MustParseAddr("10.99.7.255") || ts[0].How != HowRouted {
		t.Fatalf("routed targets %+v", ts)
	}
	wantPacket(t, s, "52:54:00:aa:bb:07", s.srvIP.Addr())
}
