package mcast

import (
	"cmp"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/preboot/preboot/image"
	"github.com/preboot/preboot/image/httpstore"
)

// Fallback thresholds of a receiver.
const (
	// maxLoss: a receiver that misses more of the group's packets than
	// this (a slow link, a busy disk) finishes over HTTP by itself.
	maxLoss = 0.20
	// hopelessLoss: beyond this a receiver leaves whatever the others do.
	hopelessLoss = 0.60
	// lossFor is how long the loss must last before the receiver leaves.
	lossFor = 2 * time.Second
	// lossMinPackets is how many packets it must have seen before its loss
	// counts.
	lossMinPackets = 300
	// noDataAfter: the server has sent this long and nothing reached the
	// receiver (multicast blocked, a switch without an IGMP querier).
	noDataAfter = 2 * time.Second
	// stallAfter: no chunk completed for this long while the server sends.
	stallAfter = 15 * time.Second
	// endgame: with at most endgameChunks left and no progress for
	// endgameAfter, the rest comes over HTTP.
	endgameChunks = 2
	endgameAfter  = 3 * time.Second
	// maxHashFailures: a chunk that fails its hash this often from the
	// group is fetched over HTTP.
	maxHashFailures = 2
	// maxAssemblyBytes bounds the memory held by partly received chunks.
	maxAssemblyBytes = 192 << 20
	// fallbackWorkers fetch over HTTP in parallel.
	fallbackWorkers = 4
)

// Fetcher gets chunks over HTTP from peers, or the server when no peer has
// them. Get returns verified compressed bytes or an error.
type Fetcher interface {
	Get(ctx context.Context, idx uint32, dst []byte) (data []byte, fromPeer bool, err error)
}

// ReceiveOptions configure Restore.
type ReceiveOptions struct {
	// Client talks to the server: control plane and unicast chunks
	// (required).
	Client *httpstore.Client
	// Image as given to the join (NAME or NAME@VERSION).
	Image string
	// Name identifies the receiver in the session (host name, MAC).
	Name string
	// Interface receives the group; empty: the one that routes to the
	// server.
	Interface string
	// PeersOnly: no multicast, fetch from peers (or the server).
	PeersOnly bool
	// MinClients and MaxWait set the start rule of a session this
	// receiver creates (ad-hoc receivers; a job's bundle decides for
	// job receivers).
	MinClients int
	MaxWait    time.Duration
	// Peers, when set, serves this receiver's verified chunks to other
	// receivers and fetches from them. It is called once the session is
	// known.
	Peers PeerFactory
	// SeedFor: once done, keep serving peers this long at most while
	// others in the session still work (0: leave at once).
	SeedFor time.Duration
	// Done, when set, is called once the image is on the target, before
	// seeding.
	Done func(Result)
	// Logger for the receiver.
	Logger *slog.Logger
}

// PeerFactory builds the peer side of a receiver: Serve starts serving
// the chunks lookup finds (verified on this receiver's target) and
// returns the URL other receivers reach it at; SetSession gives it the
// session and its secret once joined; Fetcher returns how to fetch chunks
// over HTTP in the session.
type PeerFactory interface {
	Serve(ctx context.Context, secret []byte, session string, lookup func(image.Hash) (image.Window, bool), src io.ReaderAt) (peerURL string, err error)
	SetSession(session string, secret []byte)
	Fetcher(session, receiver string, secret []byte, chunks []image.Hash, fallback image.ChunkStore) Fetcher
}

// Result says how a restore got its bytes.
type Result struct {
	Session string `json:"session,omitempty"`
	Image   string `json:"image"`
	Bytes   Bytes  `json:"bytes"`
	// Fallback says why (part of) the image came over HTTP.
	Fallback string `json:"fallback,omitempty"`
}

// Target is what a receiver writes: the disk (read back for delta
// restores and to serve peers).
type Target interface {
	io.WriterAt
	io.ReaderAt
}

