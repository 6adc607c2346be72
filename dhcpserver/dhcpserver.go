// Package dhcpserver is Preboot's embedded DHCPv4 server (RFC 2131), off
// by default, for boot networks Preboot owns. It hands out addresses from
// configured ranges, keeps every lease in the store (store.Leases: SQLite
// or PostgreSQL, so that a restart or a second server sharing the
// database never hands out an address twice) and, to PXE and iPXE
// clients, the boot options Preboot's proxyDHCP would give (the decision
// is the same proxydhcp.Booter), in the same packet as the address: the
// path Debian's signed GRUB needs, which reads its server from the ACK's
// siaddr and ignores proxyDHCP.
//
// A range is served on the interface whose IPv4 network holds it; the
// server identifies itself with that interface's address. A range with a
// Subnet also serves relayed requests (RFC 2131 giaddr, "ip
// helper-address") whose relay address is inside it. On interfaces without a range
// the server can answer PXE clients as the proxy does (address-less
// offers), so that one socket owns UDP port 67.
package dhcpserver

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/preboot/preboot/proxydhcp"
	"github.com/preboot/preboot/store"
)

// Defaults.
const (
	DefaultLeaseTime = time.Hour
	// DefaultOfferHold is how long an offered address stays reserved for
	// the client's REQUEST.
	DefaultOfferHold = time.Minute
	// DefaultDeclineHold is how long an address a client declined (found
	// in use) is kept out of the pool: dnsmasq's 10 minutes.
	DefaultDeclineHold = 10 * time.Minute
)

// Results a packet is counted and logged under.
const (
	ResultOffered       = "offered"
	ResultAcked         = "acked"
	ResultInformed      = "informed"
	ResultNak           = "nak"
	ResultReleased      = "released"
	ResultDeclined      = "declined"
	ResultExhausted     = "exhausted"
	ResultProxyOffered  = "proxy_offered"
	ResultMalformed     = "malformed"
	ResultIgnored       = "ignored"           // a message a server does not answer (BOOTREPLY, BOOTP, ...)
	ResultNotForUs      = "not_for_us"        // REQUEST for another server's offer
	ResultNoRange       = "no_range"          // no range on the receiving interface (and no proxy answer)
	ResultRelayed       = "ignored_relayed"   // giaddr outside every range's subnet
	ResultIgnoredIface  = "ignored_interface" // loopback, or an interface without IPv4
	ResultUnknownLease  = "unknown_lease"     // RELEASE/DECLINE of a lease the client does not hold
	ResultStoreError    = "store_error"
	ResultBooterError   = "booter_error"
	ResultSendError     = "send_error"
	ResultDuplicateID   = "duplicate_client_id" // counted besides the request's own result
	maxRequestLen       = proxydhcp.MaxRequestLen
	minRequestLen       = 240
	clientPort          = proxydhcp.ClientPort
	serverPort          = proxydhcp.DHCPPort
	defaultServerIDName = "preboot"
)

// Errors [ParseRequest] returns (wrapped).
var (
	ErrMalformed   = errors.New("malformed DHCP request")
	ErrMessageType = errors.New("message not answered by a DHCP server")
)

// Events records what an administrator should see (exhaustion, declines,
// duplicate client ids, refusals). store.Store satisfies it.
type Events interface {
	AddEvent(ctx context.Context, e store.Event) (store.Event, error)
}

