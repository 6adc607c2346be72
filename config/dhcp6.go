package config

import (
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// DHCP6Server configures the embedded DHCPv6 server (docs/ipv6.md). It
// is off unless Ranges is set; then it owns UDP port 547.
type DHCP6Server struct {
	// Ranges are IPv6 address ranges "START-END" (inclusive) or prefixes
	// "PREFIX/BITS" (BITS from 64 to 120: the prefix's addresses from
	// ::100 on); each is served on the interface with a global address
	// whose prefix holds it.
	Ranges []string `yaml:"ranges"`
	// DNS servers (option 23) handed out.
	DNS []string `yaml:"dns"`
	// LeaseTime is the addresses' valid lifetime (1h).
	LeaseTime time.Duration `yaml:"lease_time"`
	// Proxy runs the DHCPv6 proxy instead (UDP 547 and 4011): the site's
	// DHCPv6 server hands out the addresses, Preboot adds the boot file
	// for UEFI PXE firmware. It excludes Ranges.
	Proxy bool `yaml:"proxy"`
}

// Enabled reports whether the DHCPv6 server runs.
func (d DHCP6Server) Enabled() bool { return len(d.Ranges) > 0 }

// IPv6Boot reports whether Preboot answers DHCPv6 at all (server or
// proxy).
func (d DHCP6Server) IPv6Boot() bool { return d.Enabled() || d.Proxy }

// ParseRange6 parses "START-END" or "PREFIX/BITS" into an inclusive range.
func ParseRange6(s string) (start, end netip.Addr, err error) {
	s = strings.TrimSpace(s)
	if a, b, ok := strings.Cut(s, "-"); ok {
		start, err1 := netip.ParseAddr(strings.TrimSpace(a))
		end, err2 := netip.ParseAddr(strings.TrimSpace(b))
		switch {
		case err1 != nil || err2 != nil || !start.Is6() || !end.Is6() || start.Is4In6() || end.Is4In6() || start.Zone() != "" || end.Zone() != "":
			return netip.Addr{}, netip.Addr{}, fmt.Errorf("dhcp6 range %q: want two IPv6 addresses START-END", s)
		case end.Less(start):
			return netip.Addr{}, netip.Addr{}, fmt.Errorf("dhcp6 range %q: END is before START", s)
		case !start.IsGlobalUnicast() || !end.IsGlobalUnicast():
			return netip.Addr{}, netip.Addr{}, fmt.Errorf("dhcp6 range %q: not global unicast addresses", s)
		}
		return start, end, nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil || !p.Addr().Is6() || p.Addr().Is4In6() || p.Bits() < 64 || p.Bits() > 120 || !p.Addr().IsGlobalUnicast() {
		return netip.Addr{}, netip.Addr{}, fmt.Errorf("dhcp6 range %q: want START-END or an IPv6 prefix /64 to /120", s)
	}
	p = p.Masked()
	b := p.Addr().As16()
	b[14] |= 1 // ::100
	start = netip.AddrFrom16(b)
	for i := p.Bits(); i < 128; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	end = netip.AddrFrom16(b)
	return start, end, nil
}

// check validates the DHCPv6 server settings.
func (d DHCP6Server) check() []error {
	var errs []error
	for _, r := range d.Ranges {
		if _, _, err := ParseRange6(r); err != nil {
			errs = append(errs, fmt.Errorf("dhcp6.ranges: %w", err))
		}
	}
	for _, s := range d.DNS {
		if a, err := netip.ParseAddr(strings.TrimSpace(s)); err != nil || !a.Is6() || a.Is4In6() {
			errs = append(errs, fmt.Errorf("dhcp6.dns: %q: want an IPv6 address", s))
		}
	}
	if d.Proxy && d.Enabled() {
		errs = append(errs, fmt.Errorf("dhcp6.proxy and dhcp6.ranges exclude each other (both answer on UDP 547): a proxy leaves the addresses to the site's DHCPv6 server"))
	}
	if d.Enabled() && (d.LeaseTime < time.Minute || d.LeaseTime > 365*24*time.Hour) {
		errs = append(errs, fmt.Errorf("dhcp6.lease_time %s: want between 1m and 8760h", d.LeaseTime))
	}
	return errs
}
