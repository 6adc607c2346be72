// Package tftp is Preboot's read-only TFTP server: RFC 1350 with option negotiation (RFC 2347),
// blksize (RFC 2348), tsize and timeout (RFC 2349) and windowsize (RFC 7440), netascii and octet
// modes, block-number rollover, and a retransmission timer that adapts to the measured round trip.
//
// Every transfer has its own UDP socket (its TID), bound to the local address the request arrived
// on. A short-lived goroutine opens it (a Generator may take its time); its data phase then runs
// in an event loop (one per 4 CPUs) over epoll(7): a block costs one recvfrom(2) for the ACK
// and one sendmmsg(2) for what follows, with no goroutine woken per block. Files come from a
// Generator (consulted first) or from a root directory that no request can leave. A regular file
// sent in octet mode is mapped into memory and its blocks go out straight from the page cache: no
// read(2) and no copy per block. The server is Linux-only (epoll, sendmmsg), as Preboot is.
package tftp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path"
	"runtime"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// Request is one read request as the server understood it.
type Request struct {
	Peer     netip.AddrPort
	Local    netip.Addr // address the request arrived on (may be invalid if unknown)
	Filename string     // normalised: forward slashes, no leading slash, cleaned
	Mode     string     // "octet" or "netascii"
}

// Generator returns content for generated files (per-device pxelinux configs, ...). Return an
// error wrapping fs.ErrNotExist to fall back to the root directory, one wrapping fs.ErrPermission
// to refuse the request with an access violation. If the returned reader is also an io.Closer it
// is closed when the transfer ends. A size < 0 means unknown (no tsize is offered). Generate may
// take its time (it runs in the request's own goroutine), but the reader is read block by block in
// the event loop that serves many transfers: it must not wait (content in memory, or a file).
type Generator interface {
	Generate(ctx context.Context, req Request) (io.ReadSeeker, int64, error)
}

// GeneratorFunc adapts a function to the Generator interface.
type GeneratorFunc func(ctx context.Context, req Request) (io.ReadSeeker, int64, error)

// Generate implements Generator.
func (f GeneratorFunc) Generate(ctx context.Context, req Request) (io.ReadSeeker, int64, error) {
	return f(ctx, req)
}

// Server is a read-only TFTP server. Its zero value serves nothing but answers every request
// (with "File not found"); set Root and/or Generator. Fields must not change while serving.
type Server struct {
	Root      string       // directory served read-only; "" = only generated files
	Generator Generator    // optional, consulted before Root
	Logger    *slog.Logger // optional; nil = slog.Default()
	Metrics   *Metrics     // optional, from NewMetrics

	MaxBlockSize int // largest blksize offered (8..65464); default 65464
	MaxWindow    int // largest windowsize offered (1..65535); default 64
	MaxRetries   int // timeouts in a row before a transfer is given up; default 8
	// RetriesBeforeAck bounds the retransmissions of the first packet (OACK
	// or DATA 1) while the client has acknowledged nothing yet: until then
	// its address is unverified (it may be a victim's, spoofed), so the
	// server sends at most 1+RetriesBeforeAck packets, and never more than
	// one window, to it. Default 2; < 0 means none.
	RetriesBeforeAck int

	// MaxTransfers caps the transfers in progress (default 1024) and
	// MaxTransfersPerClient those from one source address (default 16).
	// A request beyond a cap, or a retransmitted request of a transfer in
	// progress (same address, port and bytes), is dropped without an
	// answer: the client retransmits it later, and a flood costs no socket,
	// file or goroutine.
	MaxTransfers          int
	MaxTransfersPerClient int
	// MaxWindowBytes bounds windowsize × blksize: the windowsize offered is lowered to fit.
	// A window larger than the client's socket buffer loses its tail on every burst, so the
	// default, 64 KiB, stays well inside Linux's default 208 KiB receive buffer.
	MaxWindowBytes int

	// The retransmission timeout follows the measured round trip (RFC 6298: SRTT + 4·RTTVAR),
	// doubles on each timeout in a row, and stays within [MinTimeout, MaxTimeout]; a client's
	// timeout option (RFC 2349) lowers the ceiling. InitialTimeout applies before the first
	// round trip is measured.
	MinTimeout     time.Duration // default 10 ms
	MaxTimeout     time.Duration // default 2 s
	InitialTimeout time.Duration // default 250 ms

	loops int // event loops serving the transfers; 0 = one per 4 CPUs (tests choose)
}

const (
	maxBlockSizeRFC       = 65464
	defaultMaxWindowBytes = 64 << 10
	// sourceBuffer is the read-ahead buffer between the file and the window.
	sourceBuffer = 64 << 10
)

