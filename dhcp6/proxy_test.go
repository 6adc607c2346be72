package dhcp6

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/preboot/preboot/proxydhcp"
)

var proxySID = &dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: net.HardwareAddr{2, 0, 0, 0, 0, 9}}

func newTestProxy() *Proxy {
	return &Proxy{Booter: testBooter{}, ServerID: proxySID}
}

// proxyHandle runs m, as from the wire, through p as arrived on port.
func proxyHandle(t *testing.T, p *Proxy, m *dhcpv6.Message, in Inbound) (Answer, error) {
	t.Helper()
	d, err := dhcpv6.FromBytes(m.ToBytes())
	if err != nil {
		t.Fatal(err)
	}
	return p.Handle(context.Background(), d, in)
}

// binlRequest builds what EDK2's PxeBcRequestBootService sends to port
// 4011: the proxy's server identifier, then the options of the Request it
// sent the site server without IA_NA and server identifier; message type
// Request, the transaction ID of the proxy's Advertise.
func binlRequest(t testing.TB, sid dhcpv6.DUID, xid dhcpv6.TransactionID) *dhcpv6.Message {
	m := msg(t, dhcpv6.MessageTypeRequest, pxe, 1)
	m.TransactionID = xid
	if sid != nil {
		m.Options.Options = append(dhcpv6.Options{dhcpv6.OptServerID(sid)}, m.Options.Options...)
	}
	return m
}

// checkPXEAnswer checks an answer to EDK2: the message type, identifiers,
// no address, vendor class 343 "PXEClient" (the constant, not the
// client's string) and the boot file URL.
func checkPXEAnswer(t *testing.T, a Answer, typ dhcpv6.MessageType, xid dhcpv6.TransactionID, wantURL string) {
	t.Helper()
	if a.Reply == nil {
		t.Fatalf("no answer (%s)", a.Result)
	}
	r := a.Reply
	if r.Type() != typ || r.TransactionID != xid {
		t.Errorf("answer %s xid %x, want %s xid %x", r.Type(), r.TransactionID, typ, xid)
	}
	if r.Options.OneIANA() != nil || r.GetOneOption(dhcpv6.OptionStatusCode) != nil {
		t.Errorf("answer has an IA_NA or status code: %s", r.Summary())
	}
	if sid := r.Options.ServerID(); sid == nil || !sid.Equal(proxySID) {
		t.Errorf("server id %v", sid)
	}
	if cid := r.Options.ClientID(); cid == nil || !cid.Equal(&dhcpv6.DUIDUUID{UUID: [16]byte{15: 1}}) {
		t.Errorf("client id %v", cid)
	}
	vcs := r.Options.Get(dhcpv6.OptionVendorClass)
	if len(vcs) != 1 {
		t.Fatalf("%d vendor classes", len(vcs))
	}
	vc := vcs[0].(*dhcpv6.OptVendorClass)
	if vc.EnterpriseNumber != EnterprisePXE || len(vc.Data) != 1 || string(vc.Data[0]) != "PXEClient" {
		t.Errorf("vendor class %s", vc)
	}
	if u := r.Options.BootFileURL(); u != wantURL || a.Boot != wantURL {
		t.Errorf("boot URL %q (answer %q), want %q", u, a.Boot, wantURL)
	}
	if a.MAC != "52:54:00:00:00:01" {
		t.Errorf("MAC %q", a.MAC)
	}
}

