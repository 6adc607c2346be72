package api

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/preboot/preboot/store/sqlite"
)

// streamServer serves the event stream alone (no auth: that is tested
// elsewhere) on loopback, with base as every request's base context.
func streamServer(t *testing.T, lim *StreamLimiter, base context.Context) string {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	h := &Handler{Options: Options{Store: st, EventStreams: lim, Logger: slog.New(slog.DiscardHandler)}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(h.streamEvents), BaseContext: func(net.Listener) context.Context { return base }}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	return ln.Addr().String()
}

// openStream opens an event stream from the loopback address from.
func openStream(t *testing.T, addr, from string) *http.Response {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}).DialContext}}
	resp, err := c.Get("http://" + addr + "/api/v1/events/stream")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// Event streams beyond the global or the per-client cap get 429.
func TestEventStreamCap(t *testing.T) {
	lim := NewStreamLimiter(2, 1)
	addr := streamServer(t, lim, context.Background())
	first := openStream(t, addr, "127.0.0.1")
	if first.StatusCode != http.StatusOK {
		t.Fatalf("first stream: %d", first.StatusCode)
	}
	if r := openStream(t, addr, "127.0.0.1"); r.StatusCode != http.StatusTooManyRequests || r.Header.Get("Retry-After") == "" {
		t.Fatalf("second stream of one client: %d", r.StatusCode)
	}
	if r := openStream(t, addr, "127.0.0.2"); r.StatusCode != http.StatusOK {
		t.Fatalf("another client: %d", r.StatusCode)
	}
	if r := openStream(t, addr, "127.0.0.3"); r.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("beyond the global cap: %d", r.StatusCode)
	}
	// A closed stream frees its place.
	first.Body.Close()
	deadline := time.Now().Add(10 * time.Second)
	for lim.Open() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("%d streams still open after one closed", lim.Open())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if r := openStream(t, addr, "127.0.0.1"); r.StatusCode != http.StatusOK {
		t.Fatalf("after closing: %d", r.StatusCode)
	}
}

// Streams end when the server shuts down (its base context ends).
func TestEventStreamEndsOnShutdown(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr := streamServer(t, nil, ctx)
	resp := openStream(t, addr, "127.0.0.1")
	br := bufio.NewReader(resp.Body)
	if l, err := br.ReadString('\n'); err != nil || !strings.Contains(l, "preboot event stream") {
		t.Fatalf("stream start: %q %v", l, err)
	}
	cancel()
	done := make(chan error, 1)
	go func() { _, err := io.Copy(io.Discard, br); done <- err }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("stream still open 10 s after shutdown")
	}
}
