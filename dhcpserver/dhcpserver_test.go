package dhcpserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/preboot/preboot/proxydhcp"
	"github.com/preboot/preboot/store"
	"github.com/preboot/preboot/store/pgtest"
	"github.com/preboot/preboot/store/sqlstore"
)

var pg pgtest.Shared

func TestMain(m *testing.M) { os.Exit(pg.Main(m)) }

const testIfIndex = 7

var (
	testServerIP = netip.MustParseAddr("10.50.0.1")
	testRange    = store.LeaseRange{Start: netip.MustParseAddr("10.50.0.100"), End: netip.MustParseAddr("10.50.0.103")}
)

// testBooter answers as Preboot's policy does for a device with nothing
// special: iPXE for firmware, the script URL for iPXE.
type testBooter struct{}

func (testBooter) BootFor(_ context.Context, c proxydhcp.Client) (proxydhcp.Boot, error) {
	if c.MAC.String() == "52:54:00:00:00:99" {
		return proxydhcp.Boot{}, fmt.Errorf("local disk: %w", proxydhcp.ErrIgnore)
	}
	if c.IsIPXE() {
		return proxydhcp.Boot{Filename: "http://" + c.ServerIP.String() + ":8080/boot.ipxe"}, nil
	}
	if c.Arch == iana.EFI_X86_64 {
		return proxydhcp.Boot{Filename: "snponly.efi"}, nil
	}
	return proxydhcp.Boot{Filename: "undionly.kpxe"}, nil
}

func openSQLite(t testing.TB, path string) *sqlstore.Store {
	t.Helper()
	st, err := sqlstore.OpenSQLite(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func newTestServer(t testing.TB, st *sqlstore.Store) *Server {
	s := &Server{
		Leases:  st,
		Events:  st,
		Ranges:  []Range{{LeaseRange: testRange}},
		Booter:  testBooter{},
		Routers: []netip.Addr{netip.MustParseAddr("10.50.0.254")},
		DNS:     []netip.Addr{netip.MustParseAddr("10.50.0.53")},
		Logger:  slog.New(slog.NewTextHandler(io.Discard, nil)),
		Metrics: NewMetrics(nil),
	}
	s.interfaces = func(index int) (ifaceInfo, bool) {
		switch index {
		case testIfIndex:
			return ifaceInfo{name: "boot0", nets: []netip.Prefix{netip.PrefixFrom(testServerIP, 24)}}, true
		case testIfIndex + 1:
			return ifaceInfo{name: "site0", nets: []netip.Prefix{netip.MustParsePrefix("192.168.7.1/24")}}, true
		case 1:
			return ifaceInfo{name: "lo", loopback: true, nets: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/8")}}, true
		}
		return ifaceInfo{}, false
	}
	return s
}

type client struct {
	mac      net.HardwareAddr
	clientID []byte
	pxe      string // option 60, "" for a plain client
	arch     iana.Arch
}

func (c client) msg(t testing.TB, mt dhcpv4.MessageType, mods ...dhcpv4.Modifier) []byte {
	t.Helper()
	mods = append([]dhcpv4.Modifier{dhcpv4.WithMessageType(mt), dhcpv4.WithBroadcast(true)}, mods...)
	if c.clientID != nil {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptClientIdentifier(c.clientID)))
	}
	if c.pxe != "" {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptClassIdentifier(c.pxe)),
			dhcpv4.WithOption(dhcpv4.OptClientArch(c.arch)))
	}
	p, err := dhcpv4.New(append(mods, dhcpv4.WithHwAddr(c.mac))...)
	if err != nil {
		t.Fatal(err)
	}
	return p.ToBytes()
}

func ask(t testing.TB, s *Server, b []byte, ifIndex int) (*dhcpv4.DHCPv4, *outbound, string) {
	t.Helper()
	out, result, _ := s.respond(context.Background(), inbound{data: b, ifIndex: ifIndex})
	if out == nil {
		return nil, nil, result
	}
	// What is sent must parse as what was built.
	p, err := dhcpv4.FromBytes(out.reply.ToBytes())
	if err != nil {
		t.Fatalf("reply does not parse: %v", err)
	}
	return p, out, result
}

