package dhcp6

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/preboot/preboot/store"
	"github.com/preboot/preboot/store/sqlstore"
)

var (
	testPrefix = netip.MustParsePrefix("fd00:6b::1/64")
	testRange  = Range{Start: netip.MustParseAddr("fd00:6b::100"), End: netip.MustParseAddr("fd00:6b::102")}
	testIface  = Iface{Name: "eth0", Nets: []netip.Prefix{testPrefix}}
	// fe80::5054:ff:fe00:1 is the EUI-64 link-local of 52:54:00:00:00:01.
	testPeer = netip.MustParseAddr("fe80::5054:ff:fe00:1")
)

// openSQLite opens a lease store at path, closed when t ends.
func openSQLite(t testing.TB, path string) *sqlstore.Store {
	t.Helper()
	st, err := sqlstore.OpenSQLite(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// newTestServer is a server with its leases in a new SQLite database.
func newTestServer(t testing.TB, now *time.Time) *Server {
	return newTestServerOn(openSQLite(t, filepath.Join(t.TempDir(), "leases.db")), now)
}

func newTestServerOn(leases store.Leases, now *time.Time) *Server {
	return &Server{
		Leases: leases, Name: "test",
		Ranges: []Range{testRange}, Booter: testBooter{},
		ServerID: &dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: net.HardwareAddr{2, 0, 0, 0, 0, 1}},
		Now:      func() time.Time { return *now },
	}
}

// kind of client a test message comes from.
type kind int

const (
	plain kind = iota
	pxe        // EDK2's UEFI PXEv6 (arch 7, vendor class 343 PXEClient)
	ipxe       // iPXE (user class "iPXE")
	http       // UEFI HTTP boot (arch 16, HTTPClient)
)

// edk2Solicit builds a message as EDK2's PxeBcDhcp6Sarr does: DUID-UUID,
// IA_NA, ORO (59, 60, 23, 24), elapsed time, vendor class 343, arch,
// NII.
func msg(t testing.TB, typ dhcpv6.MessageType, k kind, duid byte, mods ...dhcpv6.Modifier) *dhcpv6.Message {
	t.Helper()
	m, err := dhcpv6.NewMessage()
	if err != nil {
		t.Fatal(err)
	}
	m.MessageType = typ
	m.AddOption(dhcpv6.OptClientID(&dhcpv6.DUIDUUID{UUID: [16]byte{15: duid}}))
	m.AddOption(dhcpv6.OptElapsedTime(0))
	m.AddOption(dhcpv6.OptRequestedOption(dhcpv6.OptionBootfileURL, dhcpv6.OptionBootfileParam, dhcpv6.OptionDNSRecursiveNameServer, dhcpv6.OptionDomainSearchList))
	switch k {
	case pxe:
		m.AddOption(dhcpv6.OptClientArchType(iana.EFI_X86_64))
		m.AddOption(&dhcpv6.OptVendorClass{EnterpriseNumber: EnterprisePXE, Data: [][]byte{[]byte("PXEClient:Arch:00007:UNDI:003016")}})
	case ipxe:
		m.AddOption(dhcpv6.OptClientArchType(iana.EFI_X86_64))
		m.AddOption(&dhcpv6.OptUserClass{UserClasses: [][]byte{[]byte("iPXE")}})
	case http:
		m.AddOption(dhcpv6.OptClientArchType(iana.EFI_X86_64_HTTP))
		m.AddOption(&dhcpv6.OptVendorClass{EnterpriseNumber: EnterprisePXE, Data: [][]byte{[]byte("HTTPClient:Arch:00016:UNDI:003016")}})
	}
	for _, mod := range mods {
		mod(m)
	}
	return m
}

func withIA(addr string) dhcpv6.Modifier {
	var addrs []dhcpv6.OptIAAddress
	if addr != "" {
		addrs = append(addrs, dhcpv6.OptIAAddress{IPv6Addr: net.ParseIP(addr)})
	}
	return func(d dhcpv6.DHCPv6) {
		d.(*dhcpv6.Message).AddOption(&dhcpv6.OptIANA{IaId: [4]byte{0, 0, 0, 1}, Options: dhcpv6.IdentityOptions{Options: optionsOf(addrs)}})
	}
}

func optionsOf(addrs []dhcpv6.OptIAAddress) dhcpv6.Options {
	var o dhcpv6.Options
	for i := range addrs {
		o = append(o, &addrs[i])
	}
	return o
}

func handle(t *testing.T, s *Server, m *dhcpv6.Message) Answer {
	t.Helper()
	// Round trip through bytes, as from the wire.
	d, err := dhcpv6.FromBytes(m.ToBytes())
	if err != nil {
		t.Fatal(err)
	}
	a, _ := s.Handle(context.Background(), d, Inbound{Peer: testPeer, Iface: testIface})
	return a
}

func replyAddr(t *testing.T, a Answer) (netip.Addr, time.Duration) {
	t.Helper()
	if a.Reply == nil {
		t.Fatalf("no reply (%s)", a.Result)
	}
	ia := a.Reply.Options.OneIANA()
	if ia == nil || ia.Options.OneAddress() == nil {
		return netip.Addr{}, 0
	}
	ad := ia.Options.OneAddress()
	ip, _ := netip.AddrFromSlice(ad.IPv6Addr)
	return ip, ad.ValidLifetime
}

func TestSolicitRequestRenewRelease(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	s := newTestServer(t, &now)
	sid := dhcpv6.WithServerID(s.ServerID)

	a := handle(t, s, msg(t, dhcpv6.MessageTypeSolicit, pxe, 1, withIA("")))
	if a.Reply.Type() != dhcpv6.MessageTypeAdvertise || a.Result != ResultAdvertised {
		t.Fatalf("solicit: %s %s", a.Reply.Type(), a.Result)
	}
	if ip, _ := replyAddr(t, a); ip != testRange.Start {
		t.Fatalf("advertised %v, want %v", ip, testRange.Start)
	}
	if got := a.Reply.Options.BootFileURL(); got != "tftp://[fd00:6b::1]/ipxe.efi" {
		t.Fatalf("boot file URL %q", got)
	}
	// No vendor class PXEClient: EDK2 would take it for a BINL offer and
	// ask again on port 4011.
	if vc := a.Reply.Options.VendorClass(EnterprisePXE); len(vc) != 0 {
		t.Fatalf("vendor class %q", vc)
	}
	if a.MAC != "52:54:00:00:00:01" {
		t.Fatalf("MAC %q from the EUI-64 link-local address", a.MAC)
	}
	// Another client meanwhile gets another address.
	b := handle(t, s, msg(t, dhcpv6.MessageTypeSolicit, plain, 2, withIA("")))
	if ip, _ := replyAddr(t, b); ip != testRange.Start.Next() {
		t.Fatalf("second client advertised %v", ip)
	}
	if b.Reply.Options.BootFileURL() != "" {
		t.Fatalf("a plain client got a boot file")
	}

	a = handle(t, s, msg(t, dhcpv6.MessageTypeRequest, pxe, 1, withIA(testRange.Start.String()), sid))
	if ip, lt := replyAddr(t, a); a.Reply.Type() != dhcpv6.MessageTypeReply || ip != testRange.Start || lt != DefaultLeaseTime {
		t.Fatalf("request: %s %v %v", a.Reply.Type(), ip, lt)
	}
	// A request for another server is not answered.
	other := dhcpv6.WithServerID(&dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: net.HardwareAddr{2, 0, 0, 0, 0, 9}})
	if a := handle(t, s, msg(t, dhcpv6.MessageTypeRequest, pxe, 1, withIA(""), other)); a.Reply != nil || a.Result != ResultNotForUs {
		t.Fatalf("request for another server: %+v", a)
	}
	// The second client cannot take the first one's address.
	b = handle(t, s, msg(t, dhcpv6.MessageTypeRequest, plain, 2, withIA(testRange.Start.String()), sid))
	if ip, _ := replyAddr(t, b); ip != testRange.Start.Next() {
		t.Fatalf("second client's request bound %v", ip)
	}

	now = now.Add(30 * time.Minute)
	a = handle(t, s, msg(t, dhcpv6.MessageTypeRenew, pxe, 1, withIA(testRange.Start.String()), sid))
	if ip, lt := replyAddr(t, a); ip != testRange.Start || lt != DefaultLeaseTime {
		t.Fatalf("renew: %v %v", ip, lt)
	}
	// Rebind of an address of another link: lifetimes 0.
	a = handle(t, s, msg(t, dhcpv6.MessageTypeRebind, pxe, 1, withIA("fd99::5")))
	if ip, lt := replyAddr(t, a); ip.String() != "fd99::5" || lt != 0 {
		t.Fatalf("rebind off-link: %v %v", ip, lt)
	}
	a = handle(t, s, msg(t, dhcpv6.MessageTypeRelease, pxe, 1, withIA(testRange.Start.String()), sid))
	if a.Result != ResultReleased || a.Reply.Options.Status() == nil || a.Reply.Options.Status().StatusCode != iana.StatusSuccess {
		t.Fatalf("release: %+v", a)
	}
	// Released: a third client may take it.
	c := handle(t, s, msg(t, dhcpv6.MessageTypeSolicit, plain, 3, withIA(""), dhcpv6.WithRapidCommit))
	if ip, _ := replyAddr(t, c); c.Reply.Type() != dhcpv6.MessageTypeReply || ip != testRange.End {
		t.Fatalf("rapid commit: %s %v", c.Reply.Type(), ip)
	}
	d := handle(t, s, msg(t, dhcpv6.MessageTypeSolicit, plain, 4, withIA(""), dhcpv6.WithRapidCommit))
	if ip, _ := replyAddr(t, d); ip != testRange.Start {
		t.Fatalf("fourth client got %v, want the released %v", ip, testRange.Start)
	}
	// Full: NoAddrsAvail, no boot file.
	e := handle(t, s, msg(t, dhcpv6.MessageTypeSolicit, pxe, 5, withIA("")))
	if e.Result != ResultExhausted || e.Reply.Type() != dhcpv6.MessageTypeAdvertise || e.Reply.Options.Status().StatusCode != iana.StatusNoAddrsAvail || e.Boot != "" {
		t.Fatalf("exhausted: %+v", e)
	}
}

