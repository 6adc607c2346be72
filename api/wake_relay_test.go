package api_test

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/preboot/preboot/api"
	"github.com/preboot/preboot/store"
	"github.com/preboot/preboot/store/sqlstore"
	"github.com/preboot/preboot/tlspin"
	"github.com/preboot/preboot/wake"
)

// A server wakes a device of a subnet it has no interface on through a
// relay: another server's admin API (TLS pinned, admin token), which
// sends the packet from its own interfaces (loopback only in this test)
// without knowing the device.
func TestWakeThroughRelay(t *testing.T) {
	ctx := context.Background()
	open := func(name string) store.Store {
		st, err := sqlstore.OpenSQLite(ctx, filepath.Join(t.TempDir(), name))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}
	// The packet's listener: loopback broadcasts to its port.
	l, err := net.ListenUDP("udp4", &net.UDPAddr{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.LocalAddr().(*net.UDPAddr).Port

	relaySt := open("relay.db")
	tok, hash, err := api.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := relaySt.CreateToken(ctx, store.Token{Name: "main-server", Hash: hash, Prefix: tok[:8]}); err != nil {
		t.Fatal(err)
	}
	relay := httptest.NewTLSServer(api.New(api.Options{Store: relaySt, Auth: &api.Auth{Store: relaySt},
		Waker: &wake.Service{Store: relaySt, Sender: &wake.Sender{Port: port, Interfaces: []string{"lo"}}}}))
	defer relay.Close()
	pin, err := tlspin.Config(tlspin.Fingerprint(relay.Certificate().Raw))
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: pin}}

	mainSt := open("main.db")
	const mac = "52:54:00:77:02:01"
	// The device's subnet must be on no interface of this machine (else
	// the main server would send on it itself).
	subnet := remoteSubnet(t)
	if _, _, err := mainSt.SeeDevice(ctx, store.Sighting{MAC: mac, IP: subnet.Addr().Next().String()}); err != nil {
		t.Fatal(err)
	}
	svc := func(token string) *wake.Service {
		return &wake.Service{Store: mainSt, Sender: &wake.Sender{Relays: []wake.Relay{
			{Subnet: subnet, URL: relay.URL, Token: token, Client: client}}}}
	}
	devs, err := svc(tok).Devices(ctx, []string{mac})
	if err != nil {
		t.Fatal(err)
	}
	res, err := svc(tok).Wake(ctx, devs, "test", wake.CauseAdmin)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 1 || !res[0].Sent || res[0].Targets[0].How != wake.HowRelay || res[0].Targets[0].Relay != relay.URL ||
		!strings.Contains(res[0].Targets[0].Why, "it sent it to 127.255.255.255:") {
		t.Fatalf("relayed wake: %+v", res)
	}
	buf := make([]byte, 200)
	n, _, err := l.ReadFromUDP(buf)
	if err != nil {
		t.Fatal(err)
	}
	hw, _ := net.ParseMAC(mac)
	want := append(bytes.Repeat([]byte{0xff}, 6), bytes.Repeat(hw, 16)...)
	if !bytes.Equal(buf[:n], want) {
		t.Fatalf("packet %x, want %x", buf[:n], want)
	}
	if evs, _ := relaySt.Events(ctx, store.EventFilter{MAC: mac, Kind: store.EventWake}); len(evs) != 1 || evs[0].Actor != "token:main-server" {
		t.Fatalf("relay's wake events: %+v", evs)
	}

	// A wrong token: the relay refuses, nothing is sent, the answer says so.
	res, err = svc("wrong").Wake(ctx, devs, "test", wake.CauseAdmin)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 1 || res[0].Sent || !strings.Contains(res[0].Error, "401") {
		t.Fatalf("wake with a wrong relay token: %+v", res)
	}
}

// remoteSubnet returns a documentation or private subnet that overlaps no
// address of this machine's interfaces.
func remoteSubnet(t *testing.T) netip.Prefix {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"198.51.100.0/24", "203.0.113.0/24", "10.254.253.0/24", "172.31.254.0/24"} {
		p := netip.MustParsePrefix(c)
		free := true
		for _, a := range addrs {
			n, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, _ := netip.AddrFromSlice(n.IP.To4())
			ones, _ := n.Mask.Size()
			if ip.IsValid() && netip.PrefixFrom(ip, ones).Masked().Overlaps(p) {
				free = false
			}
		}
		if free {
			return p
		}
	}
	t.Fatal("no subnet free of this machine's addresses")
	return netip.Prefix{}
}
