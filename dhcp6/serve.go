package dhcp6

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"sync"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/dhcpv6/server6"
	"golang.org/x/net/ipv6"
)

// maxMessage is the largest datagram read: DHCPv6 messages are far
// smaller; a longer one is dropped as truncated.
const maxMessage = 8192

// Listen opens the server's socket (UDP 547) and joins the
// All_DHCP_Relay_Agents_and_Servers group on Interface, or on every
// multicast interface (not loopback) when Interface is empty.
func (s *Server) Listen() (net.PacketConn, error) {
	return listen547(s.Interface, s.Addr, s.logger())
}

// listen547 opens a DHCPv6 server socket on addr (default [::]:547) and
// joins ff02::1:2 on iface, or on every multicast interface.
func listen547(iface, listen string, log *slog.Logger) (net.PacketConn, error) {
	addr := &net.UDPAddr{IP: net.IPv6unspecified, Port: dhcpv6.DefaultServerPort}
	if listen != "" {
		a, err := net.ResolveUDPAddr("udp6", listen)
		if err != nil {
			return nil, fmt.Errorf("dhcp6: listen address %q: %w", listen, err)
		}
		addr = a
	}
	conn, err := server6.NewIPv6UDPConn(iface, addr)
	if err != nil {
		return nil, fmt.Errorf("dhcp6: listen %s: %w", addr, err)
	}
	p := ipv6.NewPacketConn(conn)
	var ifs []net.Interface
	if iface != "" {
		ifi, err := net.InterfaceByName(iface)
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
			log.Warn("dhcp6: cannot join ff02::1:2", "interface", ifs[i].Name, "err", err)
			continue
		}
		joined++
	}
	if joined == 0 && iface != "" {
		conn.Close()
		return nil, fmt.Errorf("dhcp6: cannot join ff02::1:2 on %s", iface)
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
	return serveConns(ctx, s.Workers, func(ctx context.Context, rx received) {
		s.serveOne(ctx, rx)
	}, conn)
}

// received is one datagram and where it came from.
type received struct {
	b       []byte
	peer    *net.UDPAddr
	ifIndex int        // receiving interface (IPV6_PKTINFO), 0 if unknown
	dst     netip.Addr // the address it was sent to, if known
	port    int        // the socket's local port
	conn    *pconn
}

// reply sends b back to the sender, out of the interface the message
// came in on.
func (rx received) reply(b []byte) error {
	return rx.conn.write(b, rx.ifIndex, rx.peer)
}

// pconn is a server socket, with IPV6_PKTINFO when it is a UDP socket.
type pconn struct {
	pc   net.PacketConn
	p6   *ipv6.PacketConn // nil when pc is not a UDP socket
	port int
}

func newPconn(pc net.PacketConn) (*pconn, error) {
	c := &pconn{pc: pc}
	if ua, ok := pc.LocalAddr().(*net.UDPAddr); ok {
		c.port = ua.Port
	}
	if _, ok := pc.(*net.UDPConn); ok {
		p6 := ipv6.NewPacketConn(pc)
		if err := p6.SetControlMessage(ipv6.FlagInterface|ipv6.FlagDst, true); err != nil {
			return nil, fmt.Errorf("dhcp6: IPV6_RECVPKTINFO on %s: %w", pc.LocalAddr(), err)
		}
		c.p6 = p6
	}
	return c, nil
}

func (c *pconn) read(b []byte) (received, error) {
	rx := received{conn: c, port: c.port}
	var (
		n   int
		src net.Addr
		err error
	)
	if c.p6 != nil {
		var cm *ipv6.ControlMessage
		n, cm, src, err = c.p6.ReadFrom(b)
		if cm != nil {
			rx.ifIndex = cm.IfIndex
			if a, ok := netip.AddrFromSlice(cm.Dst); ok {
				rx.dst = a.Unmap()
			}
		}
	} else {
		n, src, err = c.pc.ReadFrom(b)
	}
	if err != nil {
		return rx, err
	}
	rx.b = b[:n]
	rx.peer, _ = src.(*net.UDPAddr)
	return rx, nil
}