// Server is the DHCP server. Leases and Ranges are required.
type Server struct {
	Leases store.Leases
	Ranges []Range
	// Booter decides what PXE/iPXE clients boot (nil: no boot options).
	Booter proxydhcp.Booter
	// Routers (option 3) and DNS (option 6) handed out with every lease.
	Routers, DNS []netip.Addr
	// Domain (option 15), optional.
	Domain string
	// LeaseTime, OfferHold, DeclineHold: see the defaults.
	LeaseTime, OfferHold, DeclineHold time.Duration
	// Name is written into each lease's server column (which server of
	// several sharing a database wrote it). Default "preboot".
	Name string
	// ServerIP overrides the boot server address (siaddr, sname) given to
	// PXE clients; by default it is the receiving interface's address.
	// The server identifier (option 54) is always the interface address.
	ServerIP net.IP
	// ProxyElsewhere answers PXE clients on interfaces without a range as
	// proxyDHCP would (no address), limited to ProxyInterfaces (when not
	// empty) and interfaces with an address in ProxySubnets (when not
	// empty).
	ProxyElsewhere  bool
	ProxyInterfaces []string
	ProxySubnets    []netip.Prefix
	// Interface, when set, binds the socket to one interface.
	Interface string
	// Addr is the listen address (default ":67").
	Addr    string
	Workers int
	Events  Events
	Logger  *slog.Logger
	Metrics *Metrics
	// Now returns the current time (tests); default time.Now.
	Now func() time.Time

	// interfaces looks up a receiving interface (tests replace it).
	interfaces func(index int) (ifaceInfo, bool)
	// bcastAddr replaces 255.255.255.255:68 (tests on loopback).
	bcastAddr *net.UDPAddr
	ifcache   ifaceCache

	warnMu   sync.Mutex
	warnNext map[string]time.Time
}

// Range is an address range and, optionally, its subnet.
type Range struct {
	store.LeaseRange
	// Subnet is the range's network. Needed only to serve it through DHCP
	// relays (giaddr inside Subnet); on a directly attached network the
	// receiving interface's prefix is used.
	Subnet netip.Prefix
}

// ifaceInfo is what the server needs to know of a receiving interface.
type ifaceInfo struct {
	name     string
	loopback bool
	nets     []netip.Prefix // the interface's addresses with their prefix length
}

// Request is what the server read from a client's packet.
type Request struct {
	Pkt       *dhcpv4.DHCPv4
	Type      dhcpv4.MessageType
	MAC       net.HardwareAddr
	ClientID  []byte     // option 61, nil if absent
	Requested netip.Addr // option 50
	ServerID  netip.Addr // option 54
	Hostname  string     // option 12
}

// Key is the client's identity in the lease database: option 61 when the
// client sent one (RFC 2131 4.2), else its hardware address.
func (r Request) Key() string {
	if len(r.ClientID) > 0 {
		return "id:" + hex.EncodeToString(r.ClientID)
	}
	return "mac:" + r.MAC.String()
}

