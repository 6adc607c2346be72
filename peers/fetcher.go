package peers

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/preboot/preboot/image"
	"github.com/preboot/preboot/mcast"
	"github.com/preboot/preboot/tlspin"
)

// Fetcher defaults, used when the FetcherConfig field is zero.
const (
	// DefaultBatch is how many chunks one locate call asks about at most:
	// a few per fetch worker, since every chunk located holds a peer's
	// upload slot until the receiver reports it.
	DefaultBatch = 8
	// DefaultPeerTimeout bounds one fetch from a peer.
	DefaultPeerTimeout = 30 * time.Second
	// DefaultLocateTimeout bounds one locate call.
	DefaultLocateTimeout = 10 * time.Second
	// locateAge is how long an answer of the tracker is used: less than
	// its lease, so that the peer still counts the chunk as assigned, and
	// far less than a ticket's lifetime.
	locateAge = 20 * time.Second
	// locatePause is how long the Fetcher fetches from the server without
	// asking the tracker after a locate call failed.
	locatePause = 5 * time.Second
	// maxPending bounds the prefetch queue.
	maxPending = 4096
	// maxFrame bounds a chunk answer: the largest window plus zstd's
	// worst-case expansion and slack (as image/httpstore does).
	maxFrame = image.MaxChunkSize + image.MaxChunkSize/64 + 4096
	// maxLocateAnswer bounds a locate answer.
	maxLocateAnswer = 4 << 20
)

// FetcherConfig configures a Fetcher.
type FetcherConfig struct {
	// BaseURL is the server's root URL (as for httpstore.Client) and
	// Token the bearer token for the locate calls.
	BaseURL string
	Token   string
	// HTTP is the client for the server; nil means one pinning
	// TLSFingerprint when set, else a default one.
	HTTP           *http.Client
	TLSFingerprint string
	// PeerHTTP is the client for peers; nil means one suited to a LAN
	// (no proxy, short connect and header timeouts).
	PeerHTTP *http.Client
	// Session and Receiver are what the join answered; Chunks is the
	// session's chunk table (mcast.JoinResponse.Chunks).
	Session  string
	Receiver string
	Chunks   []image.Hash
	// Fallback is where chunks come from when no peer serves them: the
	// server's repository (an *httpstore.Client).
	Fallback image.ChunkStore
	// Clock, when set, observes the Date of the locate answers.
	Clock *Clock
	// Batch bounds the chunks per locate call (DefaultBatch when 0).
	Batch int
	// PeerTimeout bounds one fetch from a peer, LocateTimeout one locate
	// call (DefaultPeerTimeout, DefaultLocateTimeout when 0).
	PeerTimeout   time.Duration
	LocateTimeout time.Duration
	// Decoders bounds concurrent decompressions (max(4, GOMAXPROCS) when
	// 0): as many Gets may run at once without waiting on one another.
	Decoders int
	Logger   *slog.Logger
}

// FetcherStats are a Fetcher's counters. Bytes are compressed, as on the
// wire.
type FetcherStats struct {
	PeerChunks   int64 `json:"peer_chunks"`
	PeerBytes    int64 `json:"peer_bytes"`
	ServerChunks int64 `json:"server_chunks"`
	ServerBytes  int64 `json:"server_bytes"`
	// PeerFailures counts fetches from peers that failed (refused, timed
	// out, wrong bytes); Corrupt those of them that did not verify.
	PeerFailures int64 `json:"peer_failures"`
	Corrupt      int64 `json:"corrupt"`
	// Locates counts locate calls, LocateErrors those that failed,
	// Redirected the chunks they pointed at a peer.
	Locates      int64 `json:"locates"`
	LocateErrors int64 `json:"locate_errors"`
	Redirected   int64 `json:"redirected"`
}

