package peers

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/preboot/preboot/image"
	"github.com/preboot/preboot/mcast"
)

// unzstd decodes a frame, nil if it is not one.
func unzstd(frame []byte) []byte {
	dec, err := zstd.NewReader(nil)
	if err != nil {
		return nil
	}
	defer dec.Close()
	out, err := dec.DecodeAll(frame, nil)
	if err != nil {
		return nil
	}
	return out
}

// checkAll gets every chunk and checks each against the disk's content.
func checkAll(t *testing.T, f *Fetcher, d *testDisk) (peer int) {
	t.Helper()
	f.Prefetch(d.all())
	buf := make([]byte, 0, 16<<10)
	for i := range d.hashes {
		got, fromPeer, err := f.Get(context.Background(), uint32(i), buf)
		if err != nil {
			t.Fatalf("chunk %d: %v", i, err)
		}
		if !bytes.Equal(unzstd(got), d.content[i]) {
			t.Fatalf("chunk %d: wrong bytes returned (from peer: %v)", i, fromPeer)
		}
		if fromPeer {
			peer++
		}
	}
	return peer
}

func TestFetchFromPeers(t *testing.T) {
	d := newTestDisk(t, 12)
	tr := NewTracker(TrackerConfig{})
	a, urlA := startPeer(t, "127.0.0.2", d, nil)
	b, urlB := startPeer(t, "127.0.0.3", d, nil)
	tr.Join(testSession, "a", urlA)
	tr.Join(testSession, "b", urlB)
	tr.Join(testSession, "c", "")
	tr.Have(testSession, "a", d.all())
	tr.Have(testSession, "b", d.all())
	base := startTracker(t, tr, d)
	store := &memStore{d: d}
	f := newFetcher(t, base, "c", d, store)

	// 12 chunks, 2 peers of 4 slots: 8 come from peers in the first
	// locate (c reports nothing, so the slots stay taken); for the rest c
	// is told to wait (the peers are busy) rather than load the server.
	f.Prefetch(d.all())
	var waited []uint32
	for i := range d.hashes {
		got, fromPeer, err := f.Get(context.Background(), uint32(i), nil)
		if errors.Is(err, mcast.ErrWait) {
			waited = append(waited, uint32(i))
			continue
		}
		if err != nil || !fromPeer || !bytes.Equal(unzstd(got), d.content[i]) {
			t.Fatalf("chunk %d: from peer %v, %v", i, fromPeer, err)
		}
	}
	if len(waited) != 4 {
		t.Fatalf("%d chunks to wait for, want 4", len(waited))
	}
	if g := store.gets.Load(); g != 0 {
		t.Fatalf("%d chunks from the server, want 0", g)
	}
	st := f.Stats()
	if st.Locates >= 12 || st.PeerChunks != 8 || st.ServerChunks != 0 || st.PeerFailures != 0 || st.PeerBytes == 0 {
		t.Fatalf("fetcher stats %+v", st)
	}
	sa := settled(t, a, func(st ServerStats) bool { return st.Uploads == 4 })
	sb := settled(t, b, func(st ServerStats) bool { return st.Uploads == 4 })
	if sa.Uploads != 4 || sb.Uploads != 4 || sa.Bytes+sb.Bytes != st.PeerBytes {
		t.Fatalf("peer stats %+v %+v (fetcher got %d bytes)", sa, sb, st.PeerBytes)
	}
	// c reports what it got: the slots free up and the rest comes from
	// the peers too.
	tr.Have(testSession, "c", d.all()[:8])
	for _, i := range waited {
		_, fromPeer, err := f.Get(context.Background(), i, nil)
		if err != nil || !fromPeer {
			t.Fatalf("chunk %d after the wait: from peer %v, %v", i, fromPeer, err)
		}
	}
	// Once c reports what it has, the slots free up: a second receiver
	// that reports as it goes gets everything from peers.
	tr.Have(testSession, "c", d.all())
	tr.Join(testSession, "e", "")
	f2 := newFetcher(t, base, "e", d, store)
	for i := range d.hashes {
		_, fromPeer, err := f2.Get(context.Background(), uint32(i), nil)
		if err != nil || !fromPeer {
			t.Fatalf("chunk %d: from peer %v, %v", i, fromPeer, err)
		}
		tr.Have(testSession, "e", []uint32{uint32(i)})
	}
	if ts, _ := tr.Stats(testSession); ts.Redirects != 8+4+12 {
		t.Fatalf("tracker stats %+v", ts)
	}
}

// evilPeer answers every chunk with 200 and what bad returns.
func evilPeer(t *testing.T, ip string, bad func(h string) []byte) (string, *atomic.Int64) {
	t.Helper()
	var hits atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_, _ = w.Write(bad(strings.TrimPrefix(r.URL.Path, ChunkPath)))
	}))
	srv.Listener.Close()
	srv.Listener = listen(t, ip)
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.URL, &hits
}