// ParseRequest parses and validates a client's message. It is pure (no
// I/O) and fuzzed. Errors wrap ErrMalformed or ErrMessageType.
func ParseRequest(b []byte) (Request, error) {
	if len(b) < minRequestLen {
		return Request{}, fmt.Errorf("%w: %d bytes, shorter than a BOOTP header", ErrMalformed, len(b))
	}
	if len(b) > maxRequestLen {
		return Request{}, fmt.Errorf("%w: %d bytes, longer than %d", ErrMalformed, len(b), maxRequestLen)
	}
	if dhcpv4.OpcodeType(b[0]) != dhcpv4.OpcodeBootRequest {
		return Request{}, fmt.Errorf("%w: op %d is not BOOTREQUEST", ErrMessageType, b[0])
	}
	if iana.HWType(b[1]) != iana.HWTypeEthernet || b[2] != 6 {
		return Request{}, fmt.Errorf("%w: htype %d hlen %d, want Ethernet (1, 6)", ErrMalformed, b[1], b[2])
	}
	pkt, err := dhcpv4.FromBytes(b)
	if err != nil {
		return Request{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	v := pkt.Options.Get(dhcpv4.OptionDHCPMessageType)
	switch {
	case v == nil:
		return Request{}, fmt.Errorf("%w: no DHCP message type (plain BOOTP)", ErrMessageType)
	case len(v) != 1:
		return Request{}, fmt.Errorf("%w: option 53 has length %d", ErrMalformed, len(v))
	}
	r := Request{Pkt: pkt, Type: pkt.MessageType(), MAC: slices.Clone(pkt.ClientHWAddr)}
	switch r.Type {
	case dhcpv4.MessageTypeDiscover, dhcpv4.MessageTypeRequest, dhcpv4.MessageTypeDecline,
		dhcpv4.MessageTypeRelease, dhcpv4.MessageTypeInform:
	default:
		return Request{}, fmt.Errorf("%w: %s", ErrMessageType, r.Type)
	}
	if v := pkt.Options.Get(dhcpv4.OptionClientIdentifier); v != nil {
		if len(v) < 2 {
			return Request{}, fmt.Errorf("%w: option 61 has length %d", ErrMalformed, len(v))
		}
		r.ClientID = slices.Clone(v)
	}
	for _, o := range []struct {
		code dhcpv4.OptionCode
		dst  *netip.Addr
	}{{dhcpv4.OptionRequestedIPAddress, &r.Requested}, {dhcpv4.OptionServerIdentifier, &r.ServerID}} {
		if v := pkt.Options.Get(o.code); v != nil {
			if len(v) != 4 {
				return Request{}, fmt.Errorf("%w: option %d has length %d", ErrMalformed, o.code.Code(), len(v))
			}
			*o.dst = netip.AddrFrom4([4]byte(v))
		}
	}
	if h := pkt.HostName(); h != "" {
		r.Hostname = sanitizeHostname(h)
	}
	return r, nil
}

// sanitizeHostname keeps a client's host name printable and short: it is
// stored and shown, never trusted.
func sanitizeHostname(h string) string {
	var b strings.Builder
	for _, c := range h {
		if b.Len() >= 63 {
			break
		}
		if c == '-' || c == '.' || c == '_' || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') {
			b.WriteRune(c)
		}
	}
	return b.String()
}

// inbound is one received datagram.
type inbound struct {
	data    []byte
	src     *net.UDPAddr
	ifIndex int
	dst     net.IP
}

// outbound is one reply and where it goes.
type outbound struct {
	reply   *dhcpv4.DHCPv4
	dst     *net.UDPAddr
	ifIndex int
	src     net.IP
	mac     string
	lease   netip.Addr
	file    string
}

// network is the range a request is served from.
type network struct {
	iface    ifaceInfo
	rng      store.LeaseRange
	serverID netip.Addr
	prefix   netip.Prefix
	relay    netip.Addr // giaddr of a relayed request
}

func (s *Server) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Server) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// respond decides what to do with one datagram: the reply to send (nil
// for none) and the result it is counted under.
func (s *Server) respond(ctx context.Context, in inbound) (*outbound, string, error) {
	req, err := ParseRequest(in.data)
	switch {
	case errors.Is(err, ErrMessageType):
		return nil, ResultIgnored, err
	case err != nil:
		return nil, ResultMalformed, err
	}
	info, ok := s.lookupIface(in.ifIndex)
	if !ok || info.loopback || len(info.nets) == 0 {
		return nil, ResultIgnoredIface, fmt.Errorf("dhcpserver: request on interface %d (%s) without IPv4 or loopback", in.ifIndex, info.name)
	}
	var nw network
	if gi, ok := netip.AddrFromSlice(req.Pkt.GatewayIPAddr.To4()); ok && !gi.IsUnspecified() {
		if nw, ok = s.relayNetwork(gi, in, info); !ok {
			return nil, ResultRelayed, fmt.Errorf("dhcpserver: relayed request (giaddr %s) outside every range's subnet", gi)
		}
	} else if nw, ok = s.networkFor(info); !ok {
		return s.proxyAnswer(ctx, in, req, info)
	}
	switch req.Type {
	case dhcpv4.MessageTypeDiscover:
		return s.discover(ctx, in, req, nw)
	case dhcpv4.MessageTypeRequest:
		return s.request(ctx, in, req, nw)
	case dhcpv4.MessageTypeDecline:
		return s.decline(ctx, req, nw)
	case dhcpv4.MessageTypeRelease:
		return s.release(ctx, req, nw)
	default: // INFORM
		return s.inform(ctx, in, req, nw)
	}
}

// networkFor finds the range served on an interface.
func (s *Server) networkFor(info ifaceInfo) (network, bool) {
	for _, r := range s.Ranges {
		for _, p := range info.nets {
			if p.Contains(r.Start) && p.Contains(r.End) {
				return network{iface: info, rng: r.LeaseRange, serverID: p.Addr(), prefix: p}, true
			}
		}
	}
	return network{}, false
}

