package config

import (
	"fmt"
	"net/netip"
	"time"
)

// Wake configures Wake-on-LAN (docs/wake.md). A magic packet goes to the
// directed broadcast of the subnet of the interface that last saw the
// device; these settings cover the rest.
type Wake struct {
	// Port is the UDP port of magic packets (0: 9).
	Port int `yaml:"port"`
	// Interfaces limit the fallback, when nothing is known of where a
	// device is, to these interfaces (empty: every interface that is up
	// with an IPv4 address).
	Interfaces []string `yaml:"interfaces"`
	// Subnets (CIDR) are routed client networks: a device whose address
	// is in one, on no subnet of this server, is woken by that subnet's
	// directed broadcast (its router must forward directed broadcasts).
	// proxydhcp.subnets count as well.
	Subnets []string `yaml:"subnets"`
	// Interval is how often the scheduler looks for scheduled wakes
	// that came due (0: 10s).
	Interval time.Duration `yaml:"interval"`
}

// Prefixes returns the routed subnets: Subnets, then proxyDHCP's.
func (w Wake) Prefixes(proxy ProxyDHCP) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range append(append([]string{}, w.Subnets...), proxy.Subnets...) {
		p, err := netip.ParsePrefix(s)
		if err != nil || !p.Addr().Is4() {
			return nil, fmt.Errorf("wake.subnets: %q is not an IPv4 CIDR subnet", s)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

func (w Wake) check() []error {
	var errs []error
	if w.Port < 0 || w.Port > 65535 {
		errs = append(errs, fmt.Errorf("wake.port %d: want 1..65535 (0: 9)", w.Port))
	}
	if w.Interval < 0 {
		errs = append(errs, fmt.Errorf("wake.interval %s: must not be negative", w.Interval))
	}
	for _, s := range w.Subnets {
		if p, err := netip.ParsePrefix(s); err != nil || !p.Addr().Is4() {
			errs = append(errs, fmt.Errorf("wake.subnets: %q is not an IPv4 CIDR subnet", s))
		}
	}
	return errs
}
