package initenv

import (
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"
)

// ra builds a router advertisement: flags, router lifetime, then options.
func ra(flags byte, lifetime uint16, opts ...[]byte) []byte {
	b := make([]byte, 16)
	b[0], b[4], b[5] = icmpRouterAdvertisement, 64, flags
	binary.BigEndian.PutUint16(b[6:], lifetime)
	for _, o := range opts {
		b = append(b, o...)
	}
	return b
}

func prefixOpt(p string, flags byte, valid uint32) []byte {
	pp := netip.MustParsePrefix(p)
	o := make([]byte, 32)
	o[0], o[1], o[2], o[3] = 3, 4, byte(pp.Bits()), flags
	binary.BigEndian.PutUint32(o[4:], valid)
	binary.BigEndian.PutUint32(o[8:], valid/2)
	a := pp.Addr().As16()
	copy(o[16:], a[:])
	return o
}

func rdnssOpt(lifetime uint32, addrs ...string) []byte {
	o := make([]byte, 8, 8+16*len(addrs))
	o[0], o[1] = 25, byte(1+2*len(addrs))
	binary.BigEndian.PutUint32(o[4:], lifetime)
	for _, a := range addrs {
		b := netip.MustParseAddr(a).As16()
		o = append(o, b[:]...)
	}
	return o
}

// mtuOpt is an option the environment does not use: skipped.
var mtuOpt = []byte{5, 1, 0, 0, 0, 0, 0x05, 0xdc}

func TestParseRouterAdvert(t *testing.T) {
	// The lab's advertisement (e2e startRouterAdvertisements): M flag,
	// the ULA on-link, not autonomous.
	got, err := parseRouterAdvert(ra(0x80, 1800, prefixOpt("fd51:7e57:b007::/64", 0x80, 86400), mtuOpt, rdnssOpt(600, "fd51:7e57:b007::53")))
	if err != nil {
		t.Fatal(err)
	}
	if !got.Managed || got.Other || got.RouterLifetime != 1800*time.Second || got.autonomous() {
		t.Errorf("flags: %+v", got)
	}
	if len(got.Prefixes) != 1 || got.Prefixes[0].Prefix != netip.MustParsePrefix("fd51:7e57:b007::/64") || !got.Prefixes[0].OnLink || got.Prefixes[0].Valid != 86400*time.Second {
		t.Errorf("prefixes: %+v", got.Prefixes)
	}
	if len(got.DNS) != 1 || got.DNS[0] != netip.MustParseAddr("fd51:7e57:b007::53") {
		t.Errorf("dns: %v", got.DNS)
	}
	if n := got.onLinkPrefixLen(netip.MustParseAddr("fd51:7e57:b007::150")); n != 64 {
		t.Errorf("on-link length of an address of the prefix: %d", n)
	}
	if n := got.onLinkPrefixLen(netip.MustParseAddr("2001:db8::150")); n != 128 {
		t.Errorf("on-link length of an address off the prefix: %d", n)
	}

	// SLAAC: O flag only, an autonomous /64, an expired RDNSS.
	got, err = parseRouterAdvert(ra(0x40, 0, prefixOpt("2001:db8:1::/64", 0xc0, 3600), rdnssOpt(0, "2001:db8::53")))
	if err != nil {
		t.Fatal(err)
	}
	if got.Managed || !got.Other || got.RouterLifetime != 0 || !got.autonomous() || len(got.DNS) != 0 {
		t.Errorf("slaac: %+v", got)
	}
	// An autonomous prefix that is not a /64, or expired, is no SLAAC.
	for _, o := range [][]byte{prefixOpt("2001:db8:1::/56", 0xc0, 3600), prefixOpt("2001:db8:1::/64", 0xc0, 0)} {
		if got, err := parseRouterAdvert(ra(0, 0, o)); err != nil || got.autonomous() {
			t.Errorf("%x: autonomous %v (%v)", o, got.autonomous(), err)
		}
	}

	bad := map[string][]byte{
		"short":                 ra(0x80, 0)[:12],
		"solicitation":          append([]byte{icmpRouterSolicitation}, ra(0, 0)[1:]...),
		"code 1":                append([]byte{icmpRouterAdvertisement, 1}, ra(0, 0)[2:]...),
		"option of length 0":    ra(0, 0, []byte{3, 0, 0, 0, 0, 0, 0, 0}),
		"truncated option":      ra(0, 0, []byte{3}),
		"option past the end":   ra(0, 0, prefixOpt("fd00::/64", 0x80, 1)[:24]),
		"prefix option size":    ra(0, 0, append([]byte{3, 5}, make([]byte, 38)...)),
		"prefix length 200":     ra(0, 0, func() []byte { o := prefixOpt("fd00::/64", 0x80, 1); o[2] = 200; return o }()),
		"RDNSS without address": ra(0, 0, []byte{25, 1, 0, 0, 0, 0, 0, 1}),
	}
	for name, b := range bad {
		if _, err := parseRouterAdvert(b); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestRouterSolicitation(t *testing.T) {
	mac, _ := net.ParseMAC("52:54:00:12:34:56")
	b := routerSolicitation(mac)
	if len(b) != 16 || b[0] != icmpRouterSolicitation || b[8] != 1 || b[9] != 1 || net.HardwareAddr(b[10:]).String() != mac.String() {
		t.Fatalf("%x", b)
	}
	if b := routerSolicitation(nil); len(b) != 8 {
		t.Fatalf("without a MAC: %x", b)
	}
}

// FuzzParseRouterAdvert: router advertisements come from the network.
func FuzzParseRouterAdvert(f *testing.F) {
	f.Add(ra(0x80, 1800, prefixOpt("fd51:7e57:b007::/64", 0x80, 86400)))
	f.Add(ra(0x40, 0, prefixOpt("2001:db8:1::/64", 0xc0, 3600), rdnssOpt(600, "2001:db8::53", "2001:db8::54"), mtuOpt))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := parseRouterAdvert(b)
		if err != nil {
			return
		}
		for _, p := range got.Prefixes {
			if !p.Prefix.IsValid() || p.Prefix.Bits() > 128 {
				t.Fatalf("prefix %v", p.Prefix)
			}
			_ = got.onLinkPrefixLen(p.Prefix.Addr())
		}
		for _, d := range got.DNS {
			if !d.Is6() {
				t.Fatalf("dns %v", d)
			}
		}
	})
}