// relayNetwork finds the range of a relayed request: the one whose
// Subnet holds the relay's address. The server identifies itself with
// the address the relay sent to.
func (s *Server) relayNetwork(gi netip.Addr, in inbound, info ifaceInfo) (network, bool) {
	sid, ok := netip.AddrFromSlice(in.dst.To4())
	if !ok || sid.IsUnspecified() || sid == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		sid = info.nets[0].Addr()
	}
	for _, r := range s.Ranges {
		if r.Subnet.IsValid() && r.Subnet.Contains(gi) {
			return network{iface: info, rng: r.LeaseRange, serverID: sid, prefix: r.Subnet, relay: gi}, true
		}
	}
	return network{}, false
}

// leaseRequest builds the store's request; a client id held by another
// machine (cloned systems often share one) gets a key of its own.
func (s *Server) leaseRequest(ctx context.Context, req Request, nw network, now time.Time) (store.LeaseRequest, error) {
	lr := store.LeaseRequest{ClientID: req.Key(), MAC: req.MAC.String(), Hostname: req.Hostname, Server: s.name(), Range: nw.rng, Requested: req.Requested, Now: now}
	if len(req.ClientID) == 0 {
		return lr, nil
	}
	cur, err := s.Leases.LeaseByClient(ctx, lr.ClientID)
	if errors.Is(err, store.ErrNotFound) {
		return lr, nil
	}
	if err != nil {
		return lr, err
	}
	if cur.MAC != "" && cur.MAC != lr.MAC && !cur.Free(now) {
		lr.ClientID += "@" + lr.MAC
		if req.Type == dhcpv4.MessageTypeDiscover {
			s.Metrics.count(ResultDuplicateID)
			if s.warn(ctx, "duplicate client id "+req.Key(), "dhcpserver: duplicate client id: another machine holds its lease; this one gets an address of its own",
				"mac", lr.MAC, "client_id", req.Key(), "holder_mac", cur.MAC, "holder_ip", cur.IP.String()) {
				s.event(ctx, lr.MAC, fmt.Sprintf("DHCP: client id %s is also used by %s (which holds %s): this machine gets an address of its own", req.Key(), cur.MAC, cur.IP))
			}
		}
	}
	return lr, nil
}

func (s *Server) name() string {
	if s.Name != "" {
		return s.Name
	}
	return defaultServerIDName
}

func (s *Server) discover(ctx context.Context, in inbound, req Request, nw network) (*outbound, string, error) {
	now := s.now()
	lr, err := s.leaseRequest(ctx, req, nw, now)
	if err != nil {
		return nil, ResultStoreError, err
	}
	l, err := s.Leases.OfferLease(ctx, lr, orDefault(s.OfferHold, DefaultOfferHold))
	if errors.Is(err, store.ErrExhausted) {
		if s.warn(ctx, "exhausted "+nw.rng.Start.String(), "dhcpserver: address range exhausted: no offer",
			"mac", lr.MAC, "range", nw.rng.Start.String()+"-"+nw.rng.End.String()) {
			s.event(ctx, lr.MAC, fmt.Sprintf("DHCP: no free address in %s-%s for this machine (range exhausted)", nw.rng.Start, nw.rng.End))
		}
		return nil, ResultExhausted, err
	}
	if err != nil {
		return nil, ResultStoreError, err
	}
	return s.leaseReply(ctx, in, req, nw, l, dhcpv4.MessageTypeOffer)
}