// TestProxyEDK2Exchange follows EDK2's PXEv6 through the proxy: its
// Solicit on 547 gets an Advertise without address (a proxy BINL offer);
// after the site server's Reply, its Request on 4011 (with the proxy's
// identifier, from its new address) gets the boot file.
func TestProxyEDK2Exchange(t *testing.T) {
	p := newTestProxy()
	sol := msg(t, dhcpv6.MessageTypeSolicit, pxe, 1, withIA(""))
	a, err := proxyHandle(t, p, sol, Inbound{Peer: testPeer, Iface: testIface, Port: 547})
	if err != nil {
		t.Fatal(err)
	}
	checkPXEAnswer(t, a, dhcpv6.MessageTypeAdvertise, sol.TransactionID, "tftp://[fd00:6b::1]/ipxe.efi")
	if a.Result != ResultAdvertised {
		t.Errorf("result %s", a.Result)
	}

	// The Request to 4011 comes from the address the site server gave,
	// to the address of the URL.
	req := binlRequest(t, proxySID, sol.TransactionID)
	a, err = proxyHandle(t, p, req, Inbound{Peer: netip.MustParseAddr("fd00:6b::1234"), Iface: testIface, Port: BINLPort,
		Local: netip.MustParseAddr("fd00:6b::1")})
	if err != nil {
		t.Fatal(err)
	}
	checkPXEAnswer(t, a, dhcpv6.MessageTypeReply, sol.TransactionID, "tftp://[fd00:6b::1]/ipxe.efi")

	// Without server identifier (sent to ff02::1:2 port 4011) it is
	// answered too; with another server's it is not.
	if a, err := proxyHandle(t, p, binlRequest(t, nil, sol.TransactionID), Inbound{Peer: testPeer, Iface: testIface, Port: BINLPort}); err != nil || a.Reply == nil {
		t.Errorf("request without server id: %s, %v", a.Result, err)
	}
	other := &dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: net.HardwareAddr{2, 0, 0, 0, 0, 7}}
	if a, err := proxyHandle(t, p, binlRequest(t, other, sol.TransactionID), Inbound{Peer: testPeer, Iface: testIface, Port: BINLPort}); a.Reply != nil || a.Result != ResultNotForUs || !errors.Is(err, ErrIgnored) {
		t.Errorf("request for another server: %s, %v", a.Result, err)
	}
}

// TestProxyAddressChoice: the URL names the address a unicast message was
// sent to, else the interface's address on the client's prefix, else its
// first global address.
func TestProxyAddressChoice(t *testing.T) {
	two := Iface{Name: "eth0", Nets: []netip.Prefix{netip.MustParsePrefix("2001:db8:1::5/64"), testPrefix}}
	for _, c := range []struct {
		in   Inbound
		want string
	}{
		{Inbound{Peer: testPeer, Iface: two, Port: BINLPort, Local: netip.MustParseAddr("fd00:6b::1")}, "fd00:6b::1"},
		{Inbound{Peer: netip.MustParseAddr("fd00:6b::77"), Iface: two, Port: BINLPort}, "fd00:6b::1"},
		{Inbound{Peer: testPeer, Iface: two}, "2001:db8:1::5"},
	} {
		got, ok := proxyAddr(c.in)
		if !ok || got.String() != c.want {
			t.Errorf("%+v: %v %v, want %s", c.in, got, ok, c.want)
		}
	}
	if _, ok := proxyAddr(Inbound{Peer: testPeer, Iface: Iface{Name: "eth1"}}); ok {
		t.Errorf("an address on an interface without global address")
	}
	a, err := proxyHandle(t, newTestProxy(), msg(t, dhcpv6.MessageTypeSolicit, pxe, 1, withIA("")), Inbound{Peer: testPeer, Iface: Iface{Name: "eth1"}})
	if a.Reply != nil || a.Result != ResultNoAddress || !errors.Is(err, ErrIgnored) {
		t.Errorf("no global address: %s, %v", a.Result, err)
	}
}

// TestProxyLeavesTheRestToTheSite: the proxy answers nothing that is the
// site server's (addresses, renewals, non-PXE clients, iPXE's Solicit).
func TestProxyLeavesTheRestToTheSite(t *testing.T) {
	p := newTestProxy()
	sid := dhcpv6.WithServerID(proxySID)
	in := Inbound{Peer: testPeer, Iface: testIface}
	for name, m := range map[string]*dhcpv6.Message{
		"plain solicit":        msg(t, dhcpv6.MessageTypeSolicit, plain, 2, withIA("")),
		"iPXE solicit":         msg(t, dhcpv6.MessageTypeSolicit, ipxe, 2, withIA("")),
		"HTTP boot solicit":    msg(t, dhcpv6.MessageTypeSolicit, http, 2, withIA("")),
		"request on 547":       msg(t, dhcpv6.MessageTypeRequest, pxe, 1, withIA("fd00:6b::100"), sid),
		"renew":                msg(t, dhcpv6.MessageTypeRenew, pxe, 1, withIA("fd00:6b::100"), sid),
		"release":              msg(t, dhcpv6.MessageTypeRelease, pxe, 1, withIA("fd00:6b::100"), sid),
		"plain info request":   msg(t, dhcpv6.MessageTypeInformationRequest, plain, 2),
		"PXE info request":     msg(t, dhcpv6.MessageTypeInformationRequest, pxe, 2),
		"iPXE request on 4011": msg(t, dhcpv6.MessageTypeRequest, ipxe, 2, sid),
	} {
		in := in
		if strings.HasSuffix(name, "4011") {
			in.Port = BINLPort
		}
		a, err := proxyHandle(t, p, m, in)
		if a.Reply != nil || !errors.Is(err, ErrIgnored) {
			t.Errorf("%s: answered (%s, %v)", name, a.Result, err)
		}
	}
	// A relayed Solicit is not answered.
	relayed, err := dhcpv6.EncapsulateRelay(msg(t, dhcpv6.MessageTypeSolicit, pxe, 1), dhcpv6.MessageTypeRelayForward, net.ParseIP("fd00:6b::fe"), testPeer.AsSlice())
	if err != nil {
		t.Fatal(err)
	}
	if a, err := p.Handle(context.Background(), relayed, in); a.Reply != nil || a.Result != ResultRelayed || !errors.Is(err, ErrIgnored) {
		t.Errorf("relayed: %s, %v", a.Result, err)
	}
}

