package server

import (
	"fmt"
	"net/netip"

	"github.com/preboot/preboot/config"
)

// proxySubnets parses proxydhcp.subnets (already validated by Finish).
func proxySubnets(c config.ProxyDHCP) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range c.Subnets {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("proxydhcp.subnets: %w", err)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}
