package dhcp6

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/dhcpv6/server6"

	"github.com/preboot/preboot/proxydhcp"
)

// BINLPort is the port EDK2's PXEv6 asks a proxy offer's server for its
// boot file on (PXEBC_BS_DISCOVER_PORT), from the same port.
const BINLPort = 4011

// Results of the proxy.
const (
	ResultNoAddress = "no_address"   // no global IPv6 address on the receiving interface
	ResultNoBoot    = "no_boot_file" // the policy gave this client nothing
)

// Proxy is the DHCPv6 side of proxyDHCP: on a network where the site's
// DHCPv6 server hands out the addresses, it adds the boot file for UEFI
// PXE firmware, as EDK2's PXEv6 (NetworkPkg/UefiPxeBcDxe/PxeBcDhcp6.c)
// expects it:
//
//  1. to a Solicit with vendor class 343 "PXEClient" it answers an
//     Advertise with no IA_NA, vendor class 343 "PXEClient" and option 59
//     tftp://[addr]/file: EDK2 keeps it as a "proxy BINL" offer, takes its
//     address from the site server's Advertise (Request, Reply), then
//  2. sends a Request from UDP 4011 to the host of that URL on UDP 4011,
//     carrying this server's identifier, its Solicit's options and no
//     IA; the proxy answers with a Reply from port 4011 with vendor class
//     343 "PXEClient" and option 59, which EDK2 boots.
//
// iPXE's own DHCPv6 takes only an Advertise with an address, so it never
// takes the proxy's; a stateless iPXE (router advertisements without the M
// flag, O flag set) sends an Information-request, which the proxy answers
// with the policy's script URL. Nothing else is answered: addresses, their
// renewals and every other client are the site server's.
type Proxy struct {
	// Booter decides what clients boot (required).
	Booter proxydhcp.Booter
	// ServerID is the proxy's DUID; by default a DUID-LL of the first
	// interface with a MAC, else a random DUID-UUID.
	ServerID dhcpv6.DUID
	// Interface, when set, is the only interface served.
	Interface string
	// Addr is the DHCPv6 listen address (default "[::]:547"), BINLAddr the
	// boot service's (default "[::]:4011").
	Addr, BINLAddr string
	// Workers is the number of goroutines reading each socket (default
	// max(4, 2×GOMAXPROCS)).
	Workers int
	Logger  *slog.Logger

	// interfaces looks an interface up by name (tests replace it).
	interfaces func(name string) (Iface, bool)

	initOnce sync.Once
	sid      dhcpv6.DUID
	macs     *macCache
}

func (p *Proxy) init() {
	p.initOnce.Do(func() {
		p.macs = newMACCache(macCacheSize)
		p.sid = p.ServerID
		if p.sid == nil {
			p.sid = defaultDUID(p.Interface)
		}
	})
}

func (p *Proxy) logger() *slog.Logger {
	if p.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return p.Logger
}

// Listen opens the proxy's sockets: UDP 547 (joining ff02::1:2 as
// Server.Listen does) and the boot service, UDP 4011.
func (p *Proxy) Listen() (dhcp, binl net.PacketConn, err error) {
	dhcp, err = listen547(p.Interface, p.Addr, p.logger())
	if err != nil {
		return nil, nil, err
	}
	addr := &net.UDPAddr{IP: net.IPv6unspecified, Port: BINLPort}
	if p.BINLAddr != "" {
		a, err := net.ResolveUDPAddr("udp6", p.BINLAddr)
		if err != nil {
			dhcp.Close()
			return nil, nil, fmt.Errorf("dhcp6 proxy: listen address %q: %w", p.BINLAddr, err)
		}
		addr = a
	}
	c, err := server6.NewIPv6UDPConn(p.Interface, addr)
	if err != nil {
		dhcp.Close()
		return nil, nil, fmt.Errorf("dhcp6 proxy: listen %s: %w", addr, err)
	}
	return dhcp, c, nil
}

// Serve serves on the sockets Listen opened until ctx ends, then closes
// them and returns nil.
func (p *Proxy) Serve(ctx context.Context, dhcp, binl net.PacketConn) error {
	if p.Booter == nil {
		dhcp.Close()
		binl.Close()
		return errors.New("dhcp6 proxy: no policy (Booter)")
	}
	p.init()
	p.logger().Info("dhcp6 proxy listening", "addr", dhcp.LocalAddr().String(), "binl_addr", binl.LocalAddr().String(),
		"interface", p.Interface, "server_id", p.sid.String())
	return serveConns(ctx, p.Workers, p.serveOne, dhcp, binl)
}

