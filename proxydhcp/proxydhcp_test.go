package proxydhcp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/prometheus/client_golang/prometheus"
)

// fakeBooter records the clients it saw and answers by architecture, the
// way the policy package does.
type fakeBooter struct {
	mu     sync.Mutex
	seen   []Client
	ignore map[string]bool // MAC string → ErrIgnore
}

func (b *fakeBooter) BootFor(_ context.Context, c Client) (Boot, error) {
	b.mu.Lock()
	b.seen = append(b.seen, c)
	ign := b.ignore[c.MAC.String()]
	b.mu.Unlock()
	if ign {
		return Boot{}, fmt.Errorf("device %s boots locally: %w", c.MAC, ErrIgnore)
	}
	return expectedBoot(c), nil
}

func expectedBoot(c Client) Boot {
	switch {
	case c.IsIPXE():
		return Boot{Filename: "http://" + c.ServerIP.String() + "/boot.ipxe?mac=" + c.MAC.String()}
	case c.IsHTTPClient():
		return Boot{Filename: "http://" + c.ServerIP.String() + "/ipxe.efi", HTTPClient: true}
	case c.Arch == iana.EFI_ARM64:
		return Boot{Filename: "arm64/snponly.efi"}
	case c.Arch == iana.EFI_X86_64 || c.Arch == iana.EFI_BC:
		return Boot{Filename: "snponly.efi"}
	default:
		return Boot{Filename: "undionly.kpxe"}
	}
}

func (b *fakeBooter) clients() []Client {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]Client(nil), b.seen...)
}

func quietLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func TestParseRequestClients(t *testing.T) {
	mac := net.HardwareAddr{0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc}
	for _, k := range pxeKinds {
		t.Run(k.name, func(t *testing.T) {
			pkt, c, err := ParseRequest(pxeRequest(k, mac, 7, dhcpv4.MessageTypeDiscover).ToBytes())
			if err != nil {
				t.Fatalf("ParseRequest: %v", err)
			}
			if pkt.MessageType() != dhcpv4.MessageTypeDiscover {
				t.Errorf("type %s", pkt.MessageType())
			}
			if c.MAC.String() != mac.String() || c.Arch != k.arch || c.HasArch != k.hasArch || c.VendorClass != k.vendorClass || c.UserClass != k.userClass {
				t.Errorf("client %+v, want mac %s arch %d vendor %q user %q", c, mac, k.arch, k.vendorClass, k.userClass)
			}
			if k.uuid != (c.UUID != nil) || (k.uuid && !bytes.Equal(c.UUID, testUUID)) {
				t.Errorf("uuid %x", c.UUID)
			}
			if c.IsIPXE() != k.ipxe || c.IsHTTPClient() != strings.HasPrefix(k.vendorClass, "HTTPClient") {
				t.Errorf("IsIPXE %v IsHTTPClient %v", c.IsIPXE(), c.IsHTTPClient())
			}
			if c.RelayIP != nil {
				t.Errorf("RelayIP %v", c.RelayIP)
			}
		})
	}
}

func TestParseRequestArchFromVendorClass(t *testing.T) {
	k := clientKind{vendorClass: "PXEClient:Arch:00007:UNDI:003000"} // no option 93
	_, c, err := ParseRequest(pxeRequest(k, net.HardwareAddr{2, 0, 0, 0, 0, 1}, 1, dhcpv4.MessageTypeDiscover).ToBytes())
	if err != nil {
		t.Fatal(err)
	}
	if !c.HasArch || c.Arch != iana.EFI_X86_64 {
		t.Fatalf("arch %d has %v, want 7 from option 60", c.Arch, c.HasArch)
	}
	k = clientKind{vendorClass: "PXEClient"}
	_, c, err = ParseRequest(pxeRequest(k, net.HardwareAddr{2, 0, 0, 0, 0, 1}, 1, dhcpv4.MessageTypeDiscover).ToBytes())
	if err != nil {
		t.Fatal(err)
	}
	if c.HasArch || c.Arch != iana.INTEL_X86PC {
		t.Fatalf("arch %d has %v, want 0/false", c.Arch, c.HasArch)
	}
}