// dora runs DISCOVER, REQUEST and returns the acknowledged address.
func dora(t testing.TB, s *Server, c client) netip.Addr {
	t.Helper()
	offer, _, res := ask(t, s, c.msg(t, dhcpv4.MessageTypeDiscover), testIfIndex)
	if offer == nil || offer.MessageType() != dhcpv4.MessageTypeOffer {
		t.Fatalf("%s: no offer (%s)", c.mac, res)
	}
	ack, _, res := ask(t, s, c.msg(t, dhcpv4.MessageTypeRequest,
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(offer.YourIPAddr)),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(testServerIP.AsSlice()))), testIfIndex)
	if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck {
		t.Fatalf("%s: no ACK (%s)", c.mac, res)
	}
	if !ack.YourIPAddr.Equal(offer.YourIPAddr) {
		t.Fatalf("ACK %s for offer %s", ack.YourIPAddr, offer.YourIPAddr)
	}
	a, _ := netip.AddrFromSlice(ack.YourIPAddr.To4())
	return a
}

func mac(i byte) net.HardwareAddr { return net.HardwareAddr{0x52, 0x54, 0, 0, 0, i} }

func TestPlainClientDORA(t *testing.T) {
	st := openSQLite(t, filepath.Join(t.TempDir(), "p.db"))
	s := newTestServer(t, st)
	c := client{mac: mac(1)}
	offer, out, _ := ask(t, s, c.msg(t, dhcpv4.MessageTypeDiscover), testIfIndex)
	if offer == nil || offer.YourIPAddr.String() != "10.50.0.100" {
		t.Fatalf("offer %v", offer)
	}
	if out.dst.String() != "255.255.255.255:68" || out.ifIndex != testIfIndex {
		t.Fatalf("offer sent to %v via %d", out.dst, out.ifIndex)
	}
	if offer.SubnetMask().String() != "ffffff00" || offer.Router()[0].String() != "10.50.0.254" || offer.DNS()[0].String() != "10.50.0.53" ||
		offer.ServerIdentifier().String() != "10.50.0.1" || offer.IPAddressLeaseTime(0) != time.Hour || offer.BroadcastAddress().String() != "10.50.0.255" {
		t.Fatalf("offer options %s", offer.Summary())
	}
	if offer.BootFileName != "" || offer.ClassIdentifier() != "" {
		t.Fatalf("a plain client was given boot options: %s", offer.Summary())
	}
	if a := dora(t, s, c); a.String() != "10.50.0.100" {
		t.Fatalf("bound %s", a)
	}
	l, err := st.LeaseByClient(context.Background(), "mac:"+c.mac.String())
	if err != nil || l.State != store.LeaseBound || l.IP.String() != "10.50.0.100" {
		t.Fatalf("stored lease %+v, %v", l, err)
	}
	// RENEWING: unicast REQUEST with ciaddr, answered to ciaddr.
	ack, out, _ := ask(t, s, c.msg(t, dhcpv4.MessageTypeRequest, dhcpv4.WithClientIP(net.ParseIP("10.50.0.100")), dhcpv4.WithBroadcast(false)), testIfIndex)
	if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck || out.dst.String() != "10.50.0.100:68" {
		t.Fatalf("renew: %v to %v", ack, out)
	}
	// INFORM: configuration without an address, to ciaddr.
	inf, out, _ := ask(t, s, client{mac: mac(9)}.msg(t, dhcpv4.MessageTypeInform, dhcpv4.WithClientIP(net.ParseIP("10.50.0.7"))), testIfIndex)
	if inf == nil || inf.MessageType() != dhcpv4.MessageTypeAck || !inf.YourIPAddr.IsUnspecified() || inf.Options.Has(dhcpv4.OptionIPAddressLeaseTime) ||
		out.dst.String() != "10.50.0.7:68" || inf.Router()[0].String() != "10.50.0.254" {
		t.Fatalf("inform: %v to %v", inf, out)
	}
}

