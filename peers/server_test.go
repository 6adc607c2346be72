package peers

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/preboot/preboot/image"
)

func decode(t *testing.T, frame []byte) []byte {
	t.Helper()
	dec, err := zstd.NewReader(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	out, err := dec.DecodeAll(frame, nil)
	if err != nil {
		t.Fatalf("answer is not a zstd frame: %v", err)
	}
	return out
}

func TestServerServesVerifiedWindows(t *testing.T) {
	d := newTestDisk(t, 3)
	srv, base := startPeer(t, "127.0.0.2", d, nil)
	exp := time.Now().Add(TicketLifetime)
	for i, h := range d.hashes {
		tk := Ticket(testSecret, testSession, h, exp)
		var resp *http.Response
		var body []byte
		if i%2 == 0 {
			resp, body = get(t, base+ChunkPath+h.String(), map[string]string{"Authorization": "Bearer " + tk})
		} else {
			resp, body = get(t, base+ChunkPath+h.String()+"?t="+tk, nil)
		}
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("chunk %d: %s %s", i, resp.Status, body)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "application/zstd" {
			t.Fatalf("content type %q", ct)
		}
		// The bytes outside the used extents are random on the disk and
		// must come back zeroed: the content is exactly what was hashed.
		if got := decode(t, body); !bytes.Equal(got, d.content[i]) || image.Sum(got) != h {
			t.Fatalf("chunk %d: served bytes differ from the window's content", i)
		}
		if err := image.VerifyChunk(h, body); err != nil {
			t.Fatal(err)
		}
	}
	st := settled(t, srv, func(st ServerStats) bool { return st.Uploads == 3 })
	if st.Uploads != 3 || st.Bytes == 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestServerRefusesBadTickets(t *testing.T) {
	d := newTestDisk(t, 2)
	srv, base := startPeer(t, "127.0.0.2", d, nil)
	h := d.hashes[0]
	now := time.Now()
	u := base + ChunkPath + h.String()
	for name, tk := range map[string]string{
		"other session": Ticket(testSecret, "s2", h, now.Add(time.Minute)),
		"other chunk":   Ticket(testSecret, testSession, d.hashes[1], now.Add(time.Minute)),
		"expired":       Ticket(testSecret, testSession, h, now.Add(-time.Second)),
		"other secret":  Ticket([]byte("not the session's secret"), testSession, h, now.Add(time.Minute)),
		"garbage":       "hello",
		"none":          "",
	} {
		hdr := map[string]string{}
		if tk != "" {
			hdr["Authorization"] = "Bearer " + tk
		}
		if resp, body := get(t, u, hdr); resp.StatusCode != http.StatusForbidden {
			t.Errorf("%s: %s %s, want 403", name, resp.Status, body)
		}
	}
	// A good ticket in the query does not help a bad header.
	good := Ticket(testSecret, testSession, h, now.Add(time.Minute))
	if resp, _ := get(t, u+"?t="+good, map[string]string{"Authorization": "Basic eDp5"}); resp.StatusCode != http.StatusForbidden {
		t.Errorf("Basic auth with a query ticket: %s", resp.Status)
	}
	if st := srv.Stats(); st.Forbidden != 7 || st.Uploads != 0 {
		t.Fatalf("stats %+v", st)
	}
	// A chunk it does not hold, with a valid ticket for it: 404.
	other := image.Sum([]byte("not on this disk"))
	if resp, _ := get(t, base+ChunkPath+other.String(), map[string]string{"Authorization": "Bearer " + Ticket(testSecret, testSession, other, now.Add(time.Minute))}); resp.StatusCode != http.StatusNotFound {
		t.Errorf("chunk not held: %s", resp.Status)
	}
	for _, p := range []string{"/", "/chunks/", "/chunks/xyz", ChunkPath + h.String() + "/x"} {
		if resp, _ := get(t, base+p, nil); resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s: %s", p, resp.Status)
		}
	}
	resp, err := http.Post(u, "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %s", resp.Status)
	}
}

func TestServerWithoutSecretThenSetSession(t *testing.T) {
	d := newTestDisk(t, 1)
	srv, base := startPeer(t, "127.0.0.2", d, func(c *ServerConfig) { c.Session, c.Secret = "", nil })
	h := d.hashes[0]
	hdr := map[string]string{"Authorization": "Bearer " + Ticket(testSecret, testSession, h, time.Now().Add(time.Minute))}
	if resp, _ := get(t, base+ChunkPath+h.String(), hdr); resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("before the join: %s", resp.Status)
	}
	srv.SetSession(testSession, testSecret)
	if resp, _ := get(t, base+ChunkPath+h.String(), hdr); resp.StatusCode != http.StatusOK {
		t.Fatalf("after SetSession: %s", resp.Status)
	}
}

func TestServerChecksTheTarget(t *testing.T) {
	d := newTestDisk(t, 2)
	// Lookup claims chunk 0 sits where chunk 1 is: the bytes there do not
	// hash as chunk 0, and the server must not send them.
	srv, base := startPeer(t, "127.0.0.2", d, func(c *ServerConfig) {
		c.Lookup = func(h image.Hash) (image.Window, bool) {
			w := d.windows[1]
			w.Chunk.Hash = h
			return w, h == d.hashes[0]
		}
	})
	h := d.hashes[0]
	resp, _ := get(t, base+ChunkPath+h.String(), map[string]string{"Authorization": "Bearer " + Ticket(testSecret, testSession, h, time.Now().Add(time.Minute))})
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("window that does not verify: %s", resp.Status)
	}
	if st := srv.Stats(); st.Uploads != 0 || st.Bytes != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// gatedReader blocks reads until open is closed.