// Restore restores m onto dst like image.Restore with ropts, getting the
// chunks from the image's multicast session (joined or started through
// o.Client): every packet of a chunk it needs is kept, requested by it or
// not, each chunk is verified against m before it is written, and what
// multicast does not bring (blocked, too lossy, too slow, cancelled,
// stalled) comes over HTTP. When the server has no multicast the whole
// restore goes over HTTP.
func Restore(ctx context.Context, dst Target, m *image.Manifest, store image.ChunkStore, ropts image.RestoreOptions, o ReceiveOptions) (Result, error) {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	res := Result{Image: m.Name}
	if o.Client == nil {
		return res, errors.New("multicast restore: no server client")
	}
	join := JoinRequest{Image: o.Image, Name: o.Name, MinClients: o.MinClients, PeersOnly: o.PeersOnly}
	if o.MaxWait > 0 {
		join.MaxWait = o.MaxWait.String()
	}
	rc := &recv{o: o, log: log, m: m, dst: dst, store: store, ropts: ropts, client: o.Client}
	plan, err := image.PlanRestore(ctx, m, ropts)
	if err != nil {
		return res, err
	}
	rc.plan = plan
	if o.Peers != nil {
		// The peer server starts before the join (the join says where it
		// is) and serves nothing until SetSession gives it the session's
		// secret.
		peerCtx, peerCancel := context.WithCancel(ctx)
		defer peerCancel()
		if u, err := o.Peers.Serve(peerCtx, nil, "", rc.lookup, dst); err != nil {
			log.WarnContext(ctx, "not serving chunks to peers", "err", err)
		} else {
			join.PeerURL = u
		}
	}
	var jr JoinResponse
	if err := o.Client.CallJSON(ctx, http.MethodPost, trimAPI(PathJoin), join, &jr); err != nil {
		var se *httpstore.StatusError
		if errors.As(err, &se) && (se.StatusCode == http.StatusServiceUnavailable || se.StatusCode == http.StatusNotFound) {
			log.WarnContext(ctx, "no multicast session: restoring over unicast", "err", err)
			res.Fallback = "no multicast session: " + err.Error()
			return rc.unicastOnly(ctx, res)
		}
		return res, fmt.Errorf("join multicast session: %w", err)
	}
	res.Session = jr.Session
	secret, err := hex.DecodeString(jr.Secret)
	if err != nil {
		return res, fmt.Errorf("join multicast session: bad secret: %w", err)
	}
	rc.jr, rc.secret = jr, secret
	if rc.sessionID, err = parseSessionID(jr.Session); err != nil {
		return res, fmt.Errorf("join multicast session: %w", err)
	}
	if !slices.Equal(jr.Chunks, m.ChunkHashes()) {
		rc.leave(ctx, RecvFailed, "the session's image is not the manifest this receiver has")
		res.Fallback = fmt.Sprintf("session %s restores %s, another version than this receiver's manifest", jr.Session, jr.Image)
		log.WarnContext(ctx, "multicast session of another image version: restoring over unicast", "session", jr.Session, "session_image", jr.Image)
		return rc.unicastOnly(ctx, res)
	}
	if o.Peers != nil {
		rc.fetcher = o.Peers.Fetcher(jr.Session, jr.Receiver, secret, jr.Chunks, store)
		o.Peers.SetSession(jr.Session, secret)
	}
	log.InfoContext(ctx, "joined multicast session", "session", jr.Session, "image", jr.Image, "group", jr.Group, "port", jr.Port,
		"state", jr.State, "start_in", jr.StartIn, "fetch", len(plan.Fetch), "in_place", len(plan.InPlace), "peers_only", o.PeersOnly)
	err = rc.run(ctx)
	if err == nil && ropts.Progress != nil {
		b := rc.bytes()
		ropts.Progress(image.Progress{Phase: "multicast", Done: plan.Used, Total: plan.Used, Chunks: int64(len(rc.windows)),
			ChunksTotal: int64(len(rc.windows)), TransferredBytes: b.Total()})
	}
	res.Bytes = rc.bytes()
	res.Fallback = rc.fallbackWhy()
	if err != nil {
		rc.leave(context.WithoutCancel(ctx), RecvFailed, err.Error())
		return res, err
	}
	return res, nil
}

func trimAPI(p string) string { return p[len(httpstore.APIPrefix):] }

// recv is one receiver's state.
type recv struct {
	o         ReceiveOptions
	log       *slog.Logger
	m         *image.Manifest
	dst       Target
	store     image.ChunkStore
	ropts     image.RestoreOptions
	client    *httpstore.Client
	plan      *image.Plan
	jr        JoinResponse
	secret    []byte
	sessionID uint64

	fetcher Fetcher
	codecs  codecs
	dec     *image.ChunkDecoder

	// windows[i] are the windows chunk i of the session's table fills.
	windows map[uint32][]image.Window
	need    []byte // bitmap: chunks still wanted from the group

	mu         sync.Mutex
	remaining  int
	asm        map[uint32]*assembly
	asmBytes   int
	failures   map[uint32]int
	done       map[int64]bool // window offsets written (or in place)
	doneHashes map[image.Hash]int64
	newHave    []uint32
	state      string
	reason     string
	lastDone   time.Time
	bytesDone  int64
	chunksDone int
	toFetch    []uint32 // fell back to HTTP

	nMulticast, nRepair, nPeers, nUnicast atomic.Int64
	dropped                               atomic.Int64
	pkts                                  atomic.Int64
	// loss accounting, per report interval
	lossMu         sync.Mutex
	seqLo, seqHi   uint32
	seqN           int64
	lossEWMA       float64
	lossSeen       int64
	sentAtJoin     int64
	sentSeenStart  time.Time
	srvState       string
	srvSent        int64
	fallbackCh     chan struct{}
	fallbackClosed bool
	fellBack       string
}

