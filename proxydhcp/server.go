package proxydhcp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// Server is a proxyDHCP server. The zero value is not usable: Booter is
// required. A Server must not be copied after first use.
type Server struct {
	// Booter decides what each PXE client boots. Required.
	Booter Booter
	// Interface restricts the server to one network interface (sockets are
	// bound with SO_BINDTODEVICE). "" serves all interfaces: the receiving
	// interface is learnt per packet with IP_PKTINFO and replies leave
	// through it.
	Interface string
	// ServerIP optionally overrides the advertised address (siaddr, option
	// 54, sname). By default it is the address of the receiving interface.
	ServerIP net.IP
	// Logger receives structured logs; nil means slog.Default().
	Logger *slog.Logger
	// Metrics, optional (see NewMetrics).
	Metrics *Metrics
	// DHCPAddr and PXEAddr are the listen addresses; defaults ":67" and
	// ":4011".
	DHCPAddr, PXEAddr string
	// PXEOnly serves port 4011 only: use it when the site's DHCP server runs
	// on the same host and owns port 67 (PXE phases 1a/1b; that server then
	// sends option 60 "PXEClient" so that clients ask again on 4011).
	PXEOnly bool
	// Workers is the number of goroutines serving each socket (default
	// 2×GOMAXPROCS, at least 4). On a UDP socket every idle worker waits
	// in recvmsg(2) on the socket itself, a datagram wakes one of them
	// and that one answers it, so a request costs no hand-over between
	// goroutines or threads and a slow Booter only holds up one worker.
	// On other PacketConns one worker reads at a time and answers what it
	// read itself; when an answer takes longer than HandOver (a slow
	// Booter), the next worker takes over reading.
	Workers int
	// HandOver is how long a worker may spend on one request before the
	// next worker starts reading in its place (PacketConns other than a
	// UDP socket); default 500 µs.
	HandOver time.Duration
	// Interfaces, when not empty, are the only interfaces (by name) whose
	// requests are answered. Empty: every interface that has an IPv4
	// address. Requests that arrive on a loopback interface are never
	// answered.
	Interfaces []string
	// Subnets, when not empty, are the only client networks answered (as
	// dnsmasq's dhcp-range in proxy mode): the relay's address (giaddr) of
	// a relayed request, else the client's own source address, else an
	// address of the receiving interface must be inside one of them.
	Subnets []netip.Prefix

	// allowLoopback lets tests on loopback be answered.
	allowLoopback bool

	// bcastAddr, when set (by tests on loopback), replaces the limited
	// broadcast destination 255.255.255.255:68 of replies on port 67.
	bcastAddr *net.UDPAddr

	ifaddrs  ifaddrCache
	warnMu   sync.Mutex
	warnNext time.Time
	warnDrop int
}

// ListenAndServe opens UDP 67 (unless PXEOnly) and UDP 4011 and serves until
// ctx is done. It returns nil after ctx is done, or the first fatal error.
func (s *Server) ListenAndServe(ctx context.Context) error {
	dhcpAddr, pxeAddr := s.DHCPAddr, s.PXEAddr
	if dhcpAddr == "" {
		dhcpAddr = fmt.Sprintf(":%d", DHCPPort)
	}
	if pxeAddr == "" {
		pxeAddr = fmt.Sprintf(":%d", PXEPort)
	}
	var dhcpConn net.PacketConn
	if !s.PXEOnly {
		c, err := ListenUDP(ctx, s.Interface, dhcpAddr)
		if err != nil {
			return err
		}
		dhcpConn = c
	}
	pxeConn, err := ListenUDP(ctx, s.Interface, pxeAddr)
	if err != nil {
		if dhcpConn != nil {
			dhcpConn.Close()
		}
		return err
	}
	return s.Serve(ctx, dhcpConn, pxeConn)
}

// recvBuffer is the socket receive buffer asked for (the kernel doubles it).
const recvBuffer = 4 << 20

