package peers

import (
	"context"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/preboot/preboot/disk"
	"github.com/preboot/preboot/image"
	"github.com/preboot/preboot/mcast"
)

const (
	testSession = "s1"
	testToken   = "job-token"
	winLen      = 64 << 10
)

var testSecret = []byte("0123456789abcdef0123456789abcdef")

// testDisk is a file holding windows of a known image: random bytes
// everywhere, so that the bytes outside the used extents must be zeroed.
type testDisk struct {
	path    string
	f       *os.File
	windows []image.Window
	content [][]byte // the hashed content of each window
	hashes  []image.Hash
	frames  [][]byte // content compressed, as the server stores it
}

func newTestDisk(t *testing.T, n int) *testDisk {
	t.Helper()
	rng := rand.New(rand.NewPCG(uint64(n), 42))
	size := int64(n) * winLen
	raw := make([]byte, size)
	for i := range raw {
		raw[i] = byte(rng.Uint32())
	}
	path := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	area := &image.Area{Name: "test", Start: 0, Size: size}
	d := &testDisk{path: path, f: f}
	for i := range n {
		abs := int64(i) * winLen
		used := []disk.Extent{{Offset: 0, Length: 40000}, {Offset: 50000, Length: 1000 + int64(i)*100}}
		c := make([]byte, winLen)
		for _, e := range used {
			copy(c[e.Offset:e.End()], raw[abs+e.Offset:abs+e.End()])
		}
		h := image.Sum(c)
		d.windows = append(d.windows, image.Window{Area: area, Chunk: image.Chunk{Offset: abs, Length: winLen, Hash: h}, Abs: abs, Used: used})
		d.content = append(d.content, c)
		d.hashes = append(d.hashes, h)
		d.frames = append(d.frames, enc.EncodeAll(c, nil))
	}
	return d
}

func (d *testDisk) lookup(h image.Hash) (image.Window, bool) {
	for _, w := range d.windows {
		if w.Chunk.Hash == h {
			return w, true
		}
	}
	return image.Window{}, false
}

func (d *testDisk) hashAt(i uint32) (image.Hash, bool) {
	if int(i) >= len(d.hashes) {
		return image.Hash{}, false
	}
	return d.hashes[i], true
}

func (d *testDisk) all() []uint32 {
	out := make([]uint32, len(d.hashes))
	for i := range out {
		out[i] = uint32(i)
	}
	return out
}

// memStore is the server's repository as the fallback: it serves the
// disk's frames and counts Gets.
type memStore struct {
	d    *testDisk
	gets atomic.Int64
}

func (m *memStore) Missing(context.Context, []image.Hash) (map[image.Hash]struct{}, error) {
	return map[image.Hash]struct{}{}, nil
}

func (m *memStore) Put(context.Context, image.Hash, []byte) error { return nil }

func (m *memStore) Get(_ context.Context, h image.Hash, dst []byte) ([]byte, error) {
	m.gets.Add(1)
	for i, x := range m.d.hashes {
		if x == h {
			return append(dst[:0], m.d.frames[i]...), nil
		}
	}
	return nil, image.ErrNotFound
}

// listen listens on a loopback address such as 127.0.0.2.
func listen(t *testing.T, ip string) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// startPeer serves d from a Server on ip until the test ends.
func startPeer(t *testing.T, ip string, d *testDisk, mod func(*ServerConfig)) (*Server, string) {
	t.Helper()
	cfg := ServerConfig{Target: d.f, Lookup: d.lookup, Session: testSession, Secret: testSecret}
	if mod != nil {
		mod(&cfg)
	}
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln := listen(t, ip)
	serve(t, func(ctx context.Context) error { return s.Serve(ctx, ln) })
	return s, "http://" + ln.Addr().String()
}

// serve runs fn until the test ends, then stops it and checks its error.
func serve(t *testing.T, fn func(ctx context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var err error
	wg.Go(func() { err = fn(ctx) })
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		if err != nil {
			t.Errorf("serve: %v", err)
		}
	})
}

// startTracker serves tr's locate endpoint for the session of d as the
// session manager will (bearer token checked).
func startTracker(t *testing.T, tr *Tracker, d *testDisk) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+mcast.PathPrefix+"{session}/locate", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+testToken {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		var req mcast.LocateRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		resp := tr.HandleLocate(r.PathValue("session"), &req, testSecret, d.hashAt)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(resp)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}

func newFetcher(t *testing.T, base, receiver string, d *testDisk, store image.ChunkStore) *Fetcher {
	t.Helper()
	f, err := NewFetcher(FetcherConfig{
		BaseURL: base, Token: testToken, Session: testSession, Receiver: receiver,
		Chunks: d.hashes, Fallback: store, PeerTimeout: 5e9,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	return f
}

func get(t *testing.T, u string, hdr map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

// settled waits until the server's counters satisfy ok: a handler counts
// an upload after its last write, which the client may see first.
func settled(t *testing.T, s *Server, ok func(ServerStats) bool) ServerStats {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := s.Stats()
		if ok(st) || time.Now().After(deadline) {
			return st
		}
		time.Sleep(5 * time.Millisecond)
	}
}