func (rc *recv) bytes() Bytes {
	return Bytes{Multicast: rc.nMulticast.Load(), Repair: rc.nRepair.Load(), Peers: rc.nPeers.Load(), Unicast: rc.nUnicast.Load()}
}

func (rc *recv) fallbackWhy() string {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.fellBack
}

// lookup finds a window holding chunk h with verified bytes on the
// target, for peers.
func (rc *recv) lookup(h image.Hash) (image.Window, bool) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	abs, ok := rc.doneHashes[h]
	if !ok {
		return image.Window{}, false
	}
	for _, w := range rc.windowsAt(abs) {
		return w, true
	}
	return image.Window{}, false
}

func (rc *recv) windowsAt(abs int64) []image.Window {
	for _, ws := range [][]image.Window{rc.plan.Fetch, rc.plan.InPlace} {
		i, ok := slices.BinarySearchFunc(ws, abs, func(w image.Window, a int64) int { return int(min(max(w.Abs-a, -1), 1)) })
		if ok {
			return ws[i : i+1]
		}
	}
	return nil
}

// unicastOnly restores everything over HTTP.
func (rc *recv) unicastOnly(ctx context.Context, res Result) (Result, error) {
	cs := &countingStore{ChunkStore: rc.store, n: &rc.nUnicast}
	err := image.Restore(ctx, rc.dst, rc.m, cs, rc.ropts)
	res.Bytes = rc.bytes()
	return res, err
}

// countingStore counts the compressed bytes Get returns.
type countingStore struct {
	image.ChunkStore
	n *atomic.Int64
}

func (c *countingStore) Get(ctx context.Context, h image.Hash, dst []byte) ([]byte, error) {
	b, err := c.ChunkStore.Get(ctx, h, dst)
	if err == nil {
		c.n.Add(int64(len(b)))
	}
	return b, err
}

