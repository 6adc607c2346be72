package mcast

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/preboot/preboot/image"
)

// Config is the server's multicast configuration.
type Config struct {
	// Interface sends the data (required).
	Interface string
	// Rate caps what all sessions together send, in bits/s on the wire.
	Rate int64
	// Port is the UDP port of every session's group.
	Port int
	// Range is where session groups come from (239.255.0.0/16).
	Range netip.Prefix
	// TTL of data packets (1: the local network only).
	TTL int
	// Loopback delivers the data to receivers on the server's own host.
	Loopback bool
	// ReportEvery is how often receivers report (200 ms).
	ReportEvery time.Duration
	// ReceiverTimeout: a receiver not heard from for this long is lost
	// (10 s).
	ReceiverTimeout time.Duration
	// DefaultMaxWait starts a session this long after its first join
	// when the join named no max_wait (5 min).
	DefaultMaxWait time.Duration
	// Keep is how long an ended session stays listed (1 h).
	Keep time.Duration
}

func (c *Config) defaults() {
	c.Rate = cmp.Or(c.Rate, 500_000_000)
	c.Port = cmp.Or(c.Port, 9500)
	if !c.Range.IsValid() {
		c.Range = netip.MustParsePrefix("239.255.0.0/16")
	}
	c.TTL = cmp.Or(c.TTL, 1)
	c.ReportEvery = cmp.Or(c.ReportEvery, 200*time.Millisecond)
	c.ReceiverTimeout = cmp.Or(c.ReceiverTimeout, 10*time.Second)
	c.DefaultMaxWait = cmp.Or(c.DefaultMaxWait, 5*time.Minute)
	c.Keep = cmp.Or(c.Keep, time.Hour)
}

// Validate checks the configuration (after defaults).
func (c Config) Validate() error {
	c.defaults()
	if c.Interface == "" {
		return errors.New("multicast: no interface")
	}
	if c.Rate < 64_000 {
		return fmt.Errorf("multicast: rate %d bit/s is below 64 kbit/s", c.Rate)
	}
	if c.Port < 1 || c.Port > 65535 {
		return fmt.Errorf("multicast: port %d", c.Port)
	}
	if !c.Range.Addr().Is4() || !netip.MustParsePrefix("224.0.0.0/4").Overlaps(c.Range) || c.Range.Bits() < 4 || c.Range.Bits() > 30 {
		return fmt.Errorf("multicast: range %s is not an IPv4 multicast range of at least 4 addresses", c.Range)
	}
	if c.TTL < 1 || c.TTL > 255 {
		return fmt.Errorf("multicast: ttl %d", c.TTL)
	}
	return nil
}

// Repo is where sessions read images.
type Repo interface {
	Resolve(ref string) (string, int, error)
	Manifest(ref string) (*image.Manifest, error)
	Get(ctx context.Context, h image.Hash, dst []byte) ([]byte, error)
}

// Tracker is the peer tracker the manager feeds (package peers).
type Tracker interface {
	Join(session, receiver, peerURL string)
	Have(session, receiver string, idx []uint32)
	Leave(session, receiver string)
	Bad(session, reporter, peerURL string) bool
	Corrupt(session, reporter, peerURL string) bool
	Locate(session, receiver string, chunks []uint32, secret []byte, hashes func(uint32) (image.Hash, bool)) map[uint32]Source
	Forget(session string)
}

// Caller is who joins or reports: a job's agent or an administrator.
type Caller struct {
	Admin bool
	Job   int64
	MAC   string
	// Image is the job's pinned image (NAME@VERSION); MinClients and
	// MaxWait come from its bundle.
	Image      string
	MinClients int
	MaxWait    time.Duration
	Addr       string
}

// Manager runs the multicast sessions of a server.
type Manager struct {
	cfg     Config
	repo    Repo
	log     *slog.Logger
	tracker Tracker
	// Event, when set, records what happens to sessions (start, end,
	// fallbacks) for the event log.
	Event func(ctx context.Context, job int64, mac, msg string)

	// rate is the current send rate (bits/s): the configured cap, lowered
	// while the typical receiver loses packets (adapt).
	rate    atomic.Int64
	adapted time.Time

	mu       sync.Mutex
	sessions map[string]*session
	wake     chan struct{}
	codecs   codecs
	cache    encCache
	now      func() time.Time
}