func TestPXEClientsGetBootOptions(t *testing.T) {
	st := openSQLite(t, filepath.Join(t.TempDir(), "p.db"))
	s := newTestServer(t, st)
	for _, tc := range []struct {
		c    client
		mods []dhcpv4.Modifier
		file string
	}{
		{c: client{mac: mac(1), pxe: "PXEClient:Arch:00000:UNDI:002001", arch: iana.INTEL_X86PC}, file: "undionly.kpxe"},
		{c: client{mac: mac(2), pxe: "PXEClient:Arch:00007:UNDI:003016", arch: iana.EFI_X86_64}, file: "snponly.efi"},
		{c: client{mac: mac(3), pxe: "PXEClient:Arch:00007:UNDI:003016", arch: iana.EFI_X86_64},
			mods: []dhcpv4.Modifier{dhcpv4.WithUserClass("iPXE", false)}, file: "http://10.50.0.1:8080/boot.ipxe"},
	} {
		b := tc.c.msg(t, dhcpv4.MessageTypeDiscover, tc.mods...)
		offer, _, res := ask(t, s, b, testIfIndex)
		if offer == nil {
			t.Fatalf("%s: %s", tc.c.mac, res)
		}
		if offer.YourIPAddr.IsUnspecified() || offer.BootFileNameOption() != tc.file || offer.ServerIPAddr.String() != "10.50.0.1" ||
			offer.ClassIdentifier() != "PXEClient" || offer.ServerHostName != "10.50.0.1" {
			t.Fatalf("%s: offer %s", tc.c.mac, offer.Summary())
		}
	}
	// A device the policy sends to its disk still gets its address, but
	// no boot file: it must not network-boot.
	offer, _, _ := ask(t, s, client{mac: net.HardwareAddr{0x52, 0x54, 0, 0, 0, 0x99}, pxe: "PXEClient:Arch:00000:UNDI:002001"}.msg(t, dhcpv4.MessageTypeDiscover), testIfIndex)
	if offer == nil || offer.YourIPAddr.IsUnspecified() || offer.BootFileNameOption() != "" || offer.BootFileName != "" {
		t.Fatalf("ignored device: %v", offer)
	}
	// A PXE client on an interface without a range gets proxyDHCP's offer
	// when asked for, nothing otherwise; plain clients never.
	pxe := client{mac: mac(4), pxe: "PXEClient:Arch:00000:UNDI:002001"}
	if p, _, res := ask(t, s, pxe.msg(t, dhcpv4.MessageTypeDiscover), testIfIndex+1); p != nil || res != ResultNoRange {
		t.Fatalf("answered on a network without range: %v %s", p, res)
	}
	s.ProxyElsewhere = true
	p, _, res := ask(t, s, pxe.msg(t, dhcpv4.MessageTypeDiscover), testIfIndex+1)
	if p == nil || res != ResultProxyOffered || !p.YourIPAddr.IsUnspecified() || p.BootFileNameOption() != "undionly.kpxe" || p.ServerIPAddr.String() != "192.168.7.1" {
		t.Fatalf("proxy answer %v %s", p, res)
	}
	if p, _, _ := ask(t, s, client{mac: mac(5)}.msg(t, dhcpv4.MessageTypeDiscover), testIfIndex+1); p != nil {
		t.Fatalf("plain client answered on a network without range")
	}
	s.ProxySubnets = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	if p, _, _ := ask(t, s, pxe.msg(t, dhcpv4.MessageTypeDiscover), testIfIndex+1); p != nil {
		t.Fatalf("proxy answer outside proxy subnets")
	}
	// Loopback and unknown interfaces are never served.
	for _, idx := range []int{1, 99} {
		if p, _, res := ask(t, s, pxe.msg(t, dhcpv4.MessageTypeDiscover), idx); p != nil || res != ResultIgnoredIface {
			t.Fatalf("interface %d: %v %s", idx, p, res)
		}
	}
}