func TestParseRequestRejects(t *testing.T) {
	mac := net.HardwareAddr{0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc}
	good := pxeRequest(pxeKinds[1], mac, 9, dhcpv4.MessageTypeDiscover).ToBytes()
	mutate := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	withPkt := func(f func(p *dhcpv4.DHCPv4)) []byte {
		p := pxeRequest(pxeKinds[1], mac, 9, dhcpv4.MessageTypeDiscover)
		f(p)
		return p.ToBytes()
	}
	cases := []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrMalformed},
		{"truncated header", good[:100], ErrMalformed},
		{"header only, no cookie", good[:236], ErrMalformed},
		{"oversized", append(append([]byte(nil), good...), make([]byte, 2000)...), ErrMalformed},
		{"bad cookie", mutate(func(b []byte) []byte { b[236] = 0; return b }), ErrMalformed},
		{"truncated option", mutate(func(b []byte) []byte { return append(b[:240], 60, 40, 'P', 'X') }), ErrMalformed},
		{"no end option", mutate(func(b []byte) []byte { return append(b[:240], 53, 1, 1) }), ErrMalformed},
		{"htype token ring", mutate(func(b []byte) []byte { b[1] = 6; return b }), ErrMalformed},
		{"hlen 16", mutate(func(b []byte) []byte { b[2] = 16; return b }), ErrMalformed},
		{"bootreply", mutate(func(b []byte) []byte { b[0] = 2; return b }), ErrMessageType},
		{"bootp no option 53", mutate(func(b []byte) []byte {
			return append(b[:240], append(append([]byte{60, 9}, "PXEClient"...), 255)...)
		}), ErrMessageType},
		{"option 53 too long", mutate(func(b []byte) []byte {
			return append(b[:240], append(append([]byte{53, 2, 1, 1, 60, 9}, "PXEClient"...), 255)...)
		}), ErrMalformed},
		{"release", withPkt(func(p *dhcpv4.DHCPv4) { p.UpdateOption(dhcpv4.OptMessageType(dhcpv4.MessageTypeRelease)) }), ErrMessageType},
		{"inform", withPkt(func(p *dhcpv4.DHCPv4) { p.UpdateOption(dhcpv4.OptMessageType(dhcpv4.MessageTypeInform)) }), ErrMessageType},
		{"bad option 93", withPkt(func(p *dhcpv4.DHCPv4) {
			p.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionClientSystemArchitectureType, []byte{7}))
		}), ErrMalformed},
		{"dhclient", dhclientDiscover(mac).ToBytes(), ErrNotPXE},
		{"udhcpc", udhcpcDiscover(mac).ToBytes(), ErrNotPXE},
		{"lowercase pxeclient", withPkt(func(p *dhcpv4.DHCPv4) { p.UpdateOption(dhcpv4.OptClassIdentifier("pxeclient")) }), ErrNotPXE},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := ParseRequest(tc.b)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestParseRequestUnknownOptionsAccepted(t *testing.T) {
	p := pxeRequest(pxeKinds[0], net.HardwareAddr{2, 0, 0, 0, 0, 2}, 3, dhcpv4.MessageTypeDiscover)
	p.UpdateOption(dhcpv4.OptGeneric(dhcpv4.GenericOptionCode(224), []byte("private")))
	p.UpdateOption(dhcpv4.OptGeneric(dhcpv4.GenericOptionCode(254), bytes.Repeat([]byte{0xff}, 255)))
	if _, _, err := ParseRequest(p.ToBytes()); err != nil {
		t.Fatalf("unknown options must not make a request malformed: %v", err)
	}
}