func (s *Server) request(ctx context.Context, in inbound, req Request, nw network) (*outbound, string, error) {
	var ip netip.Addr
	switch {
	case req.ServerID.IsValid():
		// SELECTING: the client picked an offer.
		if req.ServerID != nw.serverID {
			return nil, ResultNotForUs, fmt.Errorf("dhcpserver: REQUEST for server %s", req.ServerID)
		}
		ip = req.Requested
	case req.Requested.IsValid(): // INIT-REBOOT
		ip = req.Requested
	default: // RENEWING / REBINDING
		if ci, ok := netip.AddrFromSlice(req.Pkt.ClientIPAddr.To4()); ok && !ci.IsUnspecified() {
			ip = ci
		}
	}
	if !ip.IsValid() || ip.IsUnspecified() {
		return nil, ResultMalformed, fmt.Errorf("%w: REQUEST names no address", ErrMalformed)
	}
	now := s.now()
	if !nw.rng.Contains(ip) {
		// RFC 2131 4.3.2: an address on the wrong network is NAKed.
		return s.nak(in, req, nw, fmt.Sprintf("address %s is not in %s-%s", ip, nw.rng.Start, nw.rng.End))
	}
	lr, err := s.leaseRequest(ctx, req, nw, now)
	if err != nil {
		return nil, ResultStoreError, err
	}
	l, err := s.Leases.BindLease(ctx, ip, lr, orDefault(s.LeaseTime, DefaultLeaseTime))
	if errors.Is(err, store.ErrConflict) {
		s.event(ctx, lr.MAC, fmt.Sprintf("DHCP: refused %s to this machine: %v", ip, err))
		return s.nak(in, req, nw, err.Error())
	}
	if err != nil {
		return nil, ResultStoreError, err
	}
	return s.leaseReply(ctx, in, req, nw, l, dhcpv4.MessageTypeAck)
}

func (s *Server) decline(ctx context.Context, req Request, nw network) (*outbound, string, error) {
	if req.ServerID.IsValid() && req.ServerID != nw.serverID {
		return nil, ResultNotForUs, fmt.Errorf("dhcpserver: DECLINE for server %s", req.ServerID)
	}
	if !req.Requested.IsValid() {
		return nil, ResultMalformed, fmt.Errorf("%w: DECLINE without option 50", ErrMalformed)
	}
	now := s.now()
	lr, err := s.leaseRequest(ctx, req, nw, now)
	if err != nil {
		return nil, ResultStoreError, err
	}
	hold := orDefault(s.DeclineHold, DefaultDeclineHold)
	err = s.Leases.DeclineLease(ctx, req.Requested, lr.ClientID, now, now.Add(hold))
	if errors.Is(err, store.ErrNotFound) {
		return nil, ResultUnknownLease, err
	}
	if err != nil {
		return nil, ResultStoreError, err
	}
	s.logger().WarnContext(ctx, "dhcpserver: client declined its address (in use by another host?): quarantined",
		"mac", lr.MAC, "ip", req.Requested.String(), "until", now.Add(hold).Format(time.RFC3339))
	s.event(ctx, lr.MAC, fmt.Sprintf("DHCP: the machine declined %s (another host answers on it?): kept out of the pool for %s", req.Requested, hold))
	return nil, ResultDeclined, nil
}

func (s *Server) release(ctx context.Context, req Request, nw network) (*outbound, string, error) {
	ip, ok := netip.AddrFromSlice(req.Pkt.ClientIPAddr.To4())
	if !ok || ip.IsUnspecified() {
		return nil, ResultMalformed, fmt.Errorf("%w: RELEASE without ciaddr", ErrMalformed)
	}
	now := s.now()
	lr, err := s.leaseRequest(ctx, req, nw, now)
	if err != nil {
		return nil, ResultStoreError, err
	}
	err = s.Leases.ReleaseLease(ctx, ip, lr.ClientID, now)
	if errors.Is(err, store.ErrNotFound) {
		return nil, ResultUnknownLease, err
	}
	if err != nil {
		return nil, ResultStoreError, err
	}
	s.logger().InfoContext(ctx, "dhcpserver release", "mac", lr.MAC, "ip", ip.String())
	return nil, ResultReleased, nil
}

func (s *Server) inform(ctx context.Context, in inbound, req Request, nw network) (*outbound, string, error) {
	ci, ok := netip.AddrFromSlice(req.Pkt.ClientIPAddr.To4())
	if !ok || ci.IsUnspecified() {
		return nil, ResultMalformed, fmt.Errorf("%w: INFORM without ciaddr", ErrMalformed)
	}
	reply := s.baseReply(req, nw, dhcpv4.MessageTypeAck)
	s.addNetworkOptions(reply, nw)
	file := s.addBoot(ctx, in, req, nw, reply)
	return &outbound{reply: reply, dst: &net.UDPAddr{IP: ci.AsSlice(), Port: clientPort}, ifIndex: in.ifIndex, mac: req.MAC.String(), file: file}, ResultInformed, nil
}