// ListenUDP opens a UDP socket on addr suitable for a DHCP server: broadcast
// allowed and, when iface is not "", bound to that interface
// (SO_BINDTODEVICE) so that broadcasts leave through it on a multi-homed
// host. SO_REUSEPORT is deliberately not set: if another DHCP server already
// holds the port, this fails instead of silently sharing its packets.
func ListenUDP(ctx context.Context, iface, addr string) (*net.UDPConn, error) {
	lc := net.ListenConfig{
		Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_BROADCAST, 1); serr != nil {
					serr = fmt.Errorf("SO_BROADCAST: %w", serr)
					return
				}
				// A boot storm (a room powering on) arrives in bursts:
				// a large receive buffer absorbs them. SO_RCVBUFFORCE
				// (root) is not capped by net.core.rmem_max.
				if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, recvBuffer) != nil {
					_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, recvBuffer)
				}
				if iface != "" {
					if serr = unix.BindToDevice(int(fd), iface); serr != nil {
						serr = fmt.Errorf("SO_BINDTODEVICE %s: %w", iface, serr)
					}
				}
			})
			if err != nil {
				return err
			}
			return serr
		},
	}
	pc, err := lc.ListenPacket(ctx, "udp4", addr)
	if err != nil {
		return nil, fmt.Errorf("proxydhcp: listen %s (interface %q): %w", addr, iface, err)
	}
	return pc.(*net.UDPConn), nil
}

// Serve serves proxyDHCP on already open sockets: dhcpConn receives port 67
// traffic, pxeConn port 4011 traffic; either may be nil. When a conn is a
// *net.UDPConn, IP_PKTINFO is used to learn the receiving interface and to
// send replies out of it. Serve closes both conns and returns nil when ctx is
// done, or returns the first fatal read error.
func (s *Server) Serve(ctx context.Context, dhcpConn, pxeConn net.PacketConn) error {
	if s.Booter == nil {
		return errors.New("proxydhcp: Server.Booter is nil")
	}
	if dhcpConn == nil && pxeConn == nil {
		return errors.New("proxydhcp: no connection to serve")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	workers := s.Workers
	if workers <= 0 {
		workers = max(4, 2*runtime.GOMAXPROCS(0))
	}
	var (
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	conns := make([]*conn, 0, 2)
	for _, pc := range []struct {
		c    net.PacketConn
		port int
	}{{dhcpConn, DHCPPort}, {pxeConn, PXEPort}} {
		if pc.c == nil {
			continue
		}
		c, err := newConn(pc.c, pc.port)
		if err != nil {
			for _, c := range conns {
				if c.raw != nil {
					c.raw.close()
				}
			}
			if dhcpConn != nil {
				dhcpConn.Close()
			}
			if pxeConn != nil {
				pxeConn.Close()
			}
			return err
		}
		conns = append(conns, c)
		s.logger().Info("proxydhcp listening", "addr", pc.c.LocalAddr().String(), "port", pc.port, "interface", s.Interface)
	}
	for _, name := range s.Interfaces {
		if _, err := net.InterfaceByName(name); err != nil {
			s.logger().Warn("proxydhcp: a configured interface does not exist (yet): its clients get no answer until it does", "interface", name, "err", err)
		}
	}
	if len(s.Interfaces) > 0 || len(s.Subnets) > 0 {
		s.logger().Info("proxydhcp answers only where told", "interfaces", s.Interfaces, "subnets", fmt.Sprint(s.Subnets))
	}
	handOver := s.HandOver
	if handOver <= 0 {
		handOver = defaultHandOver
	}
	for _, c := range conns {
		if c.raw != nil {
			for range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := s.rawLoop(ctx, c); err != nil {
						errOnce.Do(func() { firstErr = err })
						cancel()
					}
				}()
			}
			continue
		}
		// One token per socket: the worker holding it is the one reading.
		token := make(chan struct{}, 1)
		token <- struct{}{}
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := s.readLoop(ctx, c, token, handOver); err != nil {
					errOnce.Do(func() { firstErr = err })
					cancel()
				}
			}()
		}
	}
	<-ctx.Done()
	for _, c := range conns {
		if c.raw != nil {
			c.raw.shutdown()
		}
		c.pc.Close()
	}
	wg.Wait()
	for _, c := range conns {
		if c.raw != nil {
			c.raw.close()
		}
	}
	return firstErr
}