func (rc *recv) run(parent context.Context) error {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	dec, err := image.NewChunkDecoder(4)
	if err != nil {
		return err
	}
	defer dec.Close()
	rc.dec = dec
	index := make(map[image.Hash]uint32, len(rc.jr.Chunks))
	for i, h := range rc.jr.Chunks {
		index[h] = uint32(i)
	}
	rc.windows = map[uint32][]image.Window{}
	rc.need = make([]byte, (len(rc.jr.Chunks)+7)/8)
	rc.done = map[int64]bool{}
	rc.doneHashes = map[image.Hash]int64{}
	rc.asm = map[uint32]*assembly{}
	rc.failures = map[uint32]int{}
	rc.fallbackCh = make(chan struct{})
	for _, w := range rc.plan.InPlace {
		rc.done[w.Abs] = true
		if _, dup := rc.doneHashes[w.Chunk.Hash]; !w.Chunk.Zero && !dup {
			rc.doneHashes[w.Chunk.Hash] = w.Abs
			if i, ok := index[w.Chunk.Hash]; ok {
				rc.newHave = append(rc.newHave, i)
			}
		}
	}
	for _, w := range rc.plan.Fetch {
		i, ok := index[w.Chunk.Hash]
		if !ok {
			return fmt.Errorf("chunk %s is not in the session's table", w.Chunk.Hash)
		}
		if _, seen := rc.windows[i]; !seen {
			rc.need[i/8] |= 1 << (i % 8)
			rc.remaining++
		}
		rc.windows[i] = append(rc.windows[i], w)
	}
	rc.bytesDone = rc.plan.InPlaceBytes
	rc.lastDone = time.Now()
	rc.state = RecvMulticast
	if rc.o.PeersOnly {
		rc.state = RecvPeers
	}

	var wg sync.WaitGroup
	defer wg.Wait()
	errc := make(chan error, 4)
	// Progress for the job.
	if rc.ropts.Progress != nil {
		start := time.Now()
		wg.Go(func() {
			t := time.NewTicker(cmp.Or(max(rc.ropts.ProgressInterval, 0), 500*time.Millisecond))
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					rc.mu.Lock()
					p := image.Progress{Phase: "multicast", Done: rc.bytesDone, Total: rc.plan.Used, Chunks: int64(rc.chunksDone),
						ChunksTotal: int64(len(rc.windows)), Elapsed: time.Since(start)}
					rc.mu.Unlock()
					p.Rate = float64(p.Done) / max(p.Elapsed.Seconds(), 1e-3)
					p.TransferredBytes = rc.bytes().Total()
					rc.ropts.Progress(p)
				}
			}
		})
	}
	if rc.remaining > 0 && !rc.o.PeersOnly {
		pc, err := rc.listen()
		if err != nil {
			rc.log.WarnContext(ctx, "cannot receive multicast: fetching over HTTP", "err", err)
			rc.fallback(RecvUnicast, "cannot receive multicast: "+err.Error())
		} else {
			defer pc.Close()
			wg.Go(func() { rc.readLoop(ctx, pc) })
		}
	} else if rc.remaining > 0 {
		rc.fallback(RecvPeers, "peer-assisted restore")
	}
	// Reports and the fallback decisions.
	reportDone := make(chan struct{})
	wg.Go(func() {
		defer close(reportDone)
		if err := rc.reportLoop(ctx); err != nil {
			errc <- err
		}
	})
	// HTTP for what multicast did not bring.
	httpDone := make(chan error, 1)
	go func() {
		select {
		case <-rc.fallbackCh:
			httpDone <- rc.fetchRest(ctx)
		case <-ctx.Done():
			httpDone <- ctx.Err()
		case <-rc.allDone(ctx):
			httpDone <- nil
		}
	}()
	var ferr error
	select {
	case ferr = <-httpDone:
	case ferr = <-errc:
	}
	if ferr == nil {
		// The rest: zero windows, the partition table, sync.
		ro := rc.ropts
		ro.Done = func(abs int64) bool {
			rc.mu.Lock()
			defer rc.mu.Unlock()
			return rc.done[abs]
		}
		ro.Progress = nil
		ferr = image.Restore(ctx, rc.dst, rc.m, &countingStore{ChunkStore: rc.store, n: &rc.nUnicast}, ro)
	}
	state, reason := RecvDone, ""
	if ferr != nil {
		state, reason = RecvFailed, ferr.Error()
	}
	cancel()
	<-reportDone
	if ferr == nil && rc.o.Done != nil {
		rc.o.Done(Result{Session: rc.jr.Session, Image: rc.m.Name, Bytes: rc.bytes(), Fallback: rc.fallbackWhy()})
	}
	if ferr == nil && rc.o.Peers != nil && rc.o.SeedFor > 0 {
		rc.seed(parent, rc.o.SeedFor)
	}
	rc.leave(context.WithoutCancel(ctx), state, reason)
	if ferr == nil {
		rc.log.InfoContext(ctx, "multicast restore done", "session", rc.jr.Session, "multicast", rc.nMulticast.Load(), "repair", rc.nRepair.Load(),
			"peers", rc.nPeers.Load(), "unicast", rc.nUnicast.Load(), "dropped", rc.dropped.Load())
	}
	return ferr
}

// allDone closes when every chunk is in.
func (rc *recv) allDone(ctx context.Context) <-chan struct{} {
	ch := make(chan struct{})
	go func() {
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			rc.mu.Lock()
			n := rc.remaining
			rc.mu.Unlock()
			if n == 0 {
				close(ch)
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-rc.fallbackCh:
				return
			case <-t.C:
			}
		}
	}()
	return ch
}

// fallback moves everything not yet received to HTTP.
func (rc *recv) fallback(state, reason string) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.fallbackClosed {
		return
	}
	rc.fallbackClosed = true
	rc.state, rc.reason, rc.fellBack = state, reason, reason
	for i := range rc.windows {
		if needs(rc.need, int(i)) {
			rc.toFetch = append(rc.toFetch, i)
		}
	}
	close(rc.fallbackCh)
	rc.log.Info("fetching the rest over HTTP", "state", state, "reason", reason, "chunks", len(rc.toFetch),
		"packets", rc.pkts.Load(), "dropped", rc.dropped.Load(), "partial", len(rc.asm), "done", rc.chunksDone)
	clear(rc.need)
	clear(rc.asm)
	rc.asmBytes = 0
}

// listen joins the group on the receiving interface.
func (rc *recv) listen() (*ipv4.PacketConn, error) {
	group, err := netip.ParseAddr(rc.jr.Group)
	if err != nil || !group.Is4() || !group.IsMulticast() {
		return nil, fmt.Errorf("bad group %q", rc.jr.Group)
	}
	ifi, err := rc.iface()
	if err != nil {
		return nil, err
	}
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
			// Room for bursts while a chunk is decoded: beyond
			// net.core.rmem_max where allowed (root).
			if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 16<<20) != nil {
				_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 16<<20)
			}
		})
		if err != nil {
			return err
		}
		return serr
	}}
	// Bound to the group's address: only this group's packets arrive.
	c, err := lc.ListenPacket(context.Background(), "udp4", netip.AddrPortFrom(group, uint16(rc.jr.Port)).String())
	if err != nil {
		return nil, fmt.Errorf("listen on %s:%d: %w", group, rc.jr.Port, err)
	}
	pc := ipv4.NewPacketConn(c)
	if err := pc.JoinGroup(ifi, &net.UDPAddr{IP: group.AsSlice()}); err != nil {
		c.Close()
		return nil, fmt.Errorf("join %s on %s: %w", group, ifi.Name, err)
	}
	rc.log.Info("listening to the group", "group", group, "port", rc.jr.Port, "interface", ifi.Name)
	return pc, nil
}

