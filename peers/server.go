package peers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/preboot/preboot/image"
)

// ChunkPath is the path prefix a Server answers: GET ChunkPath+HASH.
const ChunkPath = "/chunks/"

// Server defaults, used when the ServerConfig field is zero.
const (
	// DefaultRate and DefaultBurst bound the requests a Server takes
	// (token bucket, per second); beyond, it answers 429.
	DefaultRate  = 50
	DefaultBurst = 20
	// DefaultReadTimeout bounds reading a request, DefaultWriteTimeout
	// writing an answer (a peer too slow to take a chunk in that time
	// loses it and fetches it elsewhere).
	DefaultReadTimeout  = 10 * time.Second
	DefaultWriteTimeout = 60 * time.Second
	// shutdownGrace is how long Serve lets uploads in progress finish
	// when its context ends.
	shutdownGrace = 5 * time.Second
)

// ServerConfig configures a Server.
type ServerConfig struct {
	// Target is the disk (or file) the agent restores onto.
	Target io.ReaderAt
	// Lookup returns a window of the image holding chunk h that the
	// agent has already written to Target and verified, false when it
	// holds none. It must be safe for concurrent use.
	Lookup func(h image.Hash) (image.Window, bool)
	// Session and Secret (mcast.JoinResponse, the secret hex-decoded)
	// check tickets; they can be set later with SetSession. Until there
	// is a secret every request is refused.
	Session string
	Secret  []byte
	// MaxUploads bounds the uploads served at once (DefaultMaxUploads
	// when 0); beyond, requests get 503 with Retry-After.
	MaxUploads int
	// Rate (requests per second) and Burst bound the request rate
	// (DefaultRate and DefaultBurst when 0).
	Rate  float64
	Burst int
	// ReadTimeout and WriteTimeout apply to the HTTP server Serve runs
	// (DefaultReadTimeout and DefaultWriteTimeout when 0).
	ReadTimeout  time.Duration
	WriteTimeout time.Duration
	// Now is the clock tickets are checked against: the server's clock
	// (Clock.Now), since the tracker signs them with it; time.Now when nil.
	Now    func() time.Time
	Logger *slog.Logger
}

// ServerStats are a Server's counters.
type ServerStats struct {
	Requests  int64 `json:"requests"`
	Uploads   int64 `json:"uploads"`   // chunks served in full
	Bytes     int64 `json:"bytes"`     // compressed bytes written to peers
	Forbidden int64 `json:"forbidden"` // 403: no, bad or expired ticket
	NotFound  int64 `json:"not_found"` // 404: not held (or not verifying)
	Busy      int64 `json:"busy"`      // 503: MaxUploads reached or no secret yet
	Limited   int64 `json:"limited"`   // 429: request rate exceeded
	Failed    int64 `json:"failed"`    // reading the target or writing the answer failed
}

// Server serves the chunks an agent holds to its peers: GET
// /chunks/<hash hex> with "Authorization: Bearer TICKET" (or ?t=TICKET)
// answers the chunk as one zstd frame of the window's bytes, read back
// from the target (bytes outside the used extents zeroed), checked against
// the hash, and compressed at zstd's fastest level. It is an http.Handler
// safe for concurrent use.
type Server struct {
	target     io.ReaderAt
	lookup     func(image.Hash) (image.Window, bool)
	maxUploads int
	readTO     time.Duration
	writeTO    time.Duration
	now        func() time.Time
	log        *slog.Logger

	slots   chan struct{}
	limiter *bucket
	enc     *zstd.Encoder
	bufs    sync.Pool // *[]byte

	mu      sync.RWMutex
	session string
	secret  []byte

	requests, uploads, bytes, forbidden, notFound, busy, limited, failed atomic.Int64
}