// config is a Server's settings with defaults applied.
type config struct {
	log                          *slog.Logger
	metrics                      *Metrics
	maxBlock, maxWindow, retries int
	maxWindowBytes               int
	retriesBeforeAck             int
	maxTransfers, maxPerClient   int
	minRTO, maxRTO, initialRTO   time.Duration
	generator                    Generator
	root                         *os.Root
	fixedLocal                   netip.Addr
}

func (s *Server) config() config {
	c := config{
		log: s.Logger, metrics: s.Metrics, generator: s.Generator,
		maxBlock: s.MaxBlockSize, maxWindow: s.MaxWindow, retries: s.MaxRetries, maxWindowBytes: s.MaxWindowBytes,
		minRTO: s.MinTimeout, maxRTO: s.MaxTimeout, initialRTO: s.InitialTimeout,
		retriesBeforeAck: s.RetriesBeforeAck, maxTransfers: s.MaxTransfers, maxPerClient: s.MaxTransfersPerClient,
	}
	switch {
	case c.retriesBeforeAck == 0:
		c.retriesBeforeAck = DefaultRetriesBeforeAck
	case c.retriesBeforeAck < 0:
		c.retriesBeforeAck = 0
	}
	if c.maxTransfers <= 0 {
		c.maxTransfers = DefaultMaxTransfers
	}
	if c.maxPerClient <= 0 {
		c.maxPerClient = DefaultMaxTransfersPerClient
	}
	if c.log == nil {
		c.log = slog.Default()
	}
	if c.maxBlock < 8 || c.maxBlock > maxBlockSizeRFC {
		c.maxBlock = maxBlockSizeRFC
	}
	if c.maxWindow < 1 || c.maxWindow > 65535 {
		c.maxWindow = 64
	}
	if c.maxWindowBytes <= 0 {
		c.maxWindowBytes = defaultMaxWindowBytes
	}
	if c.retries <= 0 {
		c.retries = 8
	}
	if c.minRTO <= 0 {
		c.minRTO = 10 * time.Millisecond
	}
	if c.maxRTO <= 0 {
		c.maxRTO = 2 * time.Second
	}
	if c.maxRTO < c.minRTO {
		c.maxRTO = c.minRTO
	}
	if c.initialRTO <= 0 {
		c.initialRTO = 250 * time.Millisecond
	}
	c.initialRTO = min(max(c.initialRTO, c.minRTO), c.maxRTO)
	return c
}

// ListenAndServe listens on the UDP address addr (e.g. ":69", "127.0.0.1:6969") and serves
// until ctx is done.
func (s *Server) ListenAndServe(ctx context.Context, addr string) error {
	conn, err := net.ListenPacket("udp", addr)
	if err != nil {
		return fmt.Errorf("tftp: listening on %s: %w", addr, err)
	}
	return s.Serve(ctx, conn)
}

// Serve answers requests arriving on conn until ctx is done, then closes conn, waits for the
// transfers in progress to stop and returns nil. It returns an error if the root directory
// cannot be opened or conn fails.
func (s *Server) Serve(ctx context.Context, conn net.PacketConn) error {
	defer conn.Close()
	cfg := s.config()
	if s.Root != "" {
		root, err := os.OpenRoot(s.Root)
		if err != nil {
			return fmt.Errorf("tftp: opening root: %w", err)
		}
		defer root.Close()
		cfg.root = root
	}
	rc := newRequestConn(conn, cfg.log)
	cfg.fixedLocal = rc.fixed
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	// One loop per 4 CPUs: a loop keeps a CPU busy mostly in the kernel (sending, and on loopback
	// delivering), and fewer loops wake up less and find more ready sockets per epoll_wait. On 2
	// CPUs one loop used 25 % less CPU per block than two, at the same throughput.
	nloops := s.loops
	if nloops <= 0 {
		nloops = max(1, runtime.GOMAXPROCS(0)/4)
	}
	loops := make([]*loop, 0, nloops)
	defer func() {
		for _, l := range loops {
			l.stop()
		}
	}()
	for range cap(loops) {
		l, err := newLoop()
		if err != nil {
			return err
		}
		loops = append(loops, l)
	}
	var nextLoop int
	// Transfers still being opened finish opening (or see ctx done) before the loops stop.
	var wg sync.WaitGroup
	defer wg.Wait()
	lim := newLimiter(cfg.maxTransfers, cfg.maxPerClient)
	var warnNext time.Time
	buf := make([]byte, 65536)
	for {
		n, peer, local, err := rc.read(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("tftp: reading requests: %w", err)
		}
		pkt, err := ParsePacket(buf[:n])
		if err != nil {
			cfg.log.Debug("tftp: dropping malformed packet", "peer", peer, "len", n, "error", err)
			continue
		}
		req, ok := pkt.(*RequestPacket)
		if !ok {
			cfg.log.Debug("tftp: dropping unexpected packet on the server port", "peer", peer, "opcode", pkt.Opcode())
			continue
		}
		key := lim.key(peer, buf[:n])
		if reason, ok := lim.acquire(key); !ok {
			cfg.metrics.refuse(reason)
			if reason != refusedDuplicate && time.Now().After(warnNext) {
				warnNext = time.Now().Add(time.Minute)
				cfg.log.Warn("tftp: request dropped, too many transfers in progress (logged at most once a minute)",
					"peer", peer, "file", req.Filename, "reason", reason,
					"max_transfers", cfg.maxTransfers, "max_transfers_per_client", cfg.maxPerClient)
			} else {
				cfg.log.Debug("tftp: request dropped", "peer", peer, "file", req.Filename, "reason", reason)
			}
			continue
		}
		l := loops[nextLoop%len(loops)]
		nextLoop++
		wg.Add(1)
		go func() {
			defer wg.Done()
			serveRequest(ctx, &cfg, l, req, peer, local, func() { lim.release(key) })
		}()
	}
}