// iface is the configured interface, else the one whose address routes
// to the server.
func (rc *recv) iface() (*net.Interface, error) {
	if rc.o.Interface != "" {
		return net.InterfaceByName(rc.o.Interface)
	}
	u, err := url.Parse(rc.client.BaseURL)
	if err != nil {
		return nil, err
	}
	port := u.Port()
	if port == "" {
		port = "80"
	}
	c, err := net.Dial("udp4", net.JoinHostPort(u.Hostname(), port))
	if err != nil {
		return nil, fmt.Errorf("route to the server: %w", err)
	}
	local := c.LocalAddr().(*net.UDPAddr).IP
	c.Close()
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	for i := range ifs {
		addrs, _ := ifs[i].Addrs()
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.Equal(local) {
				return &ifs[i], nil
			}
		}
	}
	return nil, fmt.Errorf("no interface holds %s, the address that routes to the server", local)
}

// readLoop takes packets off the socket until ctx ends or the receiver
// falls back.
func (rc *recv) readLoop(ctx context.Context, pc *ipv4.PacketConn) {
	const batch = 32
	msgs := make([]ipv4.Message, batch)
	for i := range msgs {
		msgs[i].Buffers = [][]byte{make([]byte, 9000)}
	}
	decodeCh := make(chan uint32, 64)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer close(decodeCh)
	for range 2 {
		wg.Go(func() {
			for idx := range decodeCh {
				rc.finish(ctx, idx)
			}
		})
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-rc.fallbackCh:
			return
		default:
		}
		_ = pc.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, err := pc.ReadBatch(msgs, 0)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if ctx.Err() == nil {
				rc.log.Warn("multicast read failed", "err", err)
				rc.fallback(RecvUnicast, "multicast read failed: "+err.Error())
			}
			return
		}
		for i := range n {
			if idx, ok := rc.take(msgs[i].Buffers[0][:msgs[i].N]); ok {
				select {
				case decodeCh <- idx:
				case <-ctx.Done():
					return
				}
			}
		}
	}
}