func (s *Server) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

// conn wraps a PacketConn; a UDP socket is served through raw (with
// IP_PKTINFO), any other PacketConn through its methods.
type conn struct {
	pc   net.PacketConn
	raw  *rawSock // nil when pc is not a UDP socket
	port int      // logical port: DHCPPort or PXEPort
}

func newConn(pc net.PacketConn, port int) (*conn, error) {
	c := &conn{pc: pc, port: port}
	if uc, ok := pc.(*net.UDPConn); ok {
		raw, err := newRawSock(uc)
		if err != nil {
			return nil, err
		}
		c.raw = raw
	}
	return c, nil
}

func (c *conn) read(b []byte) (int, *ipv4.ControlMessage, net.Addr, error) {
	n, src, err := c.pc.ReadFrom(b)
	return n, nil, src, err
}

func (c *conn) write(b []byte, cm *ipv4.ControlMessage, dst *net.UDPAddr) error {
	if c.raw != nil {
		return c.raw.send(b, cm, dst)
	}
	_, err := c.pc.WriteTo(b, dst)
	return err
}

// defaultHandOver is Server.HandOver's default: far above the tens of
// microseconds an answer takes, well below a client's retransmission.
const defaultHandOver = 500 * time.Microsecond

// readLoop is one worker of a socket. Only the worker holding token reads;
// it answers the request itself and keeps the token for the next one,
// unless the answer took longer than handOver: then a timer has passed the
// token on to another worker, and this one waits for its turn again.
func (s *Server) readLoop(ctx context.Context, c *conn, token chan struct{}, handOver time.Duration) error {
	// One byte more than accepted, to detect oversized datagrams.
	buf := make([]byte, MaxRequestLen+1)
	passOn := time.AfterFunc(time.Hour, func() { token <- struct{}{} })
	passOn.Stop()
	holding := false
	defer func() {
		if holding {
			token <- struct{}{} // let another worker see the socket close
		}
	}()
	for {
		if !holding {
			select {
			case <-token:
				holding = true
			case <-ctx.Done():
				return nil
			}
		}
		n, cm, src, err := c.read(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("proxydhcp: port %d: %w", c.port, err)
			}
			// Transient errors (ICMP-induced ECONNREFUSED and the like):
			// log and keep serving.
			s.logger().Debug("proxydhcp read error", "port", c.port, "err", err)
			time.Sleep(time.Millisecond) // never spin on a persistent error
			continue
		}
		in := inbound{port: c.port, data: buf[:n]}
		if ua, ok := src.(*net.UDPAddr); ok {
			in.src = ua
		}
		if cm != nil {
			in.ifIndex = cm.IfIndex
			in.dst = cm.Dst
		}
		passOn.Reset(handOver)
		s.serveOne(ctx, c, in)
		// Stop reports whether the timer was still pending: if it fired,
		// the token went to another worker.
		holding = passOn.Stop()
	}
}

// rawLoop is one worker of a UDP socket: it waits in recvmsg(2) and
// answers what it read, until the socket is shut down.
func (s *Server) rawLoop(ctx context.Context, c *conn) error {
	// One byte more than accepted, to detect oversized datagrams.
	buf := make([]byte, MaxRequestLen+1)
	var r rawReader
	for {
		n, src, ifIndex, dst, err := r.recv(c.raw.fd, buf)
		if c.raw.closing.Load() || ctx.Err() != nil {
			return nil
		}
		if err != nil {
			if errors.Is(err, unix.EBADF) || errors.Is(err, unix.ENOTSOCK) {
				return fmt.Errorf("proxydhcp: port %d: %w", c.port, err)
			}
			// Transient errors (ICMP-induced ECONNREFUSED and the like):
			// log and keep serving.
			s.logger().Debug("proxydhcp read error", "port", c.port, "err", err)
			time.Sleep(time.Millisecond) // never spin on a persistent error
			continue
		}
		s.serveOne(ctx, c, inbound{port: c.port, data: buf[:n], src: src, ifIndex: ifIndex, dst: dst})
	}
}