// NewManager returns a manager; Run sends.
func NewManager(cfg Config, repo Repo, tracker Tracker, log *slog.Logger) (*Manager, error) {
	cfg.defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := &Manager{cfg: cfg, repo: repo, tracker: tracker, log: log, sessions: map[string]*session{},
		wake: make(chan struct{}, 1), now: time.Now}
	m.rate.Store(cfg.Rate)
	return m, nil
}

type session struct {
	id       string
	sid      uint64
	ref      string
	m        *image.Manifest
	chunks   []image.Hash
	index    map[image.Hash]uint32
	group    netip.Addr
	dst      *net.UDPAddr
	secret   []byte
	state    string
	min      int
	maxWait  time.Duration
	created  time.Time
	firstJ   time.Time
	started  time.Time
	ended    time.Time
	imgBytes int64

	recv  map[string]*receiver
	order []string // receivers in join order

	// Send state per chunk: K (0 until first loaded), the next symbol to
	// send, when it may be sent again, when its last send ended.
	k       []int
	p       []int
	nextSym []int
	hold    []time.Time
	sentEnd []time.Time
	cursor  int
	seq     uint32
	sending bool

	sentPackets, sentData, sentRepair, redirects int64
}

type receiver struct {
	left    bool // the tracker forgot it
	info    ReceiverInfo
	need    []byte
	partial map[uint32]int
	report  time.Time
}

// active reports whether the receiver takes data from the group.
func (r *receiver) active() bool { return r.info.State == RecvMulticast }

func (r *receiver) terminal() bool {
	return r.info.State == RecvDone || r.info.State == RecvFailed || r.info.State == RecvLost
}

func needs(bm []byte, i int) bool { return i/8 < len(bm) && bm[i/8]&(1<<(i%8)) != 0 }

// Join adds a receiver to the image's running or waiting session, or
// starts a new one.
func (m *Manager) Join(ctx context.Context, who Caller, req JoinRequest) (JoinResponse, error) {
	ref := req.Image
	minC, maxWait := req.MinClients, time.Duration(0)
	if req.MaxWait != "" {
		d, err := time.ParseDuration(req.MaxWait)
		if err != nil || d < 0 || d > 24*time.Hour {
			return JoinResponse{}, fmt.Errorf("%w: max_wait %q: want a duration up to 24h", ErrBadRequest, req.MaxWait)
		}
		maxWait = d
	}
	if !who.Admin {
		// A job's receiver restores its pinned image, with its bundle's
		// start rule, whatever it asks.
		if who.Image == "" {
			return JoinResponse{}, fmt.Errorf("%w: the job has no image", ErrForbidden)
		}
		if req.Image != "" && image.RefName(req.Image) != image.RefName(who.Image) {
			return JoinResponse{}, fmt.Errorf("%w: the job restores %s, not %s", ErrForbidden, who.Image, req.Image)
		}
		ref, minC, maxWait = who.Image, who.MinClients, who.MaxWait
	}
	if minC < 0 || minC > 10000 {
		return JoinResponse{}, fmt.Errorf("%w: min_clients %d", ErrBadRequest, minC)
	}
	if len(req.Name) > 128 || len(req.PeerURL) > 256 {
		return JoinResponse{}, fmt.Errorf("%w: name or peer_url too long", ErrBadRequest)
	}
	name, v, err := m.repo.Resolve(ref)
	if err != nil {
		return JoinResponse{}, fmt.Errorf("%w: %w", ErrNoImage, err)
	}
	ref = image.Ref(name, v)

	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	var s *session
	for _, c := range m.sessions {
		if c.ref == ref && (c.state == StateWaiting || c.state == StateRunning) && (s == nil || c.created.After(s.created)) {
			s = c
		}
	}
	if s == nil {
		mf, err := m.repo.Manifest(ref)
		if err != nil {
			return JoinResponse{}, fmt.Errorf("%w: %w", ErrNoImage, err)
		}
		s, err = m.newSession(ref, mf, minC, maxWait, now)
		if err != nil {
			return JoinResponse{}, err
		}
		m.sessions[s.id] = s
		m.log.InfoContext(ctx, "multicast session created", "session", s.id, "image", ref, "group", s.dst, "min_clients", s.min, "max_wait", s.maxWait)
	}
	if len(s.recv) >= 4096 {
		return JoinResponse{}, fmt.Errorf("%w: the session has 4096 receivers", ErrBusy)
	}
	var rb [8]byte
	_, _ = rand.Read(rb[:])
	r := &receiver{info: ReceiverInfo{ID: hex.EncodeToString(rb[:]), Name: req.Name, Addr: who.Addr, Job: who.Job, Device: who.MAC,
		State: RecvWaiting, Joined: now, LastSeen: now}, report: now}
	if req.PeersOnly {
		r.info.State = RecvPeers
	}
	if s.state == StateRunning && !req.PeersOnly {
		r.info.State = RecvMulticast
	}
	s.recv[r.info.ID] = r
	s.order = append(s.order, r.info.ID)
	if s.firstJ.IsZero() {
		s.firstJ = now
	}
	if m.tracker != nil && req.PeerURL != "" {
		m.tracker.Join(s.id, r.info.ID, req.PeerURL)
	}
	m.checkStart(ctx, s, now)
	m.log.InfoContext(ctx, "multicast receiver joined", "session", s.id, "receiver", r.info.ID, "name", req.Name, "addr", who.Addr,
		"job", who.Job, "receivers", len(s.recv), "state", s.state)
	resp := JoinResponse{Session: s.id, Receiver: r.info.ID, Image: s.ref, Group: s.group.String(), Port: m.cfg.Port,
		SymbolSize: SymbolSize, Rate: m.cfg.Rate, State: s.state, StartIn: m.startIn(s, now).Seconds(),
		ReportEvery: int(m.reportEvery(s) / time.Millisecond), Secret: hex.EncodeToString(s.secret), Chunks: s.chunks}
	return resp, nil
}