// Fetcher gets a session's chunks from peers the tracker points at, and
// from the server when none does or a peer fails. Every chunk it returns
// hashes as the chunk table says. It is safe for concurrent use.
type Fetcher struct {
	cfg       FetcherConfig
	locateURL string
	hc        *http.Client
	peerHC    *http.Client
	ownHC     []*http.Client
	dec       *image.ChunkDecoder
	log       *slog.Logger
	scratch   sync.Pool // *[]byte, decompressed chunks being verified

	mu sync.Mutex
	// urgent holds chunks Gets wait for, pending the prefetched ones;
	// queued holds both.
	urgent        []uint32
	pending       []uint32
	queued        map[uint32]struct{}
	located       map[uint32]locateEntry
	inflight      map[uint32]chan struct{}
	locating      chan struct{}       // closed when the locate call in flight ends
	bad           map[string]struct{} // peers never used again
	report        []string            // peers to report in the next locate
	corruptPeers  map[string]struct{} // reported peers that served wrong bytes
	noLocateUntil time.Time

	peerChunks, peerBytes, serverChunks, serverBytes atomic.Int64
	peerFailures, corrupt                            atomic.Int64
	locates, locateErrors, redirected                atomic.Int64
}

type locateEntry struct {
	src mcast.Source
	ok  bool // src is a peer; false: fetch from the server
	at  time.Time
}

