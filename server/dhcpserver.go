package server

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/preboot/preboot/config"
	"github.com/preboot/preboot/dhcpserver"
	"github.com/preboot/preboot/proxydhcp"
	"github.com/preboot/preboot/store"
)

// newDHCPServer builds the embedded DHCP server from the configuration
// (nil when it is off) and opens its socket, so that Run fails at once
// when port 67 is taken. Its leases live in db; its events go to events.
func newDHCPServer(ctx context.Context, cfg config.Config, db store.Store, events dhcpserver.Events, booter proxydhcp.Booter,
	serverIP net.IP, reg prometheus.Registerer, log *slog.Logger) (*dhcpserver.Server, *net.UDPConn, error) {
	if !cfg.DHCP.Enabled() {
		return nil, nil, nil
	}
	leases, ok := db.(store.Leases)
	if !ok {
		return nil, nil, fmt.Errorf("dhcp: the store (%T) keeps no leases", db)
	}
	rs, err := cfg.DHCP.ParsedRanges()
	if err != nil {
		return nil, nil, err
	}
	routers, err := config.ParseAddrs("dhcp.routers", cfg.DHCP.Routers)
	if err != nil {
		return nil, nil, err
	}
	dns, err := config.ParseAddrs("dhcp.dns", cfg.DHCP.DNS)
	if err != nil {
		return nil, nil, err
	}
	subnets, err := proxySubnets(cfg.ProxyDHCP)
	if err != nil {
		return nil, nil, err
	}
	name, _ := os.Hostname()
	s := &dhcpserver.Server{
		Leases:    leases,
		Booter:    booter,
		Routers:   routers,
		DNS:       dns,
		Domain:    cfg.DHCP.Domain,
		LeaseTime: cfg.DHCP.LeaseTime,
		Name:      name,
		ServerIP:  serverIP,
		Interface: cfg.Interface,
		Addr:      cfg.ProxyDHCP.DHCPListen,
		Events:    events,
		Logger:    log,
		Metrics:   dhcpserver.NewMetrics(reg),
		// Port 67 is the DHCP server's: it answers PXE clients of
		// networks without a range as proxyDHCP would.
		ProxyElsewhere:  cfg.ProxyDHCP.Enabled && cfg.ProxyDHCP.DHCPListen != "",
		ProxyInterfaces: cfg.ProxyDHCP.Interfaces,
		ProxySubnets:    subnets,
	}
	for _, r := range rs {
		s.Ranges = append(s.Ranges, dhcpserver.Range{LeaseRange: store.LeaseRange{Start: r.Start, End: r.End}, Subnet: r.Subnet})
	}
	if err := s.Check(); err != nil {
		return nil, nil, err
	}
	conn, err := s.Listen(ctx)
	if err != nil {
		return nil, nil, err
	}
	return s, conn, nil
}

// serviceDHCPServer is the embedded DHCP server's name in GET
// /api/v1/status (listed only when it is on).
const serviceDHCPServer = "dhcp"