func (s *Server) nak(in inbound, req Request, nw network, why string) (*outbound, string, error) {
	reply := s.baseReply(req, nw, dhcpv4.MessageTypeNak)
	reply.ServerIPAddr = net.IPv4zero
	reply.UpdateOption(dhcpv4.OptMessage(why))
	// RFC 2131 4.1: a NAK goes to the relay, else it is broadcast.
	out := &outbound{reply: reply, dst: s.broadcast(), ifIndex: in.ifIndex, mac: req.MAC.String()}
	if nw.relay.IsValid() {
		out.dst, out.ifIndex, out.src = &net.UDPAddr{IP: nw.relay.AsSlice(), Port: serverPort}, 0, nw.serverID.AsSlice()
	}
	return out, ResultNak, errors.New(why)
}

// baseReply is the BOOTREPLY skeleton of every answer.
func (s *Server) baseReply(req Request, nw network, mt dhcpv4.MessageType) *dhcpv4.DHCPv4 {
	sid := nw.serverID.AsSlice()
	r := &dhcpv4.DHCPv4{
		OpCode:        dhcpv4.OpcodeBootReply,
		HWType:        req.Pkt.HWType,
		TransactionID: req.Pkt.TransactionID,
		Flags:         req.Pkt.Flags,
		ClientIPAddr:  net.IPv4zero,
		YourIPAddr:    net.IPv4zero,
		ServerIPAddr:  sid,
		GatewayIPAddr: net.IPv4zero,
		ClientHWAddr:  req.Pkt.ClientHWAddr,
		Options:       make(dhcpv4.Options, 12),
	}
	if mt == dhcpv4.MessageTypeAck || mt == dhcpv4.MessageTypeNak {
		if ci := req.Pkt.ClientIPAddr.To4(); ci != nil && mt == dhcpv4.MessageTypeAck {
			r.ClientIPAddr = ci
		}
	}
	r.UpdateOption(dhcpv4.OptMessageType(mt))
	r.UpdateOption(dhcpv4.OptServerIdentifier(sid))
	if len(req.ClientID) > 0 {
		// RFC 6842: echo the client identifier.
		r.UpdateOption(dhcpv4.OptClientIdentifier(req.ClientID))
	}
	if nw.relay.IsValid() {
		r.GatewayIPAddr = nw.relay.AsSlice()
		// RFC 3046: the relay agent information goes back to the relay.
		if v := req.Pkt.Options.Get(dhcpv4.OptionRelayAgentInformation); v != nil {
			r.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionRelayAgentInformation, v))
		}
	}
	return r
}

func (s *Server) addNetworkOptions(r *dhcpv4.DHCPv4, nw network) {
	r.UpdateOption(dhcpv4.OptSubnetMask(net.CIDRMask(nw.prefix.Bits(), 32)))
	bc := nw.prefix.Masked().Addr().As4()
	host := ^binary.BigEndian.Uint32(net.CIDRMask(nw.prefix.Bits(), 32))
	binary.BigEndian.PutUint32(bc[:], binary.BigEndian.Uint32(bc[:])|host)
	r.UpdateOption(dhcpv4.OptBroadcastAddress(net.IP(bc[:])))
	if len(s.Routers) > 0 {
		r.UpdateOption(dhcpv4.OptRouter(ips(s.Routers)...))
	}
	if len(s.DNS) > 0 {
		r.UpdateOption(dhcpv4.OptDNS(ips(s.DNS)...))
	}
	if s.Domain != "" {
		r.UpdateOption(dhcpv4.OptDomainName(s.Domain))
	}
}

func ips(as []netip.Addr) []net.IP {
	out := make([]net.IP, 0, len(as))
	for _, a := range as {
		out = append(out, a.AsSlice())
	}
	return out
}