// NewServer checks cfg and returns a Server.
func NewServer(cfg ServerConfig) (*Server, error) {
	if cfg.Target == nil || cfg.Lookup == nil {
		return nil, errors.New("peer server: a target and a lookup are required")
	}
	s := &Server{
		target:     cfg.Target,
		lookup:     cfg.Lookup,
		maxUploads: cfg.MaxUploads,
		readTO:     cfg.ReadTimeout,
		writeTO:    cfg.WriteTimeout,
		now:        cfg.Now,
		log:        cfg.Logger,
	}
	if s.maxUploads <= 0 {
		s.maxUploads = DefaultMaxUploads
	}
	if s.readTO <= 0 {
		s.readTO = DefaultReadTimeout
	}
	if s.writeTO <= 0 {
		s.writeTO = DefaultWriteTimeout
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	rate, burst := cfg.Rate, cfg.Burst
	if rate <= 0 {
		rate = DefaultRate
	}
	if burst <= 0 {
		burst = DefaultBurst
	}
	s.limiter = &bucket{rate: rate, burst: float64(burst), tokens: float64(burst)}
	s.slots = make(chan struct{}, s.maxUploads)
	enc, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstd.SpeedFastest),
		zstd.WithEncoderConcurrency(s.maxUploads),
		zstd.WithZeroFrames(true),
		zstd.WithEncoderCRC(false), // the BLAKE3 hash covers the content
	)
	if err != nil {
		return nil, fmt.Errorf("peer server: zstd encoder: %w", err)
	}
	s.enc = enc
	s.SetSession(cfg.Session, cfg.Secret)
	return s, nil
}

// SetSession sets the session and secret tickets are checked against
// (after the join that returns them).
func (s *Server) SetSession(session string, secret []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.session = session
	s.secret = append([]byte(nil), secret...)
}

// Stats returns the server's counters.
func (s *Server) Stats() ServerStats {
	return ServerStats{
		Requests: s.requests.Load(), Uploads: s.uploads.Load(), Bytes: s.bytes.Load(),
		Forbidden: s.forbidden.Load(), NotFound: s.notFound.Load(), Busy: s.busy.Load(),
		Limited: s.limited.Load(), Failed: s.failed.Load(),
	}
}

// ticketOf returns the ticket a request carries.
func ticketOf(r *http.Request) string {
	if a := r.Header.Get("Authorization"); a != "" {
		if scheme, tok, ok := strings.Cut(a, " "); ok && strings.EqualFold(scheme, "Bearer") {
			return strings.TrimSpace(tok)
		}
		return ""
	}
	return r.URL.Query().Get("t")
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	if !s.limiter.allow(time.Now()) {
		s.limited.Add(1)
		w.Header().Set("Retry-After", "1")
		http.Error(w, "too many requests", http.StatusTooManyRequests)
		return
	}
	hs, ok := strings.CutPrefix(r.URL.Path, ChunkPath)
	if !ok {
		s.notFound.Add(1)
		http.NotFound(w, r)
		return
	}
	h, err := image.ParseHash(hs)
	if err != nil {
		s.notFound.Add(1)
		http.Error(w, "not a chunk hash", http.StatusNotFound)
		return
	}
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	s.mu.RLock()
	session, secret := s.session, s.secret
	s.mu.RUnlock()
	if len(secret) == 0 {
		s.busy.Add(1)
		w.Header().Set("Retry-After", "5")
		http.Error(w, "not serving yet", http.StatusServiceUnavailable)
		return
	}
	if err := VerifyTicket(secret, session, h, ticketOf(r), s.now()); err != nil {
		s.forbidden.Add(1)
		s.log.DebugContext(r.Context(), "peer server: ticket refused", "remote", r.RemoteAddr, "chunk", h, "err", err)
		http.Error(w, err.Error(), http.StatusForbidden)
		return
	}
	win, ok := s.lookup(h)
	if !ok || win.Chunk.Hash != h || win.Chunk.Length <= 0 || win.Chunk.Length > image.MaxChunkSize {
		s.notFound.Add(1)
		http.Error(w, "chunk not held", http.StatusNotFound)
		return
	}
	select {
	case s.slots <- struct{}{}:
		defer func() { <-s.slots }()
	default:
		s.busy.Add(1)
		w.Header().Set("Retry-After", "1")
		http.Error(w, "too many uploads", http.StatusServiceUnavailable)
		return
	}
	s.upload(w, r, h, win)
}

