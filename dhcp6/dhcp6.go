// Package dhcp6 is the DHCPv6 side of Preboot's embedded DHCP server
// (RFC 8415, stateful): it hands out IA_NA addresses from configured
// ranges and, to PXE, UEFI HTTP boot and iPXE clients, the boot file URL
// (option 59, RFC 5970) the policy picks — tftp://[addr]/file for PXE
// firmware (brackets: EDK2, shim and GRUB parse them), the HTTP URL for
// HTTP boot and iPXE clients. It is off by default. Proxy (proxy.go) is
// the other mode: the site's DHCPv6 server hands out addresses and Preboot
// only adds the boot file for UEFI PXE firmware, on UDP 547 and 4011.
//
// A range is served on the interface that has a global address whose
// prefix holds it; boot URLs name that address. Relayed messages are not
// answered. Leases are kept in the store (store.Leases, table
// dhcp6_leases), as the DHCPv4 server's are: they survive a restart, and
// servers sharing a PostgreSQL database never hand out one address twice.
package dhcp6

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/preboot/preboot/proxydhcp"
	"github.com/preboot/preboot/store"
)

// Defaults.
const (
	DefaultLeaseTime   = time.Hour
	DefaultOfferHold   = time.Minute
	DefaultDeclineHold = 10 * time.Minute
	// EnterprisePXE is the IANA enterprise number (Intel) PXE clients put
	// in their vendor class (option 16) with "PXEClient"/"HTTPClient".
	EnterprisePXE = 343
)

// Results a message is logged and counted under.
const (
	ResultAdvertised = "advertised"
	ResultReplied    = "replied"
	ResultReleased   = "released"
	ResultDeclined   = "declined"
	ResultExhausted  = "exhausted"
	ResultMalformed  = "malformed"
	ResultIgnored    = "ignored"      // a message type a server does not answer
	ResultNotForUs   = "not_for_us"   // carries another server's identifier
	ResultNoRange    = "no_range"     // no range on the receiving interface
	ResultRelayed    = "relayed"      // Relay-Forward: not served
	ResultBooterErr  = "booter_error" // the policy failed; answered without boot file
)

// Errors Handle returns (wrapped) for messages it does not answer.
var (
	ErrMalformed = errors.New("malformed DHCPv6 message")
	ErrIgnored   = errors.New("DHCPv6 message not answered")
)

// Server is the DHCPv6 server. Leases and Ranges are required.
type Server struct {
	// Leases is the lease database (IPv6 requests go to its DHCPv6 table).
	Leases store.Leases
	Ranges []Range
	// Name is written into every lease as the server that wrote it.
	Name string
	// Booter decides what PXE/iPXE clients boot (nil: no boot file).
	Booter proxydhcp.Booter
	// DNS servers (option 23) handed out.
	DNS []netip.Addr
	// LeaseTime (valid and preferred lifetime), OfferHold, DeclineHold:
	// see the defaults.
	LeaseTime, OfferHold, DeclineHold time.Duration
	// ServerID is the server's DUID; by default a DUID-LL of the first
	// interface with a MAC, else a random DUID-UUID.
	ServerID dhcpv6.DUID
	// Interface, when set, is the only interface served.
	Interface string
	// Addr is the listen address (default "[::]:547").
	Addr string
	// Workers is the number of goroutines reading the socket, each
	// answering one message at a time (default max(4, 2×GOMAXPROCS)).
	Workers int
	Logger  *slog.Logger
	// Now returns the current time (tests); default time.Now.
	Now func() time.Time

	// interfaces looks an interface up by name (tests replace it).
	interfaces func(name string) (Iface, bool)

	initOnce sync.Once
	sid      dhcpv6.DUID
}

// Iface is what the server needs to know of a receiving interface.
type Iface struct {
	Name string
	// Nets are its global (not link-local) IPv6 addresses with their prefix.
	Nets []netip.Prefix
}