func (p *Proxy) serveOne(ctx context.Context, rx received) {
	m, err := dhcpv6.FromBytes(rx.b)
	if err != nil {
		p.logger().DebugContext(ctx, "dhcp6 proxy: unparsable message", "peer", rx.peer.String(), "err", err)
		return
	}
	ifname := rx.peer.Zone
	if ifname == "" && rx.ifIndex > 0 {
		if ifi, err := net.InterfaceByIndex(rx.ifIndex); err == nil {
			ifname = ifi.Name
		}
	}
	ifi, ok := p.lookupIface(ifname)
	if !ok {
		p.logger().DebugContext(ctx, "dhcp6 proxy: ignored a message from an unknown interface", "peer", rx.peer.String())
		return
	}
	port := dhcpv6.DefaultServerPort
	if rx.port == BINLPort {
		port = BINLPort
	}
	in := Inbound{Peer: rx.peer.AddrPort().Addr().WithZone(""), Iface: ifi, Port: port}
	if rx.dst.IsGlobalUnicast() && !rx.dst.IsMulticast() {
		in.Local = rx.dst
	}
	a, err := p.Handle(ctx, m, in)
	logAnswer(ctx, p.logger(), rx, m, a, err)
}

func (p *Proxy) lookupIface(name string) (Iface, bool) {
	if p.interfaces != nil {
		return p.interfaces(name)
	}
	if name == "" || p.Interface != "" && name != p.Interface {
		return Iface{}, false
	}
	return interfaceNets(name)
}

// Handle answers one message that arrived on in.Port (547 or 4011). It
// does no I/O besides the Booter, and is fuzzed. Nothing the client sent
// goes back into the answer but its identifiers (client DUID, transaction
// ID): the vendor class is the constant "PXEClient", option 59 is built
// from the policy's answer and this server's address.
func (p *Proxy) Handle(ctx context.Context, m dhcpv6.DHCPv6, in Inbound) (Answer, error) {
	p.init()
	if m.IsRelay() {
		return Answer{Result: ResultRelayed}, fmt.Errorf("%w: relayed messages are not served", ErrIgnored)
	}
	msg, ok := m.(*dhcpv6.Message)
	if !ok {
		return Answer{Result: ResultMalformed}, fmt.Errorf("%w: %T", ErrMalformed, m)
	}
	binl := in.Port == BINLPort
	cid := msg.Options.ClientID()
	sid := msg.Options.ServerID()
	c := readClient(msg, cid, in.Peer)
	// EDK2 identifies itself by a DUID-UUID and sends its boot-service
	// Request from its new global address: its MAC is the one its
	// Solicit's link-local address showed.
	if len(c.mac) > 0 && c.duid != "" && in.Peer.IsLinkLocalUnicast() {
		p.macs.put(c.duid, c.mac)
	} else if len(c.mac) == 0 && c.duid != "" {
		c.mac = p.macs.get(c.duid)
	}
	a := Answer{MAC: c.mac.String()}
	pxe := strings.HasPrefix(c.vendor, proxydhcp.VendorPXEClient) && c.user != "iPXE"
	var replyType dhcpv6.MessageType
	switch t := msg.Type(); {
	case !binl && t == dhcpv6.MessageTypeSolicit && pxe:
		if sid != nil {
			return Answer{Result: ResultMalformed}, fmt.Errorf("%w: Solicit with a server identifier", ErrMalformed)
		}
		replyType, a.Result = dhcpv6.MessageTypeAdvertise, ResultAdvertised
	case binl && t == dhcpv6.MessageTypeRequest && pxe:
		// EDK2 adds the proxy's identifier to the Request it sends here;
		// without one (a BINL offer of another server sent it to
		// ff02::1:2) it asks any boot server.
		if sid != nil && !sid.Equal(p.sid) {
			return Answer{Result: ResultNotForUs}, fmt.Errorf("%w: for server %s", ErrIgnored, sid)
		}
		replyType, a.Result = dhcpv6.MessageTypeReply, ResultReplied
	case !binl && t == dhcpv6.MessageTypeInformationRequest && c.user == "iPXE":
		if sid != nil && !sid.Equal(p.sid) {
			return Answer{Result: ResultNotForUs}, fmt.Errorf("%w: for server %s", ErrIgnored, sid)
		}
		replyType, a.Result = dhcpv6.MessageTypeReply, ResultReplied
	default:
		return Answer{Result: ResultIgnored}, fmt.Errorf("%w: %s on port %d from a %s client: the site's DHCPv6 server answers it",
			ErrIgnored, t, portOf(in), clientKind(c))
	}
	if cid == nil && msg.Type() != dhcpv6.MessageTypeInformationRequest {
		return Answer{Result: ResultMalformed}, fmt.Errorf("%w: %s without client identifier", ErrMalformed, msg.Type())
	}
	local, ok := proxyAddr(in)
	if !ok {
		return Answer{Result: ResultNoAddress}, fmt.Errorf("%w: no global IPv6 address on interface %q", ErrIgnored, in.Iface.Name)
	}
	if p.Booter == nil || len(c.mac) == 0 {
		return Answer{Result: ResultNoBoot}, fmt.Errorf("%w: no MAC address known for the client", ErrIgnored)
	}
	b, err := policyBoot(ctx, p.Booter, c, local, portOf(in), in.Iface.Name)
	switch {
	case err != nil && errors.Is(err, proxydhcp.ErrIgnore):
		return Answer{Result: ResultNoBoot, MAC: a.MAC}, fmt.Errorf("%w: %w", ErrIgnored, err)
	case err != nil:
		p.logger().ErrorContext(ctx, "dhcp6 proxy: policy failed; not answered", "mac", a.MAC, "err", err)
		return Answer{Result: ResultBooterErr, MAC: a.MAC}, err
	case b.Filename == "" || b.HTTPClient:
		return Answer{Result: ResultNoBoot, MAC: a.MAC}, fmt.Errorf("%w: the policy gave no boot file for a PXE client", ErrIgnored)
	}
	a.Boot = BootURL(b.Filename, local)
	reply := &dhcpv6.Message{MessageType: replyType, TransactionID: msg.TransactionID}
	if cid != nil {
		reply.AddOption(dhcpv6.OptClientID(cid))
	}
	reply.AddOption(dhcpv6.OptServerID(p.sid))
	if pxe {
		reply.AddOption(&dhcpv6.OptVendorClass{EnterpriseNumber: EnterprisePXE, Data: [][]byte{[]byte(proxydhcp.VendorPXEClient)}})
	}
	reply.AddOption(dhcpv6.OptBootFileURL(a.Boot))
	a.Reply = reply
	return a, nil
}