// NewFetcher checks cfg and returns a Fetcher; Close releases it.
func NewFetcher(cfg FetcherConfig) (*Fetcher, error) {
	if cfg.BaseURL == "" || cfg.Session == "" || cfg.Receiver == "" || cfg.Fallback == nil {
		return nil, errors.New("peer fetcher: base URL, session, receiver and fallback store are required")
	}
	if cfg.Batch <= 0 {
		cfg.Batch = DefaultBatch
	}
	cfg.Batch = min(cfg.Batch, MaxLocateChunks)
	if cfg.PeerTimeout <= 0 {
		cfg.PeerTimeout = DefaultPeerTimeout
	}
	if cfg.LocateTimeout <= 0 {
		cfg.LocateTimeout = DefaultLocateTimeout
	}
	if cfg.Decoders <= 0 {
		cfg.Decoders = max(4, runtime.GOMAXPROCS(0))
	}
	f := &Fetcher{
		cfg:      cfg,
		hc:       cfg.HTTP,
		peerHC:   cfg.PeerHTTP,
		log:      cfg.Logger,
		queued:   make(map[uint32]struct{}),
		located:  make(map[uint32]locateEntry),
		inflight: make(map[uint32]chan struct{}),
		bad:      make(map[string]struct{}),

		corruptPeers: make(map[string]struct{}),
	}
	if f.log == nil {
		f.log = slog.New(slog.DiscardHandler)
	}
	base := strings.TrimSuffix(strings.TrimRight(cfg.BaseURL, "/"), "/api/v1")
	f.locateURL = base + mcast.PathPrefix + url.PathEscape(cfg.Session) + "/locate"
	if f.hc == nil {
		if cfg.TLSFingerprint != "" {
			c, err := tlspin.Client(cfg.TLSFingerprint)
			if err != nil {
				return nil, fmt.Errorf("peer fetcher: %w", err)
			}
			f.hc = c
		} else {
			f.hc = &http.Client{Transport: tlspin.Transport(nil)}
		}
		f.ownHC = append(f.ownHC, f.hc)
	}
	if f.peerHC == nil {
		f.peerHC = &http.Client{Transport: &http.Transport{
			Proxy:                 nil, // peers are on the LAN
			DialContext:           (&net.Dialer{Timeout: 3 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:          64,
			MaxIdleConnsPerHost:   4,
			IdleConnTimeout:       60 * time.Second,
			ResponseHeaderTimeout: 10 * time.Second,
			DisableCompression:    true,
		}}
		f.ownHC = append(f.ownHC, f.peerHC)
	}
	dec, err := image.NewChunkDecoder(cfg.Decoders)
	if err != nil {
		return nil, fmt.Errorf("peer fetcher: %w", err)
	}
	f.dec = dec
	return f, nil
}

// Close releases the decoder and idle connections. No Get may run.
func (f *Fetcher) Close() {
	f.dec.Close()
	for _, c := range f.ownHC {
		c.CloseIdleConnections()
	}
}

// Stats returns the fetcher's counters.
func (f *Fetcher) Stats() FetcherStats {
	return FetcherStats{
		PeerChunks: f.peerChunks.Load(), PeerBytes: f.peerBytes.Load(),
		ServerChunks: f.serverChunks.Load(), ServerBytes: f.serverBytes.Load(),
		PeerFailures: f.peerFailures.Load(), Corrupt: f.corrupt.Load(),
		Locates: f.locates.Load(), LocateErrors: f.locateErrors.Load(), Redirected: f.redirected.Load(),
	}
}

// Prefetch queues chunk indices that Gets will ask for soon: they are
// located together with the next chunks that need a locate call, in one
// round trip. (Concurrent Gets are batched anyway: one locate call is in
// flight at a time and the next one asks for every chunk waiting.) Queue
// only what will be fetched within seconds, since every chunk located
// holds one of a peer's upload slots at the tracker until it is reported
// or its lease ends.
func (f *Fetcher) Prefetch(idx []uint32) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, i := range idx {
		if int(i) >= len(f.cfg.Chunks) || len(f.pending) >= maxPending {
			continue
		}
		if _, dup := f.queued[i]; dup {
			continue
		}
		f.queued[i] = struct{}{}
		f.pending = append(f.pending, i)
	}
}

// Get returns chunk idx of the chunk table as stored (one zstd frame, like
// image.ChunkStore.Get), appended to dst[:0], and whether a peer served
// it. The frame has been decompressed and its content checked against the
// chunk's BLAKE3 hash, whatever its source. It asks the tracker for a
// peer; on any failure of the peer (unreachable, refusing, too slow, wrong
// bytes) it reports the peer in the next locate call and fetches the chunk
// from the fallback store. It never returns bytes that do not verify.
// Errors come from the fallback store or the context, or wrap
// mcast.ErrWait when the tracker says another receiver is getting the
// chunk from the server now (ask again a little later).
func (f *Fetcher) Get(ctx context.Context, idx uint32, dst []byte) ([]byte, bool, error) {
	if int(idx) >= len(f.cfg.Chunks) {
		return nil, false, fmt.Errorf("chunk %d: not in the session's table of %d chunks", idx, len(f.cfg.Chunks))
	}
	h := f.cfg.Chunks[idx]
	src, ok := f.source(ctx, idx)
	if src.Wait {
		return nil, false, fmt.Errorf("chunk %d: %w", idx, mcast.ErrWait)
	}
	if ok && f.usable(src.URL) {
		out, err := f.fromPeer(ctx, src, h, dst)
		if err == nil {
			return out, true, nil
		}
		if ctx.Err() != nil {
			return nil, false, fmt.Errorf("chunk %d (%s): %w", idx, h, ctx.Err())
		}
		f.peerFailed(ctx, src.URL, idx, err)
	}
	out, err := f.fromServer(ctx, h, dst)
	if err != nil {
		return nil, false, fmt.Errorf("chunk %d (%s): %w", idx, h, err)
	}
	return out, false, nil
}

// usable reports whether the peer at u has not failed this fetcher.
func (f *Fetcher) usable(u string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, bad := f.bad[u]
	return !bad
}

// peerFailed stops using the peer at u and queues a report about it.
func (f *Fetcher) peerFailed(ctx context.Context, u string, idx uint32, err error) {
	f.peerFailures.Add(1)
	corrupt := errors.Is(err, image.ErrCorruptChunk)
	if corrupt {
		f.corrupt.Add(1)
	}
	f.mu.Lock()
	_, known := f.bad[u]
	if !known {
		f.bad[u] = struct{}{}
		f.report = append(f.report, u)
		if corrupt {
			f.corruptPeers[u] = struct{}{}
		}
	}
	f.mu.Unlock()
	if !known {
		f.log.WarnContext(ctx, "peer failed, fetching from the server instead", "peer", u, "chunk", idx,
			"corrupt", corrupt, "err", err)
	}
}

// source returns the peer to fetch chunk idx from, false for the server.
func (f *Fetcher) source(ctx context.Context, idx uint32) (mcast.Source, bool) {
	for {
		f.mu.Lock()
		if e, ok := f.located[idx]; ok {
			delete(f.located, idx)
			if time.Since(e.at) < locateAge {
				f.mu.Unlock()
				return e.src, e.ok
			}
		}
		if done := f.inflight[idx]; done != nil {
			f.mu.Unlock()
			select {
			case <-done:
				continue
			case <-ctx.Done():
				return mcast.Source{}, false
			}
		}
		if time.Now().Before(f.noLocateUntil) {
			f.mu.Unlock()
			return mcast.Source{}, false
		}
		if busy := f.locating; busy != nil {
			// One locate call at a time: wait for it, and go in the next
			// batch with whatever else queued meanwhile.
			if _, ok := f.queued[idx]; !ok {
				f.queued[idx] = struct{}{}
				f.urgent = append(f.urgent, idx)
			}
			f.mu.Unlock()
			select {
			case <-busy:
				continue
			case <-ctx.Done():
				return mcast.Source{}, false
			}
		}
		batch, done := f.startLocate(idx)
		f.locating = done
		bad := f.report
		f.report = nil
		f.mu.Unlock()

		srcs, err := f.locate(ctx, batch, bad)

		f.mu.Lock()
		now := time.Now()
		for _, i := range batch {
			delete(f.inflight, i)
		}
		f.locating = nil
		if err != nil {
			if ctx.Err() == nil { // the tracker failed, not this caller
				f.noLocateUntil = now.Add(locatePause)
			}
			f.report = append(f.report, bad...)
		} else {
			for _, i := range batch {
				src, ok := srcs[i]
				f.located[i] = locateEntry{src: src, ok: ok, at: now}
			}
		}
		close(done)
		e, ok := f.located[idx]
		delete(f.located, idx)
		f.mu.Unlock()
		if err != nil {
			if ctx.Err() == nil {
				f.log.WarnContext(ctx, "locate failed, fetching from the server for a while", "err", err)
			}
			return mcast.Source{}, false
		}
		return e.src, ok && e.ok
	}
}

// startLocate builds a batch: idx, then the chunks Gets wait for, then
// prefetched ones, skipping those already located or in flight, and marks
// them in flight. f.mu held.
func (f *Fetcher) startLocate(idx uint32) ([]uint32, chan struct{}) {
	now := time.Now()
	for i, e := range f.located {
		if now.Sub(e.at) >= locateAge {
			delete(f.located, i)
		}
	}
	batch := []uint32{idx}
	delete(f.queued, idx)
	take := func(q []uint32) []uint32 {
		n := 0
		for n < len(q) && len(batch) < f.cfg.Batch {
			i := q[n]
			n++
			if _, ok := f.queued[i]; !ok {
				continue // idx, or taken from the other queue
			}
			delete(f.queued, i)
			_, loc := f.located[i]
			_, inf := f.inflight[i]
			if !loc && !inf {
				batch = append(batch, i)
			}
		}
		return q[n:]
	}
	f.urgent = take(f.urgent)
	f.pending = take(f.pending)
	done := make(chan struct{})
	for _, i := range batch {
		f.inflight[i] = done
	}
	return batch, done
}

// locate asks the tracker where chunks are, reporting bad peers.
func (f *Fetcher) locate(ctx context.Context, chunks []uint32, bad []string) (map[uint32]mcast.Source, error) {
	f.locates.Add(1)
	srcs, err := f.locateOnce(ctx, chunks, bad)
	if err != nil {
		f.locateErrors.Add(1)
		return nil, fmt.Errorf("locate %d chunks: %w", len(chunks), err)
	}
	f.redirected.Add(int64(len(srcs)))
	return srcs, nil
}

func (f *Fetcher) locateOnce(ctx context.Context, chunks []uint32, bad []string) (map[uint32]mcast.Source, error) {
	// Wrong bytes are reported as Corrupt (the tracker drops the peer at
	// once), other failures as Bad.
	lreq := mcast.LocateRequest{Receiver: f.cfg.Receiver, Chunks: chunks}
	f.mu.Lock()
	for _, u := range bad {
		if _, c := f.corruptPeers[u]; c {
			lreq.Corrupt = append(lreq.Corrupt, u)
		} else {
			lreq.Bad = append(lreq.Bad, u)
		}
	}
	f.mu.Unlock()
	body, err := json.Marshal(lreq)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, f.cfg.LocateTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.locateURL, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if f.cfg.Token != "" {
		req.Header.Set("Authorization", "Bearer "+f.cfg.Token)
	}
	resp, err := f.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if f.cfg.Clock != nil {
		f.cfg.Clock.Observe(resp)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxLocateAnswer+1))
	if err != nil {
		return nil, fmt.Errorf("POST %s: reading the answer: %w", f.locateURL, err)
	}
	if resp.StatusCode != http.StatusOK {
		msg := strings.TrimSpace(string(data))
		if len(msg) > 200 {
			msg = msg[:200] + "…"
		}
		return nil, fmt.Errorf("POST %s: %s: %s", f.locateURL, resp.Status, msg)
	}
	if len(data) > maxLocateAnswer {
		return nil, fmt.Errorf("POST %s: answer larger than %d bytes", f.locateURL, maxLocateAnswer)
	}
	var lr mcast.LocateResponse
	if err := json.Unmarshal(data, &lr); err != nil {
		return nil, fmt.Errorf("POST %s: bad answer: %w", f.locateURL, err)
	}
	asked := make(map[uint32]struct{}, len(chunks))
	for _, i := range chunks {
		asked[i] = struct{}{}
	}
	out := make(map[uint32]mcast.Source, len(lr.Sources))
	for i, src := range lr.Sources {
		if _, ok := asked[i]; !ok {
			continue
		}
		if src.Wait {
			out[i] = mcast.Source{Wait: true}
			continue
		}
		u := validPeerURL(src.URL)
		if u == "" || src.Ticket == "" || len(src.Ticket) > maxTicketLen {
			continue
		}
		out[i] = mcast.Source{URL: u, Ticket: src.Ticket}
	}
	return out, nil
}

