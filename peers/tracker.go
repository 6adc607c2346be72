package peers

import (
	"log/slog"
	"math/rand/v2"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/preboot/preboot/image"
	"github.com/preboot/preboot/mcast"
)

// Tracker defaults, used when the TrackerConfig field is zero.
const (
	// DefaultMaxUploads bounds the chunks a peer is assigned at once (the
	// tracker's side) and the uploads a Server runs at once (the peer's).
	DefaultMaxUploads = 4
	// DefaultLease is how long an assignment counts against its peer when
	// the asker never reports the chunk.
	DefaultLease = 30 * time.Second
)

const (
	// MaxLocateChunks bounds the chunks one Locate answers; the rest of a
	// longer request is ignored (fetched from the server).
	MaxLocateChunks = 1024
	// MaxLocateBad bounds the peers one HandleLocate takes as bad.
	MaxLocateBad = 16
	// maxChunkIndex bounds the chunk indices the tracker records (the
	// image format's own bound on chunks), so that a hostile report
	// cannot make it allocate more than 2 MiB per receiver.
	maxChunkIndex = 1 << 24
	// badReporters is how many distinct receivers must report a peer as
	// failing before it is dropped for everyone.
	badReporters = 2
)

// TrackerConfig tunes a Tracker.
type TrackerConfig struct {
	// MaxUploads bounds the outstanding assignments per peer
	// (DefaultMaxUploads when 0).
	MaxUploads int
	// Lease is how long an assignment counts when the asker does not
	// report the chunk (DefaultLease when 0).
	Lease time.Duration
	// TicketLifetime is the validity of the tickets Locate signs
	// (TicketLifetime when 0).
	TicketLifetime time.Duration
	// Now is the clock (time.Now when nil).
	Now    func() time.Time
	Logger *slog.Logger
}

// Tracker knows, per session, which receiver holds which chunk (by index
// into the session's chunk table) and points receivers at peers. It is
// in memory and safe for concurrent use; the zero value is not usable,
// call NewTracker.
type Tracker struct {
	maxUploads int
	lease      time.Duration
	ticketLife time.Duration
	now        func() time.Time
	log        *slog.Logger

	mu       sync.Mutex
	sessions map[string]*swarm
}

// TrackerStats are a session's tracker counters.
type TrackerStats struct {
	// Redirects counts chunks Locate pointed at a peer.
	Redirects int64 `json:"redirects"`
	// Peers is the receivers that serve chunks now (joined with a peer
	// URL, not left, not dropped).
	Peers int `json:"peers"`
	// Dropped counts peers dropped for failing or serving wrong bytes.
	Dropped int64 `json:"dropped"`
	// BadReports counts the bad-peer reports taken into account.
	BadReports int64 `json:"bad_reports"`
	// Outstanding is the assignments not yet released.
	Outstanding int `json:"outstanding"`
}

// swarm is one session's receivers.
type swarm struct {
	members map[string]*member
	// gone: receivers that left; they are never pointed at or served again.
	gone map[string]struct{}
	// banned: peer URLs dropped for serving wrong bytes or failing.
	banned map[string]struct{}
	leases map[leaseKey]lease
	// fetching: chunks no peer held when a receiver asked, so that it
	// went to the server; others asking meanwhile are told to wait.
	fetching map[uint32]fetchMark
	stats    TrackerStats
}

type fetchMark struct {
	asker string
	until time.Time
}

// fetchWait is how long others wait for a chunk a receiver gets from the
// server before they get it from the server too.
const fetchWait = 8 * time.Second

type leaseKey struct {
	asker string
	idx   uint32
}

type lease struct {
	peer  *member
	until time.Time
}

// member is one receiver: an asker, and a peer when url is set.
type member struct {
	id  string
	url string
	// have is a bitmap of the chunk indices it reported (only kept while
	// it serves).
	have []uint64
	// out is the outstanding assignments pointing at it.
	out int
	// excludedBy holds the receivers that reported it: they are not
	// pointed at it again, and badReporters of them drop it.
	excludedBy map[string]struct{}
	// pointed holds the peer URLs this receiver was pointed at: it may
	// report only those.
	pointed map[string]struct{}
}