// take keeps one packet; it returns a chunk index when that chunk has
// enough symbols to decode.
func (rc *recv) take(b []byte) (uint32, bool) {
	p, err := ParsePacket(b)
	if err != nil || p.Session != rc.sessionID {
		rc.dropped.Add(1)
		return 0, false
	}
	rc.pkts.Add(1)
	rc.lossMu.Lock()
	if rc.seqN == 0 || p.Seq < rc.seqLo {
		rc.seqLo = p.Seq
	}
	if rc.seqN == 0 || p.Seq > rc.seqHi {
		rc.seqHi = p.Seq
	}
	rc.seqN++
	rc.lossMu.Unlock()
	if int(p.Chunk) >= len(rc.jr.Chunks) {
		rc.dropped.Add(1)
		return 0, false
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if !needs(rc.need, int(p.Chunk)) {
		return 0, false
	}
	a := rc.asm[p.Chunk]
	if a != nil && (a.k != p.K || a.p != p.P || a.length != p.Length) {
		rc.dropped.Add(1) // disagrees with the symbols already held: forged or stale
		return 0, false
	}
	if a == nil {
		for rc.asmBytes+p.K*SymbolSize > maxAssemblyBytes && len(rc.asm) > 0 {
			// Out of room: drop the chunk with the fewest symbols; it
			// comes again.
			var worst uint32
			least := -1
			for i, x := range rc.asm {
				if least < 0 || x.have < least {
					worst, least = i, x.have
				}
			}
			rc.asmBytes -= rc.asm[worst].bytes()
			delete(rc.asm, worst)
		}
		a = newAssembly(p.K, p.P, p.Length)
		rc.asm[p.Chunk] = a
	}
	if a.complete() {
		return 0, false // decoding
	}
	if a.add(int(p.Symbol), p.Payload) {
		if p.Repair {
			a.repair++
		}
		rc.asmBytes += SymbolSize
		if a.complete() {
			return p.Chunk, true
		}
	}
	return 0, false
}

// parseSessionID reads the 64-bit id packets carry from the session's
// hex name.
func parseSessionID(s string) (uint64, error) {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 8 {
		return 0, fmt.Errorf("bad session id %q", s)
	}
	return binary.BigEndian.Uint64(b), nil
}

// finish decodes, verifies and writes a chunk whose symbols are in.
func (rc *recv) finish(ctx context.Context, idx uint32) {
	rc.mu.Lock()
	a := rc.asm[idx]
	ws := rc.windows[idx]
	rc.mu.Unlock()
	if a == nil || len(ws) == 0 {
		return
	}
	data, err := a.decode(&rc.codecs)
	var out []byte
	if err == nil {
		out, err = rc.dec.Decode(rc.jr.Chunks[idx], data, ws[0].Chunk.Length, make([]byte, 0, ws[0].Chunk.Length))
	}
	if err != nil {
		rc.dropped.Add(1)
		rc.mu.Lock()
		delete(rc.asm, idx)
		rc.asmBytes -= a.bytes()
		rc.failures[idx]++
		n := rc.failures[idx]
		if n >= maxHashFailures && needs(rc.need, int(idx)) {
			rc.need[idx/8] &^= 1 << (idx % 8)
			rc.toFetch = append(rc.toFetch, idx)
		}
		rc.mu.Unlock()
		rc.log.Warn("chunk from the group refused", "chunk", idx, "failures", n, "err", err)
		if n >= maxHashFailures {
			go func() {
				if err := rc.fetchOne(ctx, idx, true); err != nil {
					rc.fallback(RecvUnicast, fmt.Sprintf("chunk %d failed its hash %d times and over HTTP: %v", idx, n, err))
				}
			}()
		}
		return
	}
	if err := rc.write(idx, ws, out); err != nil {
		rc.fallback(RecvFailed, err.Error())
		return
	}
	// Count the chunk's length, split as its symbols came: in a first
	// pass of the chunk, or in a repair pass.
	rep := int64(a.length) * int64(a.repair) / int64(max(a.have, 1))
	rc.nRepair.Add(rep)
	rc.nMulticast.Add(int64(a.length) - rep)
	rc.mu.Lock()
	if rc.asm[idx] == a {
		delete(rc.asm, idx)
		rc.asmBytes -= a.bytes()
	}
	rc.mu.Unlock()
}

// write puts a verified chunk into every window that holds it and marks
// it done.
func (rc *recv) write(idx uint32, ws []image.Window, out []byte) error {
	rc.mu.Lock()
	if !needs(rc.need, int(idx)) && !slices.Contains(rc.toFetch, idx) {
		rc.mu.Unlock()
		return nil // already written (by HTTP)
	}
	rc.need[idx/8] &^= 1 << (idx % 8)
	rc.mu.Unlock()
	for i := range ws {
		if err := ws[i].Write(rc.dst, out); err != nil {
			return err
		}
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if i := slices.Index(rc.toFetch, idx); i >= 0 {
		rc.toFetch = slices.Delete(rc.toFetch, i, i+1)
	}
	for i := range ws {
		if !rc.done[ws[i].Abs] {
			rc.done[ws[i].Abs] = true
			rc.bytesDone += ws[i].UsedBytes()
		}
	}
	rc.doneHashes[ws[0].Chunk.Hash] = ws[0].Abs
	rc.newHave = append(rc.newHave, idx)
	rc.remaining--
	rc.chunksDone++
	rc.lastDone = time.Now()
	return nil
}

// fetchRest fetches every chunk still missing over HTTP (peers or the
// server), each receiver in its own random order: receivers that fall
// back together then ask for different chunks first and serve each other
// the rest (Frisbee's lesson: no lockstep). A chunk the tracker says is on
// its way to a peer waits (other chunks first), at most waitForPeer.
func (rc *recv) fetchRest(ctx context.Context) error {
	rc.mu.Lock()
	todo := slices.Clone(rc.toFetch)
	rc.mu.Unlock()
	rand.Shuffle(len(todo), func(i, j int) { todo[i], todo[j] = todo[j], todo[i] })
	type item struct {
		idx     uint32
		waiting time.Time // since when the tracker says to wait
	}
	var qmu sync.Mutex
	queue := make([]item, 0, len(todo))
	for _, i := range todo {
		queue = append(queue, item{idx: i})
	}
	// No prefetching of locations: the tracker takes a chunk located
	// without a peer as on its way from the server to this receiver, and
	// holds the others back for it; that must be true at once.
	pop := func() (item, bool) {
		qmu.Lock()
		defer qmu.Unlock()
		if len(queue) == 0 {
			return item{}, false
		}
		it := queue[0]
		queue = queue[1:]
		return it, true
	}
	var wg sync.WaitGroup
	var first error
	var emu sync.Mutex
	for range fallbackWorkers {
		wg.Go(func() {
			for ctx.Err() == nil {
				it, ok := pop()
				if !ok {
					return
				}
				force := !it.waiting.IsZero() && time.Since(it.waiting) > waitForPeer
				err := rc.fetchOne(ctx, it.idx, force)
				rc.log.Debug("fetched over HTTP", "chunk", it.idx, "force", force, "err", err)
				if errors.Is(err, ErrWait) {
					if it.waiting.IsZero() {
						it.waiting = time.Now()
					}
					qmu.Lock()
					queue = append(queue, it)
					alone := len(queue) <= fallbackWorkers
					qmu.Unlock()
					if alone { // little else to do: give the peer time
						select {
						case <-time.After(250 * time.Millisecond):
						case <-ctx.Done():
						}
					}
					continue
				}
				if err != nil {
					emu.Lock()
					if first == nil {
						first = err
					}
					emu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if first != nil {
		return first
	}
	return ctx.Err()
}

// waitForPeer bounds how long a chunk waits for a peer to get it.
const waitForPeer = 10 * time.Second

// fetchOne gets one chunk over HTTP: through the peers' fetcher, or from
// the server (force, or no fetcher), verifies and writes it.
func (rc *recv) fetchOne(ctx context.Context, idx uint32, force bool) error {
	rc.mu.Lock()
	ws := rc.windows[idx]
	rc.mu.Unlock()
	if len(ws) == 0 {
		return nil
	}
	h := rc.jr.Chunks[idx]
	var data []byte
	var err error
	fromPeer := false
	if rc.fetcher != nil && !force {
		data, fromPeer, err = rc.fetcher.Get(ctx, idx, nil)
	} else {
		data, err = rc.store.Get(ctx, h, nil)
	}
	if errors.Is(err, ErrWait) {
		return err
	}
	if err != nil {
		return fmt.Errorf("fetch chunk %s: %w", h, err)
	}
	out, err := rc.dec.Decode(h, data, ws[0].Chunk.Length, make([]byte, 0, ws[0].Chunk.Length))
	if err != nil {
		return fmt.Errorf("chunk %s from the server: %w", h, err)
	}
	if fromPeer {
		rc.nPeers.Add(int64(len(data)))
	} else {
		rc.nUnicast.Add(int64(len(data)))
	}
	return rc.write(idx, ws, out)
}

// reportLoop reports to the server every ReportEvery and decides when to
// leave the group.
func (rc *recv) reportLoop(ctx context.Context) error {
	every := time.Duration(max(rc.jr.ReportEvery, 50)) * time.Millisecond
	t := time.NewTicker(every)
	defer t.Stop()
	joined := time.Now()
	var lastPk int64
	var sentBase int64 = -1
	var sentBaseAt time.Time
	failSince := time.Time{}
	lossySince := time.Time{}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		req := rc.buildReport()
		var resp ReportResponse
		err := rc.client.CallJSON(ctx, http.MethodPost, trimAPI(PathPrefix+rc.jr.Session+"/report"), req, &resp)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if failSince.IsZero() {
				failSince = time.Now()
			}
			rc.log.Warn("multicast report failed", "err", err)
			var se *httpstore.StatusError
			if errors.As(err, &se) && se.StatusCode == http.StatusNotFound || time.Since(failSince) > 10*time.Second {
				rc.fallback(RecvUnicast, "the server does not answer reports: "+err.Error())
			}
			continue
		}
		failSince = time.Time{}
		if e := time.Duration(resp.ReportEvery) * time.Millisecond; e >= 50*time.Millisecond && e != every {
			every = e
			t.Reset(every)
		}
		rc.mu.Lock()
		fell := rc.fallbackClosed
		remaining := rc.remaining
		lastDone := rc.lastDone
		rc.mu.Unlock()
		if fell || remaining == 0 {
			continue
		}
		switch resp.State {
		case StateCancelled, StateDone:
			rc.fallback(RecvUnicast, "the session was "+resp.State)
			continue
		case StateWaiting:
			if time.Since(joined) > time.Duration(resp.StartIn*float64(time.Second))+time.Duration(rc.jr.StartIn*float64(time.Second))+30*time.Second {
				rc.fallback(RecvUnicast, "the session did not start")
			}
			continue
		}
		// Running.
		if sentBase < 0 {
			sentBase, sentBaseAt = resp.SentPackets, time.Now()
			lastDone = time.Now() // the stall clock starts with the session
			rc.mu.Lock()
			rc.lastDone = lastDone
			rc.mu.Unlock()
		}
		pk := rc.pkts.Load()
		if pk == 0 && resp.SentPackets > sentBase+50 && time.Since(sentBaseAt) > noDataAfter {
			rc.fallback(RecvUnicast, fmt.Sprintf("no multicast packet reached this receiver while the server sent %d (multicast blocked, or a switch without an IGMP querier)", resp.SentPackets-sentBase))
			continue
		}
		// Far more loss than the typical receiver: this one is the
		// problem (slow link or disk), not the rate; it leaves. When all
		// lose alike the server slows down instead.
		// It must last (lossFor): early figures are noisy, and the
		// others' reports take a moment to say what is typical.
		if loss, seen := rc.loss(); seen >= lossMinPackets && (loss > maxLoss && loss > 2*resp.MedianLoss+0.05 || loss > hopelessLoss) {
			if lossySince.IsZero() {
				lossySince = time.Now()
			}
			if time.Since(lossySince) >= lossFor {
				rc.fallback(RecvUnicast, fmt.Sprintf("lost %.0f%% of the group's packets, the typical receiver %.0f%% (slow link or disk)", loss*100, resp.MedianLoss*100))
				continue
			}
		} else {
			lossySince = time.Time{}
		}
		if pk > lastPk {
			lastPk = pk
		}
		if time.Since(lastDone) > stallAfter {
			rc.fallback(RecvUnicast, fmt.Sprintf("no chunk from the group for %s", stallAfter))
			continue
		}
		if remaining <= endgameChunks && time.Since(lastDone) > endgameAfter {
			rc.fallback(RecvUnicast, fmt.Sprintf("the last %d chunks over HTTP", remaining))
		}
	}
}

// loss returns the smoothed fraction of the group's packets missed and
// how many packets it is based on.
func (rc *recv) loss() (float64, int64) {
	rc.lossMu.Lock()
	defer rc.lossMu.Unlock()
	return rc.lossEWMA, rc.lossSeen
}

func (rc *recv) buildReport() ReportRequest {
	rc.lossMu.Lock()
	if rc.seqN > 0 {
		span := int64(rc.seqHi-rc.seqLo) + 1
		l := 1 - float64(rc.seqN)/float64(max(span, rc.seqN))
		w := min(1, float64(span)/float64(lossMinPackets))
		rc.lossEWMA = rc.lossEWMA*(1-0.5*w) + l*0.5*w
		if rc.lossSeen == 0 {
			rc.lossEWMA = l
		}
		rc.lossSeen += span
		rc.seqN = 0
	}
	loss := rc.lossEWMA
	rc.lossMu.Unlock()
	rc.mu.Lock()
	defer rc.mu.Unlock()
	req := ReportRequest{Receiver: rc.jr.Receiver, State: rc.state, Reason: rc.reason, ChunksDone: rc.chunksDone,
		ChunksTotal: len(rc.windows), BytesDone: rc.bytesDone, BytesTotal: rc.plan.Used, Bytes: rc.bytes(), Loss: loss,
		Dropped: rc.dropped.Load(), Have: rc.newHave}
	rc.newHave = nil
	if rc.state == RecvMulticast && rc.remaining > 0 {
		req.Need = slices.Clone(rc.need)
		// Complete ones too (decoding): the server must not send them
		// again while the decoder works.
		for i, a := range rc.asm {
			if a.have > 0 {
				if req.Partial == nil {
					req.Partial = map[uint32]int{}
				}
				req.Partial[i] = a.have
			}
		}
	}
	if rc.remaining == 0 && rc.state == RecvMulticast {
		req.Need = nil
	}
	return req
}

// seed keeps a receiver that is done serving its chunks to peers while
// the server says others in the session still work, at most maxSeed.
// Without it the receivers that finish first (those that got chunks from
// the server first) would take their chunks away from the others.
func (rc *recv) seed(ctx context.Context, maxSeed time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, maxSeed)
	defer cancel()
	rc.mu.Lock()
	rc.state = RecvDone
	rc.mu.Unlock()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		req := rc.buildReport()
		req.Need, req.Partial = nil, nil
		var resp ReportResponse
		if err := rc.client.CallJSON(ctx, http.MethodPost, trimAPI(PathPrefix+rc.jr.Session+"/report"), req, &resp); err != nil || !resp.Seed {
			return
		}
		select {
		case <-ctx.Done():
			rc.log.Info("stopped serving peers", "after", maxSeed)
			return
		case <-t.C:
		}
	}
}

// leave tells the server how the receiver ended.
func (rc *recv) leave(ctx context.Context, state, reason string) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	rc.mu.Lock()
	if reason == "" && rc.fellBack != "" {
		reason = "finished over HTTP: " + rc.fellBack
	}
	rc.state, rc.reason = state, reason
	rc.mu.Unlock()
	req := rc.buildReport()
	req.State, req.Reason, req.Need, req.Partial, req.Left = state, reason, nil, nil, true
	if err := rc.client.CallJSON(ctx, http.MethodPost, trimAPI(PathPrefix+rc.jr.Session+"/report"), req, nil); err != nil {
		rc.log.Warn("final multicast report failed", "err", err)
	}
}