// leaseReply is the OFFER or ACK of a lease, with boot options for PXE
// clients.
func (s *Server) leaseReply(ctx context.Context, in inbound, req Request, nw network, l store.Lease, mt dhcpv4.MessageType) (*outbound, string, error) {
	reply := s.baseReply(req, nw, mt)
	reply.YourIPAddr = l.IP.AsSlice()
	lease := orDefault(s.LeaseTime, DefaultLeaseTime)
	if l.State == store.LeaseBound {
		// What is left of the lease (an OFFER to a bound client, an ACK).
		lease = max(l.Expires.Sub(s.now()).Round(time.Second), time.Second)
	}
	reply.UpdateOption(dhcpv4.OptIPAddressLeaseTime(lease))
	reply.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionRenewTimeValue, secs(lease/2)))
	reply.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionRebindingTimeValue, secs(lease*7/8)))
	s.addNetworkOptions(reply, nw)
	file := s.addBoot(ctx, in, req, nw, reply)
	result := ResultOffered
	if mt == dhcpv4.MessageTypeAck {
		result = ResultAcked
	}
	out := &outbound{reply: reply, dst: s.destination(req, reply), ifIndex: in.ifIndex, src: nw.serverID.AsSlice(), mac: req.MAC.String(), lease: l.IP, file: file}
	if nw.relay.IsValid() {
		// RFC 2131 4.1: to the relay's server port, routed.
		out.dst, out.ifIndex = &net.UDPAddr{IP: nw.relay.AsSlice(), Port: serverPort}, 0
	}
	return out, result, nil
}

func secs(d time.Duration) []byte {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], uint32(d/time.Second))
	return b[:]
}

// addBoot adds what proxyDHCP would tell a PXE client (boot file, siaddr,
// sname, option 60/43), decided by the same Booter; nothing for other
// clients or when the Booter says to ignore the client. It returns the
// boot file.
func (s *Server) addBoot(ctx context.Context, in inbound, req Request, nw network, reply *dhcpv4.DHCPv4) string {
	if s.Booter == nil {
		return ""
	}
	// proxydhcp only parses DISCOVER and REQUEST; an INFORM asks the same.
	data := in.data
	if req.Type == dhcpv4.MessageTypeInform {
		p := *req.Pkt
		p.Options = maps(req.Pkt.Options)
		p.UpdateOption(dhcpv4.OptMessageType(dhcpv4.MessageTypeRequest))
		data = p.ToBytes()
	}
	preq, client, err := proxydhcp.ParseRequest(data)
	if err != nil {
		return "" // not a PXE client: a plain lease
	}
	bootIP := s.bootIP(nw)
	client.ServerIP, client.Port = bootIP, serverPort
	if info, ok := s.lookupIface(in.ifIndex); ok && !nw.relay.IsValid() {
		client.Interface = info.name
	}
	boot, err := s.Booter.BootFor(ctx, client)
	if err != nil {
		if !errors.Is(err, proxydhcp.ErrIgnore) {
			s.logger().WarnContext(ctx, "dhcpserver: booter failed: lease without boot options", "mac", client.MAC.String(), "err", err)
		}
		return ""
	}
	px, err := proxydhcp.BuildReply(preq, client, bootIP, boot)
	if err != nil {
		s.logger().WarnContext(ctx, "dhcpserver: boot options", "mac", client.MAC.String(), "err", err)
		return ""
	}
	reply.ServerIPAddr = px.ServerIPAddr
	reply.ServerHostName = px.ServerHostName
	reply.BootFileName = px.BootFileName
	for _, code := range []dhcpv4.OptionCode{dhcpv4.OptionClassIdentifier, dhcpv4.OptionVendorSpecificInformation, dhcpv4.OptionBootfileName, dhcpv4.OptionClientMachineIdentifier} {
		if v := px.Options.Get(code); v != nil {
			reply.UpdateOption(dhcpv4.OptGeneric(code, v))
		}
	}
	return boot.Filename
}

func maps(o dhcpv4.Options) dhcpv4.Options {
	out := make(dhcpv4.Options, len(o))
	for k, v := range o {
		out[k] = v
	}
	return out
}

func (s *Server) bootIP(nw network) net.IP {
	if v4 := s.ServerIP.To4(); v4 != nil {
		return v4
	}
	return nw.serverID.AsSlice()
}