func (m *member) has(idx uint32) bool {
	w := int(idx / 64)
	return w < len(m.have) && m.have[w]&(1<<(idx%64)) != 0
}

func (m *member) add(idx uint32) {
	w := int(idx / 64)
	if w >= len(m.have) {
		m.have = append(m.have, make([]uint64, w+1-len(m.have))...)
	}
	m.have[w] |= 1 << (idx % 64)
}

// NewTracker returns an empty tracker.
func NewTracker(cfg TrackerConfig) *Tracker {
	t := &Tracker{
		maxUploads: cfg.MaxUploads,
		lease:      cfg.Lease,
		ticketLife: cfg.TicketLifetime,
		now:        cfg.Now,
		log:        cfg.Logger,
		sessions:   make(map[string]*swarm),
	}
	if t.maxUploads <= 0 {
		t.maxUploads = DefaultMaxUploads
	}
	if t.lease <= 0 {
		t.lease = DefaultLease
	}
	if t.ticketLife <= 0 {
		t.ticketLife = TicketLifetime
	}
	if t.now == nil {
		t.now = time.Now
	}
	if t.log == nil {
		t.log = slog.New(slog.DiscardHandler)
	}
	return t
}

// swarm returns the session's state, creating it when create is set.
// t.mu must be held.
func (t *Tracker) swarm(session string, create bool) *swarm {
	s := t.sessions[session]
	if s == nil && create {
		s = &swarm{
			members: make(map[string]*member),
			gone:    make(map[string]struct{}),
			banned:  make(map[string]struct{}),
			leases:  make(map[leaseKey]lease),

			fetching: make(map[uint32]fetchMark),
		}
		t.sessions[session] = s
	}
	return s
}

// member returns the receiver, creating it unless it left. t.mu held.
func (s *swarm) member(id string) *member {
	if m := s.members[id]; m != nil {
		return m
	}
	if _, gone := s.gone[id]; gone || id == "" {
		return nil
	}
	m := &member{id: id, excludedBy: make(map[string]struct{}), pointed: make(map[string]struct{})}
	s.members[id] = m
	return m
}

// validPeerURL returns the canonical form of an http(s)://host:port peer
// URL, or "" when u is not one.
func validPeerURL(u string) string {
	p, err := url.Parse(u)
	if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" || p.User != nil ||
		p.RawQuery != "" || p.Fragment != "" || strings.Trim(p.Path, "/") != "" {
		return ""
	}
	return p.Scheme + "://" + p.Host
}

// Join records a receiver of session and, when peerURL is set
// ("http://IP:PORT"), that it serves chunks there. A receiver that left
// does not come back; a URL dropped for bad service is not used again.
// Joining again updates the URL.
func (t *Tracker) Join(session, receiver, peerURL string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.swarm(session, true)
	m := s.member(receiver)
	if m == nil {
		return
	}
	u := validPeerURL(peerURL)
	if peerURL != "" && u == "" {
		t.log.Warn("peer tracker: ignoring a peer URL", "session", session, "receiver", receiver, "url", peerURL)
	}
	if _, banned := s.banned[u]; banned {
		u = ""
	}
	if u != m.url {
		s.releasePeer(m)
		if u == "" {
			m.have = nil
		}
	}
	m.url = u
}

// Have records chunk indices receiver verified and wrote: it may serve
// them, and the receiver's assignments for them are released.
func (t *Tracker) Have(session, receiver string, idx []uint32) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.swarm(session, false)
	if s == nil {
		return
	}
	m := s.members[receiver]
	if m == nil {
		return
	}
	for _, i := range idx {
		delete(s.fetching, i)
		s.release(leaseKey{receiver, i})
		if m.url != "" && i < maxChunkIndex {
			m.add(i)
		}
	}
}