// fromPeer fetches chunk h from a peer into dst[:0] and verifies it.
func (f *Fetcher) fromPeer(ctx context.Context, src mcast.Source, h image.Hash, dst []byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, f.cfg.PeerTimeout)
	defer cancel()
	u := src.URL + ChunkPath + h.String()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+src.Ticket)
	resp, err := f.peerHC.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
		return nil, fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	if resp.ContentLength > maxFrame {
		return nil, fmt.Errorf("GET %s: %d bytes, limit %d", u, resp.ContentLength, maxFrame)
	}
	buf := bytes.NewBuffer(dst[:0])
	if resp.ContentLength > 0 {
		buf.Grow(int(resp.ContentLength))
	}
	n, err := buf.ReadFrom(io.LimitReader(resp.Body, maxFrame+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	if n > maxFrame {
		return nil, fmt.Errorf("GET %s: more than %d bytes", u, maxFrame)
	}
	data := buf.Bytes()
	if err := f.verify(h, data); err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	f.peerChunks.Add(1)
	f.peerBytes.Add(n)
	return data, nil
}

// fromServer fetches chunk h from the fallback store into dst[:0] and
// verifies it.
func (f *Fetcher) fromServer(ctx context.Context, h image.Hash, dst []byte) ([]byte, error) {
	data, err := f.cfg.Fallback.Get(ctx, h, dst[:0])
	if err != nil {
		return nil, fmt.Errorf("fetch from the server: %w", err)
	}
	if err := f.verify(h, data); err != nil {
		return nil, fmt.Errorf("from the server: %w", err)
	}
	f.serverChunks.Add(1)
	f.serverBytes.Add(int64(len(data)))
	return data, nil
}

// verify decompresses a chunk (bounded to image.MaxChunkSize) and checks
// its content hashes to h; the error wraps image.ErrCorruptChunk.
func (f *Fetcher) verify(h image.Hash, data []byte) error {
	sp, ok := f.scratch.Get().(*[]byte)
	if !ok {
		sp = new([]byte)
	}
	defer f.scratch.Put(sp)
	out, err := f.dec.Decode(h, data, -1, (*sp)[:0])
	if err != nil {
		return err
	}
	*sp = out[:0]
	return nil
}