// TestProxyStatelessIPXE: an Information-request from iPXE (router
// advertisements without the M flag) gets the script URL, without vendor
// class.
func TestProxyStatelessIPXE(t *testing.T) {
	m := msg(t, dhcpv6.MessageTypeInformationRequest, ipxe, 3)
	a, err := proxyHandle(t, newTestProxy(), m, Inbound{Peer: testPeer, Iface: testIface})
	if err != nil || a.Reply == nil {
		t.Fatalf("not answered: %s, %v", a.Result, err)
	}
	if a.Reply.Type() != dhcpv6.MessageTypeReply || a.Reply.TransactionID != m.TransactionID {
		t.Errorf("reply %s", a.Reply.Summary())
	}
	if u := a.Reply.Options.BootFileURL(); u != "http://[fd00:6b::1]:8080/boot.ipxe" {
		t.Errorf("boot URL %q", u)
	}
	if len(a.Reply.Options.Get(dhcpv6.OptionVendorClass)) != 0 || a.Reply.Options.OneIANA() != nil {
		t.Errorf("reply has a vendor class or an address: %s", a.Reply.Summary())
	}
}

// TestProxyPolicy: the policy sees the client as the DHCPv4 proxy's
// would (MAC from the EUI-64 link-local address, arch, vendor class,
// port, interface); a client it ignores or fails on gets no answer.
func TestProxyPolicy(t *testing.T) {
	var seen []proxydhcp.Client
	answer := func(b proxydhcp.Boot, err error) proxydhcp.Booter {
		return proxydhcp.BooterFunc(func(_ context.Context, c proxydhcp.Client) (proxydhcp.Boot, error) {
			seen = append(seen, c)
			return b, err
		})
	}
	sol := msg(t, dhcpv6.MessageTypeSolicit, pxe, 1, withIA(""))
	in := Inbound{Peer: testPeer, Iface: testIface, Port: 547}
	p := &Proxy{Booter: answer(proxydhcp.Boot{Filename: "shimx64.efi"}, nil), ServerID: proxySID}
	a, err := proxyHandle(t, p, sol, in)
	if err != nil {
		t.Fatal(err)
	}
	checkPXEAnswer(t, a, dhcpv6.MessageTypeAdvertise, sol.TransactionID, "tftp://[fd00:6b::1]/shimx64.efi")
	c := seen[0]
	if c.MAC.String() != "52:54:00:00:00:01" || c.Arch != iana.EFI_X86_64 || !c.HasArch || c.VendorClass != "PXEClient:Arch:00007:UNDI:003016" ||
		c.Port != 547 || c.Interface != "eth0" || net.IP(c.ServerIP).String() != "fd00:6b::1" {
		t.Errorf("policy saw %+v", c)
	}
	for name, b := range map[string]proxydhcp.Booter{
		"ignored":    answer(proxydhcp.Boot{}, fmt.Errorf("nothing for you: %w", proxydhcp.ErrIgnore)),
		"failed":     answer(proxydhcp.Boot{}, errors.New("database down")),
		"empty":      answer(proxydhcp.Boot{}, nil),
		"HTTPClient": answer(proxydhcp.Boot{Filename: "http://x/ipxe.efi", HTTPClient: true}, nil),
	} {
		p := &Proxy{Booter: b, ServerID: proxySID}
		if a, err := proxyHandle(t, p, sol, in); a.Reply != nil || err == nil {
			t.Errorf("%s: answered (%s)", name, a.Result)
		}
	}
}

