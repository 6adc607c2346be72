package initenv

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv6"
)

// routerAdvert is what the environment needs of an ICMPv6 router
// advertisement (RFC 4861 4.2): how addresses are assigned on the link.
type routerAdvert struct {
	Managed        bool          // M: addresses from DHCPv6
	Other          bool          // O: other configuration from DHCPv6
	RouterLifetime time.Duration // 0: not a default router
	Prefixes       []raPrefix
	DNS            []netip.Addr // RDNSS (RFC 8106)
}

// raPrefix is a prefix information option (RFC 4861 4.6.2).
type raPrefix struct {
	Prefix     netip.Prefix
	OnLink     bool // L
	Autonomous bool // A: SLAAC
	Valid      time.Duration
}

// onLinkPrefixLen returns the length of the on-link prefix that holds a,
// or 128 when no advertised prefix does (the address is then reachable
// through the router only).
func (ra routerAdvert) onLinkPrefixLen(a netip.Addr) int {
	for _, p := range ra.Prefixes {
		if p.OnLink && p.Valid > 0 && p.Prefix.Contains(a.WithZone("")) {
			return p.Prefix.Bits()
		}
	}
	return 128
}

// autonomous says whether the advertisement gives a prefix for SLAAC.
func (ra routerAdvert) autonomous() bool {
	for _, p := range ra.Prefixes {
		if p.Autonomous && p.Valid > 0 && p.Prefix.Bits() == 64 {
			return true
		}
	}
	return false
}

// ICMPv6 types of neighbour discovery (RFC 4861).
const (
	icmpRouterSolicitation  = 133
	icmpRouterAdvertisement = 134
)

// parseRouterAdvert parses an ICMPv6 router advertisement, ICMPv6 header
// included (type 134, code 0). Options it does not need are skipped; a
// message or option that is cut short, an option of length 0 (RFC 4861
// 4.6: the message must be discarded), or a prefix length over 128 is an
// error.
func parseRouterAdvert(b []byte) (routerAdvert, error) {
	var ra routerAdvert
	if len(b) < 16 {
		return ra, fmt.Errorf("router advertisement: %d bytes, want at least 16", len(b))
	}
	if b[0] != icmpRouterAdvertisement || b[1] != 0 {
		return ra, fmt.Errorf("not a router advertisement: ICMPv6 type %d code %d", b[0], b[1])
	}
	ra.Managed = b[5]&0x80 != 0
	ra.Other = b[5]&0x40 != 0
	ra.RouterLifetime = time.Duration(binary.BigEndian.Uint16(b[6:8])) * time.Second
	opts := b[16:]
	for len(opts) > 0 {
		if len(opts) < 2 {
			return ra, errors.New("router advertisement: truncated option")
		}
		typ, n := opts[0], int(opts[1])*8
		if n == 0 {
			return ra, fmt.Errorf("router advertisement: option %d of length 0", typ)
		}
		if n > len(opts) {
			return ra, fmt.Errorf("router advertisement: option %d of %d bytes, %d left", typ, n, len(opts))
		}
		o := opts[:n]
		opts = opts[n:]
		switch typ {
		case 3: // prefix information
			if n != 32 {
				return ra, fmt.Errorf("router advertisement: prefix information of %d bytes, want 32", n)
			}
			bits := int(o[2])
			if bits > 128 {
				return ra, fmt.Errorf("router advertisement: prefix length %d", bits)
			}
			p, err := netip.AddrFrom16([16]byte(o[16:32])).Prefix(bits)
			if err != nil {
				return ra, fmt.Errorf("router advertisement: prefix: %w", err)
			}
			ra.Prefixes = append(ra.Prefixes, raPrefix{
				Prefix:     p,
				OnLink:     o[3]&0x80 != 0,
				Autonomous: o[3]&0x40 != 0,
				Valid:      time.Duration(binary.BigEndian.Uint32(o[4:8])) * time.Second,
			})
		case 25: // recursive DNS servers
			if n < 24 || (n-8)%16 != 0 {
				return ra, fmt.Errorf("router advertisement: RDNSS option of %d bytes", n)
			}
			if binary.BigEndian.Uint32(o[4:8]) == 0 {
				continue // lifetime 0: no longer to be used
			}
			for i := 8; i < n; i += 16 {
				ra.DNS = append(ra.DNS, netip.AddrFrom16([16]byte(o[i:i+16])))
			}
		}
	}
	return ra, nil
}