// destination applies RFC 2131 4.1 without a relay: unicast to ciaddr
// when the client has one, else broadcast (a unicast to yiaddr would need
// an ARP entry the server cannot add from a UDP socket).
func (s *Server) destination(req Request, reply *dhcpv4.DHCPv4) *net.UDPAddr {
	if ci := req.Pkt.ClientIPAddr.To4(); ci != nil && !ci.IsUnspecified() {
		return &net.UDPAddr{IP: ci, Port: clientPort}
	}
	return s.broadcast()
}

func (s *Server) broadcast() *net.UDPAddr {
	if s.bcastAddr != nil {
		return s.bcastAddr
	}
	return &net.UDPAddr{IP: net.IPv4bcast, Port: clientPort}
}

// proxyAnswer answers a PXE client's DISCOVER on an interface without a
// range as proxyDHCP would.
func (s *Server) proxyAnswer(ctx context.Context, in inbound, req Request, info ifaceInfo) (*outbound, string, error) {
	if !s.ProxyElsewhere || s.Booter == nil {
		return nil, ResultNoRange, fmt.Errorf("dhcpserver: no range on interface %s", info.name)
	}
	if len(s.ProxyInterfaces) > 0 && !slices.Contains(s.ProxyInterfaces, info.name) {
		return nil, ResultNoRange, fmt.Errorf("dhcpserver: no range on interface %s, and proxyDHCP does not serve it", info.name)
	}
	sid := info.nets[0].Addr()
	if len(s.ProxySubnets) > 0 {
		found := false
		for _, n := range info.nets {
			for _, p := range s.ProxySubnets {
				if p.Contains(n.Addr()) && !found {
					found, sid = true, n.Addr()
				}
			}
		}
		if !found {
			return nil, ResultNoRange, fmt.Errorf("dhcpserver: no range on interface %s, and proxyDHCP's subnets exclude it", info.name)
		}
	}
	if req.Type != dhcpv4.MessageTypeDiscover {
		return nil, ResultNoRange, fmt.Errorf("dhcpserver: %s on interface %s without a range", req.Type, info.name)
	}
	preq, client, err := proxydhcp.ParseRequest(in.data)
	if err != nil {
		return nil, ResultNoRange, fmt.Errorf("dhcpserver: no range on interface %s: %w", info.name, err)
	}
	bootIP := s.bootIP(network{serverID: sid})
	client.ServerIP, client.Port, client.Interface = bootIP, serverPort, info.name
	boot, err := s.Booter.BootFor(ctx, client)
	if errors.Is(err, proxydhcp.ErrIgnore) {
		return nil, ResultIgnored, err
	}
	if err != nil {
		return nil, ResultBooterError, err
	}
	reply, err := proxydhcp.BuildReply(preq, client, bootIP, boot)
	if err != nil {
		return nil, ResultBooterError, err
	}
	return &outbound{reply: reply, dst: s.destination(req, reply), ifIndex: in.ifIndex, mac: req.MAC.String(), file: boot.Filename}, ResultProxyOffered, nil
}

// event records an event, logging (not failing on) a store error.
func (s *Server) event(ctx context.Context, mac, msg string) {
	if s.Events == nil {
		return
	}
	if _, err := s.Events.AddEvent(ctx, store.Event{MAC: mac, Time: s.now(), Kind: store.EventDHCP, Message: msg}); err != nil {
		s.logger().WarnContext(ctx, "dhcpserver: event not recorded", "mac", mac, "err", err)
	}
}

// warn logs at Warn level at most once per 10 s per key (at Debug
// otherwise), so that a storm of one problem does not flood the log; it
// reports whether it logged at Warn level (then an event is due too).
func (s *Server) warn(ctx context.Context, key, msg string, args ...any) bool {
	now := time.Now()
	s.warnMu.Lock()
	if s.warnNext == nil {
		s.warnNext = map[string]time.Time{}
	}
	loud := !now.Before(s.warnNext[key])
	if loud {
		if len(s.warnNext) > 1024 {
			clear(s.warnNext)
		}
		s.warnNext[key] = now.Add(10 * time.Second)
	}
	s.warnMu.Unlock()
	if loud {
		s.logger().WarnContext(ctx, msg, args...)
	} else {
		s.logger().DebugContext(ctx, msg, args...)
	}
	return loud
}