// requestConn reads requests and learns the local address each arrived on.
type requestConn struct {
	conn  net.PacketConn
	p4    *ipv4.PacketConn
	p6    *ipv6.PacketConn
	fixed netip.Addr // the listening address when it is a specific one
}

func newRequestConn(conn net.PacketConn, log *slog.Logger) *requestConn {
	rc := &requestConn{conn: conn}
	la, ok := conn.LocalAddr().(*net.UDPAddr)
	if !ok {
		return rc
	}
	addr := la.AddrPort().Addr().Unmap()
	if !addr.IsUnspecified() {
		rc.fixed = addr
		return rc
	}
	uc, ok := conn.(*net.UDPConn)
	if !ok {
		return rc
	}
	if la.IP.To4() != nil {
		p := ipv4.NewPacketConn(uc)
		if err := p.SetControlMessage(ipv4.FlagDst, true); err != nil {
			log.Warn("tftp: cannot learn request destination addresses; replies may leave from another address", "error", err)
			return rc
		}
		rc.p4 = p
		return rc
	}
	p := ipv6.NewPacketConn(uc)
	if err := p.SetControlMessage(ipv6.FlagDst, true); err != nil {
		log.Warn("tftp: cannot learn request destination addresses; replies may leave from another address", "error", err)
		return rc
	}
	rc.p6 = p
	return rc
}

func (rc *requestConn) read(buf []byte) (int, netip.AddrPort, netip.Addr, error) {
	var (
		n     int
		src   net.Addr
		dst   net.IP
		err   error
		local = rc.fixed
	)
	switch {
	case rc.p4 != nil:
		var cm *ipv4.ControlMessage
		n, cm, src, err = rc.p4.ReadFrom(buf)
		if cm != nil {
			dst = cm.Dst
		}
	case rc.p6 != nil:
		var cm *ipv6.ControlMessage
		n, cm, src, err = rc.p6.ReadFrom(buf)
		if cm != nil {
			dst = cm.Dst
		}
	default:
		n, src, err = rc.conn.ReadFrom(buf)
	}
	if err != nil {
		return 0, netip.AddrPort{}, netip.Addr{}, err
	}
	if a, ok := netip.AddrFromSlice(dst); ok {
		local = a.Unmap()
	}
	var peer netip.AddrPort
	if ua, ok := src.(*net.UDPAddr); ok {
		ap := ua.AddrPort()
		peer = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return n, peer, local, nil
}

// errAccess marks a request refused with an access violation.
var errAccess = errors.New("access violation")

// NormalizeFilename turns a requested name into a path relative to the root: backslashes become
// slashes, leading slashes are dropped and the path is cleaned. Names that would leave the root
// ("..") or name the root itself are refused with an error wrapping fs.ErrPermission.
func NormalizeFilename(raw string) (string, error) {
	name := path.Clean(strings.TrimLeft(strings.ReplaceAll(raw, `\`, "/"), "/"))
	if name == ".." || strings.HasPrefix(name, "../") {
		return "", fmt.Errorf("%w: %q leaves the root: %w", errAccess, raw, fs.ErrPermission)
	}
	if name == "." {
		return "", fmt.Errorf("%w: %q names the root directory: %w", errAccess, raw, fs.ErrPermission)
	}
	return name, nil
}