// inbound is one received datagram.
type inbound struct {
	port    int // DHCPPort or PXEPort
	data    []byte
	src     *net.UDPAddr
	ifIndex int    // receiving interface, 0 if unknown
	dst     net.IP // destination address of the datagram, nil if unknown
}

// outbound is one reply to send.
type outbound struct {
	wire   []byte             // the encoded reply
	mt     dhcpv4.MessageType // OFFER or ACK
	client Client
	boot   Boot
	dst    *net.UDPAddr
	cm     *ipv4.ControlMessage
}

func (s *Server) serveOne(ctx context.Context, c *conn, in inbound) {
	start := time.Now()
	out, result, err := s.respond(ctx, in)
	if out == nil {
		s.Metrics.count(in.port, result)
		s.logDrop(ctx, in, result, err)
		return
	}
	if err := c.write(out.wire, out.cm, out.dst); err != nil {
		s.Metrics.count(in.port, ResultSendError)
		s.logger().Warn("proxydhcp send failed", "mac", out.client.MAC.String(), "port", in.port, "dst", out.dst.String(), "err", err)
		return
	}
	s.Metrics.count(in.port, result)
	s.Metrics.observe(in.port, time.Since(start).Seconds())
	log := s.logger()
	if !log.Enabled(ctx, slog.LevelInfo) {
		return // skip formatting the attributes
	}
	log.Info("proxydhcp answer",
		"mac", out.client.MAC.String(),
		"arch", uint16(out.client.Arch),
		"vendor_class", out.client.VendorClass,
		"user_class", out.client.UserClass,
		"port", in.port,
		"type", out.mt.String(),
		"filename", out.boot.Filename,
		"server_ip", out.client.ServerIP.String(),
		"dst", out.dst.String(),
	)
}

// respond decides what to do with one datagram. It returns the reply to send,
// or nil and the result the drop is counted under.
func (s *Server) respond(ctx context.Context, in inbound) (*outbound, string, error) {
	req, client, err := ParseRequest(in.data)
	switch {
	case errors.Is(err, ErrNotPXE):
		return nil, ResultIgnoredNotPXE, err
	case errors.Is(err, ErrMessageType):
		return nil, ResultIgnoredMsgType, err
	case err != nil:
		return nil, ResultMalformed, err
	}
	// On 67 a proxy only answers DISCOVER: a REQUEST there is the client
	// talking to the site's DHCP server (or selecting our offer, which
	// carries no address): answering it could only disturb.
	if in.port == DHCPPort && req.MessageType() != dhcpv4.MessageTypeDiscover {
		return nil, ResultIgnoredMsgType, fmt.Errorf("%w: %s on port %d", ErrMessageType, req.MessageType(), in.port)
	}
	client.Port = in.port
	if result, err := s.admit(in, client); err != nil {
		return nil, result, err
	}
	serverIP, fromDst := s.serverIP(in, client)
	if serverIP == nil {
		return nil, ResultNoServerIP, fmt.Errorf("proxydhcp: no IPv4 address on interface index %d", in.ifIndex)
	}
	client.ServerIP = serverIP
	if in.ifIndex != 0 && (client.RelayIP == nil || client.RelayIP.IsUnspecified()) {
		client.Interface = s.ifaddrs.entry(in.ifIndex).name
	}

	boot, err := s.Booter.BootFor(ctx, client)
	if errors.Is(err, ErrIgnore) {
		return nil, ResultIgnoredByBooter, err
	}
	if err != nil {
		return nil, ResultBooterError, fmt.Errorf("proxydhcp: booter: %w", err)
	}
	wire, mt, err := appendReply(make([]byte, 0, 512), req, client, serverIP, boot)
	if err != nil {
		return nil, ResultBooterError, err
	}
	out := &outbound{wire: wire, mt: mt, client: client, boot: boot}
	out.dst = s.destination(in, req)
	if in.ifIndex != 0 {
		out.cm = &ipv4.ControlMessage{IfIndex: in.ifIndex}
		if fromDst {
			// Answer from the address the client sent to.
			out.cm.Src = serverIP
		}
	}
	result := ResultOffered
	if mt == dhcpv4.MessageTypeAck {
		result = ResultAcked
	}
	return out, result, nil
}