func (m *Manager) newSession(ref string, mf *image.Manifest, minC int, maxWait time.Duration, now time.Time) (*session, error) {
	var idb [8]byte
	if _, err := rand.Read(idb[:]); err != nil {
		return nil, err
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, err
	}
	s := &session{id: hex.EncodeToString(idb[:]), sid: binary.BigEndian.Uint64(idb[:]), ref: ref, m: mf, secret: secret,
		state: StateWaiting, min: minC, maxWait: cmp.Or(maxWait, m.cfg.DefaultMaxWait), created: now,
		recv: map[string]*receiver{}, index: map[image.Hash]uint32{}}
	if minC <= 1 {
		s.maxWait = 0
	}
	for _, h := range mf.ChunkHashes() {
		s.index[h] = uint32(len(s.chunks))
		s.chunks = append(s.chunks, h)
	}
	n := len(s.chunks)
	s.k, s.p, s.nextSym = make([]int, n), make([]int, n), make([]int, n)
	s.hold, s.sentEnd = make([]time.Time, n), make([]time.Time, n)
	g, err := m.allocGroup(idb)
	if err != nil {
		return nil, err
	}
	s.group = g
	s.dst = &net.UDPAddr{IP: g.AsSlice(), Port: m.cfg.Port}
	return s, nil
}

// allocGroup picks a group in the range from the session id, avoiding the
// groups of live sessions and addresses whose last byte is 0 or 255.
func (m *Manager) allocGroup(seed [8]byte) (netip.Addr, error) {
	used := map[netip.Addr]bool{}
	for _, s := range m.sessions {
		if s.state == StateWaiting || s.state == StateRunning {
			used[s.group] = true
		}
	}
	base := m.cfg.Range.Masked().Addr().As4()
	hostBits := 32 - m.cfg.Range.Bits()
	size := uint32(1) << hostBits
	start := binary.BigEndian.Uint32(seed[:4]) % size
	b := binary.BigEndian.Uint32(base[:])
	for i := range size {
		off := (start + i) % size
		var a [4]byte
		binary.BigEndian.PutUint32(a[:], b+off)
		addr := netip.AddrFrom4(a)
		if a[3] == 0 || a[3] == 255 || used[addr] || (a[0] == 239 && a[1] == 255 && a[2] == 255 && a[3] == 250) {
			continue
		}
		return addr, nil
	}
	return netip.Addr{}, fmt.Errorf("%w: every group of %s is in use", ErrBusy, m.cfg.Range)
}

func (m *Manager) startIn(s *session, now time.Time) time.Duration {
	if s.state != StateWaiting || s.maxWait == 0 {
		return 0
	}
	return max(0, s.firstJ.Add(s.maxWait).Sub(now))
}