// Leave forgets a receiver that finished, failed, left or was lost: it is
// never pointed at again, and its assignments are released.
func (t *Tracker) Leave(session, receiver string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.swarm(session, false)
	if s == nil {
		return
	}
	s.gone[receiver] = struct{}{}
	m := s.members[receiver]
	if m == nil {
		return
	}
	s.releasePeer(m)
	s.releaseAsker(receiver)
	delete(s.members, receiver)
	for i, f := range s.fetching {
		if f.asker == receiver {
			delete(s.fetching, i)
		}
	}
}

// Bad takes a report from receiver reporter that the peer at peerURL
// failed (refused, timed out, served wrong bytes): the reporter is not
// pointed at it again, and once badReporters (2) distinct receivers
// reported it, nobody is. A report about a peer the tracker never pointed
// the reporter at is ignored. It returns whether the peer was dropped.
func (t *Tracker) Bad(session, reporter, peerURL string) bool {
	return t.report(session, reporter, peerURL, false)
}

// Corrupt takes a report that the peer at peerURL served bytes that do not
// hash as the chunk: it is dropped at once. Reports are ignored as for
// Bad. It returns whether the peer was dropped.
func (t *Tracker) Corrupt(session, reporter, peerURL string) bool {
	return t.report(session, reporter, peerURL, true)
}

func (t *Tracker) report(session, reporter, peerURL string, corrupt bool) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.swarm(session, false)
	if s == nil {
		return false
	}
	r := s.members[reporter]
	u := validPeerURL(peerURL)
	if r == nil || u == "" {
		return false
	}
	if _, ok := r.pointed[u]; !ok {
		return false
	}
	dropped := false
	for _, m := range s.members {
		if m.url != u || m == r {
			continue
		}
		s.stats.BadReports++
		m.excludedBy[reporter] = struct{}{}
		for k, l := range s.leases {
			if k.asker == reporter && l.peer == m {
				s.release(k)
			}
		}
		if corrupt || len(m.excludedBy) >= badReporters {
			t.log.Warn("peer tracker: dropping a peer", "session", session, "peer", m.id, "url", u,
				"reporter", reporter, "corrupt", corrupt, "reports", len(m.excludedBy))
			s.banned[u] = struct{}{}
			s.releasePeer(m)
			m.url = ""
			m.have = nil
			s.stats.Dropped++
			dropped = true
		}
	}
	return dropped
}

// release ends one assignment. t.mu held.
func (s *swarm) release(k leaseKey) {
	if l, ok := s.leases[k]; ok {
		l.peer.out--
		delete(s.leases, k)
	}
}

// releasePeer ends every assignment pointing at m. t.mu held.
func (s *swarm) releasePeer(m *member) {
	for k, l := range s.leases {
		if l.peer == m {
			delete(s.leases, k)
		}
	}
	m.out = 0
}

// releaseAsker ends every assignment asker holds. t.mu held.
func (s *swarm) releaseAsker(asker string) {
	for k := range s.leases {
		if k.asker == asker {
			s.release(k)
		}
	}
}

// expire ends the assignments whose lease ran out. t.mu held.
func (s *swarm) expire(now time.Time) {
	for k, l := range s.leases {
		if !now.Before(l.until) {
			s.release(k)
		}
	}
}