var testIAID = [4]byte{0xde, 0xad, 0xbe, 0xef}

func reply6(t testing.TB, typ dhcpv6.MessageType, mods ...dhcpv6.Modifier) *dhcpv6.Message {
	t.Helper()
	m, err := dhcpv6.NewMessage(mods...)
	if err != nil {
		t.Fatal(err)
	}
	m.MessageType = typ
	return m
}

func iana6(iaid [4]byte, addr string, valid time.Duration, status ...iana.StatusCode) *dhcpv6.OptIANA {
	o := &dhcpv6.OptIANA{IaId: iaid}
	if addr != "" {
		o.Options.Add(&dhcpv6.OptIAAddress{IPv6Addr: netip.MustParseAddr(addr).AsSlice(), PreferredLifetime: valid / 2, ValidLifetime: valid})
	}
	for _, s := range status {
		o.Options.Add(&dhcpv6.OptStatusCode{StatusCode: s, StatusMessage: "no"})
	}
	return o
}

func TestLeaseFrom6(t *testing.T) {
	sid := &dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: net.HardwareAddr{2, 0, 0, 0, 0, 1}}
	m := reply6(t, dhcpv6.MessageTypeReply,
		dhcpv6.WithServerID(sid),
		dhcpv6.WithOption(iana6([4]byte{1, 2, 3, 4}, "fd00::99", time.Hour)), // another IA
		dhcpv6.WithDNS(net.ParseIP("fd00::53")))
	m.AddOption(iana6(testIAID, "fd00::150", time.Hour))
	l, err := leaseFrom6(m, testIAID)
	if err != nil {
		t.Fatal(err)
	}
	if l.Addr != netip.MustParsePrefix("fd00::150/128") || l.How != "dhcpv6" || l.Server == "" || len(l.DNS) != 1 || l.DNS[0] != netip.MustParseAddr("fd00::53") {
		t.Errorf("lease %+v", l)
	}
	for name, m := range map[string]*dhcpv6.Message{
		"advertise":      reply6(t, dhcpv6.MessageTypeAdvertise, dhcpv6.WithOption(iana6(testIAID, "fd00::150", time.Hour))),
		"no IA_NA":       reply6(t, dhcpv6.MessageTypeReply),
		"other IAID":     reply6(t, dhcpv6.MessageTypeReply, dhcpv6.WithOption(iana6([4]byte{1}, "fd00::150", time.Hour))),
		"valid 0":        reply6(t, dhcpv6.MessageTypeReply, dhcpv6.WithOption(iana6(testIAID, "fd00::150", 0))),
		"link-local":     reply6(t, dhcpv6.MessageTypeReply, dhcpv6.WithOption(iana6(testIAID, "fe80::150", time.Hour))),
		"NoAddrsAvail":   reply6(t, dhcpv6.MessageTypeReply, dhcpv6.WithOption(iana6(testIAID, "", 0, iana.StatusNoAddrsAvail))),
		"message status": reply6(t, dhcpv6.MessageTypeReply, dhcpv6.WithOption(&dhcpv6.OptStatusCode{StatusCode: iana.StatusUnspecFail}), dhcpv6.WithOption(iana6(testIAID, "fd00::150", time.Hour))),
	} {
		if l, err := leaseFrom6(m, testIAID); err == nil {
			t.Errorf("%s: lease %+v, want an error", name, l)
		}
	}
}