// checkStart starts a waiting session when its rule is met.
func (m *Manager) checkStart(ctx context.Context, s *session, now time.Time) {
	if s.state != StateWaiting {
		return
	}
	// Every receiver that joined counts (one that found its disk already
	// holding the image is done at once); a session nobody is left in
	// does not start.
	n, live := len(s.recv), 0
	for _, r := range s.recv {
		if !r.terminal() {
			live++
		}
	}
	if live == 0 {
		return
	}
	if n < max(1, s.min) && now.Before(s.firstJ.Add(s.maxWait)) {
		return
	}
	s.state, s.started = StateRunning, now
	for _, r := range s.recv {
		if r.info.State == RecvWaiting {
			r.info.State = RecvMulticast
		}
	}
	m.log.InfoContext(ctx, "multicast session started", "session", s.id, "image", s.ref, "receivers", n)
	m.event(ctx, 0, "", fmt.Sprintf("multicast session %s of %s started with %d receivers (group %s)", s.id, s.ref, n, s.dst))
	m.kick()
}

func (m *Manager) event(ctx context.Context, job int64, mac, msg string) {
	if m.Event != nil {
		m.Event(ctx, job, mac, msg)
	}
}

func (m *Manager) kick() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// Report records a receiver's report and answers with the session's state.
func (m *Manager) Report(ctx context.Context, who Caller, sid string, req ReportRequest) (ReportResponse, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.sessions[sid]
	if !ok {
		return ReportResponse{}, ErrNotFound
	}
	r, ok := s.recv[req.Receiver]
	if !ok || !who.Admin && r.info.Job != who.Job {
		return ReportResponse{}, fmt.Errorf("%w: no receiver %q in session %s", ErrNotFound, req.Receiver, sid)
	}
	if len(req.Need) > (len(s.chunks)+7)/8 || len(req.Partial) > 4096 || len(req.Have) > len(s.chunks) || len(req.Reason) > 500 {
		return ReportResponse{}, fmt.Errorf("%w: report too large for the session", ErrBadRequest)
	}
	now := m.now()
	prev := r.info.State
	r.info.LastSeen, r.report = now, now
	if r.info.State == RecvLost {
		r.info.State = RecvMulticast // it came back
	}
	switch req.State {
	case RecvMulticast, RecvUnicast, RecvPeers, RecvDone, RecvFailed:
		if s.state == StateWaiting && req.State == RecvMulticast {
			r.info.State = RecvWaiting
		} else {
			r.info.State = req.State
		}
	case RecvWaiting, "":
	default:
		return ReportResponse{}, fmt.Errorf("%w: state %q", ErrBadRequest, req.State)
	}
	r.info.Reason = req.Reason
	r.need = append(r.need[:0], req.Need...)
	clear(r.partial)
	for c, n := range req.Partial {
		if int(c) < len(s.chunks) && n > 0 {
			if r.partial == nil {
				r.partial = map[uint32]int{}
			}
			r.partial[c] = n
		}
	}
	r.info.ChunksDone, r.info.ChunksTotal = req.ChunksDone, req.ChunksTotal
	r.info.BytesDone, r.info.BytesTotal = req.BytesDone, req.BytesTotal
	r.info.Bytes, r.info.Loss, r.info.Rate, r.info.Dropped = req.Bytes, req.Loss, req.Rate, req.Dropped
	if m.tracker != nil && len(req.Have) > 0 {
		var have []uint32
		for _, c := range req.Have {
			if int(c) < len(s.chunks) {
				have = append(have, c)
			}
		}
		m.tracker.Have(s.id, r.info.ID, have)
	}
	if r.info.State != prev {
		m.log.InfoContext(ctx, "multicast receiver state", "session", s.id, "receiver", r.info.ID, "name", r.info.Name,
			"from", prev, "to", r.info.State, "reason", req.Reason)
		switch r.info.State {
		case RecvUnicast, RecvFailed:
			m.event(ctx, r.info.Job, r.info.Device, fmt.Sprintf("multicast session %s: receiver %s %s: %s", s.id, cmp.Or(r.info.Name, r.info.Addr), r.info.State, req.Reason))
		}
	}
	// A done receiver stays a peer while it keeps reporting (seeding),
	// until it says it leaves; failed and lost ones go at once.
	if r.terminal() && m.tracker != nil && !r.left && (r.info.State != RecvDone || req.Left) {
		r.left = true
		m.tracker.Leave(s.id, r.info.ID)
	}
	m.checkStart(ctx, s, now)
	m.kick()
	seed := false
	for _, o := range s.recv {
		seed = seed || o != r && !o.terminal()
	}
	return ReportResponse{State: s.state, StartIn: m.startIn(s, now).Seconds(), SentPackets: s.sentPackets,
		MedianLoss: medianLoss(s), Rate: m.rate.Load(), Seed: seed && s.state == StateRunning,
		ReportEvery: int(m.reportEvery(s) / time.Millisecond)}, nil
}