// checkReply asserts every field of a proxy reply.
func checkReply(t *testing.T, reply *dhcpv4.DHCPv4, req *dhcpv4.DHCPv4, k clientKind, serverIP net.IP, wantType dhcpv4.MessageType, wantFile string) {
	t.Helper()
	if reply.OpCode != dhcpv4.OpcodeBootReply {
		t.Errorf("op %v", reply.OpCode)
	}
	if reply.TransactionID != req.TransactionID {
		t.Errorf("xid %v, want %v", reply.TransactionID, req.TransactionID)
	}
	if reply.ClientHWAddr.String() != req.ClientHWAddr.String() {
		t.Errorf("chaddr %v, want %v", reply.ClientHWAddr, req.ClientHWAddr)
	}
	if reply.Flags != req.Flags {
		t.Errorf("flags %#x, want %#x", reply.Flags, req.Flags)
	}
	if !reply.YourIPAddr.Equal(net.IPv4zero) {
		t.Errorf("yiaddr %v: a proxy never hands out addresses", reply.YourIPAddr)
	}
	if !reply.ServerIPAddr.Equal(serverIP) {
		t.Errorf("siaddr %v, want %v", reply.ServerIPAddr, serverIP)
	}
	if got := reply.ServerIdentifier(); !got.Equal(serverIP) {
		t.Errorf("option 54 %v, want %v", got, serverIP)
	}
	if reply.ServerHostName != serverIP.String() {
		t.Errorf("sname %q", reply.ServerHostName)
	}
	if reply.MessageType() != wantType {
		t.Errorf("type %s, want %s", reply.MessageType(), wantType)
	}
	http := strings.HasPrefix(k.vendorClass, "HTTPClient")
	wantClass := "PXEClient"
	if http {
		wantClass = "HTTPClient"
	}
	if got := reply.ClassIdentifier(); got != wantClass {
		t.Errorf("option 60 %q, want %q", got, wantClass)
	}
	o43 := reply.Options.Get(dhcpv4.OptionVendorSpecificInformation)
	if http {
		if o43 != nil {
			t.Errorf("option 43 %x sent to an HTTP client", o43)
		}
	} else if got := pxeSubOption(o43, pxeDiscoveryControl); !bytes.Equal(got, []byte{8}) {
		t.Errorf("option 43 %x: PXE_DISCOVERY_CONTROL %x, want 08", o43, got)
	}
	if k.uuid {
		if got := reply.Options.Get(dhcpv4.OptionClientMachineIdentifier); !bytes.Equal(got, testUUID) {
			t.Errorf("option 97 %x, want echo %x", got, testUUID)
		}
	} else if reply.Options.Has(dhcpv4.OptionClientMachineIdentifier) {
		t.Errorf("option 97 present although the client sent none")
	}
	if reply.BootFileName != wantFile || reply.BootFileNameOption() != wantFile {
		t.Errorf("file %q option 67 %q, want %q", reply.BootFileName, reply.BootFileNameOption(), wantFile)
	}
}

func TestBuildReply(t *testing.T) {
	serverIP := net.IPv4(192, 0, 2, 1).To4()
	mac := net.HardwareAddr{0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc}
	for _, k := range pxeKinds {
		for _, mt := range []dhcpv4.MessageType{dhcpv4.MessageTypeDiscover, dhcpv4.MessageTypeRequest} {
			t.Run(k.name+"/"+mt.String(), func(t *testing.T) {
				req := pxeRequest(k, mac, 0xdeadbeef, mt)
				req2, c, err := ParseRequest(req.ToBytes())
				if err != nil {
					t.Fatal(err)
				}
				c.ServerIP = serverIP
				b := expectedBoot(c)
				reply, err := BuildReply(req2, c, serverIP, b)
				if err != nil {
					t.Fatal(err)
				}
				// Round-trip through the wire format.
				wire, err := dhcpv4.FromBytes(reply.ToBytes())
				if err != nil {
					t.Fatal(err)
				}
				want := dhcpv4.MessageTypeOffer
				if mt == dhcpv4.MessageTypeRequest {
					want = dhcpv4.MessageTypeAck
				}
				checkReply(t, wire, req, k, serverIP, want, b.Filename)
			})
		}
	}
}

func TestBuildReplyBootItemEcho(t *testing.T) {
	req, c, err := ParseRequest(seedPackets()["bios-pxe-request-bootitem"])
	if err != nil {
		t.Fatal(err)
	}
	reply, err := BuildReply(req, c, net.IPv4(10, 0, 0, 1), Boot{Filename: "undionly.kpxe"})
	if err != nil {
		t.Fatal(err)
	}
	o43 := reply.Options.Get(dhcpv4.OptionVendorSpecificInformation)
	if got := pxeSubOption(o43, pxeBootItem); !bytes.Equal(got, []byte{0x80, 0, 0, 0}) {
		t.Fatalf("option 43 %x: boot item %x, want echo 80000000", o43, got)
	}
}

