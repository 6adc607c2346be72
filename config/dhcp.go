package config

import (
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// DHCPServer configures the embedded DHCP server (docs/dhcp-server.md).
// It is off unless Ranges is set; then it owns UDP port 67 and proxyDHCP
// keeps port 4011 only.
type DHCPServer struct {
	// Ranges are address ranges "START-END" (IPv4, inclusive); each is
	// served on the interface whose network holds it. "START-END/BITS"
	// also names the range's subnet, which serves it through DHCP relays
	// whose address (giaddr) is inside it.
	Ranges []string `yaml:"ranges"`
	// Routers (option 3) and DNS servers (option 6) handed out.
	Routers []string `yaml:"routers"`
	DNS     []string `yaml:"dns"`
	// Domain (option 15), optional.
	Domain string `yaml:"domain"`
	// LeaseTime is how long a lease lasts (1h).
	LeaseTime time.Duration `yaml:"lease_time"`
}

// DefaultDHCPLeaseTime is the default lease time of the embedded DHCP
// server.
const DefaultDHCPLeaseTime = time.Hour

// Enabled reports whether the embedded DHCP server runs.
func (d DHCPServer) Enabled() bool { return len(d.Ranges) > 0 }

// AddrRange is a parsed DHCP range; Subnet is invalid when not given.
type AddrRange struct {
	Start, End netip.Addr
	Subnet     netip.Prefix
}

// ParseRange parses "START-END" or "START-END/BITS".
func ParseRange(s string) (AddrRange, error) {
	rest, bits, hasBits := strings.Cut(strings.TrimSpace(s), "/")
	a, b, ok := strings.Cut(rest, "-")
	if !ok {
		return AddrRange{}, fmt.Errorf("dhcp range %q: want START-END", s)
	}
	start, err1 := netip.ParseAddr(strings.TrimSpace(a))
	end, err2 := netip.ParseAddr(strings.TrimSpace(b))
	switch {
	case err1 != nil || err2 != nil || !start.Is4() || !end.Is4():
		return AddrRange{}, fmt.Errorf("dhcp range %q: want two IPv4 addresses START-END", s)
	case end.Less(start):
		return AddrRange{}, fmt.Errorf("dhcp range %q: END is before START", s)
	case start.Unmap().IsUnspecified() || end == netip.AddrFrom4([4]byte{255, 255, 255, 255}) || start.IsLoopback() || start.IsMulticast() || end.IsMulticast():
		return AddrRange{}, fmt.Errorf("dhcp range %q: not a range of host addresses", s)
	}
	r := AddrRange{Start: start, End: end}
	if hasBits {
		p, err := netip.ParsePrefix(start.String() + "/" + bits)
		if err != nil || p.Bits() < 8 {
			return AddrRange{}, fmt.Errorf("dhcp range %q: want START-END/BITS with BITS from 8 to 32", s)
		}
		r.Subnet = p.Masked()
		if !r.Subnet.Contains(end) {
			return AddrRange{}, fmt.Errorf("dhcp range %q: END is outside %s", s, r.Subnet)
		}
	}
	return r, nil
}

// ParsedRanges returns the ranges (already validated by Finish).
func (d DHCPServer) ParsedRanges() ([]AddrRange, error) {
	out := make([]AddrRange, 0, len(d.Ranges))
	for _, s := range d.Ranges {
		r, err := ParseRange(s)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// ParseAddrs parses a list of IPv4 addresses (routers, DNS).
func ParseAddrs(name string, list []string) ([]netip.Addr, error) {
	out := make([]netip.Addr, 0, len(list))
	for _, s := range list {
		a, err := netip.ParseAddr(strings.TrimSpace(s))
		if err != nil || !a.Is4() {
			return nil, fmt.Errorf("%s: %q: want an IPv4 address", name, s)
		}
		out = append(out, a)
	}
	return out, nil
}

// check validates the DHCP server settings.
func (d DHCPServer) check() []error {
	var errs []error
	rs, err := d.ParsedRanges()
	if err != nil {
		errs = append(errs, fmt.Errorf("dhcp.ranges: %w", err))
	}
	for i := range rs {
		for j := i + 1; j < len(rs); j++ {
			if !rs[i].End.Less(rs[j].Start) && !rs[j].End.Less(rs[i].Start) {
				errs = append(errs, fmt.Errorf("dhcp.ranges: %s-%s and %s-%s overlap", rs[i].Start, rs[i].End, rs[j].Start, rs[j].End))
			}
		}
	}
	if _, err := ParseAddrs("dhcp.routers", d.Routers); err != nil {
		errs = append(errs, err)
	}
	if _, err := ParseAddrs("dhcp.dns", d.DNS); err != nil {
		errs = append(errs, err)
	}
	if d.LeaseTime < time.Minute || d.LeaseTime > 365*24*time.Hour {
		errs = append(errs, fmt.Errorf("dhcp.lease_time %s: want between 1m and 8760h", d.LeaseTime))
	}
	if strings.ContainsAny(d.Domain, " \t\n/") || len(d.Domain) > 253 {
		errs = append(errs, fmt.Errorf("dhcp.domain %q: want a domain name", d.Domain))
	}
	return errs
}