// Locate answers where a receiver fetches chunks over HTTP.
func (m *Manager) Locate(ctx context.Context, who Caller, sid string, req LocateRequest) (LocateResponse, error) {
	m.mu.Lock()
	s, ok := m.sessions[sid]
	var r *receiver
	if ok {
		r = s.recv[req.Receiver]
	}
	if !ok || r == nil || !who.Admin && r.info.Job != who.Job {
		m.mu.Unlock()
		return LocateResponse{}, ErrNotFound
	}
	if len(req.Chunks) > 1024 || len(req.Bad) > 64 || len(req.Corrupt) > 64 {
		m.mu.Unlock()
		return LocateResponse{}, fmt.Errorf("%w: too many chunks", ErrBadRequest)
	}
	chunks, secret := s.chunks, s.secret
	m.mu.Unlock()
	out := LocateResponse{Sources: map[uint32]Source{}}
	if m.tracker == nil {
		return out, nil
	}
	for _, b := range req.Bad {
		m.tracker.Bad(sid, req.Receiver, b)
	}
	for _, b := range req.Corrupt {
		m.tracker.Corrupt(sid, req.Receiver, b)
	}
	src := m.tracker.Locate(sid, req.Receiver, req.Chunks, secret, func(i uint32) (image.Hash, bool) {
		if int(i) >= len(chunks) {
			return image.Hash{}, false
		}
		return chunks[i], true
	})
	if src != nil {
		out.Sources = src
	}
	m.mu.Lock()
	s.redirects += int64(len(out.Sources))
	m.mu.Unlock()
	return out, nil
}

// List returns every session, newest first.
func (m *Manager) List() []SessionInfo {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]SessionInfo, 0, len(m.sessions))
	for _, s := range m.sessions {
		out = append(out, m.info(s))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.After(out[j].Created) })
	return out
}

// Get returns one session.
func (m *Manager) Get(id string) (SessionInfo, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.sessions[id]
	if !ok {
		return SessionInfo{}, false
	}
	return m.info(s), true
}

// Cancel stops a session: nothing more is sent, its receivers finish over
// unicast.
func (m *Manager) Cancel(ctx context.Context, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.sessions[id]
	if !ok {
		return fmt.Errorf("session %s: %w", id, ErrNotFound)
	}
	if s.state == StateDone || s.state == StateCancelled {
		return fmt.Errorf("session %s is %s: %w", id, s.state, ErrEnded)
	}
	s.state, s.ended = StateCancelled, m.now()
	m.log.InfoContext(ctx, "multicast session cancelled", "session", s.id, "image", s.ref)
	m.event(ctx, 0, "", fmt.Sprintf("multicast session %s of %s cancelled; its receivers finish over unicast", s.id, s.ref))
	return nil
}

func (m *Manager) info(s *session) SessionInfo {
	si := SessionInfo{ID: s.id, Image: s.ref, State: s.state, Group: s.dst.String(), Interface: m.cfg.Interface,
		MinClients: s.min, MaxWait: s.maxWait.String(), Created: s.created, Started: s.started, Ended: s.ended,
		Rate: m.cfg.Rate, CurrentRate: m.rate.Load(), Chunks: len(s.chunks), ImageBytes: s.imgBytes, SentPackets: s.sentPackets, SentData: s.sentData,
		SentRepair: s.sentRepair, PeerRedirects: s.redirects}
	for _, id := range s.order {
		r := s.recv[id]
		si.Receivers = append(si.Receivers, r.info)
		si.Served += r.info.Bytes.Unicast
	}
	return si
}