func TestRequestStates(t *testing.T) {
	st := openSQLite(t, filepath.Join(t.TempDir(), "p.db"))
	s := newTestServer(t, st)
	a, b := client{mac: mac(1)}, client{mac: mac(2)}
	ipA := dora(t, s, a)
	// SELECTING another server's offer: silence, and no lease.
	p, _, res := ask(t, s, b.msg(t, dhcpv4.MessageTypeRequest, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP("10.50.0.101"))),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.ParseIP("10.50.0.2")))), testIfIndex)
	if p != nil || res != ResultNotForUs {
		t.Fatalf("request for another server: %v %s", p, res)
	}
	// INIT-REBOOT onto a's address: NAK, broadcast.
	p, out, res := ask(t, s, b.msg(t, dhcpv4.MessageTypeRequest, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ipA.AsSlice()))), testIfIndex)
	if p == nil || p.MessageType() != dhcpv4.MessageTypeNak || out.dst.String() != "255.255.255.255:68" || !p.YourIPAddr.IsUnspecified() {
		t.Fatalf("request for a taken address: %v %s", p, res)
	}
	// INIT-REBOOT with an address of another network: NAK.
	p, _, _ = ask(t, s, b.msg(t, dhcpv4.MessageTypeRequest, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP("192.168.1.5")))), testIfIndex)
	if p == nil || p.MessageType() != dhcpv4.MessageTypeNak {
		t.Fatalf("request from another network: %v", p)
	}
	// INIT-REBOOT with a free address in the range (a lease the server
	// lost track of): authoritative, ACKed.
	p, _, _ = ask(t, s, b.msg(t, dhcpv4.MessageTypeRequest, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP("10.50.0.103")))), testIfIndex)
	if p == nil || p.MessageType() != dhcpv4.MessageTypeAck || p.YourIPAddr.String() != "10.50.0.103" {
		t.Fatalf("init-reboot: %v", p)
	}
	// RELEASE: a's address is free; a gets it back.
	if _, _, res := ask(t, s, a.msg(t, dhcpv4.MessageTypeRelease, dhcpv4.WithClientIP(ipA.AsSlice())), testIfIndex); res != ResultReleased {
		t.Fatalf("release: %s", res)
	}
	if _, _, res := ask(t, s, b.msg(t, dhcpv4.MessageTypeRelease, dhcpv4.WithClientIP(ipA.AsSlice())), testIfIndex); res != ResultUnknownLease {
		t.Fatalf("release of someone else's lease: %s", res)
	}
	if got := dora(t, s, a); got != ipA {
		t.Fatalf("after release a got %s, want %s back", got, ipA)
	}
	// Malformed and unanswered messages.
	for name, b := range map[string][]byte{
		"short":   make([]byte, 100),
		"reply":   func() []byte { x := a.msg(t, dhcpv4.MessageTypeDiscover); x[0] = 2; return x }(),
		"bootp":   func() []byte { p, _ := dhcpv4.New(dhcpv4.WithHwAddr(mac(3))); return p.ToBytes() }(),
		"no-addr": a.msg(t, dhcpv4.MessageTypeRequest),
		"relayed": a.msg(t, dhcpv4.MessageTypeDiscover, dhcpv4.WithGatewayIP(net.ParseIP("10.60.0.1"))),
	} {
		if p, _, res := ask(t, s, b, testIfIndex); p != nil {
			t.Fatalf("%s answered (%s)", name, res)
		}
	}
}