func TestDecline(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	s := newTestServer(t, &now)
	sid := dhcpv6.WithServerID(s.ServerID)
	handle(t, s, msg(t, dhcpv6.MessageTypeRequest, plain, 1, withIA(testRange.Start.String()), sid))
	a := handle(t, s, msg(t, dhcpv6.MessageTypeDecline, plain, 1, withIA(testRange.Start.String()), sid))
	if a.Result != ResultDeclined {
		t.Fatalf("decline: %+v", a)
	}
	// The client asks again: not the declined address.
	a = handle(t, s, msg(t, dhcpv6.MessageTypeSolicit, plain, 1, withIA(testRange.Start.String())))
	if ip, _ := replyAddr(t, a); ip == testRange.Start || !testRange.Contains(ip) {
		t.Fatalf("after decline: %v", ip)
	}
	// After the hold the address is free again.
	now = now.Add(DefaultDeclineHold + time.Second)
	b := handle(t, s, msg(t, dhcpv6.MessageTypeSolicit, plain, 2, withIA(testRange.Start.String())))
	if ip, _ := replyAddr(t, b); ip != testRange.Start {
		t.Fatalf("after the decline hold: %v", ip)
	}
}

func TestBootURLs(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	s := newTestServer(t, &now)
	for _, tc := range []struct {
		k           kind
		url, vendor string
	}{
		{ipxe, "http://[fd00:6b::1]:8080/boot.ipxe", ""},
		{http, "tftp://[fd00:6b::1]/ipxe.efi", ""},
		{pxe, "tftp://[fd00:6b::1]/ipxe.efi", ""},
	} {
		a := handle(t, s, msg(t, dhcpv6.MessageTypeInformationRequest, tc.k, byte(tc.k)))
		if got := a.Reply.Options.BootFileURL(); got != tc.url {
			t.Errorf("kind %d: %q, want %q", tc.k, got, tc.url)
		}
		vc := a.Reply.Options.VendorClass(EnterprisePXE)
		if tc.vendor == "" && len(vc) != 0 || tc.vendor != "" && (len(vc) != 1 || string(vc[0]) != tc.vendor) {
			t.Errorf("kind %d: vendor class %q", tc.k, vc)
		}
	}
	if got := BootURL("http://[fd00::1]/x", netip.MustParseAddr("fd00::2")); got != "http://[fd00::1]/x" {
		t.Errorf("URL changed: %q", got)
	}
}