// Check validates the configuration.
func (s *Server) Check() error {
	if s.Leases == nil {
		return errors.New("dhcp6: no lease store")
	}
	if len(s.Ranges) == 0 {
		return errors.New("dhcp6: no address range")
	}
	for _, r := range s.Ranges {
		if !r.Start.Is6() || !r.End.Is6() || r.Start.Is4In6() || r.End.Less(r.Start) {
			return fmt.Errorf("dhcp6: bad range %v", r)
		}
	}
	return nil
}

func (s *Server) init() {
	s.initOnce.Do(func() {
		s.sid = s.ServerID
		if s.sid == nil {
			s.sid = defaultDUID(s.Interface)
		}
	})
}

// defaultDUID is a DUID-LL of ifname (or of the first interface with an
// Ethernet address), else a random DUID-UUID.
func defaultDUID(ifname string) dhcpv6.DUID {
	ifs, _ := net.Interfaces()
	for _, ifi := range ifs {
		if (ifname == "" || ifi.Name == ifname) && len(ifi.HardwareAddr) == 6 && ifi.Flags&net.FlagLoopback == 0 {
			return &dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: ifi.HardwareAddr}
		}
	}
	var u [16]byte
	_, _ = rand.Read(u[:])
	return &dhcpv6.DUIDUUID{UUID: u}
}

func (s *Server) logger() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

func (s *Server) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// Inbound is where a message came from.
type Inbound struct {
	Peer  netip.Addr // the client's source address (link-local on the link)
	Iface Iface
	// Port is where the message arrived: 547, or 4011 (the proxy's boot
	// service); 0 counts as 547.
	Port int
	// Local is the address the message was sent to when it was unicast
	// (the proxy's boot service), else invalid.
	Local netip.Addr
}

// Answer is Handle's result.
type Answer struct {
	Reply  *dhcpv6.Message // nil: no answer
	Result string
	MAC    string
	Addr   netip.Addr // the address handed out, if any
	Boot   string     // option 59, if any
}

// client is what a message tells of its sender.
type client struct {
	duid string // hex
	mac  net.HardwareAddr
	arch iana.Arch
	hasArch,
	boot bool // PXE, HTTP boot or iPXE client
	vendor   string // "PXEClient..." / "HTTPClient..." (enterprise 343)
	user     string // first user class, "iPXE"
	hostname string // the client FQDN option's name, if any
}