func TestDeclineAndExhaustion(t *testing.T) {
	ctx := context.Background()
	st := openSQLite(t, filepath.Join(t.TempDir(), "p.db"))
	s := newTestServer(t, st)
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	s.Now = func() time.Time { return now }
	a := client{mac: mac(1)}
	ipA := dora(t, s, a)
	// a finds its address in use (ARP answered): DECLINE.
	_, _, res := ask(t, s, a.msg(t, dhcpv4.MessageTypeDecline, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ipA.AsSlice())),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(testServerIP.AsSlice()))), testIfIndex)
	if res != ResultDeclined {
		t.Fatalf("decline: %s", res)
	}
	if got := dora(t, s, a); got == ipA {
		t.Fatalf("a was given the address it declined again")
	}
	evs, err := st.Events(ctx, store.EventFilter{MAC: a.mac.String(), Kind: store.EventDHCP})
	if err != nil || len(evs) != 1 {
		t.Fatalf("decline events %v %v", evs, err)
	}
	// Two more clients fill the range (with the quarantined address).
	dora(t, s, client{mac: mac(2)})
	dora(t, s, client{mac: mac(3)})
	p, _, res := ask(t, s, client{mac: mac(4)}.msg(t, dhcpv4.MessageTypeDiscover), testIfIndex)
	if p != nil || res != ResultExhausted {
		t.Fatalf("exhausted range answered: %v %s", p, res)
	}
	evs, _ = st.Events(ctx, store.EventFilter{MAC: mac(4).String(), Kind: store.EventDHCP})
	if len(evs) != 1 {
		t.Fatalf("exhaustion events %v", evs)
	}
	// After the quarantine the declined address is handed out again.
	now = now.Add(DefaultDeclineHold + time.Second)
	if got := dora(t, s, client{mac: mac(4)}); got != ipA {
		t.Fatalf("after the quarantine: %s, want %s", got, ipA)
	}
}

func TestDuplicateClientID(t *testing.T) {
	st := openSQLite(t, filepath.Join(t.TempDir(), "p.db"))
	s := newTestServer(t, st)
	id := []byte{0xff, 1, 2, 3, 4, 5, 6, 7, 8}
	a, b := client{mac: mac(1), clientID: id}, client{mac: mac(2), clientID: id}
	ipA, ipB := dora(t, s, a), dora(t, s, b)
	if ipA == ipB {
		t.Fatalf("two machines sharing a client id got one address %s", ipA)
	}
	if s.Metrics.Requests(ResultDuplicateID) == 0 {
		t.Fatal("duplicate client id not counted")
	}
	// Each keeps its own lease on renewal.
	for _, c := range []struct {
		c  client
		ip netip.Addr
	}{{a, ipA}, {b, ipB}} {
		p, _, _ := ask(t, s, c.c.msg(t, dhcpv4.MessageTypeRequest, dhcpv4.WithClientIP(c.ip.AsSlice())), testIfIndex)
		if p == nil || p.MessageType() != dhcpv4.MessageTypeAck {
			t.Fatalf("%s renewing %s: %v", c.c.mac, c.ip, p)
		}
	}
}