// FuzzLeaseFrom6: DHCPv6 replies come from the network.
func FuzzLeaseFrom6(f *testing.F) {
	m, _ := dhcpv6.NewMessage(dhcpv6.WithDNS(net.ParseIP("fd00::53")))
	m.MessageType = dhcpv6.MessageTypeReply
	m.AddOption(iana6(testIAID, "fd00::150", time.Hour))
	f.Add(m.ToBytes())
	m.MessageType = dhcpv6.MessageTypeAdvertise
	f.Add(m.ToBytes())
	f.Fuzz(func(t *testing.T, b []byte) {
		msg, err := dhcpv6.MessageFromBytes(b)
		if err != nil {
			return
		}
		l, err := leaseFrom6(msg, testIAID)
		if err != nil {
			return
		}
		if a := l.Addr.Addr(); !a.Is6() || !a.IsGlobalUnicast() || l.Addr.Bits() != 128 {
			t.Fatalf("lease %+v", l)
		}
	})
}

// The bring-up waits for duplicate address detection through
// /proc/net/if_inet6, and stops at once when it failed.
func TestWaitAddr(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "net"), 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(s string) {
		if err := os.WriteFile(filepath.Join(dir, "net", "if_inet6"), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	n := net6{procDir: dir}
	ll := func(a ifAddr6) bool { return a.Addr.IsLinkLocalUnicast() }
	write("fe80000000000000505400fffe123456 02 40 20 80 eth0\n")
	if a, err := n.waitAddr(t.Context(), "eth0", time.Second, "link-local", ll); err != nil || a.Addr != netip.MustParseAddr("fe80::5054:ff:fe12:3456") {
		t.Fatalf("%+v %v", a, err)
	}
	write("fe80000000000000505400fffe123456 02 40 20 c8 eth0\n")
	if _, err := n.waitAddr(t.Context(), "eth0", time.Minute, "link-local", ll); err == nil {
		t.Fatal("DAD failed: no error")
	}
	write("fe80000000000000505400fffe123456 02 40 20 c0 eth0\n")
	if _, err := n.waitAddr(t.Context(), "eth0", 300*time.Millisecond, "link-local", ll); err == nil {
		t.Fatal("tentative: no error")
	}
	if _, err := n.waitAddr(t.Context(), "eth1", 300*time.Millisecond, "link-local", ll); err == nil {
		t.Fatal("other interface: no error")
	}
}