// Locate picks, for each chunk index the receiver asks for, a peer that
// holds it: never the asker, never a peer the asker reported, one with
// fewer than MaxUploads outstanding assignments, the least assigned first
// (ties broken at random). Each pick is an assignment released when the
// asker reports the chunk in Have, reports the peer, leaves, or after the
// lease. hashes maps an index to the chunk's hash (false: not in the
// table, skipped); the ticket of each source is signed with secret (none
// without one). Chunks left out of the answer are fetched from the server.
// At most MaxLocateChunks are answered.
func (t *Tracker) Locate(session, receiver string, chunks []uint32, secret []byte,
	hashes func(uint32) (image.Hash, bool)) map[uint32]mcast.Source {
	out := make(map[uint32]mcast.Source)
	if len(secret) == 0 || len(chunks) == 0 {
		return out
	}
	chunks = chunks[:min(len(chunks), MaxLocateChunks)]
	type pick struct {
		idx  uint32
		h    image.Hash
		url  string
		wait bool
	}
	var picks []pick
	now := t.now()

	t.mu.Lock()
	s := t.swarm(session, false)
	if s == nil {
		t.mu.Unlock()
		return out
	}
	asker := s.member(receiver)
	if asker == nil {
		t.mu.Unlock()
		return out
	}
	s.expire(now)
	var cands []*member
	for _, m := range s.members {
		if _, ex := m.excludedBy[receiver]; m != asker && m.url != "" && len(m.have) > 0 && !ex {
			cands = append(cands, m)
		}
	}
	seen := make(map[uint32]struct{}, len(chunks))
	for _, idx := range chunks {
		if _, dup := seen[idx]; dup {
			continue
		}
		seen[idx] = struct{}{}
		h, ok := hashes(idx)
		if !ok {
			continue
		}
		k := leaseKey{receiver, idx}
		s.release(k) // asking again replaces an earlier assignment
		var best *member
		ties := 0
		for _, m := range cands {
			if m.out >= t.maxUploads || !m.has(idx) {
				continue
			}
			switch {
			case best == nil || m.out < best.out:
				best, ties = m, 1
			case m.out == best.out:
				ties++
				if rand.IntN(ties) == 0 {
					best = m
				}
			}
		}
		if best == nil {
			// Peers hold it but are all busy, or nobody holds it yet but
			// another receiver is getting it from the server: wait (fetch
			// other chunks first) rather than have the server send it
			// again. The asker bounds its wait and then goes to the server.
			if f, ok := s.fetching[idx]; heldBy(cands, idx) || ok && f.asker != receiver && now.Before(f.until) {
				picks = append(picks, pick{idx: idx, wait: true})
				continue
			}
			s.fetching[idx] = fetchMark{asker: receiver, until: now.Add(fetchWait)}
			continue
		}
		best.out++
		s.leases[k] = lease{peer: best, until: now.Add(t.lease)}
		asker.pointed[best.url] = struct{}{}
		s.stats.Redirects++
		picks = append(picks, pick{idx: idx, h: h, url: best.url})
	}
	t.mu.Unlock()

	exp := now.Add(t.ticketLife)
	for _, p := range picks {
		if p.wait {
			out[p.idx] = mcast.Source{Wait: true}
			continue
		}
		out[p.idx] = mcast.Source{URL: p.url, Ticket: Ticket(secret, session, p.h, exp)}
	}
	return out
}

// HandleLocate answers a receiver's locate request once the caller has
// authenticated it as req.Receiver of session: it takes req.Bad as Bad
// reports (at most MaxLocateBad), then locates req.Chunks.
func (t *Tracker) HandleLocate(session string, req *mcast.LocateRequest, secret []byte,
	hashes func(uint32) (image.Hash, bool)) *mcast.LocateResponse {
	seen := make(map[string]struct{})
	for _, u := range req.Bad {
		if len(seen) >= MaxLocateBad {
			break
		}
		if _, dup := seen[u]; dup {
			continue
		}
		seen[u] = struct{}{}
		t.Bad(session, req.Receiver, u)
	}
	for _, u := range req.Corrupt {
		if len(seen) >= 2*MaxLocateBad {
			break
		}
		if _, dup := seen[u]; dup {
			continue
		}
		seen[u] = struct{}{}
		t.Corrupt(session, req.Receiver, u)
	}
	return &mcast.LocateResponse{Sources: t.Locate(session, req.Receiver, req.Chunks, secret, hashes)}
}

// Forget drops everything about session.
func (t *Tracker) Forget(session string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.sessions, session)
}

// Stats returns the session's counters; false when the tracker knows
// nothing about it.
func (t *Tracker) Stats(session string) (TrackerStats, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.swarm(session, false)
	if s == nil {
		return TrackerStats{}, false
	}
	st := s.stats
	for _, m := range s.members {
		if m.url != "" {
			st.Peers++
		}
	}
	st.Outstanding = len(s.leases)
	return st, true
}

// heldBy reports whether any of ms holds chunk idx.
func heldBy(ms []*member, idx uint32) bool {
	for _, m := range ms {
		if m.has(idx) {
			return true
		}
	}
	return false
}