// Handle answers one message. It does no I/O besides the Booter and the
// lease store, and is fuzzed. A message the store fails on (not one it
// refuses) is not answered: the client retransmits.
func (s *Server) Handle(ctx context.Context, m dhcpv6.DHCPv6, in Inbound) (Answer, error) {
	s.init()
	if m.IsRelay() {
		return Answer{Result: ResultRelayed}, fmt.Errorf("%w: relayed messages are not served", ErrIgnored)
	}
	msg, ok := m.(*dhcpv6.Message)
	if !ok {
		return Answer{Result: ResultMalformed}, fmt.Errorf("%w: %T", ErrMalformed, m)
	}
	switch msg.Type() {
	case dhcpv6.MessageTypeSolicit, dhcpv6.MessageTypeRequest, dhcpv6.MessageTypeRenew, dhcpv6.MessageTypeRebind,
		dhcpv6.MessageTypeRelease, dhcpv6.MessageTypeDecline, dhcpv6.MessageTypeConfirm, dhcpv6.MessageTypeInformationRequest:
	default:
		return Answer{Result: ResultIgnored}, fmt.Errorf("%w: %s", ErrIgnored, msg.Type())
	}
	cid := msg.Options.ClientID()
	if cid == nil && msg.Type() != dhcpv6.MessageTypeInformationRequest {
		return Answer{Result: ResultMalformed}, fmt.Errorf("%w: %s without client identifier", ErrMalformed, msg.Type())
	}
	sid := msg.Options.ServerID()
	switch msg.Type() {
	case dhcpv6.MessageTypeSolicit, dhcpv6.MessageTypeRebind, dhcpv6.MessageTypeConfirm:
		if sid != nil {
			return Answer{Result: ResultMalformed}, fmt.Errorf("%w: %s with a server identifier", ErrMalformed, msg.Type())
		}
	case dhcpv6.MessageTypeRequest, dhcpv6.MessageTypeRenew, dhcpv6.MessageTypeRelease, dhcpv6.MessageTypeDecline:
		if sid == nil {
			return Answer{Result: ResultMalformed}, fmt.Errorf("%w: %s without server identifier", ErrMalformed, msg.Type())
		}
		if !sid.Equal(s.sid) {
			return Answer{Result: ResultNotForUs}, fmt.Errorf("%w: for server %s", ErrIgnored, sid)
		}
	case dhcpv6.MessageTypeInformationRequest:
		if sid != nil && !sid.Equal(s.sid) {
			return Answer{Result: ResultNotForUs}, fmt.Errorf("%w: for server %s", ErrIgnored, sid)
		}
	}
	rng, serverAddr, ok := s.rangeFor(in.Iface)
	if !ok {
		return Answer{Result: ResultNoRange}, fmt.Errorf("%w: no range on interface %q", ErrIgnored, in.Iface.Name)
	}
	c := readClient(msg, cid, in.Peer)
	a := Answer{MAC: c.mac.String()}
	var mods []dhcpv6.Modifier
	mods = append(mods, dhcpv6.WithServerID(s.sid))
	if len(s.DNS) > 0 && msg.IsOptionRequested(dhcpv6.OptionDNSRecursiveNameServer) {
		ips := make([]net.IP, 0, len(s.DNS))
		for _, d := range s.DNS {
			ips = append(ips, d.AsSlice())
		}
		mods = append(mods, dhcpv6.WithDNS(ips...))
	}
	now := s.now()
	lt := orDefault(s.LeaseTime, DefaultLeaseTime)
	var err error
	switch msg.Type() {
	case dhcpv6.MessageTypeSolicit:
		ia := msg.Options.OneIANA()
		rapid := msg.GetOneOption(dhcpv6.OptionRapidCommit) != nil
		if ia != nil {
			key := leaseKey(c.duid, ia.IaId)
			var hint netip.Addr
			if ad := ia.Options.OneAddress(); ad != nil {
				hint, _ = netip.AddrFromSlice(ad.IPv6Addr)
			}
			req := s.request(rng, key, c, hint, now)
			var l store.Lease
			if rapid {
				if l, err = s.Leases.OfferLease(ctx, req, lt); err == nil {
					l, err = s.Leases.BindLease(ctx, l.IP, req, lt)
				}
			} else {
				l, err = s.Leases.OfferLease(ctx, req, orDefault(s.OfferHold, DefaultOfferHold))
			}
			if err != nil && !refused(err) {
				return Answer{}, fmt.Errorf("dhcp6: lease for %s: %w", key, err)
			}
			if err != nil {
				a.Result = ResultExhausted
				mods = append(mods, dhcpv6.WithOption(&dhcpv6.OptStatusCode{StatusCode: iana.StatusNoAddrsAvail, StatusMessage: "no free address"}))
				s.logger().WarnContext(ctx, "dhcp6: address range exhausted", "range", rng.String(), "mac", a.MAC)
			} else {
				a.Addr = l.IP
				mods = append(mods, withIANA(ia.IaId, l.IP, lt, lt))
			}
		}
		if a.Result == "" {
			a.Result = ResultAdvertised
		}
	case dhcpv6.MessageTypeRequest, dhcpv6.MessageTypeRenew, dhcpv6.MessageTypeRebind:
		for _, ia := range msg.Options.IANA() {
			key := leaseKey(c.duid, ia.IaId)
			var want netip.Addr
			if ad := ia.Options.OneAddress(); ad != nil {
				want, _ = netip.AddrFromSlice(ad.IPv6Addr)
			}
			cur, ok, lerr := s.leaseOf(ctx, key)
			if lerr != nil {
				return Answer{}, lerr
			}
			if ok && cur.State != store.LeaseDeclined && rng.Contains(cur.IP) && (msg.Type() == dhcpv6.MessageTypeRequest || !want.IsValid()) {
				want = cur.IP
			}
			switch {
			case !want.IsValid() && msg.Type() == dhcpv6.MessageTypeRequest:
				l, oerr := s.Leases.OfferLease(ctx, s.request(rng, key, c, netip.Addr{}, now), lt)
				if oerr != nil && !refused(oerr) {
					return Answer{}, fmt.Errorf("dhcp6: lease for %s: %w", key, oerr)
				}
				if oerr != nil {
					err = oerr
					mods = append(mods, withIANAStatus(ia.IaId, iana.StatusNoAddrsAvail, "no free address"))
					a.Result = ResultExhausted
					continue
				}
				want = l.IP
			case !want.IsValid():
				mods = append(mods, withIANAStatus(ia.IaId, iana.StatusNoBinding, "no address in IA_NA"))
				continue
			case !rng.Contains(want):
				// Not on this link (RFC 8415 18.3.4/18.3.5): lifetimes 0.
				mods = append(mods, withIANA(ia.IaId, want, 0, 0))
				continue
			}
			l, berr := s.Leases.BindLease(ctx, want, s.request(rng, key, c, netip.Addr{}, now), lt)
			if berr != nil && !refused(berr) {
				return Answer{}, fmt.Errorf("dhcp6: lease for %s: %w", key, berr)
			}
			if berr != nil {
				err = berr
				if msg.Type() == dhcpv6.MessageTypeRequest {
					mods = append(mods, withIANAStatus(ia.IaId, iana.StatusNoAddrsAvail, "address taken"))
				} else {
					mods = append(mods, withIANA(ia.IaId, want, 0, 0))
				}
				continue
			}
			a.Addr = l.IP
			mods = append(mods, withIANA(ia.IaId, l.IP, lt, lt))
		}
		if a.Result == "" {
			a.Result = ResultReplied
		}
	case dhcpv6.MessageTypeRelease, dhcpv6.MessageTypeDecline:
		for _, ia := range msg.Options.IANA() {
			key := leaseKey(c.duid, ia.IaId)
			for _, ad := range ia.Options.Addresses() {
				ip, _ := netip.AddrFromSlice(ad.IPv6Addr)
				var e error
				if !ip.Is6() || ip.Is4In6() {
					e = fmt.Errorf("dhcp6: %s is no IPv6 address: %w", ip, store.ErrNotFound)
				} else if msg.Type() == dhcpv6.MessageTypeRelease {
					e = s.Leases.ReleaseLease(ctx, ip, key, now)
				} else {
					e = s.Leases.DeclineLease(ctx, ip, key, now, now.Add(orDefault(s.DeclineHold, DefaultDeclineHold)))
					if e == nil {
						s.logger().WarnContext(ctx, "dhcp6: client declined its address (in use on the link)", "mac", a.MAC, "ip", ip.String())
					}
				}
				if e != nil && !refused(e) {
					return Answer{}, fmt.Errorf("dhcp6: lease for %s: %w", key, e)
				}
				if e != nil {
					mods = append(mods, withIANAStatus(ia.IaId, iana.StatusNoBinding, "no binding"))
					err = e
				}
			}
		}
		mods = append(mods, dhcpv6.WithOption(&dhcpv6.OptStatusCode{StatusCode: iana.StatusSuccess}))
		a.Result = ResultReleased
		if msg.Type() == dhcpv6.MessageTypeDecline {
			a.Result = ResultDeclined
		}
	case dhcpv6.MessageTypeConfirm:
		code := iana.StatusSuccess
		for _, ia := range msg.Options.IANA() {
			for _, ad := range ia.Options.Addresses() {
				if ip, _ := netip.AddrFromSlice(ad.IPv6Addr); !rng.Contains(ip) {
					code = iana.StatusNotOnLink
				}
			}
		}
		mods = append(mods, dhcpv6.WithOption(&dhcpv6.OptStatusCode{StatusCode: code}))
		a.Result = ResultReplied
	case dhcpv6.MessageTypeInformationRequest:
		a.Result = ResultReplied
	}
	switch msg.Type() {
	case dhcpv6.MessageTypeSolicit, dhcpv6.MessageTypeRequest, dhcpv6.MessageTypeRenew, dhcpv6.MessageTypeRebind, dhcpv6.MessageTypeInformationRequest:
		if c.boot && a.Result != ResultExhausted {
			boot, vendor, berr := s.bootFor(ctx, c, serverAddr)
			switch {
			case berr != nil && !errors.Is(berr, proxydhcp.ErrIgnore):
				s.logger().ErrorContext(ctx, "dhcp6: policy failed; answered without boot file", "mac", a.MAC, "err", berr)
			case berr != nil:
				s.logger().DebugContext(ctx, "dhcp6: no boot file for this client", "mac", a.MAC, "reason", berr)
			case boot != "":
				a.Boot = boot
				mods = append(mods, dhcpv6.WithOption(dhcpv6.OptBootFileURL(boot)))
				if vendor != "" {
					mods = append(mods, dhcpv6.WithOption(&dhcpv6.OptVendorClass{EnterpriseNumber: EnterprisePXE, Data: [][]byte{[]byte(vendor)}}))
				}
			}
		}
	}
	var reply *dhcpv6.Message
	if msg.Type() == dhcpv6.MessageTypeSolicit && (msg.GetOneOption(dhcpv6.OptionRapidCommit) == nil || a.Result == ResultExhausted) {
		reply = &dhcpv6.Message{MessageType: dhcpv6.MessageTypeAdvertise, TransactionID: msg.TransactionID}
	} else {
		// Reply (dhcpv6.NewReplyFromMessage does not take a Decline).
		reply = &dhcpv6.Message{MessageType: dhcpv6.MessageTypeReply, TransactionID: msg.TransactionID}
		if msg.Type() == dhcpv6.MessageTypeSolicit {
			a.Result = ResultReplied
			dhcpv6.WithRapidCommit(reply)
		}
	}
	if cid != nil {
		reply.AddOption(dhcpv6.OptClientID(cid))
	}
	for _, m := range mods {
		m(reply)
	}
	a.Reply = reply
	return a, err
}