func TestNotServed(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	s := newTestServer(t, &now)
	ctx := context.Background()
	// No range on the receiving interface.
	a, err := s.Handle(ctx, msg(t, dhcpv6.MessageTypeSolicit, pxe, 1, withIA("")), Inbound{Peer: testPeer, Iface: Iface{Name: "eth1", Nets: []netip.Prefix{netip.MustParsePrefix("fd01::1/64")}}})
	if a.Reply != nil || a.Result != ResultNoRange || !errors.Is(err, ErrIgnored) {
		t.Fatalf("other interface: %+v %v", a, err)
	}
	// Relayed.
	inner := msg(t, dhcpv6.MessageTypeSolicit, pxe, 1, withIA(""))
	relay, err := dhcpv6.EncapsulateRelay(inner, dhcpv6.MessageTypeRelayForward, net.ParseIP("fd00:6b::9"), net.ParseIP("fe80::1"))
	if err != nil {
		t.Fatal(err)
	}
	if a, _ := s.Handle(ctx, relay, Inbound{Peer: testPeer, Iface: testIface}); a.Reply != nil || a.Result != ResultRelayed {
		t.Fatalf("relayed: %+v", a)
	}
	// A Solicit without client id.
	m, _ := dhcpv6.NewMessage()
	m.MessageType = dhcpv6.MessageTypeSolicit
	if a, err := s.Handle(ctx, m, Inbound{Peer: testPeer, Iface: testIface}); a.Reply != nil || !errors.Is(err, ErrMalformed) {
		t.Fatalf("no client id: %+v %v", a, err)
	}
	// A server's message.
	m.MessageType = dhcpv6.MessageTypeReply
	if a, err := s.Handle(ctx, m, Inbound{Peer: testPeer, Iface: testIface}); a.Reply != nil || !errors.Is(err, ErrIgnored) {
		t.Fatalf("reply: %+v %v", a, err)
	}
}