func TestBuildReplyLongURLAndErrors(t *testing.T) {
	req, c, err := ParseRequest(seedPackets()["ipxe-discover"])
	if err != nil {
		t.Fatal(err)
	}
	long := "http://192.0.2.1/boot.ipxe?" + strings.Repeat("x", 150)
	reply, err := BuildReply(req, c, net.IPv4(192, 0, 2, 1), Boot{Filename: long})
	if err != nil {
		t.Fatal(err)
	}
	if reply.BootFileName != "" || reply.BootFileNameOption() != long {
		t.Fatalf("long URL: file %q option 67 %q; want empty file field and full option 67", reply.BootFileName, reply.BootFileNameOption())
	}
	if _, err := BuildReply(req, c, net.IPv4(192, 0, 2, 1), Boot{}); err == nil {
		t.Error("empty file name accepted")
	}
	if _, err := BuildReply(req, c, nil, Boot{Filename: "x"}); err == nil {
		t.Error("nil server IP accepted")
	}
	if _, err := BuildReply(req, c, net.IPv4(192, 0, 2, 1), Boot{Filename: strings.Repeat("y", 256)}); err == nil {
		t.Error("256-byte file name accepted")
	}
}

func TestDestination(t *testing.T) {
	s := &Server{}
	mac := net.HardwareAddr{2, 0, 0, 0, 0, 9}
	disc := pxeRequest(pxeKinds[0], mac, 1, dhcpv4.MessageTypeDiscover)
	relayed := pxeRequest(pxeKinds[0], mac, 1, dhcpv4.MessageTypeDiscover)
	relayed.GatewayIPAddr = net.IPv4(10, 9, 0, 1).To4()
	withCI := pxeRequest(pxeKinds[0], mac, 1, dhcpv4.MessageTypeDiscover)
	withCI.ClientIPAddr = net.IPv4(10, 0, 0, 7).To4()
	req := pxeRequest(pxeKinds[1], mac, 1, dhcpv4.MessageTypeRequest)
	cases := []struct {
		name string
		in   inbound
		req  *dhcpv4.DHCPv4
		want string
	}{
		{"67 broadcast", inbound{port: 67, src: &net.UDPAddr{IP: net.IPv4zero, Port: 68}}, disc, "255.255.255.255:68"},
		{"67 relayed", inbound{port: 67, src: &net.UDPAddr{IP: net.IPv4(10, 9, 0, 1), Port: 67}}, relayed, "10.9.0.1:67"},
		{"67 ciaddr", inbound{port: 67, src: &net.UDPAddr{IP: net.IPv4(10, 0, 0, 7), Port: 68}}, withCI, "10.0.0.7:68"},
		{"4011 from 4011 (OVMF)", inbound{port: 4011, src: &net.UDPAddr{IP: net.IPv4(10, 0, 0, 7), Port: 4011}}, req, "10.0.0.7:4011"},
		{"4011 from 68 (BIOS)", inbound{port: 4011, src: &net.UDPAddr{IP: net.IPv4(10, 0, 0, 7), Port: 68}}, req, "10.0.0.7:68"},
		{"4011 from 0.0.0.0", inbound{port: 4011, src: &net.UDPAddr{IP: net.IPv4zero, Port: 4011}}, req, "255.255.255.255:4011"},
	}
	for _, tc := range cases {
		if got := s.destination(tc.in, tc.req).String(); got != tc.want {
			t.Errorf("%s: destination %s, want %s", tc.name, got, tc.want)
		}
	}
}

// loopbackServer runs Serve on two loopback sockets. Replies that would be
// broadcast go to bcast (the test client's socket).
type loopbackServer struct {
	dhcpAddr, pxeAddr *net.UDPAddr
	booter            *fakeBooter
	metrics           *Metrics
}