// housekeep runs the clock: starts sessions, marks silent receivers lost,
// ends sessions nobody uses and forgets old ones.
func (m *Manager) housekeep(ctx context.Context) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	if now.Sub(m.adapted) >= time.Second {
		m.adapted = now
		m.adapt(ctx)
	}
	for id, s := range m.sessions {
		for _, r := range s.recv {
			if r.info.State == RecvDone && !r.left && now.Sub(r.report) > m.cfg.ReceiverTimeout && m.tracker != nil {
				r.left = true // a seeding receiver went away
				m.tracker.Leave(s.id, r.info.ID)
			}
			if !r.terminal() && now.Sub(r.report) > m.cfg.ReceiverTimeout {
				m.log.WarnContext(ctx, "multicast receiver lost", "session", s.id, "receiver", r.info.ID, "name", r.info.Name, "silent", now.Sub(r.report))
				r.info.State, r.info.Reason = RecvLost, fmt.Sprintf("not heard from for %s", now.Sub(r.report).Round(time.Second))
				if m.tracker != nil && !r.left {
					r.left = true
					m.tracker.Leave(s.id, r.info.ID)
				}
			}
		}
		m.checkStart(ctx, s, now)
		if s.state == StateRunning || s.state == StateWaiting {
			live := false
			for _, r := range s.recv {
				if !r.terminal() {
					live = true
					break
				}
			}
			if !live && now.Sub(s.firstJ) > 5*time.Second {
				s.state, s.ended = StateDone, now
				done := 0
				for _, r := range s.recv {
					if r.info.State == RecvDone {
						done++
					}
				}
				m.log.InfoContext(ctx, "multicast session done", "session", s.id, "image", s.ref, "receivers", len(s.recv), "done", done,
					"sent_packets", s.sentPackets, "sent_bytes", s.sentData+s.sentRepair)
				m.event(ctx, 0, "", fmt.Sprintf("multicast session %s of %s done: %d of %d receivers finished, %d bytes sent", s.id, s.ref, done, len(s.recv), s.sentData+s.sentRepair))
			}
		}
		if (s.state == StateDone || s.state == StateCancelled) && now.Sub(s.ended) > m.cfg.Keep {
			delete(m.sessions, id)
			if m.tracker != nil {
				m.tracker.Forget(id)
			}
		}
	}
}

// work is one send: count symbols of a chunk from symbol first.
type work struct {
	s      *session
	chunk  int
	count  int     // symbols to send; -1: K plus parity f
	f      float64 // parity fraction when count is -1
	repair bool
}

// next picks what to send: the next chunk, in a rotating order, that an
// active receiver needs and that is not held back. A chunk sent before is
// held until the receivers' reports after that send are in; it is then
// sent again with as many new symbols as the receiver missing most lacks
// (one repair pass fixes every receiver's losses at once).
func (m *Manager) next() (work, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	var ss []*session
	for _, s := range m.sessions {
		if s.state == StateRunning && !s.sending {
			ss = append(ss, s)
		}
	}
	// Sessions take turns: the one that sent least goes first.
	slices.SortFunc(ss, func(a, b *session) int { return cmp.Compare(a.sentPackets, b.sentPackets) })
	for _, s := range ss {
		if w, ok := m.pick(s, now); ok {
			s.sending = true
			return w, true
		}
	}
	return work{}, false
}

func (m *Manager) pick(s *session, now time.Time) (work, bool) {
	var act []*receiver
	var losses []float64
	for _, id := range s.order {
		// A receiver silent for a while (killed, hung, cut off) does not
		// drive sends: its last report is no longer the truth.
		if r := s.recv[id]; r.active() && now.Sub(r.report) < silentAfter {
			act = append(act, r)
			losses = append(losses, r.info.Loss)
		}
	}
	if len(act) == 0 {
		return work{}, false
	}
	// Repairs follow the typical receiver: one losing far more than the
	// others (a slow link or disk, on its way to HTTP) still takes what
	// goes by but does not size the repairs.
	slices.Sort(losses)
	limit := max(maxLoss, 2*losses[(len(losses)-1)/2]+0.05)
	typical := act[:0:0]
	for _, r := range act {
		if r.info.Loss <= limit {
			typical = append(typical, r)
		}
	}
	if len(typical) > 0 {
		act = typical
	}
	n := len(s.chunks)
	every := m.reportEvery(s)
	settle := 3 * every
	for i := range n {
		c := (s.cursor + i) % n
		if now.Before(s.hold[c]) {
			continue
		}
		needed, stale := false, false
		deficit := 0
		for _, r := range act {
			if !needs(r.need, c) {
				continue
			}
			needed = true
			if !s.sentEnd[c].IsZero() && r.report.Before(s.sentEnd[c].Add(every/2)) && now.Sub(s.sentEnd[c]) < 4*settle {
				stale = true // its report does not tell yet what it got of the last send
				break
			}
			have := r.partial[uint32(c)]
			if s.k[c] == 0 {
				deficit = math.MaxInt
			} else {
				deficit = max(deficit, s.k[c]-have)
			}
		}
		if !needed || stale || deficit <= 0 {
			continue
		}
		s.cursor = (c + 1) % n
		f := redundancy(losses)
		if s.k[c] == 0 || deficit >= s.k[c] {
			// A first pass (or a receiver that has nothing of it): all
			// K symbols and parity for the typical loss.
			k := s.k[c]
			if k == 0 {
				return work{s: s, chunk: c, count: -1, f: f}, true // size unknown until loaded
			}
			return work{s: s, chunk: c, count: k + int(math.Ceil(float64(k)*f))}, true
		}
		return work{s: s, chunk: c, count: deficit + int(math.Ceil(float64(deficit)*f)) + 1, repair: true}, true
	}
	return work{}, false
}