// bootFor asks the policy and turns its answer into option 59 and the
// vendor class of the reply.
func (s *Server) bootFor(ctx context.Context, c client, serverAddr netip.Addr) (url, vendor string, err error) {
	if s.Booter == nil || len(c.mac) == 0 {
		return "", "", nil
	}
	b, err := policyBoot(ctx, s.Booter, c, serverAddr, dhcpv6.DefaultServerPort, "")
	if err != nil {
		return "", "", err
	}
	return BootURL(b.Filename, serverAddr), vendorFor(c, b), nil
}

// policyBoot asks the policy what client c boots; port is where its
// message arrived (547 or 4011), iface the receiving interface.
func policyBoot(ctx context.Context, booter proxydhcp.Booter, c client, serverAddr netip.Addr, port int, iface string) (proxydhcp.Boot, error) {
	pc := proxydhcp.Client{MAC: c.mac, Arch: c.arch, HasArch: c.hasArch, VendorClass: c.vendor, UserClass: c.user,
		ServerIP: serverAddr.AsSlice(), Port: port, Interface: iface}
	b, err := booter.BootFor(ctx, pc)
	if err != nil {
		return proxydhcp.Boot{}, fmt.Errorf("dhcp6 policy: %w", err)
	}
	return b, nil
}

// BootURL is option 59 for a boot program: URLs as they are, a TFTP file
// name as tftp://[addr]/name.
func BootURL(file string, server netip.Addr) string {
	if file == "" || strings.Contains(file, "://") {
		return file
	}
	return "tftp://[" + server.String() + "]/" + strings.TrimPrefix(file, "/")
}