func TestFetchPeerServingWrongBytes(t *testing.T) {
	d := newTestDisk(t, 4)
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	for name, bad := range map[string]func(string) []byte{
		// A well-formed frame of the wrong window.
		"other chunk": func(string) []byte { return d.frames[(len(d.frames)-1)%len(d.frames)] },
		// The right window with one byte changed.
		"one byte": func(h string) []byte {
			for i, x := range d.hashes {
				if x.String() == h {
					c := bytes.Clone(d.content[i])
					c[123] ^= 1
					return enc.EncodeAll(c, nil)
				}
			}
			return nil
		},
		"not zstd":  func(string) []byte { return []byte("hello, peer") },
		"truncated": func(string) []byte { return d.frames[0][:len(d.frames[0])/2] },
		"bomb":      func(string) []byte { return enc.EncodeAll(make([]byte, image.MaxChunkSize+1), nil) },
	} {
		t.Run(name, func(t *testing.T) {
			tr := NewTracker(TrackerConfig{})
			evil, hits := evilPeer(t, "127.0.0.4", bad)
			tr.Join(testSession, "evil", evil)
			tr.Have(testSession, "evil", d.all())
			tr.Join(testSession, "c", "")
			base := startTracker(t, tr, d)
			store := &memStore{d: d}
			f := newFetcher(t, base, "c", d, store)
			// No Prefetch: one locate per chunk, so the report goes out.
			for i := range d.hashes {
				got, fromPeer, err := f.Get(context.Background(), uint32(i), nil)
				if err != nil {
					t.Fatalf("chunk %d: %v", i, err)
				}
				if fromPeer || !bytes.Equal(unzstd(got), d.content[i]) {
					t.Fatalf("chunk %d: from peer %v, right bytes %v", i, fromPeer, bytes.Equal(unzstd(got), d.content[i]))
				}
			}
			if h := hits.Load(); h != 1 {
				t.Fatalf("the evil peer was asked %d times, want once", h)
			}
			if g := store.gets.Load(); g != int64(len(d.hashes)) {
				t.Fatalf("%d chunks from the server", g)
			}
			st := f.Stats()
			if st.PeerFailures != 1 || st.PeerChunks != 0 {
				t.Fatalf("stats %+v", st)
			}
			if st.Corrupt != 1 {
				t.Fatalf("wrong bytes not counted as corrupt: %+v", st)
			}
			// The report reached the tracker as wrong bytes: the peer is
			// dropped for everyone at once, c is not pointed at it.
			if ts, _ := tr.Stats(testSession); ts.BadReports != 1 || ts.Dropped != 1 {
				t.Fatalf("tracker stats %+v", ts)
			}
			if s := tr.Locate(testSession, "c", d.all(), testSecret, d.hashAt); len(s) != 0 {
				t.Fatalf("c is still pointed at the peer it reported: %v", s)
			}
		})
	}
}

func TestFetchPeerDown(t *testing.T) {
	d := newTestDisk(t, 3)
	ln := listen(t, "127.0.0.5")
	down := "http://" + ln.Addr().String()
	ln.Close()
	tr := NewTracker(TrackerConfig{})
	tr.Join(testSession, "down", down)
	tr.Have(testSession, "down", d.all())
	base := startTracker(t, tr, d)
	store := &memStore{d: d}
	f := newFetcher(t, base, "c", d, store)
	start := time.Now()
	if n := checkAll(t, f, d); n != 0 {
		t.Fatalf("%d chunks from a peer that is down", n)
	}
	if time.Since(start) > 4*time.Second {
		t.Fatalf("falling back took %v", time.Since(start))
	}
	if st := f.Stats(); st.PeerFailures != 1 || st.ServerChunks != 3 || st.Corrupt != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestFetchPeerBusyAndTrackerDown(t *testing.T) {
	d := newTestDisk(t, 3)
	// A peer whose only upload slot is taken by someone else answers 503:
	// the chunk comes from the server.
	g := &gatedReader{r: d.f, entered: make(chan struct{}), open: make(chan struct{})}
	_, busyURL := startPeer(t, "127.0.0.6", d, func(c *ServerConfig) { c.Target = g; c.MaxUploads = 1 })
	var wg sync.WaitGroup
	wg.Go(func() {
		h := d.hashes[2]
		get(t, busyURL+ChunkPath+h.String(), map[string]string{"Authorization": "Bearer " + Ticket(testSecret, testSession, h, time.Now().Add(time.Minute))})
	})
	<-g.entered
	defer func() { close(g.open); wg.Wait() }()
	tr := NewTracker(TrackerConfig{})
	tr.Join(testSession, "busy", busyURL)
	tr.Have(testSession, "busy", d.all())
	base := startTracker(t, tr, d)
	store := &memStore{d: d}
	f := newFetcher(t, base, "c", d, store)
	got, fromPeer, err := f.Get(context.Background(), 0, nil)
	if err != nil || fromPeer || !bytes.Equal(unzstd(got), d.content[0]) {
		t.Fatalf("busy peer: from peer %v, %v", fromPeer, err)
	}

	// A tracker that fails: everything from the server, no error.
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "boom", http.StatusInternalServerError)
	}))
	defer broken.Close()
	f2 := newFetcher(t, broken.URL, "c", d, store)
	if n := checkAll(t, f2, d); n != 0 {
		t.Fatal("chunks from peers without a tracker")
	}
	if st := f2.Stats(); st.LocateErrors != 1 || st.Locates != 1 || st.ServerChunks != 3 {
		t.Fatalf("after a failed locate the fetcher should pause locating: %+v", st)
	}
}