// silentAfter: a receiver not heard from this long stops driving sends
// (it is lost after Config.ReceiverTimeout).
const silentAfter = 2 * time.Second

// redundancy is the parity fraction sent with a chunk: the median loss
// the receivers report (the typical receiver, never the worst) plus a
// margin, between 1 % and 30 %.
func redundancy(losses []float64) float64 {
	if len(losses) == 0 {
		return 0.05
	}
	l := slices.Clone(losses)
	slices.Sort(l)
	med := l[(len(l)-1)/2]
	return min(0.30, max(0.01, med*1.5+0.01))
}

// Run sends until ctx ends.
func (m *Manager) Run(ctx context.Context) error {
	c, err := openConn(m.cfg.Interface, m.cfg.TTL, m.cfg.Loopback)
	if err != nil {
		return err
	}
	defer c.close()
	m.log.InfoContext(ctx, "multicast ready", "interface", m.cfg.Interface, "source", c.src, "rate", m.cfg.Rate,
		"port", m.cfg.Port, "range", m.cfg.Range, "ttl", m.cfg.TTL)
	go func() {
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				m.housekeep(ctx)
				m.kick()
			}
		}
	}()
	pace := newPacer(m.cfg.Rate, 16*(SymbolSize+HeaderSize+wireOverhead))
	buf := make([]byte, 0, image.MaxChunkSize/8)
	for {
		w, ok := m.next()
		if !ok {
			select {
			case <-ctx.Done():
				return nil
			case <-m.wake:
			}
			continue
		}
		var serr error
		buf, serr = m.send(ctx, c, pace, w, buf)
		m.mu.Lock()
		w.s.sending = false
		now := m.now()
		w.s.sentEnd[w.chunk] = now
		w.s.hold[w.chunk] = now.Add(3 * m.reportEvery(w.s))
		if serr != nil && ctx.Err() == nil {
			w.s.hold[w.chunk] = now.Add(5 * time.Second)
			m.log.ErrorContext(ctx, "multicast send failed", "session", w.s.id, "chunk", w.chunk, "err", serr)
		}
		m.mu.Unlock()
		if ctx.Err() != nil {
			return nil
		}
	}
}

