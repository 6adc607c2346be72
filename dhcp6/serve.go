package dhcp6

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/dhcpv6/server6"
	"golang.org/x/net/ipv6"
)

// Listen opens the server's socket (UDP 547) and joins the
// All_DHCP_Relay_Agents_and_Servers group on Interface, or on every
// multicast interface (not loopback) when Interface is empty.
func (s *Server) Listen() (net.PacketConn, error) {
	addr := &net.UDPAddr{IP: net.IPv6unspecified, Port: dhcpv6.DefaultServerPort}
	if s.Addr != "" {
		a, err := net.ResolveUDPAddr("udp6", s.Addr)
		if err != nil {
			return nil, fmt.Errorf("dhcp6: listen address %q: %w", s.Addr, err)
		}
		addr = a
	}
	conn, err := server6.NewIPv6UDPConn(s.Interface, addr)
	if err != nil {
		return nil, fmt.Errorf("dhcp6: listen %s: %w", addr, err)
	}
	p := ipv6.NewPacketConn(conn)
	var ifs []net.Interface
	if s.Interface != "" {
		ifi, err := net.InterfaceByName(s.Interface)
		if err != nil {
			conn.Close()
			return nil, fmt.Errorf("dhcp6: %w", err)
		}
		ifs = append(ifs, *ifi)
	} else {
		all, err := net.Interfaces()
		if err != nil {
			conn.Close()
			return nil, fmt.Errorf("dhcp6: %w", err)
		}
		for _, ifi := range all {
			if ifi.Flags&net.FlagLoopback == 0 && ifi.Flags&net.FlagMulticast != 0 {
				ifs = append(ifs, ifi)
			}
		}
	}
	joined := 0
	for i := range ifs {
		g := &net.UDPAddr{IP: dhcpv6.AllDHCPRelayAgentsAndServers}
		if err := p.JoinGroup(&ifs[i], g); err != nil {
			s.logger().Warn("dhcp6: cannot join ff02::1:2", "interface", ifs[i].Name, "err", err)
			continue
		}
		joined++
	}
	if joined == 0 && s.Interface != "" {
		conn.Close()
		return nil, fmt.Errorf("dhcp6: cannot join ff02::1:2 on %s", s.Interface)
	}
	return conn, nil
}

// Serve serves on conn (from Listen) until ctx ends, then closes it and
// returns nil.
func (s *Server) Serve(ctx context.Context, conn net.PacketConn) error {
	if err := s.Check(); err != nil {
		conn.Close()
		return err
	}
	s.init()
	ranges := make([]string, 0, len(s.Ranges))
	for _, r := range s.Ranges {
		ranges = append(ranges, r.String())
	}
	s.logger().Info("dhcp6 listening", "addr", conn.LocalAddr().String(), "ranges", ranges, "interface", s.Interface,
		"server_id", s.sid.String())
	srv, err := server6.NewServer("", nil, func(c net.PacketConn, peer net.Addr, m dhcpv6.DHCPv6) {
		s.serveOne(ctx, c, peer, m)
	}, server6.WithConn(conn))
	if err != nil {
		conn.Close()
		return fmt.Errorf("dhcp6: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve() }()
	select {
	case <-ctx.Done():
		srv.Close()
		<-done
		return nil
	case err := <-done:
		if ctx.Err() != nil || errors.Is(err, net.ErrClosed) && ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("dhcp6: %w", err)
	}
}

func (s *Server) serveOne(ctx context.Context, conn net.PacketConn, peer net.Addr, m dhcpv6.DHCPv6) {
	ua, ok := peer.(*net.UDPAddr)
	if !ok {
		return
	}
	ap := ua.AddrPort()
	in := Inbound{Peer: ap.Addr().WithZone("")}
	ifi, ok := s.lookupIface(ua.Zone)
	if !ok {
		s.logger().DebugContext(ctx, "dhcp6: ignored a message from an unknown interface", "peer", ua.String())
		return
	}
	in.Iface = ifi
	a, err := s.Handle(ctx, m, in)
	log := s.logger()
	if a.Reply == nil {
		lvl := slog.LevelDebug
		if a.Result == ResultMalformed {
			lvl = slog.LevelWarn
		}
		log.Log(ctx, lvl, "dhcp6: not answered", "peer", ua.String(), "type", m.Type().String(), "result", a.Result, "err", err)
		return
	}
	if _, werr := conn.WriteTo(a.Reply.ToBytes(), peer); werr != nil {
		log.WarnContext(ctx, "dhcp6: send failed", "peer", ua.String(), "err", werr)
		return
	}
	attrs := []any{"mac", a.MAC, "peer", ua.String(), "type", a.Reply.Type().String(), "request", m.Type().String(), "result", a.Result}
	if a.Addr.IsValid() {
		attrs = append(attrs, "ip", a.Addr.String())
	}
	if a.Boot != "" {
		attrs = append(attrs, "boot_file_url", a.Boot)
	}
	if err != nil {
		attrs = append(attrs, "reason", err.Error())
	}
	log.InfoContext(ctx, "dhcp6 answer", attrs...)
}

// lookupIface returns an interface's global IPv6 networks. Messages must
// come from a link-local address (with its zone): relayed or global
// sources are not served.
func (s *Server) lookupIface(zone string) (Iface, bool) {
	if s.interfaces != nil {
		return s.interfaces(zone)
	}
	if zone == "" || s.Interface != "" && zone != s.Interface {
		return Iface{}, false
	}
	ifi, err := net.InterfaceByName(zone)
	if err != nil {
		return Iface{}, false
	}
	out := Iface{Name: ifi.Name}
	addrs, err := ifi.Addrs()
	if err != nil {
		return Iface{}, false
	}
	for _, a := range addrs {
		n, ok := a.(*net.IPNet)
		if !ok || n.IP.To4() != nil || n.IP.IsLinkLocalUnicast() {
			continue
		}
		ip, ok := netip.AddrFromSlice(n.IP)
		if !ok {
			continue
		}
		bits, _ := n.Mask.Size()
		out.Nets = append(out.Nets, netip.PrefixFrom(ip, bits))
	}
	return out, true
}