// proxySeeds are the messages the proxy answers or sees most (EDK2's
// Solicit and boot-service Request, iPXE's Solicit and
// Information-request, a plain Solicit, a Renew).
func proxySeeds(t testing.TB) map[string][]byte {
	sid := dhcpv6.WithServerID(proxySID)
	return map[string][]byte{
		"solicit-pxe":        msg(t, dhcpv6.MessageTypeSolicit, pxe, 1, withIA("")).ToBytes(),
		"binl-request":       binlRequest(t, proxySID, dhcpv6.TransactionID{1, 2, 3}).ToBytes(),
		"binl-request-nosid": binlRequest(t, nil, dhcpv6.TransactionID{1, 2, 3}).ToBytes(),
		"solicit-ipxe":       msg(t, dhcpv6.MessageTypeSolicit, ipxe, 2, withIA("")).ToBytes(),
		"information-ipxe":   msg(t, dhcpv6.MessageTypeInformationRequest, ipxe, 2).ToBytes(),
		"solicit-plain":      msg(t, dhcpv6.MessageTypeSolicit, plain, 3, withIA("")).ToBytes(),
		"renew":              msg(t, dhcpv6.MessageTypeRenew, plain, 3, withIA("fd00:6b::100"), sid).ToBytes(),
	}
}

// TestWriteProxyFuzzSeeds keeps testdata/fuzz/FuzzDHCPv6Proxy in step with
// proxySeeds (PREBOOT_WRITE_SEEDS=1 rewrites it).
func TestWriteProxyFuzzSeeds(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzDHCPv6Proxy")
	for name, b := range proxySeeds(t) {
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
			t.Errorf("seed %s missing (PREBOOT_WRITE_SEEDS=1 go test -run TestWriteProxyFuzzSeeds ./dhcp6): %v", name, err)
		}
	}
}

// FuzzDHCPv6Proxy feeds messages through the proxy's handler as arrived
// on 547 and on 4011: no input may crash it, and what it answers is an
// Advertise or Reply to that transaction without any address, with the
// proxy's identifier and a bracketed URL on the server's address.
func FuzzDHCPv6Proxy(f *testing.F) {
	for _, b := range proxySeeds(f) {
		f.Add(b)
	}
	p := newTestProxy()
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := dhcpv6.FromBytes(b)
		if err != nil {
			return
		}
		for _, port := range []int{547, BINLPort} {
			a, _ := p.Handle(context.Background(), m, Inbound{Peer: testPeer, Iface: testIface, Port: port})
			if a.Reply == nil {
				continue
			}
			out, err := dhcpv6.FromBytes(a.Reply.ToBytes())
			if err != nil {
				t.Fatalf("reply does not parse: %v", err)
			}
			r := out.(*dhcpv6.Message)
			if r.Type() != dhcpv6.MessageTypeAdvertise && r.Type() != dhcpv6.MessageTypeReply {
				t.Fatalf("reply type %s", r.Type())
			}
			if r.TransactionID != m.(*dhcpv6.Message).TransactionID {
				t.Fatalf("transaction id changed")
			}
			if r.Options.OneIANA() != nil || len(r.Options.Get(dhcpv6.OptionIATA)) > 0 {
				t.Fatalf("the proxy handed out an address: %s", r.Summary())
			}
			if sid := r.Options.ServerID(); sid == nil || !sid.Equal(proxySID) {
				t.Fatalf("server id %v", sid)
			}
			if u := r.Options.BootFileURL(); !strings.Contains(u, "://[fd00:6b::1]") {
				t.Fatalf("boot URL %q", u)
			}
		}
	})
}

// TestMACCache: bounded, oldest out first.
func TestMACCache(t *testing.T) {
	c := newMACCache(2)
	mac := func(b byte) net.HardwareAddr { return net.HardwareAddr{2, 0, 0, 0, 0, b} }
	c.put("a", mac(1))
	c.put("b", mac(2))
	c.put("a", mac(3)) // update, no eviction
	c.put("c", mac(4)) // evicts a, the oldest
	if c.get("a") != nil || c.get("b").String() != mac(2).String() || c.get("c").String() != mac(4).String() {
		t.Errorf("cache: a=%v b=%v c=%v", c.get("a"), c.get("b"), c.get("c"))
	}
	if len(c.m) != 2 {
		t.Errorf("%d entries", len(c.m))
	}
}
