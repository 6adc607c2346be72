package dhcpserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"time"

	"golang.org/x/net/ipv4"

	"github.com/preboot/preboot/proxydhcp"
)

// Check validates the configuration.
func (s *Server) Check() error {
	if s.Leases == nil {
		return errors.New("dhcpserver: no lease store")
	}
	if len(s.Ranges) == 0 {
		return errors.New("dhcpserver: no address range")
	}
	for _, r := range s.Ranges {
		if !r.Start.Is4() || !r.End.Is4() || r.End.Less(r.Start) {
			return fmt.Errorf("dhcpserver: bad range %v-%v", r.Start, r.End)
		}
		if r.Subnet.IsValid() && (!r.Subnet.Contains(r.Start) || !r.Subnet.Contains(r.End)) {
			return fmt.Errorf("dhcpserver: range %v-%v is not inside its subnet %v", r.Start, r.End, r.Subnet)
		}
	}
	return nil
}

// Listen opens the server's socket (UDP 67 by default, SO_BINDTODEVICE to
// Interface when set).
func (s *Server) Listen(ctx context.Context) (*net.UDPConn, error) {
	addr := s.Addr
	if addr == "" {
		addr = fmt.Sprintf(":%d", serverPort)
	}
	c, err := proxydhcp.ListenUDP(ctx, s.Interface, addr)
	if err != nil {
		return nil, fmt.Errorf("dhcpserver: %w", err)
	}
	return c, nil
}

// ListenAndServe opens the socket and serves until ctx ends.
func (s *Server) ListenAndServe(ctx context.Context) error {
	c, err := s.Listen(ctx)
	if err != nil {
		return err
	}
	return s.Serve(ctx, c)
}

// Serve serves on an open socket until ctx ends (then it closes the socket
// and returns nil), or returns the first fatal read error.
func (s *Server) Serve(ctx context.Context, c *net.UDPConn) error {
	if err := s.Check(); err != nil {
		c.Close()
		return err
	}
	p4 := ipv4.NewPacketConn(c)
	if err := p4.SetControlMessage(ipv4.FlagInterface|ipv4.FlagDst, true); err != nil {
		c.Close()
		return fmt.Errorf("dhcpserver: IP_PKTINFO: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	workers := s.Workers
	if workers <= 0 {
		workers = max(4, 2*runtime.GOMAXPROCS(0))
	}
	ranges := make([]string, 0, len(s.Ranges))
	for _, r := range s.Ranges {
		ranges = append(ranges, r.Start.String()+"-"+r.End.String()+"/"+r.Subnet.String())
	}
	s.logger().Info("dhcpserver listening", "addr", c.LocalAddr().String(), "ranges", ranges, "interface", s.Interface,
		"lease_time", orDefault(s.LeaseTime, DefaultLeaseTime).String(), "proxy_elsewhere", s.ProxyElsewhere)
	var (
		wg       sync.WaitGroup
		once     sync.Once
		firstErr error
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.readLoop(ctx, p4); err != nil {
				once.Do(func() { firstErr = err })
				cancel()
			}
		}()
	}
	<-ctx.Done()
	c.Close()
	wg.Wait()
	return firstErr
}

func (s *Server) readLoop(ctx context.Context, p4 *ipv4.PacketConn) error {
	buf := make([]byte, maxRequestLen+1)
	for {
		n, cm, src, err := p4.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("dhcpserver: %w", err)
			}
			s.logger().Debug("dhcpserver read error", "err", err)
			time.Sleep(time.Millisecond)
			continue
		}
		in := inbound{data: buf[:n]}
		if ua, ok := src.(*net.UDPAddr); ok {
			in.src = ua
		}
		if cm != nil {
			in.ifIndex, in.dst = cm.IfIndex, cm.Dst
		}
		s.serveOne(ctx, p4, in)
	}
}

func (s *Server) serveOne(ctx context.Context, p4 *ipv4.PacketConn, in inbound) {
	start := time.Now()
	out, result, err := s.respond(ctx, in)
	log := s.logger()
	if out == nil {
		s.Metrics.count(result)
		switch result {
		case ResultStoreError, ResultBooterError:
			log.ErrorContext(ctx, "dhcpserver: request failed", "result", result, "err", err)
		case ResultMalformed:
			s.warn(ctx, "malformed", "dhcpserver: malformed request", "err", err)
		case ResultReleased, ResultDeclined:
		default:
			log.DebugContext(ctx, "dhcpserver ignored", "result", result, "len", len(in.data), "err", err)
		}
		return
	}
	var cm *ipv4.ControlMessage
	if out.ifIndex != 0 {
		cm = &ipv4.ControlMessage{IfIndex: out.ifIndex, Src: out.src}
	}
	if _, werr := p4.WriteTo(out.reply.ToBytes(), cm, out.dst); werr != nil {
		s.Metrics.count(ResultSendError)
		log.WarnContext(ctx, "dhcpserver send failed", "mac", out.mac, "dst", out.dst.String(), "err", werr)
		return
	}
	s.Metrics.count(result)
	s.Metrics.observe(time.Since(start).Seconds())
	if !log.Enabled(ctx, slog.LevelInfo) {
		return
	}
	attrs := []any{"mac", out.mac, "type", out.reply.MessageType().String(), "result", result, "dst", out.dst.String()}
	if out.lease.IsValid() {
		attrs = append(attrs, "ip", out.lease.String())
	}
	if out.file != "" {
		attrs = append(attrs, "filename", out.file)
	}
	if err != nil {
		attrs = append(attrs, "reason", err.Error())
	}
	log.InfoContext(ctx, "dhcpserver answer", attrs...)
}

// lookupIface returns what is known of a receiving interface.
func (s *Server) lookupIface(index int) (ifaceInfo, bool) {
	if s.interfaces != nil {
		return s.interfaces(index)
	}
	if index == 0 && s.Interface != "" {
		if ifi, err := net.InterfaceByName(s.Interface); err == nil {
			index = ifi.Index
		}
	}
	if index == 0 {
		return ifaceInfo{}, false
	}
	return s.ifcache.entry(index)
}

// ifaceCache caches interfaces by index for a few seconds, so that the
// hot path does not do a netlink dump per packet.
type ifaceCache struct {
	mu sync.Mutex
	m  map[int]cachedIface
}

type cachedIface struct {
	info    ifaceInfo
	ok      bool
	expires time.Time
}

func (c *ifaceCache) entry(index int) (ifaceInfo, bool) {
	now := time.Now()
	c.mu.Lock()
	e, hit := c.m[index]
	c.mu.Unlock()
	if hit && now.Before(e.expires) {
		return e.info, e.ok
	}
	e = cachedIface{expires: now.Add(5 * time.Second)}
	if ifi, err := net.InterfaceByIndex(index); err == nil {
		e.ok = true
		e.info.name, e.info.loopback = ifi.Name, ifi.Flags&net.FlagLoopback != 0
		if addrs, err := ifi.Addrs(); err == nil {
			for _, a := range addrs {
				n, ok := a.(*net.IPNet)
				if !ok || n.IP.To4() == nil {
					continue
				}
				ip, _ := netip.AddrFromSlice(n.IP.To4())
				bits, _ := n.Mask.Size()
				e.info.nets = append(e.info.nets, netip.PrefixFrom(ip, bits))
			}
		}
	}
	c.mu.Lock()
	if c.m == nil {
		c.m = map[int]cachedIface{}
	}
	c.m[index] = e
	c.mu.Unlock()
	return e.info, e.ok
}