// vendorFor is the vendor class of the reply: "HTTPClient" for UEFI HTTP
// boot (EDK2's HTTP boot takes only offers that carry it), none for PXE:
// EDK2's PXEv6 takes an offer with an address and vendor class
// "PXEClient" for a BINL offer and asks the server again on port 4011 for
// its boot file; an offer with an address and option 59 only is used as
// it is.
func vendorFor(_ client, b proxydhcp.Boot) string {
	if b.HTTPClient {
		return proxydhcp.VendorHTTPClient
	}
	return ""
}

// rangeFor returns the range served on iface and the interface address
// in its prefix.
func (s *Server) rangeFor(iface Iface) (Range, netip.Addr, bool) {
	for _, r := range s.Ranges {
		for _, n := range iface.Nets {
			if n.Contains(r.Start) && n.Contains(r.End) {
				return r, n.Addr(), true
			}
		}
	}
	return Range{}, netip.Addr{}, false
}

func readClient(msg *dhcpv6.Message, cid dhcpv6.DUID, peer netip.Addr) client {
	var c client
	if cid != nil {
		c.duid = hex.EncodeToString(cid.ToBytes())
	}
	c.mac = macOf(peer, cid)
	if archs := msg.Options.ArchTypes(); len(archs) > 0 {
		c.arch, c.hasArch = archs[0], true
	}
	if vc := msg.Options.VendorClass(EnterprisePXE); len(vc) > 0 {
		c.vendor = string(vc[0])
	}
	if uc := msg.Options.UserClasses(); len(uc) > 0 {
		c.user = string(uc[0])
	}
	if f := msg.Options.FQDN(); f != nil && f.DomainName != nil {
		if names := f.DomainName.Labels; len(names) > 0 {
			c.hostname = names[0]
		}
	}
	c.boot = c.hasArch || strings.HasPrefix(c.vendor, proxydhcp.VendorPXEClient) ||
		strings.HasPrefix(c.vendor, proxydhcp.VendorHTTPClient) || c.user == "iPXE"
	if !c.hasArch && strings.HasPrefix(c.vendor, proxydhcp.VendorHTTPClient) {
		c.arch, c.hasArch = iana.EFI_X86_64_HTTP, true
	}
	return c
}