// admit refuses requests from where this server must not answer: a
// loopback interface, an interface not listed in Interfaces (or without an
// IPv4 address), a client outside Subnets.
func (s *Server) admit(in inbound, c Client) (string, error) {
	var ifNets []*net.IPNet
	if in.ifIndex != 0 {
		e := s.ifaddrs.entry(in.ifIndex)
		switch {
		case e.loopback && !s.allowLoopback:
			return ResultIgnoredInterface, fmt.Errorf("proxydhcp: request on loopback interface %s", e.name)
		case len(s.Interfaces) > 0 && !slices.Contains(s.Interfaces, e.name):
			return ResultIgnoredInterface, fmt.Errorf("proxydhcp: request on interface %q, not one of %v", e.name, s.Interfaces)
		case len(e.nets) == 0:
			return ResultIgnoredInterface, fmt.Errorf("proxydhcp: request on interface %q, which has no IPv4 address", e.name)
		}
		ifNets = e.nets
	} else if in.src != nil && in.src.IP.IsLoopback() && !s.allowLoopback {
		return ResultIgnoredInterface, fmt.Errorf("proxydhcp: request from loopback address %s", in.src.IP)
	}
	if len(s.Subnets) == 0 {
		return "", nil
	}
	inSubnets := func(ip net.IP) bool {
		a, ok := netip.AddrFromSlice(ip.To4())
		if !ok {
			return false
		}
		for _, p := range s.Subnets {
			if p.Contains(a) {
				return true
			}
		}
		return false
	}
	var from net.IP
	switch {
	case c.RelayIP != nil && !c.RelayIP.IsUnspecified():
		from = c.RelayIP
	case in.src != nil && in.src.IP.To4() != nil && !in.src.IP.IsUnspecified():
		from = in.src.IP
	}
	if from != nil {
		if inSubnets(from) {
			return "", nil
		}
		return ResultIgnoredSubnet, fmt.Errorf("proxydhcp: client network of %s not in %v", from, s.Subnets)
	}
	for _, n := range ifNets {
		if inSubnets(n.IP) {
			return "", nil
		}
	}
	return ResultIgnoredSubnet, fmt.Errorf("proxydhcp: no address of the receiving interface in %v", s.Subnets)
}

// destination applies RFC 2131 §4.1 (relay, ciaddr, broadcast) on port 67;
// on port 4011 the reply goes back to the source address and port (OVMF
// sends 4011→4011, BIOS PXE 68→4011).
func (s *Server) destination(in inbound, req *dhcpv4.DHCPv4) *net.UDPAddr {
	if gi := req.GatewayIPAddr.To4(); gi != nil && !gi.IsUnspecified() && in.port == DHCPPort {
		return &net.UDPAddr{IP: gi, Port: DHCPPort}
	}
	if in.port == PXEPort && in.src != nil {
		if ip := in.src.IP.To4(); ip != nil && !ip.IsUnspecified() {
			return &net.UDPAddr{IP: ip, Port: in.src.Port}
		}
		return s.broadcast(in.src.Port)
	}
	if ci := req.ClientIPAddr.To4(); ci != nil && !ci.IsUnspecified() {
		return &net.UDPAddr{IP: ci, Port: ClientPort}
	}
	return s.broadcast(ClientPort)
}

func (s *Server) broadcast(port int) *net.UDPAddr {
	if s.bcastAddr != nil {
		return s.bcastAddr
	}
	return &net.UDPAddr{IP: net.IPv4bcast, Port: port}
}