func TestFetchNeverReturnsUnverifiedServerBytes(t *testing.T) {
	d := newTestDisk(t, 2)
	tr := NewTracker(TrackerConfig{})
	base := startTracker(t, tr, d)
	bad := &memStore{d: &testDisk{hashes: d.hashes, frames: [][]byte{d.frames[1], d.frames[0]}}}
	f := newFetcher(t, base, "c", d, bad)
	got, _, err := f.Get(context.Background(), 0, nil)
	if !errors.Is(err, image.ErrCorruptChunk) || got != nil {
		t.Fatalf("the server's wrong bytes: %v (%d bytes returned)", err, len(got))
	}
	if _, _, err := f.Get(context.Background(), 99, nil); err == nil {
		t.Fatal("a chunk outside the table")
	}
}

func TestFetchConcurrent(t *testing.T) {
	for _, prefetch := range []bool{true, false} {
		t.Run(fmt.Sprintf("prefetch=%v", prefetch), func(t *testing.T) { testFetchConcurrent(t, prefetch) })
	}
}

// testFetchConcurrent runs 4 Gets at a time, as a receiver's fallback
// workers do: locate calls are batched with or without Prefetch.
func testFetchConcurrent(t *testing.T, prefetch bool) {
	d := newTestDisk(t, 16)
	tr := NewTracker(TrackerConfig{})
	var urls []string
	for i, ip := range []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"} {
		_, u := startPeer(t, ip, d, nil)
		id := string(rune('a' + i))
		tr.Join(testSession, id, u)
		tr.Have(testSession, id, d.all())
		urls = append(urls, u)
	}
	base := startTracker(t, tr, d)
	store := &memStore{d: d}
	f := newFetcher(t, base, "r", d, store)
	tr.Join(testSession, "r", "")
	if prefetch {
		f.Prefetch(d.all())
	}
	var wg sync.WaitGroup
	var fromPeers atomic.Int64
	next := make(chan uint32)
	for range 4 {
		wg.Go(func() {
			for i := range next {
				got, fromPeer, err := f.Get(context.Background(), i, make([]byte, 0, winLen))
				if err != nil || !bytes.Equal(unzstd(got), d.content[i]) {
					t.Errorf("chunk %d: %v", i, err)
					continue
				}
				if fromPeer {
					fromPeers.Add(1)
					tr.Have(testSession, "r", []uint32{i})
				}
			}
		})
	}
	for i := range d.all() {
		next <- uint32(i)
	}
	close(next)
	wg.Wait()
	st := f.Stats()
	if fromPeers.Load() < 12 || st.PeerChunks+st.ServerChunks != 16 {
		t.Fatalf("%d from peers; stats %+v", fromPeers.Load(), st)
	}
	if prefetch && st.Locates > 2 || st.Locates > 16 {
		t.Fatalf("%d locate calls for 16 chunks (prefetch %v)", st.Locates, prefetch)
	}
	t.Logf("%d locate calls for 16 chunks", st.Locates)
}

func TestFetchDistrustsLocateAnswers(t *testing.T) {
	d := newTestDisk(t, 3)
	peer, peerURL := startPeer(t, "127.0.0.2", d, nil)
	var mu sync.Mutex
	var bad []string // the peers reported
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/mcast/s1/locate", func(w http.ResponseWriter, r *http.Request) {
		var req mcast.LocateRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			t.Error(err)
		}
		mu.Lock()
		bad = append(bad, req.Bad...)
		mu.Unlock()
		// A ticket under another secret, a URL that is no peer URL, and a
		// chunk nobody asked for.
		fmt.Fprintf(w, `{"sources":{"0":{"url":%q,"ticket":%q},"1":{"url":"ftp://127.0.0.2/","ticket":"1.x"},"7":{"url":%q,"ticket":"x"}}}`,
			peerURL, Ticket([]byte("wrong secret"), testSession, d.hashes[0], time.Now().Add(time.Minute)), peerURL)
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	store := &memStore{d: d}
	f := newFetcher(t, srv.URL+"/api/v1/", "c", d, store)
	for i := range 3 {
		got, fromPeer, err := f.Get(context.Background(), uint32(i), nil)
		if err != nil || fromPeer || !bytes.Equal(unzstd(got), d.content[i]) {
			t.Fatalf("chunk %d: from peer %v, %v", i, fromPeer, err)
		}
	}
	if st := peer.Stats(); st.Forbidden != 1 || st.Requests != 1 {
		t.Fatalf("peer stats %+v (only chunk 0 may have been tried)", st)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(bad) != 1 || bad[0] != peerURL {
		t.Fatalf("the refusing peer was not reported once: %q", bad)
	}
	if st := f.Stats(); st.Redirected != 1 || st.Locates != 3 || st.PeerFailures != 1 {
		t.Fatalf("stats %+v", st)
	}
}
