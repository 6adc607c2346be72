package server

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/preboot/preboot/config"
	"github.com/preboot/preboot/dhcp6"
	"github.com/preboot/preboot/proxydhcp"
	"github.com/preboot/preboot/store"
	"golang.org/x/sync/errgroup"
)

// serviceDHCP6 is the DHCPv6 server's name in GET /api/v1/status (listed
// only when it is on).
const serviceDHCP6 = "dhcp6"

// serviceDHCP6Proxy is the DHCPv6 proxy's name in GET /api/v1/status
// (listed only when it is on).
const serviceDHCP6Proxy = "dhcp6-proxy"

// newDHCP6Server builds the embedded DHCPv6 server from the configuration
// (nil when it is off) and opens its socket, so that Run fails at once
// when port 547 is taken. Its leases live in db.
func newDHCP6Server(cfg config.Config, db store.Store, booter proxydhcp.Booter, log *slog.Logger) (*dhcp6.Server, net.PacketConn, error) {
	if !cfg.DHCP6.Enabled() {
		return nil, nil, nil
	}
	leases, ok := db.(store.Leases)
	if !ok {
		return nil, nil, fmt.Errorf("dhcp6: the store (%T) keeps no leases", db)
	}
	name, _ := os.Hostname()
	s := &dhcp6.Server{
		Leases:    leases,
		Name:      name,
		Booter:    booter,
		LeaseTime: cfg.DHCP6.LeaseTime,
		Interface: cfg.Interface,
		Logger:    log,
	}
	for _, r := range cfg.DHCP6.Ranges {
		start, end, err := config.ParseRange6(r)
		if err != nil {
			return nil, nil, err
		}
		s.Ranges = append(s.Ranges, dhcp6.Range{Start: start, End: end})
	}
	for _, d := range cfg.DHCP6.DNS {
		a, err := netip.ParseAddr(strings.TrimSpace(d))
		if err != nil {
			return nil, nil, fmt.Errorf("dhcp6.dns: %w", err)
		}
		s.DNS = append(s.DNS, a)
	}
	if err := s.Check(); err != nil {
		return nil, nil, err
	}
	conn, err := s.Listen()
	if err != nil {
		return nil, nil, err
	}
	return s, conn, nil
}

// startDHCP6Proxy opens the DHCPv6 proxy's sockets (UDP 547 and 4011),
// so that Run fails at once when a port is taken, and serves them in g
// until ctx ends. It does nothing when the proxy is off.
func startDHCP6Proxy(ctx context.Context, g *errgroup.Group, cfg config.Config, booter proxydhcp.Booter, status *serverStatus, log *slog.Logger) error {
	if !cfg.DHCP6.Proxy {
		return nil
	}
	p := &dhcp6.Proxy{Booter: booter, Interface: cfg.Interface, Logger: log}
	dhcpConn, binlConn, err := p.Listen()
	if err != nil {
		return err
	}
	status.up(serviceDHCP6Proxy, dhcpConn.LocalAddr().String(), binlConn.LocalAddr().String())
	g.Go(func() error {
		defer status.down(serviceDHCP6Proxy)
		return p.Serve(ctx, dhcpConn, binlConn)
	})
	return nil
}