// routerSolicitation is an ICMPv6 router solicitation (RFC 4861 4.1) with
// the source link-layer address option of mac.
func routerSolicitation(mac net.HardwareAddr) []byte {
	b := make([]byte, 8, 16)
	b[0] = icmpRouterSolicitation
	if len(mac) == 6 {
		b = append(b, 1, 1)
		b = append(b, mac...)
	}
	return b // the kernel fills in the checksum of ICMPv6 raw sockets
}

// waitRouterAdvert solicits routers on the interface and returns the
// first valid router advertisement that arrives on it (hop limit 255 from
// a link-local source, as RFC 4861 6.1.2 demands), and its source. A
// solicitation goes out at once and every 3 s, as routers send
// unsolicited advertisements only every few minutes.
func waitRouterAdvert(ctx context.Context, ifc *net.Interface, timeout time.Duration) (routerAdvert, netip.Addr, error) {
	c, err := icmp.ListenPacket("ip6:ipv6-icmp", "::")
	if err != nil {
		return routerAdvert{}, netip.Addr{}, fmt.Errorf("ICMPv6 socket: %w", err)
	}
	defer c.Close()
	p := c.IPv6PacketConn()
	var f ipv6.ICMPFilter
	f.SetAll(true)
	f.Accept(ipv6.ICMPTypeRouterAdvertisement)
	if err := p.SetICMPFilter(&f); err != nil {
		return routerAdvert{}, netip.Addr{}, fmt.Errorf("ICMPv6 filter: %w", err)
	}
	if err := p.SetControlMessage(ipv6.FlagInterface|ipv6.FlagHopLimit, true); err != nil {
		return routerAdvert{}, netip.Addr{}, fmt.Errorf("ICMPv6 control messages: %w", err)
	}
	if err := p.SetMulticastHopLimit(255); err != nil {
		return routerAdvert{}, netip.Addr{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { _ = c.SetReadDeadline(time.Now()) })
	defer stop()

	rs := routerSolicitation(ifc.HardwareAddr)
	allRouters := &net.IPAddr{IP: net.ParseIP("ff02::2")}
	solicit := func() {
		_, _ = p.WriteTo(rs, &ipv6.ControlMessage{IfIndex: ifc.Index, HopLimit: 255}, allRouters)
	}
	solicit()
	next := time.Now().Add(3 * time.Second)
	buf := make([]byte, 1500)
	var lastErr error
	for {
		_ = c.SetReadDeadline(next)
		if ctx.Err() != nil {
			_ = c.SetReadDeadline(time.Now())
		}
		n, cm, src, err := p.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				if lastErr != nil {
					return routerAdvert{}, netip.Addr{}, fmt.Errorf("no router advertisement on %s within %s (last one refused: %w)", ifc.Name, timeout, lastErr)
				}
				return routerAdvert{}, netip.Addr{}, fmt.Errorf("no router advertisement on %s within %s", ifc.Name, timeout)
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				solicit()
				next = time.Now().Add(3 * time.Second)
				continue
			}
			return routerAdvert{}, netip.Addr{}, fmt.Errorf("ICMPv6: %w", err)
		}
		if cm == nil || cm.IfIndex != ifc.Index {
			continue
		}
		ia, ok := src.(*net.IPAddr)
		if !ok {
			continue
		}
		from, _ := netip.AddrFromSlice(ia.IP)
		if cm.HopLimit != 255 || !from.IsLinkLocalUnicast() {
			lastErr = fmt.Errorf("from %s with hop limit %d", from, cm.HopLimit)
			continue
		}
		ra, err := parseRouterAdvert(buf[:n])
		if err != nil {
			lastErr = err
			continue
		}
		return ra, from.WithZone(ifc.Name), nil
	}
}
