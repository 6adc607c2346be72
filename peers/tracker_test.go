package peers

import (
	"errors"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/preboot/preboot/image"
	"github.com/preboot/preboot/mcast"
)

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func hashOf(i uint32) image.Hash { return image.Sum([]byte{byte(i), byte(i >> 8), 1}) }

func tableHashes(n uint32) func(uint32) (image.Hash, bool) {
	return func(i uint32) (image.Hash, bool) { return hashOf(i), i < n }
}

func span(from, to uint32) []uint32 {
	var out []uint32
	for i := from; i < to; i++ {
		out = append(out, i)
	}
	return out
}

// sourceLike is a located source whose ticket was checked.
type sourceLike struct{ u string }

// countURLs counts sources per peer URL.
func countURLs(t *testing.T, srcs map[uint32]sourceLike) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, v := range srcs {
		out[v.u]++
	}
	return out
}

func locate(t *testing.T, tr *Tracker, receiver string, chunks []uint32, n uint32) map[uint32]sourceLike {
	t.Helper()
	srcs := tr.Locate(testSession, receiver, chunks, testSecret, tableHashes(n))
	out := map[uint32]sourceLike{}
	for i, s := range srcs {
		if s.Wait {
			continue
		}
		if err := VerifyTicket(testSecret, testSession, hashOf(i), s.Ticket, time.Now()); err != nil {
			t.Fatalf("chunk %d: ticket from %s does not verify: %v", i, s.URL, err)
		}
		out[i] = sourceLike{s.URL}
	}
	return out
}

const (
	urlA = "http://10.0.0.1:7000"
	urlB = "http://10.0.0.2:7000"
	urlC = "http://10.0.0.3:7000"
	urlD = "http://10.0.0.4:7000"
)

func TestTrackerSpreadsLoadAndNeverReturnsAsker(t *testing.T) {
	tr := NewTracker(TrackerConfig{})
	for _, p := range []struct{ id, url string }{{"a", urlA}, {"b", urlB}, {"c", urlC}, {"d", urlD}} {
		tr.Join(testSession, p.id, p.url)
		tr.Have(testSession, p.id, span(0, 100))
	}
	// d asks: a, b and c hold everything; d itself must never come back.
	got := locate(t, tr, "d", span(0, 6), 100)
	if len(got) != 6 {
		t.Fatalf("6 chunks asked, %d located", len(got))
	}
	counts := countURLs(t, got)
	if counts[urlD] != 0 {
		t.Fatalf("the asker was returned as a source: %v", counts)
	}
	for _, u := range []string{urlA, urlB, urlC} {
		if counts[u] != 2 {
			t.Fatalf("load not spread evenly over a, b, c: %v", counts)
		}
	}
	// Up to MaxUploads (4) each: 6 more fill them, the next ones stay out.
	more := locate(t, tr, "d", span(6, 15), 100)
	if len(more) != 6 {
		t.Fatalf("with 3 peers of 4 slots and 6 taken, %d of 9 more located, want 6", len(more))
	}
	for u, n := range countURLs(t, more) {
		if n != 2 || u == urlD {
			t.Fatalf("second round: %v", countURLs(t, more))
		}
	}
	if st, _ := tr.Stats(testSession); st.Outstanding != 12 || st.Redirects != 12 || st.Peers != 4 {
		t.Fatalf("stats %+v", st)
	}
	// The asker reports three chunks: their slots free up.
	tr.Have(testSession, "d", []uint32{0, 1, 2})
	if again := locate(t, tr, "d", []uint32{20, 21, 22}, 100); len(again) != 3 {
		t.Fatalf("after Have released 3 slots, %d of 3 located", len(again))
	}
	// Another asker sees the slots taken by d's assignments: nobody is free
	// but d, which holds everything.
	other := locate(t, tr, "a", span(30, 40), 100)
	if c := countURLs(t, other); c[urlA] != 0 || c[urlD] != 4 || len(other) != 4 {
		t.Fatalf("a's sources: %v (want only d, 4 slots)", c)
	}
}