// TestRestartKeepsLeases reopens the database as a restarted server would.
func TestRestartKeepsLeases(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.db")
	st, err := sqlstore.OpenSQLite(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	ipA := dora(t, newTestServer(t, st), client{mac: mac(1)})
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	s := newTestServer(t, openSQLite(t, path))
	if got := dora(t, s, client{mac: mac(2)}); got == ipA {
		t.Fatalf("after a restart %s was handed out twice", got)
	}
	if got := dora(t, s, client{mac: mac(1)}); got != ipA {
		t.Fatalf("after a restart a got %s, want its %s", got, ipA)
	}
}

// TestTwoServersSharePostgres runs two servers, each with its own
// connection pool to one PostgreSQL database, against a crowd of clients
// racing for a range smaller than the crowd: no address is acknowledged
// to two clients.
func TestTwoServersSharePostgres(t *testing.T) {
	ctx := context.Background()
	dsn := pg.Database(t)
	var servers [2]*Server
	for i := range servers {
		st, err := sqlstore.OpenPostgres(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		servers[i] = newTestServer(t, nil)
		servers[i].Leases, servers[i].Events, servers[i].Name = st, st, fmt.Sprint("server-", i)
		servers[i].Ranges = []Range{{LeaseRange: store.LeaseRange{Start: netip.MustParseAddr("10.50.0.10"), End: netip.MustParseAddr("10.50.0.29")}}}
	}
	var (
		mu    sync.Mutex
		owner = map[string]string{}
		wg    sync.WaitGroup
		errs  = make(chan error, 64)
	)
	for i := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := client{mac: mac(byte(i))}
			// Each client hears both servers and picks one offer, as a
			// real client would; then asks that server.
			var offers []*dhcpv4.DHCPv4
			for _, s := range servers {
				if p, _, _ := ask(t, s, c.msg(t, dhcpv4.MessageTypeDiscover), testIfIndex); p != nil {
					offers = append(offers, p)
				}
			}
			if len(offers) == 0 {
				return // exhausted
			}
			o := offers[i%len(offers)]
			s := servers[i%2]
			ack, _, _ := ask(t, s, c.msg(t, dhcpv4.MessageTypeRequest, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(o.YourIPAddr)),
				dhcpv4.WithOption(dhcpv4.OptServerIdentifier(testServerIP.AsSlice()))), testIfIndex)
			if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck {
				return // NAK: the other server's offer, or lost the race
			}
			mu.Lock()
			defer mu.Unlock()
			if o, dup := owner[ack.YourIPAddr.String()]; dup {
				errs <- fmt.Errorf("%s acknowledged to %s and %s", ack.YourIPAddr, o, c.mac)
			}
			owner[ack.YourIPAddr.String()] = c.mac.String()
		}()
	}
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	if err := errors.Join(all...); err != nil {
		t.Fatal(err)
	}
	if len(owner) == 0 || len(owner) > 20 {
		t.Fatalf("%d addresses bound from a range of 20", len(owner))
	}
	t.Logf("%d clients bound an address of 20 across two servers", len(owner))
	// The database agrees: 20 distinct addresses at most, one client each.
	list, err := servers[0].Leases.LeaseList(ctx, store.LeaseFilter{})
	if err != nil {
		t.Fatal(err)
	}
	bound := 0
	for _, l := range list {
		if l.State == store.LeaseBound {
			bound++
			if owner[l.IP.String()] != l.MAC {
				t.Fatalf("lease %+v, acknowledged to %s", l, owner[l.IP.String()])
			}
		}
	}
	if bound != len(owner) {
		t.Fatalf("%d bound leases stored, %d acknowledged", bound, len(owner))
	}
}

// TestRelayed serves a network behind a DHCP relay (giaddr): answers go
// to the relay's server port, with the relay's agent information.
func TestRelayed(t *testing.T) {
	st := openSQLite(t, filepath.Join(t.TempDir(), "p.db"))
	s := newTestServer(t, st)
	remote := store.LeaseRange{Start: netip.MustParseAddr("10.60.0.10"), End: netip.MustParseAddr("10.60.0.20")}
	s.Ranges = append(s.Ranges, Range{LeaseRange: remote, Subnet: netip.MustParsePrefix("10.60.0.0/23")})
	c := client{mac: mac(1), pxe: "PXEClient:Arch:00000:UNDI:002001"}
	agent := dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionRelayAgentInformation, []byte{1, 3, 'p', '1', '7'}))
	relay := dhcpv4.WithGatewayIP(net.ParseIP("10.60.1.1"))
	out, res, err := s.respond(context.Background(), inbound{data: c.msg(t, dhcpv4.MessageTypeDiscover, relay, agent), ifIndex: testIfIndex, dst: testServerIP.AsSlice()})
	if out == nil {
		t.Fatalf("relayed discover: %s %v", res, err)
	}
	o := out.reply
	if o.YourIPAddr.String() != "10.60.0.10" || out.dst.String() != "10.60.1.1:67" || o.GatewayIPAddr.String() != "10.60.1.1" ||
		o.SubnetMask().String() != "fffffe00" || o.ServerIdentifier().String() != "10.50.0.1" || o.BootFileNameOption() != "undionly.kpxe" ||
		string(o.Options.Get(dhcpv4.OptionRelayAgentInformation)) != "\x01\x03p17" {
		t.Fatalf("relayed offer to %v: %s", out.dst, o.Summary())
	}
	out, res, _ = s.respond(context.Background(), inbound{data: c.msg(t, dhcpv4.MessageTypeDiscover, dhcpv4.WithGatewayIP(net.ParseIP("10.70.0.1"))), ifIndex: testIfIndex})
	if out != nil || res != ResultRelayed {
		t.Fatalf("relay outside every subnet: %v %s", out, res)
	}
}