// send loads, encodes and sends one piece of work.
func (m *Manager) send(ctx context.Context, c *conn, pace *pacer, w work, buf []byte) ([]byte, error) {
	s := w.s
	h := s.chunks[w.chunk]
	e := m.cache.get(s.id, w.chunk)
	if e == nil {
		data, err := m.repo.Get(ctx, h, buf[:0])
		if err != nil {
			return buf, fmt.Errorf("read chunk %s: %w", h, err)
		}
		buf = data
		if e, err = m.codecs.encode(data); err != nil {
			return buf, err
		}
		m.cache.put(s.id, w.chunk, e)
	}
	m.mu.Lock()
	if s.k[w.chunk] == 0 {
		s.k[w.chunk], s.p[w.chunk] = e.k, e.p
		s.imgBytes += int64(e.length)
	}
	count := w.count
	if count < 0 {
		count = e.k + int(math.Ceil(float64(e.k)*w.f))
	}
	count = min(count, e.k+e.p)
	first := s.nextSym[w.chunk]
	s.nextSym[w.chunk] = (first + count) % (e.k + e.p)
	m.mu.Unlock()

	const batch = 16
	pkts := make([][]byte, 0, batch)
	arena := make([]byte, 0, batch*(HeaderSize+SymbolSize))
	for sent := 0; sent < count; {
		pkts, arena = pkts[:0], arena[:0]
		m.mu.Lock()
		for ; sent < count && len(pkts) < batch; sent++ {
			sym := (first + sent) % (e.k + e.p)
			s.seq++
			p := Packet{Repair: w.repair, Session: s.sid, Seq: s.seq, Chunk: uint32(w.chunk), Symbol: uint16(sym), K: e.k, P: e.p,
				Length: e.length, Payload: e.shards[sym]}
			start := len(arena)
			arena = AppendPacket(arena, &p)
			pkts = append(pkts, arena[start:])
		}
		m.mu.Unlock()
		pace.setRate(m.rate.Load())
		if err := pace.wait(ctx, len(pkts)*(HeaderSize+SymbolSize+wireOverhead)); err != nil {
			return buf, err
		}
		if err := c.send(pkts, s.dst); err != nil {
			return buf, err
		}
		m.mu.Lock()
		s.sentPackets += int64(len(pkts))
		if w.repair {
			s.sentRepair += int64(len(pkts) * SymbolSize)
		} else {
			s.sentData += int64(len(pkts) * SymbolSize)
		}
		m.mu.Unlock()
	}
	return buf, nil
}

// encCache keeps the last few encoded chunks: a repair pass reuses the
// parity computed for the first one.
type encCache struct {
	mu sync.Mutex
	es []encEntry
}

type encEntry struct {
	session string
	chunk   int
	e       *encoded
}

const encCacheSize = 8

func (c *encCache) get(session string, chunk int) *encoded {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, x := range c.es {
		if x.session == session && x.chunk == chunk {
			c.es = append(append([]encEntry{x}, c.es[:i]...), c.es[i+1:]...)
			return x.e
		}
	}
	return nil
}

func (c *encCache) put(session string, chunk int, e *encoded) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.es = append([]encEntry{{session, chunk, e}}, c.es...)
	if len(c.es) > encCacheSize {
		c.es = c.es[:encCacheSize]
	}
}

// medianLoss is the loss of the session's typical active receiver.
func medianLoss(s *session) float64 {
	var l []float64
	for _, r := range s.recv {
		if r.active() {
			l = append(l, r.info.Loss)
		}
	}
	if len(l) == 0 {
		return 0
	}
	slices.Sort(l)
	return l[(len(l)-1)/2] // the lower median: with two receivers, the better one
}

// adapt follows the typical receiver, never the worst: when the median
// receiver of the running sessions loses more than 5 % of the packets the
// rate goes down by a quarter (the link or the receivers cannot take it),
// when it loses under 1 % it climbs back by a twentieth of the cap, up to
// the cap. A minority of slow or lossy receivers changes nothing: they
// finish over HTTP. m.mu held.
func (m *Manager) adapt(ctx context.Context) {
	var l []float64
	for _, s := range m.sessions {
		if s.state != StateRunning {
			continue
		}
		for _, r := range s.recv {
			if r.active() {
				l = append(l, r.info.Loss)
			}
		}
	}
	if len(l) == 0 {
		return
	}
	slices.Sort(l)
	med := l[(len(l)-1)/2]
	cur := m.rate.Load()
	next := cur
	switch {
	case med > 0.05:
		next = max(m.cfg.Rate/50, cur*3/4)
	case med < 0.01:
		next = min(m.cfg.Rate, cur+m.cfg.Rate/20)
	}
	if next != cur {
		m.rate.Store(next)
		m.log.DebugContext(ctx, "multicast rate", "median_loss", med, "from", cur, "to", next)
	}
}

// reportEvery is how often a session's receivers report: Config.ReportEvery
// for up to 8 of them, then 25 ms more per receiver (at most 2 s), so that
// the reports of a large room stay around 40 a second and cost the link
// little.
func (m *Manager) reportEvery(s *session) time.Duration {
	n := 0
	for _, r := range s.recv {
		if !r.terminal() {
			n++
		}
	}
	return min(max(m.cfg.ReportEvery, time.Duration(n)*25*time.Millisecond), max(m.cfg.ReportEvery, 2*time.Second))
}