// serverIP finds the address to advertise. fromDst reports that it is the
// unicast address the request was sent to (so the reply can come from it).
func (s *Server) serverIP(in inbound, c Client) (ip net.IP, fromDst bool) {
	if v4 := s.ServerIP.To4(); v4 != nil {
		return v4, false
	}
	if d := in.dst.To4(); d != nil && !d.IsUnspecified() && !d.Equal(net.IPv4bcast) && !d.IsMulticast() {
		return d, true
	}
	if in.ifIndex != 0 {
		return s.ifaddrs.lookup(in.ifIndex, c.RelayIP), false
	}
	if s.Interface != "" {
		if ifi, err := net.InterfaceByName(s.Interface); err == nil {
			return s.ifaddrs.lookup(ifi.Index, c.RelayIP), false
		}
	}
	return nil, false
}

// logDrop logs a dropped packet: at Debug level each time, and malformed
// packets additionally at Warn level at most once per 10 s, with a count.
func (s *Server) logDrop(ctx context.Context, in inbound, result string, err error) {
	log := s.logger()
	warn := result == ResultMalformed || result == ResultBooterError || result == ResultNoServerIP
	debug := log.Enabled(ctx, slog.LevelDebug)
	if !warn && !debug {
		return
	}
	src := ""
	if in.src != nil {
		src = in.src.String()
	}
	if debug {
		mac := ""
		if len(in.data) >= 34 && in.data[2] == 6 {
			mac = net.HardwareAddr(in.data[28:34]).String()
		}
		log.Debug("proxydhcp ignored", "port", in.port, "src", src, "mac", mac, "result", result, "len", len(in.data), "err", err)
	}
	if !warn {
		return
	}
	now := time.Now()
	s.warnMu.Lock()
	s.warnDrop++
	if now.Before(s.warnNext) {
		s.warnMu.Unlock()
		return
	}
	dropped := s.warnDrop
	s.warnDrop = 0
	s.warnNext = now.Add(10 * time.Second)
	s.warnMu.Unlock()
	log.Warn("proxydhcp dropped bad requests", "port", in.port, "src", src, "result", result, "err", err, "dropped_since_last_warning", dropped)
}

// ifaddrCache caches the IPv4 addresses of interfaces by index, so that the
// hot path does not do a netlink dump per packet.
type ifaddrCache struct {
	mu sync.Mutex
	m  map[int]ifaddrEntry
}

type ifaddrEntry struct {
	name     string
	loopback bool
	nets     []*net.IPNet
	expires  time.Time
}

const ifaddrTTL = 5 * time.Second

// lookup returns the interface's IPv4 address, preferring one in the same
// subnet as near (the relay address), then global unicast, then any.
func (c *ifaddrCache) lookup(index int, near net.IP) net.IP {
	e := c.entry(index)
	if near != nil {
		for _, n := range e.nets {
			if n.Contains(near) {
				return n.IP
			}
		}
	}
	for _, n := range e.nets {
		if n.IP.IsGlobalUnicast() {
			return n.IP
		}
	}
	if len(e.nets) > 0 {
		return e.nets[0].IP
	}
	return nil
}

// entry returns what is known of an interface: its name, whether it is a
// loopback interface, its IPv4 networks.
func (c *ifaddrCache) entry(index int) ifaddrEntry {
	now := time.Now()
	c.mu.Lock()
	e, ok := c.m[index]
	c.mu.Unlock()
	if !ok || now.After(e.expires) {
		e = ifaddrEntry{expires: now.Add(ifaddrTTL)}
		if ifi, err := net.InterfaceByIndex(index); err == nil {
			e.name, e.loopback = ifi.Name, ifi.Flags&net.FlagLoopback != 0
			if addrs, err := ifi.Addrs(); err == nil {
				for _, a := range addrs {
					if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil {
						e.nets = append(e.nets, &net.IPNet{IP: n.IP.To4(), Mask: n.Mask})
					}
				}
			}
		}
		c.mu.Lock()
		if c.m == nil {
			c.m = make(map[int]ifaddrEntry)
		}
		c.m[index] = e
		c.mu.Unlock()
	}
	return e
}