// upload reads, checks, compresses and sends one window; it holds an
// upload slot.
func (s *Server) upload(w http.ResponseWriter, r *http.Request, h image.Hash, win image.Window) {
	ctx := r.Context()
	bp := s.buf(int(win.Chunk.Length))
	defer s.bufs.Put(bp)
	b, err := win.Read(s.target, *bp)
	if err != nil {
		s.failed.Add(1)
		s.log.WarnContext(ctx, "peer server: read chunk", "chunk", h, "err", err)
		http.Error(w, "cannot read the chunk", http.StatusInternalServerError)
		return
	}
	if image.Sum(b) != h {
		// The target no longer holds what was verified (overwritten?):
		// say so rather than serve bytes the peer would reject.
		s.notFound.Add(1)
		s.log.WarnContext(ctx, "peer server: the target's window does not hash as the chunk", "chunk", h, "offset", win.Abs)
		http.Error(w, "chunk not held", http.StatusNotFound)
		return
	}
	cp := s.buf(int(win.Chunk.Length) + int(win.Chunk.Length)/64 + 4096)
	defer s.bufs.Put(cp)
	data := s.enc.EncodeAll(b, (*cp)[:0])
	*cp = data[:0]
	w.Header().Set("Content-Type", "application/zstd")
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	w.Header().Set("Cache-Control", "no-store")
	n, err := w.Write(data)
	s.bytes.Add(int64(n))
	if err != nil {
		s.failed.Add(1)
		s.log.DebugContext(ctx, "peer server: send chunk", "chunk", h, "remote", r.RemoteAddr, "sent", n, "err", err)
		return
	}
	s.uploads.Add(1)
	s.log.DebugContext(ctx, "peer server: chunk served", "chunk", h, "remote", r.RemoteAddr, "bytes", n)
}

// buf returns a pooled buffer of at least n bytes.
func (s *Server) buf(n int) *[]byte {
	if bp, ok := s.bufs.Get().(*[]byte); ok && cap(*bp) >= n {
		*bp = (*bp)[:n]
		return bp
	}
	b := make([]byte, n)
	return &b
}

// Serve serves HTTP on ln until ctx ends, then lets the uploads in
// progress finish (for a few seconds) and returns nil. It closes ln.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: s.readTO,
		ReadTimeout:       s.readTO,
		WriteTimeout:      s.writeTO,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("peer server: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		hs.Close()
	}
	<-errc
	return nil
}

// ListenAndServe listens on addr (":0", any free port, when empty), calls
// ready with the address it listens on (the agent advertises
// http://ITS-IP:PORT, see AdvertiseURL), and serves until ctx ends.
func (s *Server) ListenAndServe(ctx context.Context, addr string, ready func(net.Addr)) error {
	if addr == "" {
		addr = ":0"
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("peer server: %w", err)
	}
	if ready != nil {
		ready(ln.Addr())
	}
	return s.Serve(ctx, ln)
}

// AdvertiseURL returns the URL peers reach a Server listening on port at:
// http://IP:PORT with the local IP address this host uses to reach
// serverURL (the imaging server). No packet is sent.
func AdvertiseURL(ctx context.Context, serverURL string, port int) (string, error) {
	host, err := hostPort(serverURL)
	if err != nil {
		return "", err
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "udp", host)
	if err != nil {
		return "", fmt.Errorf("find the local address towards %s: %w", host, err)
	}
	defer c.Close()
	ua, ok := c.LocalAddr().(*net.UDPAddr)
	if !ok || ua.IP.IsUnspecified() {
		return "", fmt.Errorf("find the local address towards %s: got %v", host, c.LocalAddr())
	}
	return "http://" + net.JoinHostPort(ua.IP.String(), strconv.Itoa(port)), nil
}

// hostPort returns the host:port of an http(s) URL (default ports filled).
func hostPort(u string) (string, error) {
	scheme, rest, ok := strings.Cut(u, "://")
	if !ok || (scheme != "http" && scheme != "https") {
		return "", fmt.Errorf("server URL %q: want http(s)://HOST[:PORT]", u)
	}
	host, _, _ := strings.Cut(rest, "/")
	if host == "" {
		return "", fmt.Errorf("server URL %q: no host", u)
	}
	if _, _, err := net.SplitHostPort(host); err == nil {
		return host, nil
	}
	port := "80"
	if scheme == "https" {
		port = "443"
	}
	return net.JoinHostPort(strings.Trim(host, "[]"), port), nil
}

// bucket is a token bucket.
type bucket struct {
	mu     sync.Mutex
	rate   float64
	burst  float64
	tokens float64
	last   time.Time
}

func (b *bucket) allow(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.last.IsZero() {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