// seeds are one of each message the clients send (EDK2-like PXE,
// iPXE, HTTP boot, dhclient-like plain).
func seeds(t testing.TB) map[string][]byte {
	sid := dhcpv6.WithServerID(&dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: net.HardwareAddr{2, 0, 0, 0, 0, 1}})
	return map[string][]byte{
		"solicit-pxe":     msg(t, dhcpv6.MessageTypeSolicit, pxe, 1, withIA("")).ToBytes(),
		"solicit-ipxe":    msg(t, dhcpv6.MessageTypeSolicit, ipxe, 2, withIA("")).ToBytes(),
		"solicit-http":    msg(t, dhcpv6.MessageTypeSolicit, http, 3, withIA(""), dhcpv6.WithRapidCommit).ToBytes(),
		"request-pxe":     msg(t, dhcpv6.MessageTypeRequest, pxe, 1, withIA("fd00:6b::100"), sid).ToBytes(),
		"renew":           msg(t, dhcpv6.MessageTypeRenew, plain, 4, withIA("fd00:6b::100"), sid).ToBytes(),
		"rebind":          msg(t, dhcpv6.MessageTypeRebind, plain, 4, withIA("fd00:6b::101")).ToBytes(),
		"release":         msg(t, dhcpv6.MessageTypeRelease, plain, 4, withIA("fd00:6b::101"), sid).ToBytes(),
		"decline":         msg(t, dhcpv6.MessageTypeDecline, plain, 4, withIA("fd00:6b::101"), sid).ToBytes(),
		"confirm":         msg(t, dhcpv6.MessageTypeConfirm, plain, 4, withIA("fd00:6b::101")).ToBytes(),
		"information-req": msg(t, dhcpv6.MessageTypeInformationRequest, pxe, 5).ToBytes(),
	}
}