// macOf finds the client's Ethernet address: from a modified EUI-64
// link-local source address (EDK2, Linux and iPXE form theirs so), else
// from a DUID-LL or DUID-LLT.
func macOf(peer netip.Addr, cid dhcpv6.DUID) net.HardwareAddr {
	if peer.Is6() && peer.IsLinkLocalUnicast() {
		b := peer.As16()
		if b[11] == 0xff && b[12] == 0xfe {
			return net.HardwareAddr{b[8] ^ 2, b[9], b[10], b[13], b[14], b[15]}
		}
	}
	switch d := cid.(type) {
	case *dhcpv6.DUIDLL:
		if d.HWType == iana.HWTypeEthernet && len(d.LinkLayerAddr) == 6 {
			return d.LinkLayerAddr
		}
	case *dhcpv6.DUIDLLT:
		if d.HWType == iana.HWTypeEthernet && len(d.LinkLayerAddr) == 6 {
			return d.LinkLayerAddr
		}
	}
	return nil
}

func withIANA(iaid [4]byte, a netip.Addr, preferred, valid time.Duration) dhcpv6.Modifier {
	return dhcpv6.WithOption(&dhcpv6.OptIANA{
		IaId: iaid, T1: valid / 2, T2: valid * 4 / 5,
		Options: dhcpv6.IdentityOptions{Options: dhcpv6.Options{&dhcpv6.OptIAAddress{
			IPv6Addr: a.AsSlice(), PreferredLifetime: preferred, ValidLifetime: valid}}},
	})
}

func withIANAStatus(iaid [4]byte, code iana.StatusCode, msg string) dhcpv6.Modifier {
	return dhcpv6.WithOption(&dhcpv6.OptIANA{
		IaId:    iaid,
		Options: dhcpv6.IdentityOptions{Options: dhcpv6.Options{&dhcpv6.OptStatusCode{StatusCode: code, StatusMessage: msg}}},
	})
}