func TestTrackerOnlyHoldersAndKnownChunks(t *testing.T) {
	tr := NewTracker(TrackerConfig{})
	tr.Join(testSession, "a", urlA)
	tr.Join(testSession, "b", urlB)
	tr.Join(testSession, "c", "")               // asks, serves nothing
	tr.Join(testSession, "e", "ftp://10.0.0.9") // not a peer URL
	tr.Have(testSession, "a", []uint32{1, 3})
	tr.Have(testSession, "b", []uint32{3, 5})
	tr.Have(testSession, "c", []uint32{7})
	tr.Have(testSession, "e", []uint32{7})
	tr.Have(testSession, "zz", []uint32{9})                   // never joined
	tr.Have(testSession, "a", []uint32{maxChunkIndex + 5, 9}) // beyond the bound: ignored
	got := locate(t, tr, "c", []uint32{1, 3, 5, 7, 9, 2, 1}, 9)
	if got[1].u != urlA || got[5].u != urlB || (got[3].u != urlA && got[3].u != urlB) {
		t.Fatalf("sources %v", got)
	}
	if _, ok := got[7]; ok {
		t.Fatal("a receiver without a peer URL was returned")
	}
	if _, ok := got[9]; ok {
		t.Fatal("chunk 9 is outside the table (hashes says false) but was located")
	}
	if len(got) != 3 {
		t.Fatalf("sources %v", got)
	}
	if s := tr.Locate(testSession, "c", []uint32{1}, nil, tableHashes(9)); len(s) != 0 {
		t.Fatal("located without a secret to sign tickets")
	}
	if s := tr.Locate("other", "c", []uint32{1}, testSecret, tableHashes(9)); len(s) != 0 {
		t.Fatal("located in an unknown session")
	}
}