// TestWriteFuzzSeeds keeps testdata/fuzz/FuzzDHCPv6 in step with seeds
// (PREBOOT_WRITE_SEEDS=1 rewrites it).
func TestWriteFuzzSeeds(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzDHCPv6")
	for name, b := range seeds(t) {
		path := filepath.Join(dir, name)
		want := "go test fuzz v1\n[]byte(" + quoteBytes(b) + ")\n"
		if os.Getenv("PREBOOT_WRITE_SEEDS") == "1" {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if _, err := os.Stat(path); err != nil {
			t.Errorf("seed %s missing (PREBOOT_WRITE_SEEDS=1 go test -run TestWriteFuzzSeeds ./dhcp6): %v", name, err)
		}
	}
}

func quoteBytes(b []byte) string {
	var sb strings.Builder
	sb.WriteByte('"')
	for _, c := range b {
		sb.WriteString("\\x")
		sb.WriteByte("0123456789abcdef"[c>>4])
		sb.WriteByte("0123456789abcdef"[c&15])
	}
	sb.WriteByte('"')
	return sb.String()
}

// FuzzDHCPv6 feeds messages through the whole handler (parse, leases,
// policy, reply): no input may crash it, and what it answers is a
// well-formed Advertise or Reply to that client with an address of the
// range (or lifetimes 0) and brackets around the server address.
func FuzzDHCPv6(f *testing.F) {
	for _, b := range seeds(f) {
		f.Add(b)
	}
	now := time.Unix(1_800_000_000, 0)
	s := newTestServer(f, &now)
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := dhcpv6.FromBytes(b)
		if err != nil {
			return
		}
		a, _ := s.Handle(context.Background(), m, Inbound{Peer: testPeer, Iface: testIface})
		if a.Reply == nil {
			return
		}
		out, err := dhcpv6.FromBytes(a.Reply.ToBytes())
		if err != nil {
			t.Fatalf("reply does not parse: %v", err)
		}
		r := out.(*dhcpv6.Message)
		if r.Type() != dhcpv6.MessageTypeAdvertise && r.Type() != dhcpv6.MessageTypeReply {
			t.Fatalf("reply type %s", r.Type())
		}
		if in, ok := m.(*dhcpv6.Message); ok && r.TransactionID != in.TransactionID {
			t.Fatalf("transaction id changed")
		}
		for _, ia := range r.Options.IANA() {
			for _, ad := range ia.Options.Addresses() {
				ip, _ := netip.AddrFromSlice(ad.IPv6Addr)
				if !testRange.Contains(ip) && ad.ValidLifetime != 0 {
					t.Fatalf("handed out %v outside the range", ip)
				}
			}
		}
		if u := r.Options.BootFileURL(); u != "" && !strings.Contains(u, "://[fd00:6b::1]") {
			t.Fatalf("boot URL %q", u)
		}
	})
}