// proxyAddr is the server address the boot URL names: the one a unicast
// message was sent to, else the receiving interface's address on the
// client's prefix, else its first global address.
func proxyAddr(in Inbound) (netip.Addr, bool) {
	if in.Local.IsValid() {
		return in.Local.WithZone(""), true
	}
	for _, n := range in.Iface.Nets {
		if in.Peer.IsGlobalUnicast() && n.Contains(in.Peer) {
			return n.Addr(), true
		}
	}
	for _, n := range in.Iface.Nets {
		if a := n.Addr(); a.Is6() && !a.Is4In6() && a.IsGlobalUnicast() {
			return a, true
		}
	}
	return netip.Addr{}, false
}

func portOf(in Inbound) int {
	if in.Port == 0 {
		return dhcpv6.DefaultServerPort
	}
	return in.Port
}

func clientKind(c client) string {
	switch {
	case c.user == "iPXE":
		return "iPXE"
	case strings.HasPrefix(c.vendor, proxydhcp.VendorPXEClient):
		return "PXE"
	case strings.HasPrefix(c.vendor, proxydhcp.VendorHTTPClient):
		return "HTTP boot"
	default:
		return "non-boot"
	}
}

// macCacheSize bounds the DUID → MAC memory (a boot storm of this many
// PXE clients at once still finds its MACs).
const macCacheSize = 4096

// macCache remembers the MAC of the clients whose Solicit came from an
// EUI-64 link-local address, by DUID; the oldest entry goes first.
type macCache struct {
	mu    sync.Mutex
	m     map[string]net.HardwareAddr
	order []string // ring of keys, oldest at next
	next  int
}

func newMACCache(n int) *macCache {
	return &macCache{m: make(map[string]net.HardwareAddr, n), order: make([]string, 0, n)}
}

func (c *macCache) put(duid string, mac net.HardwareAddr) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[duid]; ok {
		c.m[duid] = mac
		return
	}
	if len(c.order) < cap(c.order) {
		c.order = append(c.order, duid)
	} else {
		delete(c.m, c.order[c.next])
		c.order[c.next] = duid
		c.next = (c.next + 1) % len(c.order)
	}
	c.m[duid] = mac
}

func (c *macCache) get(duid string) net.HardwareAddr {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[duid]
}
