package config

import (
	"fmt"
	"net/netip"
	"net/url"
	"time"

	"github.com/preboot/preboot/tlspin"
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
	// Relays are Preboot servers on subnets this one has no interface
	// on: they send the magic packets of those subnets' devices.
	Relays []WakeRelay `yaml:"relays"`
}

// WakeRelay is a Preboot server that sends magic packets on its subnet
// for this one (POST /api/v1/wake/relay on its admin API).
type WakeRelay struct {
	// Subnet (CIDR): devices whose last address is in it are woken by
	// this relay.
	Subnet string `yaml:"subnet"`
	// URL of the relay server's admin API, e.g. https://10.2.0.5:8443.
	URL string `yaml:"url"`
	// Fingerprint pins the relay's TLS certificate ("sha256:HEX", as
	// its log and `preboot status` show it); empty: the system's roots.
	Fingerprint string `yaml:"fingerprint"`
	// TokenFile holds an admin API token of the relay server (`preboot
	// token create NAME` there).
	TokenFile string `yaml:"token_file"`
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
	for i, r := range w.Relays {
		if p, err := netip.ParsePrefix(r.Subnet); err != nil || !p.Addr().Is4() {
			errs = append(errs, fmt.Errorf("wake.relays[%d].subnet: %q is not an IPv4 CIDR subnet", i, r.Subnet))
		}
		if u, err := url.Parse(r.URL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			errs = append(errs, fmt.Errorf("wake.relays[%d].url: %q is not an http(s) URL", i, r.URL))
		}
		if r.Fingerprint != "" {
			if _, err := tlspin.Parse(r.Fingerprint); err != nil {
				errs = append(errs, fmt.Errorf("wake.relays[%d].fingerprint: %w", i, err))
			}
		}
		if r.TokenFile == "" {
			errs = append(errs, fmt.Errorf("wake.relays[%d].token_file: required (an admin token of the relay server)", i))
		}
	}
	return errs
}