type gatedReader struct {
	r       io.ReaderAt
	entered chan struct{}
	open    chan struct{}
	once    sync.Once
}

func (g *gatedReader) ReadAt(p []byte, off int64) (int, error) {
	g.once.Do(func() { close(g.entered) })
	<-g.open
	return g.r.ReadAt(p, off)
}

func TestServerUploadCap(t *testing.T) {
	d := newTestDisk(t, 2)
	g := &gatedReader{r: d.f, entered: make(chan struct{}), open: make(chan struct{})}
	srv, base := startPeer(t, "127.0.0.2", d, func(c *ServerConfig) { c.Target = g; c.MaxUploads = 1 })
	hdr := func(h image.Hash) map[string]string {
		return map[string]string{"Authorization": "Bearer " + Ticket(testSecret, testSession, h, time.Now().Add(time.Minute))}
	}
	var wg sync.WaitGroup
	var first *http.Response
	wg.Go(func() { first, _ = get(t, base+ChunkPath+d.hashes[0].String(), hdr(d.hashes[0])) })
	<-g.entered
	resp, _ := get(t, base+ChunkPath+d.hashes[1].String(), hdr(d.hashes[1]))
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("second upload beyond MaxUploads 1: %s", resp.Status)
	}
	if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || ra < 1 {
		t.Fatalf("503 without Retry-After: %q", resp.Header.Get("Retry-After"))
	}
	close(g.open)
	wg.Wait()
	if first.StatusCode != http.StatusOK {
		t.Fatalf("first upload: %s", first.Status)
	}
	// The slot is free again.
	if resp, _ := get(t, base+ChunkPath+d.hashes[1].String(), hdr(d.hashes[1])); resp.StatusCode != http.StatusOK {
		t.Fatalf("after the first upload ended: %s", resp.Status)
	}
	if st := settled(t, srv, func(st ServerStats) bool { return st.Uploads == 2 }); st.Busy != 1 || st.Uploads != 2 {
		t.Fatalf("stats %+v", st)
	}
}

func TestServerRateLimit(t *testing.T) {
	d := newTestDisk(t, 1)
	srv, base := startPeer(t, "127.0.0.2", d, func(c *ServerConfig) { c.Rate = 0.01; c.Burst = 3 })
	codes := map[int]int{}
	for range 5 {
		resp, _ := get(t, base+ChunkPath+d.hashes[0].String(), nil)
		codes[resp.StatusCode]++
	}
	if codes[http.StatusForbidden] != 3 || codes[http.StatusTooManyRequests] != 2 {
		t.Fatalf("answers %v, want 3 × 403 then 2 × 429", codes)
	}
	if st := srv.Stats(); st.Limited != 2 || st.Requests != 5 {
		t.Fatalf("stats %+v", st)
	}
}

func TestServerClockFollowsServer(t *testing.T) {
	d := newTestDisk(t, 1)
	// The agent's clock is an hour behind the server's: a ticket the
	// tracker signed for two minutes is valid by the server's clock.
	var clk Clock
	clk.Observe(&http.Response{Header: http.Header{"Date": {time.Now().Add(time.Hour).UTC().Format(http.TimeFormat)}}})
	if off := clk.Offset(); off < 59*time.Minute || off > 61*time.Minute {
		t.Fatalf("offset %v", off)
	}
	clk.Observe(&http.Response{Header: http.Header{"Date": {"garbage"}}}) // ignored
	if off := clk.Offset(); off < 59*time.Minute {
		t.Fatalf("offset after a bad Date %v", off)
	}
	_, base := startPeer(t, "127.0.0.2", d, func(c *ServerConfig) { c.Now = clk.Now })
	h := d.hashes[0]
	tk := Ticket(testSecret, testSession, h, time.Now().Add(time.Hour+TicketLifetime))
	if resp, _ := get(t, base+ChunkPath+h.String(), map[string]string{"Authorization": "Bearer " + tk}); resp.StatusCode != http.StatusOK {
		t.Fatalf("ticket valid by the server's clock: %s", resp.Status)
	}
	tk = Ticket(testSecret, testSession, h, time.Now().Add(TicketLifetime))
	if resp, _ := get(t, base+ChunkPath+h.String(), map[string]string{"Authorization": "Bearer " + tk}); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("ticket expired by the server's clock: %s", resp.Status)
	}
}

func TestListenAndServe(t *testing.T) {
	d := newTestDisk(t, 1)
	s, err := NewServer(ServerConfig{Target: d.f, Lookup: d.lookup, Session: testSession, Secret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan net.Addr, 1)
	errc := make(chan error, 1)
	go func() { errc <- s.ListenAndServe(ctx, "127.0.0.3:0", func(a net.Addr) { addrc <- a }) }()
	addr := <-addrc
	h := d.hashes[0]
	resp, _ := get(t, "http://"+addr.String()+ChunkPath+h.String(), map[string]string{"Authorization": "Bearer " + Ticket(testSecret, testSession, h, time.Now().Add(time.Minute))})
	if resp.StatusCode != http.StatusOK {
		t.Fatal(resp.Status)
	}
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ListenAndServe did not stop with its context")
	}
	if _, err := net.DialTimeout("tcp", addr.String(), time.Second); err == nil {
		t.Fatal("still listening after the context ended")
	}
	u, err := AdvertiseURL(context.Background(), "https://127.0.0.1:8443/api/v1", 7001)
	if err != nil || u != "http://127.0.0.1:7001" {
		t.Fatalf("AdvertiseURL: %q, %v", u, err)
	}
	if _, err := AdvertiseURL(context.Background(), "not a url", 1); err == nil {
		t.Fatal("AdvertiseURL took a bad URL")
	}
}