func startLoopback(t *testing.T, bcast *net.UDPAddr) *loopbackServer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	dc, err := ListenUDP(ctx, "", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pc, err := ListenUDP(ctx, "", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ls := &loopbackServer{
		dhcpAddr: dc.LocalAddr().(*net.UDPAddr),
		pxeAddr:  pc.LocalAddr().(*net.UDPAddr),
		booter:   &fakeBooter{ignore: map[string]bool{"02:00:00:00:00:66": true}},
		metrics:  NewMetrics(prometheus.NewRegistry()),
	}
	s := &Server{Booter: ls.booter, Logger: quietLogger(t), Metrics: ls.metrics, bcastAddr: bcast, Workers: 2, allowLoopback: true}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, dc, pc) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ls
}

func listenClient(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// exchange sends req to dst and reads the next reply on c.
func exchange(t *testing.T, c *net.UDPConn, dst *net.UDPAddr, req []byte) *dhcpv4.DHCPv4 {
	t.Helper()
	if _, err := c.WriteToUDP(req, dst); err != nil {
		t.Fatal(err)
	}
	return readReply(t, c)
}

func readReply(t *testing.T, c *net.UDPConn) *dhcpv4.DHCPv4 {
	t.Helper()
	// Generous: this is a liveness bound, not a speed target.
	if err := c.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	n, _, err := c.ReadFromUDP(buf)
	if err != nil {
		t.Fatalf("no reply: %v", err)
	}
	p, err := dhcpv4.FromBytes(buf[:n])
	if err != nil {
		t.Fatalf("reply does not parse: %v", err)
	}
	return p
}

func TestServeLoopback(t *testing.T) {
	client := listenClient(t)
	ls := startLoopback(t, client.LocalAddr().(*net.UDPAddr))
	loopIP := net.IPv4(127, 0, 0, 1).To4()

	for i, k := range pxeKinds {
		t.Run(k.name, func(t *testing.T) {
			mac := net.HardwareAddr{0x52, 0x54, 0x00, 0, 0, byte(i)}
			// Phase 1: DISCOVER on the DHCP port, answered by "broadcast".
			disc := pxeRequest(k, mac, uint32(0x100+i), dhcpv4.MessageTypeDiscover)
			offer := exchange(t, client, ls.dhcpAddr, disc.ToBytes())
			c := Client{MAC: mac, Arch: k.arch, VendorClass: k.vendorClass, UserClass: k.userClass, ServerIP: loopIP}
			checkReply(t, offer, disc, k, loopIP, dhcpv4.MessageTypeOffer, expectedBoot(c).Filename)

			// Phase 1b: REQUEST to 4011 from a custom source port (OVMF
			// uses 4011→4011): the ACK must come back to that port.
			pxeClient := listenClient(t)
			req := pxeRequest(k, mac, uint32(0x200+i), dhcpv4.MessageTypeRequest)
			req.ClientIPAddr = loopIP
			ack := exchange(t, pxeClient, ls.pxeAddr, req.ToBytes())
			checkReply(t, ack, req, k, loopIP, dhcpv4.MessageTypeAck, expectedBoot(c).Filename)
		})
	}

	seen := ls.booter.clients()
	if len(seen) != 2*len(pxeKinds) {
		t.Fatalf("booter saw %d clients, want %d", len(seen), 2*len(pxeKinds))
	}
	for _, c := range seen {
		if !c.ServerIP.Equal(loopIP) || (c.Port != 67 && c.Port != 4011) {
			t.Errorf("booter got ServerIP %v port %d", c.ServerIP, c.Port)
		}
	}
	// A worker counts its answer just after sending it: wait for the
	// counters to settle.
	if got := waitCount(ls.metrics, 67, ResultOffered, len(pxeKinds)); got != float64(len(pxeKinds)) {
		t.Errorf("offered on 67 = %v, want %d", got, len(pxeKinds))
	}
	if got := waitCount(ls.metrics, 4011, ResultAcked, len(pxeKinds)); got != float64(len(pxeKinds)) {
		t.Errorf("acked on 4011 = %v, want %d", got, len(pxeKinds))
	}
}

// TestServeLoopbackIgnores sends packets that must get no answer, each
// followed by a PXE DISCOVER: the next reply the client reads must be the
// one for that DISCOVER (same xid), which proves the ignored packet was not
// answered without relying on timeouts.
func TestServeLoopbackIgnores(t *testing.T) {
	client := listenClient(t)
	ls := startLoopback(t, client.LocalAddr().(*net.UDPAddr))
	mac := net.HardwareAddr{0x52, 0x54, 0x00, 1, 2, 3}
	seeds := seedPackets()
	relReq := pxeRequest(pxeKinds[0], mac, 5, dhcpv4.MessageTypeRequest)
	cases := []struct {
		name   string
		b      []byte
		result string
	}{
		{"dhclient", dhclientDiscover(mac).ToBytes(), ResultIgnoredNotPXE},
		{"udhcpc", udhcpcDiscover(mac).ToBytes(), ResultIgnoredNotPXE},
		{"garbage", []byte("GET / HTTP/1.0\r\n\r\n"), ResultMalformed},
		{"truncated", seeds["edk2-x64-discover"][:200], ResultMalformed},
		{"oversized", make([]byte, MaxRequestLen+1), ResultMalformed},
		{"request on 67", relReq.ToBytes(), ResultIgnoredMsgType},
		{"booter says local boot", pxeRequest(pxeKinds[1], net.HardwareAddr{2, 0, 0, 0, 0, 0x66}, 6, dhcpv4.MessageTypeDiscover).ToBytes(), ResultIgnoredByBooter},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := ls.metrics.Requests(67, tc.result)
			if _, err := client.WriteToUDP(tc.b, ls.dhcpAddr); err != nil {
				t.Fatal(err)
			}
			probe := pxeRequest(pxeKinds[0], mac, uint32(0x9000+i), dhcpv4.MessageTypeDiscover)
			reply := exchange(t, client, ls.dhcpAddr, probe.ToBytes())
			if reply.TransactionID != probe.TransactionID {
				t.Fatalf("got a reply with xid %v: the %s packet was answered", reply.TransactionID, tc.name)
			}
			// Workers may process the two packets in either order.
			if got := waitCount(ls.metrics, 67, tc.result, int(before)+1); got != before+1 {
				t.Fatalf("%s count %v, want %v", tc.result, got, before+1)
			}
		})
	}
}

