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
	"sync"

	"github.com/preboot/preboot/image"
	"github.com/preboot/preboot/mcast"
)

// FactoryConfig configures a Factory: how the agent reaches the server
// (for locate calls) and where it serves its peers.
type FactoryConfig struct {
	// BaseURL, Token, HTTP and TLSFingerprint are as in FetcherConfig:
	// the agent's client to the server (httpstore.Client's BaseURL, Token
	// and HTTPClient()).
	BaseURL        string
	Token          string
	HTTP           *http.Client
	TLSFingerprint string
	// Listen is the address the peer server listens on (":0" when
	// empty: every interface, any free port).
	Listen string
	// Advertise is the host (IP address) put in the peer URL; when empty,
	// Listen's host if it names one, else the local address that routes
	// to BaseURL.
	Advertise string
	// MaxUploads bounds concurrent uploads (DefaultMaxUploads when 0).
	MaxUploads int
	Logger     *slog.Logger
}

// Factory is the peer side of a multicast receiver (it implements
// mcast.PeerFactory): Serve starts a Server before the join, SetSession
// gives it the session's secret after, and Fetcher builds the Fetcher of
// the session. Tickets are checked against the server's clock as seen in
// the locate answers (and in every answer of a client whose transport is
// wrapped by Clock().Wrap).
type Factory struct {
	cfg   FactoryConfig
	log   *slog.Logger
	clock Clock

	mu       sync.Mutex
	srv      *Server
	fetchers []*Fetcher
}

// NewFactory returns a Factory.
func NewFactory(cfg FactoryConfig) *Factory {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Factory{cfg: cfg, log: log}
}

// Clock is the server's clock as the factory knows it.
func (f *Factory) Clock() *Clock { return &f.clock }

// Serve starts serving, until ctx ends, the chunks lookup finds on src,
// and returns the URL to advertise (mcast.JoinRequest.PeerURL). With no
// secret yet every request is refused until SetSession.
func (f *Factory) Serve(ctx context.Context, secret []byte, session string,
	lookup func(image.Hash) (image.Window, bool), src io.ReaderAt) (string, error) {
	srv, err := NewServer(ServerConfig{
		Target: src, Lookup: lookup, Session: session, Secret: secret,
		MaxUploads: f.cfg.MaxUploads, Now: f.clock.Now, Logger: f.log,
	})
	if err != nil {
		return "", err
	}
	addr := f.cfg.Listen
	if addr == "" {
		addr = ":0"
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return "", fmt.Errorf("peer server: %w", err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	host := f.cfg.Advertise
	if h, _, err := net.SplitHostPort(addr); host == "" && err == nil {
		if ip := net.ParseIP(h); ip != nil && !ip.IsUnspecified() {
			host = ip.String()
		}
	}
	var u string
	if host != "" {
		u = "http://" + net.JoinHostPort(host, strconv.Itoa(port))
	} else if u, err = AdvertiseURL(ctx, f.cfg.BaseURL, port); err != nil {
		ln.Close()
		return "", fmt.Errorf("peer server: %w", err)
	}
	if validPeerURL(u) != u {
		ln.Close()
		return "", fmt.Errorf("peer server: cannot advertise %q", u)
	}
	f.mu.Lock()
	f.srv = srv
	f.mu.Unlock()
	go func() {
		if err := srv.Serve(ctx, ln); err != nil {
			f.log.WarnContext(ctx, "peer server stopped", "err", err)
		}
	}()
	f.log.InfoContext(ctx, "serving chunks to peers", "url", u, "listen", ln.Addr().String())
	return u, nil
}

// SetSession gives the running server the session and its secret.
func (f *Factory) SetSession(session string, secret []byte) {
	f.mu.Lock()
	srv := f.srv
	f.mu.Unlock()
	if srv != nil {
		srv.SetSession(session, secret)
	}
}

// Fetcher returns the session's fetcher (the secret is not needed: the
// tracker signs the tickets).
func (f *Factory) Fetcher(session, receiver string, _ []byte, chunks []image.Hash, fallback image.ChunkStore) mcast.Fetcher {
	fe, err := NewFetcher(FetcherConfig{
		BaseURL: f.cfg.BaseURL, Token: f.cfg.Token, HTTP: f.cfg.HTTP, TLSFingerprint: f.cfg.TLSFingerprint,
		Session: session, Receiver: receiver, Chunks: chunks, Fallback: fallback,
		Clock: &f.clock, Logger: f.log,
	})
	if err != nil {
		f.log.Warn("no peer fetcher: fetching from the server only", "err", err)
		return &serverOnly{chunks: chunks, store: fallback}
	}
	f.mu.Lock()
	f.fetchers = append(f.fetchers, fe)
	f.mu.Unlock()
	return fe
}

// Stats sums the counters of the server and the fetchers.
func (f *Factory) Stats() (ServerStats, FetcherStats) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ss ServerStats
	if f.srv != nil {
		ss = f.srv.Stats()
	}
	var fs FetcherStats
	for _, fe := range f.fetchers {
		s := fe.Stats()
		fs.PeerChunks += s.PeerChunks
		fs.PeerBytes += s.PeerBytes
		fs.ServerChunks += s.ServerChunks
		fs.ServerBytes += s.ServerBytes
		fs.PeerFailures += s.PeerFailures
		fs.Corrupt += s.Corrupt
		fs.Locates += s.Locates
		fs.LocateErrors += s.LocateErrors
		fs.Redirected += s.Redirected
	}
	return ss, fs
}

// Close releases the fetchers; none may be in use.
func (f *Factory) Close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, fe := range f.fetchers {
		fe.Close()
	}
	f.fetchers = nil
}

// serverOnly fetches every chunk from the server, verified.
type serverOnly struct {
	chunks []image.Hash
	store  image.ChunkStore
}

func (s *serverOnly) Get(ctx context.Context, idx uint32, dst []byte) ([]byte, bool, error) {
	if int(idx) >= len(s.chunks) || s.store == nil {
		return nil, false, errors.New("chunk not in the session's table, or no store")
	}
	h := s.chunks[idx]
	data, err := s.store.Get(ctx, h, dst[:0])
	if err != nil {
		return nil, false, fmt.Errorf("chunk %d (%s): %w", idx, h, err)
	}
	if err := image.VerifyChunk(h, data); err != nil {
		return nil, false, fmt.Errorf("chunk %d (%s) from the server: %w", idx, h, err)
	}
	return data, false, nil
}