func (c *pconn) write(b []byte, ifIndex int, dst *net.UDPAddr) error {
	if c.p6 != nil {
		var cm *ipv6.ControlMessage
		if ifIndex > 0 {
			cm = &ipv6.ControlMessage{IfIndex: ifIndex}
		}
		_, err := c.p6.WriteTo(b, cm, dst)
		return err
	}
	_, err := c.pc.WriteTo(b, dst)
	return err
}

// serveConns reads every conn with a fixed number of workers each (by
// default max(4, 2×GOMAXPROCS)), a worker handling one message at a time:
// a flood of messages waits in the socket's buffer (and is dropped there)
// instead of starting a goroutine each. It closes the conns and returns
// nil when ctx ends, or returns the first read error.
func serveConns(ctx context.Context, workers int, handle func(context.Context, received), conns ...net.PacketConn) error {
	if workers <= 0 {
		workers = max(4, 2*runtime.GOMAXPROCS(0))
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pcs := make([]*pconn, 0, len(conns))
	for _, c := range conns {
		pc, err := newPconn(c)
		if err != nil {
			for _, c := range conns {
				c.Close()
			}
			return err
		}
		pcs = append(pcs, pc)
	}
	var (
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	for _, pc := range pcs {
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				buf := make([]byte, maxMessage+1)
				for {
					rx, err := pc.read(buf)
					if err != nil {
						if ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
							errOnce.Do(func() { firstErr = fmt.Errorf("dhcp6: %w", err) })
						}
						cancel()
						return
					}
					if len(rx.b) > maxMessage || rx.peer == nil {
						continue
					}
					handle(ctx, rx)
				}
			}()
		}
	}
	<-ctx.Done()
	for _, c := range conns {
		c.Close()
	}
	wg.Wait()
	return firstErr
}

func (s *Server) serveOne(ctx context.Context, rx received) {
	ua := rx.peer
	m, err := dhcpv6.FromBytes(rx.b)
	if err != nil {
		s.logger().DebugContext(ctx, "dhcp6: unparsable message", "peer", ua.String(), "err", err)
		return
	}
	ap := ua.AddrPort()
	in := Inbound{Peer: ap.Addr().WithZone(""), Port: rx.port}
	ifi, ok := s.lookupIface(ua.Zone)
	if !ok {
		s.logger().DebugContext(ctx, "dhcp6: ignored a message from an unknown interface", "peer", ua.String())
		return
	}
	in.Iface = ifi
	a, err := s.Handle(ctx, m, in)
	logAnswer(ctx, s.logger(), rx, m, a, err)
}

// logAnswer sends a's reply, if any, and logs what was done.
func logAnswer(ctx context.Context, log *slog.Logger, rx received, m dhcpv6.DHCPv6, a Answer, err error) {
	ua := rx.peer
	if a.Reply == nil {
		lvl := slog.LevelDebug
		if a.Result == ResultMalformed {
			lvl = slog.LevelWarn
		}
		log.Log(ctx, lvl, "dhcp6: not answered", "peer", ua.String(), "port", rx.port, "type", m.Type().String(), "result", a.Result, "err", err)
		return
	}
	if werr := rx.reply(a.Reply.ToBytes()); werr != nil {
		log.WarnContext(ctx, "dhcp6: send failed", "peer", ua.String(), "err", werr)
		return
	}
	attrs := []any{"mac", a.MAC, "peer", ua.String(), "port", rx.port, "type", a.Reply.Type().String(), "request", m.Type().String(), "result", a.Result}
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

// interfaceNets returns an interface's global IPv6 networks.
func interfaceNets(name string) (Iface, bool) {
	ifi, err := net.InterfaceByName(name)
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
	return interfaceNets(zone)
}