// waitCount waits (bounded) until a counter reaches want and returns it.
func waitCount(m *Metrics, port int, result string, want int) float64 {
	deadline := time.Now().Add(5 * time.Second)
	for m.Requests(port, result) < float64(want) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	return m.Requests(port, result)
}

func TestServeRequiresBooter(t *testing.T) {
	s := &Server{}
	if err := s.Serve(context.Background(), nil, nil); err == nil {
		t.Fatal("Serve without Booter succeeded")
	}
}

func TestListenAndServeStops(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{Booter: &fakeBooter{}, Logger: quietLogger(t), DHCPAddr: "127.0.0.1:0", PXEAddr: "127.0.0.1:0"}
	done := make(chan error, 1)
	go func() { done <- s.ListenAndServe(ctx) }()
	time.Sleep(50 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ListenAndServe did not return after cancel")
	}
}

func TestListenUDPPortInUse(t *testing.T) {
	c, err := ListenUDP(context.Background(), "", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c2, err := ListenUDP(context.Background(), "", c.LocalAddr().String()); err == nil {
		c2.Close()
		t.Fatal("a second server could bind the same port: it would steal the first one's packets")
	}
}

func TestMetricsExported(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	m.count(67, ResultOffered)
	m.count(4011, ResultAcked)
	m.observe(67, 0.001)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	for _, n := range []string{"preboot_proxydhcp_requests_total", "preboot_proxydhcp_reply_duration_seconds"} {
		if !names[n] {
			t.Errorf("metric %s not exported (got %v)", n, names)
		}
	}
	if m.Requests(67, ResultOffered) != 1 || m.Requests(4011, ResultAcked) != 1 || m.Requests(67, ResultMalformed) != 0 {
		t.Error("counters do not add up")
	}
}