func TestTrackerLeaseExpires(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	tr := NewTracker(TrackerConfig{MaxUploads: 1, Lease: 30 * time.Second, Now: clk.Now})
	tr.Join(testSession, "a", urlA)
	tr.Have(testSession, "a", span(0, 10))
	srcs := tr.Locate(testSession, "b", []uint32{0, 1}, testSecret, tableHashes(10))
	if len(srcs) != 2 || srcs[0].URL != urlA || !srcs[1].Wait {
		t.Fatalf("MaxUploads 1: want chunk 0 from a and a wait for chunk 1: %v", srcs)
	}
	if s := tr.Locate(testSession, "c", []uint32{2}, testSecret, tableHashes(10)); s[2].URL != "" {
		t.Fatal("a's only slot is taken, yet c got it")
	}
	clk.Add(29 * time.Second)
	if s := tr.Locate(testSession, "c", []uint32{2}, testSecret, tableHashes(10)); s[2].URL != "" {
		t.Fatal("lease released early")
	}
	clk.Add(2 * time.Second)
	s := tr.Locate(testSession, "c", []uint32{2}, testSecret, tableHashes(10))
	if len(s) != 1 {
		t.Fatal("lease not released after it ran out")
	}
	// Tickets carry the tracker's clock.
	if err := VerifyTicket(testSecret, testSession, hashOf(2), s[2].Ticket, clk.Now().Add(TicketLifetime-time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := VerifyTicket(testSecret, testSession, hashOf(2), s[2].Ticket, clk.Now().Add(TicketLifetime)); !errors.Is(err, ErrTicketExpired) {
		t.Fatalf("ticket past its lifetime: %v", err)
	}
	// Asking again for the same chunk replaces the assignment.
	if s := tr.Locate(testSession, "c", []uint32{2}, testSecret, tableHashes(10)); len(s) != 1 {
		t.Fatal("re-asking for a chunk found its own assignment in the way")
	}
}

func TestTrackerLeave(t *testing.T) {
	tr := NewTracker(TrackerConfig{})
	tr.Join(testSession, "a", urlA)
	tr.Join(testSession, "b", urlB)
	tr.Have(testSession, "a", span(0, 10))
	tr.Have(testSession, "b", span(0, 10))
	locate(t, tr, "c", span(0, 4), 10)
	tr.Leave(testSession, "a")
	tr.Join(testSession, "a", urlA) // a left: it does not come back
	tr.Have(testSession, "a", span(0, 10))
	for range 5 {
		got := locate(t, tr, "c", span(0, 10), 10)
		if c := countURLs(t, got); c[urlA] != 0 {
			t.Fatalf("a receiver that left is pointed at: %v", c)
		}
		tr.Have(testSession, "c", span(0, 10))
	}
	if s := tr.Locate(testSession, "a", span(0, 10), testSecret, tableHashes(10)); len(s) != 0 {
		t.Fatal("a receiver that left is still answered")
	}
	// The asker leaving releases its assignments.
	tr.Leave(testSession, "c")
	if st, _ := tr.Stats(testSession); st.Outstanding != 0 || st.Peers != 1 {
		t.Fatalf("stats after the asker left: %+v", st)
	}
	tr.Forget(testSession)
	if _, ok := tr.Stats(testSession); ok {
		t.Fatal("Forget kept the session")
	}
}

func TestTrackerBad(t *testing.T) {
	tr := NewTracker(TrackerConfig{})
	for _, p := range []struct{ id, url string }{{"a", urlA}, {"b", urlB}, {"c", ""}, {"d", ""}, {"e", ""}} {
		tr.Join(testSession, p.id, p.url)
	}
	tr.Have(testSession, "a", span(0, 10))
	tr.Have(testSession, "b", span(0, 10))

	// A report about a peer the reporter was never pointed at is ignored.
	if tr.Bad(testSession, "c", urlA) || tr.Corrupt(testSession, "c", urlA) {
		t.Fatal("an unfounded report dropped a peer")
	}
	if st, _ := tr.Stats(testSession); st.BadReports != 0 {
		t.Fatalf("unfounded report counted: %+v", st)
	}
	pointAt := func(asker, url string) {
		t.Helper()
		// Ties between equally loaded peers are broken at random: ask
		// until the coin falls on url (2^-100 to fail by chance).
		for n := range uint32(100) {
			i := n % 10
			if s := tr.Locate(testSession, asker, []uint32{i}, testSecret, tableHashes(10)); s[i].URL == url {
				tr.Have(testSession, asker, []uint32{i})
				return
			}
			tr.Have(testSession, asker, []uint32{i})
		}
		t.Fatalf("%s never pointed at %s", asker, url)
	}
	pointAt("c", urlA)
	if tr.Bad(testSession, "c", urlA) {
		t.Fatal("one failure report dropped a peer")
	}
	// c is no longer pointed at a; d still is.
	for range 3 {
		if c := countURLs(t, locate(t, tr, "c", span(0, 8), 10)); c[urlA] != 0 {
			t.Fatalf("c reported a and is still pointed at it: %v", c)
		}
		tr.Have(testSession, "c", span(0, 8))
	}
	pointAt("d", urlA)
	if tr.Bad(testSession, "c", urlA) {
		t.Fatal("the same reporter twice dropped a peer")
	}
	if !tr.Bad(testSession, "d", urlA) {
		t.Fatal("two reporters did not drop the peer")
	}
	for range 3 {
		if c := countURLs(t, locate(t, tr, "e", span(0, 8), 10)); c[urlA] != 0 {
			t.Fatalf("a dropped peer is pointed at: %v", c)
		}
		tr.Have(testSession, "e", span(0, 8))
	}
	// A dropped URL is not taken back by joining again.
	tr.Join(testSession, "a", urlA)
	tr.Have(testSession, "a", span(0, 10))
	if c := countURLs(t, locate(t, tr, "e", span(0, 8), 10)); c[urlA] != 0 {
		t.Fatalf("a dropped peer came back: %v", c)
	}
	tr.Have(testSession, "e", span(0, 8))

	// One hash mismatch drops at once.
	pointAt("e", urlB)
	if !tr.Corrupt(testSession, "e", urlB) {
		t.Fatal("a corrupt report did not drop the peer")
	}
	if got := locate(t, tr, "c", span(0, 10), 10); len(got) != 0 {
		t.Fatalf("no peer is left, yet: %v", got)
	}
	st, _ := tr.Stats(testSession)
	if st.Dropped != 2 || st.Peers != 0 || st.Outstanding != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestTrackerHandleLocate(t *testing.T) {
	tr := NewTracker(TrackerConfig{})
	tr.Join(testSession, "a", urlA)
	tr.Join(testSession, "b", urlB)
	tr.Have(testSession, "a", span(0, 4))
	resp := tr.HandleLocate(testSession, &mcast.LocateRequest{Receiver: "b", Chunks: []uint32{0, 1}}, testSecret, tableHashes(4))
	if len(resp.Sources) != 2 || resp.Sources[0].URL != urlA {
		t.Fatalf("answer %+v", resp)
	}
	resp = tr.HandleLocate(testSession, &mcast.LocateRequest{Receiver: "b", Chunks: []uint32{2, 3}, Bad: []string{urlA, urlA, "junk"}}, testSecret, tableHashes(4))
	if len(resp.Sources) != 0 {
		t.Fatalf("b reported a, yet: %+v", resp)
	}
	if st, _ := tr.Stats(testSession); st.BadReports != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestTrackerConcurrent(t *testing.T) {
	tr := NewTracker(TrackerConfig{})
	var wg sync.WaitGroup
	for r := range 8 {
		id := string(rune('a' + r))
		wg.Go(func() {
			tr.Join(testSession, id, "http://10.0.1."+string(rune('1'+r))+":80")
			for i := range uint32(50) {
				srcs := tr.Locate(testSession, id, []uint32{i, i + 1}, testSecret, tableHashes(100))
				for _, s := range srcs {
					if s.URL == "http://10.0.1."+string(rune('1'+r))+":80" {
						t.Errorf("%s pointed at itself", id)
					}
				}
				tr.Have(testSession, id, slices.Collect(maps.Keys(srcs)))
				tr.Have(testSession, id, []uint32{i})
			}
			tr.Leave(testSession, id)
		})
	}
	wg.Wait()
	if st, _ := tr.Stats(testSession); st.Outstanding != 0 || st.Peers != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// A chunk no peer holds goes to the server once: the first asker gets it
// there, the others are told to wait until it holds it (or fetchWait).
func TestTrackerWaitsForAChunkOnItsWay(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	tr := NewTracker(TrackerConfig{Now: clk.Now})
	tr.Join(testSession, "a", urlA)
	tr.Join(testSession, "b", urlB)
	if s := tr.Locate(testSession, "a", []uint32{3}, testSecret, tableHashes(10)); len(s) != 0 {
		t.Fatalf("nobody holds chunk 3, yet: %v", s)
	}
	s := tr.Locate(testSession, "b", []uint32{3}, testSecret, tableHashes(10))
	if !s[3].Wait {
		t.Fatalf("a is getting chunk 3 from the server; b should wait: %v", s)
	}
	tr.Have(testSession, "a", []uint32{3})
	s = tr.Locate(testSession, "b", []uint32{3}, testSecret, tableHashes(10))
	if s[3].URL != urlA || s[3].Wait {
		t.Fatalf("a holds chunk 3 now: %v", s)
	}
	// A mark that outlives fetchWait no longer holds anyone back.
	tr.Locate(testSession, "a", []uint32{4}, testSecret, tableHashes(10))
	clk.Add(fetchWait + time.Second)
	if s := tr.Locate(testSession, "b", []uint32{4}, testSecret, tableHashes(10)); len(s) != 0 {
		t.Fatalf("after fetchWait b goes to the server: %v", s)
	}
	// A receiver that leaves releases its marks.
	tr.Locate(testSession, "a", []uint32{5}, testSecret, tableHashes(10))
	tr.Leave(testSession, "a")
	if s := tr.Locate(testSession, "b", []uint32{5}, testSecret, tableHashes(10)); len(s) != 0 {
		t.Fatalf("a left; b goes to the server: %v", s)
	}
}
