package httpstore_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/preboot/preboot/disk"
	"github.com/preboot/preboot/image"
	"github.com/preboot/preboot/image/httpstore"
)

const (
	mib       = 1 << 20
	diskSize  = 24 * mib
	chunkSize = 256 << 10
)

// counter counts requests by "METHOD /first/two/segments".
type counter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *counter) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.Method + " " + r.URL.Path
		if rest, ok := strings.CutPrefix(r.URL.Path, "/api/v1/chunks/"); ok && rest != "missing" {
			key = r.Method + " /api/v1/chunks/{hash}"
		}
		c.mu.Lock()
		c.n[key]++
		c.mu.Unlock()
		h.ServeHTTP(w, r)
	})
}

func (c *counter) get(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[key]
}

func (c *counter) reset() {
	c.mu.Lock()
	c.n = map[string]int{}
	c.mu.Unlock()
}

// tmpDir is a fresh directory on tmpfs when there is one: the repository
// fsyncs every chunk and syncfs()s on publish, which on a shared, busy disk
// dominates the run time without testing anything here.
func tmpDir(t *testing.T) string {
	t.Helper()
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		if d, err := os.MkdirTemp("/dev/shm", "preboot-httpstore-test-"); err == nil {
			t.Cleanup(func() { os.RemoveAll(d) })
			return d
		}
	}
	return t.TempDir()
}

type env struct {
	repo *image.Repo
	h    *httpstore.Handler
	srv  *httptest.Server
	cnt  *counter
	c    *httpstore.Client
}

// newEnv starts a server over a fresh repository, mounted like the lead's
// server does (prefixes on a ServeMux), with wrap (if any) around it.
func newEnv(t *testing.T, wrap func(http.Handler) http.Handler, configure func(*httpstore.Handler)) *env {
	t.Helper()
	repo, err := image.OpenRepo(tmpDir(t), image.RepoOptions{GCGrace: -1})
	if err != nil {
		t.Fatal(err)
	}
	h := &httpstore.Handler{Repo: repo, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if configure != nil {
		configure(h)
	}
	mux := http.NewServeMux()
	for _, p := range h.Prefixes() {
		mux.Handle(p, h)
	}
	cnt := &counter{n: map[string]int{}}
	var hh http.Handler = mux
	if wrap != nil {
		hh = wrap(hh)
	}
	srv := httptest.NewServer(cnt.wrap(hh))
	t.Cleanup(srv.Close)
	c := &httpstore.Client{BaseURL: srv.URL, Attempts: 3, Backoff: 10 * time.Millisecond, Timeout: 20 * time.Second}
	return &env{repo: repo, h: h, srv: srv, cnt: cnt, c: c}
}

// synthDisk writes a disk image with boot code, two partitions (one with
// sparse used extents, one raw with zero-skip) and a GPT-like tail.
func synthDisk(t *testing.T, seed uint64) (string, image.Layout) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 3))
	b := make([]byte, diskSize)
	random := func(from, to int) {
		for i := from; i < to; i++ {
			b[i] = byte(rng.Uint32())
		}
	}
	random(0, 446)
	b[510], b[511] = 0x55, 0xaa
	random(4096, 4096+30<<10)
	p1 := image.Area{Index: 1, Start: 1 * mib, Size: 12 * mib, FSType: "ext4", Used: []disk.Extent{
		{Offset: 0, Length: 3 * mib}, {Offset: 4 * mib, Length: 2 * mib}, {Offset: 8 * mib, Length: 64 << 10}}}
	random(1*mib, 4*mib)
	copy(b[5*mib:7*mib], bytes.Repeat([]byte("preboot http store test line\n"), 2*mib/29+1))
	random(9*mib+65536, 13*mib) // garbage in free space: must not matter
	p2 := image.Area{Index: 2, Start: 13 * mib, Size: 10 * mib, FSType: "raw"}
	random(15*mib, 15*mib+300<<10)
	random(diskSize-16<<10, diskSize)
	path := filepath.Join(tmpDir(t), "disk.img")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	parts := []image.Area{p1, p2}
	return path, image.Layout{DiskSize: diskSize, Partitions: parts, Regions: image.Gaps(diskSize, parts)}
}

func capture(t *testing.T, path string, l image.Layout, st image.ChunkStore, name string) *image.Manifest {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := image.Capture(t.Context(), f, l, st, image.CaptureOptions{Name: name, ChunkSize: chunkSize, Workers: 4,
		Source: map[string]string{"hostname": "lab1"}})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func restore(ctx context.Context, t *testing.T, m *image.Manifest, st image.ChunkStore) (string, error) {
	t.Helper()
	path := filepath.Join(tmpDir(t), "target.img")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// Garbage everywhere, so a forgotten used byte shows.
	junk := bytes.Repeat([]byte{0xa5}, diskSize)
	if _, err := f.WriteAt(junk, 0); err != nil {
		t.Fatal(err)
	}
	return path, image.Restore(ctx, f, m, st, image.RestoreOptions{TargetSize: diskSize, Workers: 4})
}

// sameUsed checks every used byte of m matches between files a and b.
func sameUsed(t *testing.T, m *image.Manifest, a, b string) {
	t.Helper()
	x, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, ar := range m.Areas() {
		for _, e := range ar.Used {
			s, end := ar.Start+e.Offset, ar.Start+e.Offset+e.Length
			if !bytes.Equal(x[s:end], y[s:end]) {
				t.Fatalf("%s: used extent [%d,+%d) differs after restore", ar.Label(), e.Offset, e.Length)
			}
			n++
		}
	}
	if n == 0 {
		t.Fatal("no used extents compared")
	}
}

func TestCaptureRestoreDedupe(t *testing.T) {
	e := newEnv(t, nil, nil)
	src, layout := synthDisk(t, 1)

	m := capture(t, src, layout, e.c, "lab")
	puts := e.cnt.get("PUT /api/v1/chunks/{hash}")
	if puts == 0 || puts != len(m.ChunkHashes()) {
		t.Fatalf("first capture PUT %d chunks, manifest has %d distinct", puts, len(m.ChunkHashes()))
	}
	if err := e.c.Publish(t.Context(), m); err != nil {
		t.Fatal(err)
	}
	if err := e.repo.Verify(t.Context(), "lab", 0); err != nil {
		t.Fatalf("server repo: %v", err)
	}

	// Restore through the client from the server's repository.
	got, err := e.c.Manifest(t.Context(), "lab")
	if err != nil {
		t.Fatal(err)
	}
	dst, err := restore(t.Context(), t, got, e.c)
	if err != nil {
		t.Fatal(err)
	}
	sameUsed(t, got, src, dst)

	// Unchanged re-capture: no chunk uploaded, few Missing calls.
	e.cnt.reset()
	m2 := capture(t, src, layout, e.c, "lab")
	if n := e.cnt.get("PUT /api/v1/chunks/{hash}"); n != 0 {
		t.Fatalf("re-capture PUT %d chunks, want 0", n)
	}
	if n := e.cnt.get("POST /api/v1/chunks/missing"); n == 0 || n > len(m2.ChunkHashes()) {
		t.Fatalf("re-capture made %d Missing calls", n)
	}
	if m2.Sizes.Uploaded != 0 {
		t.Fatalf("re-capture uploaded %d bytes", m2.Sizes.Uploaded)
	}

	// Publishing over an existing name needs Replace.
	err = e.c.Publish(t.Context(), m2)
	var se *httpstore.StatusError
	if !errors.Is(err, image.ErrExists) || !errors.As(err, &se) || se.StatusCode != http.StatusConflict {
		t.Fatalf("publish over existing name: %v", err)
	}
	if !strings.Contains(err.Error(), e.srv.URL+"/api/v1/images/lab") || !strings.Contains(err.Error(), "409") {
		t.Fatalf("error does not name URL and status: %v", err)
	}
	rc := &httpstore.Client{BaseURL: e.c.BaseURL, Replace: true}
	if err := rc.Publish(t.Context(), m2); err != nil {
		t.Fatal(err)
	}

	// Listing and detail carry sizes.
	l, err := e.c.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Images) != 1 || l.Images[0].Name != "lab" || l.Images[0].Stored <= 0 || l.Images[0].Logical != diskSize ||
		len(l.Images[0].Partitions) != 2 || l.Images[0].Source["hostname"] != "lab1" {
		t.Fatalf("list: %+v", l)
	}
	d, err := e.c.Detail(t.Context(), "lab")
	if err != nil {
		t.Fatal(err)
	}
	if d.Info.Stored != l.Images[0].Stored || d.Manifest.Name != "lab" || d.Info.Chunks != len(m2.ChunkHashes()) {
		t.Fatalf("detail: %+v", d.Info)
	}
	v, err := e.c.Verify(t.Context(), "lab")
	if err != nil || !v.OK || v.Chunks != len(m2.ChunkHashes()) {
		t.Fatalf("verify: %+v %v", v, err)
	}
}

func TestBadChunksRefused(t *testing.T) {
	e := newEnv(t, nil, func(h *httpstore.Handler) { h.MaxChunkBytes = 1 << 20 })
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	good := bytes.Repeat([]byte("good"), 4096)
	evil := bytes.Repeat([]byte("evil"), 4096)
	h := image.Sum(good)

	for name, data := range map[string][]byte{
		"other content": enc.EncodeAll(evil, nil),
		"not zstd":      []byte("this is not a zstd frame at all"),
		"truncated":     enc.EncodeAll(good, nil)[:20],
	} {
		err := e.c.Put(t.Context(), h, data)
		var se *httpstore.StatusError
		if !errors.Is(err, image.ErrCorruptChunk) || !errors.As(err, &se) || se.StatusCode != http.StatusUnprocessableEntity {
			t.Fatalf("%s: Put = %v, want 422 corrupt", name, err)
		}
	}
	// Too large: refused before it is read.
	err = e.c.Put(t.Context(), h, make([]byte, 2<<20))
	var se *httpstore.StatusError
	if !errors.As(err, &se) || se.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversized Put = %v, want 413", err)
	}
	miss, err := e.repo.Missing(t.Context(), []image.Hash{h})
	if err != nil || len(miss) != 1 {
		t.Fatalf("a refused chunk was stored: %v %v", miss, err)
	}
	// The right frame is accepted, and Get returns it.
	frame := enc.EncodeAll(good, nil)
	if err := e.c.Put(t.Context(), h, frame); err != nil {
		t.Fatal(err)
	}
	if err := e.c.Put(t.Context(), h, frame); err != nil { // dedupe: no-op
		t.Fatal(err)
	}
	got, err := e.c.Get(t.Context(), h, nil)
	if err != nil || !bytes.Equal(got, frame) {
		t.Fatalf("Get: %v", err)
	}
	_, err = e.c.Get(t.Context(), image.Sum([]byte("absent")), nil)
	if !errors.Is(err, image.ErrNotFound) {
		t.Fatalf("Get absent = %v, want ErrNotFound", err)
	}
	// Bad hashes in the URL or in a Missing request.
	resp, err := http.Post(e.srv.URL+"/api/v1/chunks/missing", "application/json", strings.NewReader(`{"hashes":["xyz"]}`))
	if err != nil {
		t.Fatal(err)
	}
	checkJSONError(t, resp, http.StatusBadRequest)
	resp, err = http.Get(e.srv.URL + "/api/v1/chunks/ABCD")
	if err != nil {
		t.Fatal(err)
	}
	checkJSONError(t, resp, http.StatusBadRequest)
}

func checkJSONError(t *testing.T, resp *http.Response, status int) httpstore.ErrorBody {
	t.Helper()
	defer resp.Body.Close()
	var eb httpstore.ErrorBody
	if err := json.NewDecoder(resp.Body).Decode(&eb); err != nil || eb.Error == "" {
		t.Fatalf("%s: not a JSON error: %v", resp.Status, err)
	}
	if resp.StatusCode != status {
		t.Fatalf("status %s (%s), want %d", resp.Status, eb.Error, status)
	}
	return eb
}

func TestPublishMissingChunksAndInvalid(t *testing.T) {
	e := newEnv(t, nil, nil)
	src, layout := synthDisk(t, 2)
	// Capture into a local repo: the server has none of the chunks.
	local, err := image.OpenRepo(tmpDir(t), image.RepoOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m := capture(t, src, layout, local, "ghost")
	err = e.c.Publish(t.Context(), m)
	var se *httpstore.StatusError
	if !errors.Is(err, image.ErrMissingChunks) || !errors.As(err, &se) || se.StatusCode != http.StatusConflict {
		t.Fatalf("publish without chunks = %v, want 409 missing", err)
	}
	if se.Body.MissingCount != len(m.ChunkHashes()) || len(se.Body.Missing) != len(m.ChunkHashes()) {
		t.Fatalf("409 lists %d/%d missing, want %d", len(se.Body.Missing), se.Body.MissingCount, len(m.ChunkHashes()))
	}
	if names, _ := e.repo.List(); len(names) != 0 {
		t.Fatalf("image published anyway: %v", names)
	}
	// Upload all but one chunk: still refused, listing exactly that one.
	hashes := m.ChunkHashes()
	for _, h := range hashes[1:] {
		data, err := local.Get(t.Context(), h, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.c.Put(t.Context(), h, data); err != nil {
			t.Fatal(err)
		}
	}
	err = e.c.Publish(t.Context(), m)
	if !errors.As(err, &se) || len(se.Body.Missing) != 1 || se.Body.Missing[0] != hashes[0].String() {
		t.Fatalf("publish with one chunk missing = %v", err)
	}

	// A manifest that lies about its sizes, or names another image.
	bad := *m
	bad.Sizes.Used++
	var buf bytes.Buffer
	if err := bad.Encode(&buf); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPut, e.srv.URL+"/api/v1/images/ghost", &buf)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	checkJSONError(t, resp, http.StatusUnprocessableEntity)
	buf.Reset()
	if err := m.Encode(&buf); err != nil {
		t.Fatal(err)
	}
	req, _ = http.NewRequest(http.MethodPut, e.srv.URL+"/api/v1/images/other", &buf)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	checkJSONError(t, resp, http.StatusUnprocessableEntity)
	req, _ = http.NewRequest(http.MethodPut, e.srv.URL+"/api/v1/images/ghost", strings.NewReader(`{"version":1,"name":"ghost","surprise":1}`))
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	checkJSONError(t, resp, http.StatusUnprocessableEntity)
	if names, _ := e.repo.List(); len(names) != 0 {
		t.Fatalf("image published anyway: %v", names)
	}
}

func TestServerGoneMidRestore(t *testing.T) {
	var gets atomic.Int64
	var srvp atomic.Pointer[httptest.Server]
	var once sync.Once
	var armed atomic.Bool
	e := newEnv(t, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if armed.Load() && r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/api/v1/chunks/") && gets.Add(1) >= 5 {
				once.Do(func() { go srvp.Load().Close() })
				panic(http.ErrAbortHandler) // drop this connection too
			}
			next.ServeHTTP(w, r)
		})
	}, nil)
	srvp.Store(e.srv)
	src, layout := synthDisk(t, 3)
	m := capture(t, src, layout, e.c, "lab")
	if err := e.c.Publish(t.Context(), m); err != nil {
		t.Fatal(err)
	}
	armed.Store(true)
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Second)
	defer cancel()
	start := time.Now()
	_, err := restore(ctx, t, m, e.c)
	if err == nil {
		t.Fatal("restore succeeded with the server gone")
	}
	if ctx.Err() != nil {
		t.Fatalf("restore hung until the deadline: %v", err)
	}
	if !strings.Contains(err.Error(), e.srv.URL+"/api/v1/chunks/") {
		t.Fatalf("error does not name the URL: %v", err)
	}
	t.Logf("restore failed after %v: %v", time.Since(start), err)
	if gets.Load() < 5 {
		t.Fatalf("server went away after %d chunk GETs", gets.Load())
	}
}

func TestRetriesTransientErrors(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]int{}
	var failed atomic.Int64
	e := newEnv(t, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			k := r.Method + " " + r.URL.String()
			seen[k]++
			first := seen[k] == 1
			mu.Unlock()
			if first && r.Method != http.MethodPost { // the first try of each chunk/manifest request fails
				failed.Add(1)
				http.Error(w, `{"error":"overloaded"}`, http.StatusServiceUnavailable)
				return
			}
			next.ServeHTTP(w, r)
		})
	}, nil)
	src, layout := synthDisk(t, 4)
	m := capture(t, src, layout, e.c, "flaky")
	if err := e.c.Publish(t.Context(), m); err != nil {
		t.Fatal(err)
	}
	dst, err := restore(t.Context(), t, m, e.c)
	if err != nil {
		t.Fatal(err)
	}
	sameUsed(t, m, src, dst)
	if failed.Load() < int64(2*len(m.ChunkHashes())) {
		t.Fatalf("only %d requests failed", failed.Load())
	}

	// Always failing: bounded attempts, then a clear error.
	always := newEnv(t, func(http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, `{"error":"disk on fire"}`, http.StatusInternalServerError)
		})
	}, nil)
	_, err = always.c.Get(t.Context(), image.Sum(nil), nil)
	var se *httpstore.StatusError
	if !errors.As(err, &se) || se.StatusCode != 500 || !strings.Contains(err.Error(), "disk on fire") {
		t.Fatalf("Get = %v", err)
	}
	if got := always.cnt.get("GET /api/v1/chunks/{hash}"); got != 3 {
		t.Fatalf("%d attempts, want 3", got)
	}
}

func TestExportImportVerifyRemove(t *testing.T) {
	a := newEnv(t, nil, nil)
	b := newEnv(t, nil, nil)
	src, layout := synthDisk(t, 5)
	m := capture(t, src, layout, a.c, "golden")
	if err := a.c.Publish(t.Context(), m); err != nil {
		t.Fatal(err)
	}
	var tarBuf bytes.Buffer
	n, err := a.c.Export(t.Context(), "golden", &tarBuf)
	if err != nil || n != int64(tarBuf.Len()) || n == 0 {
		t.Fatalf("export: %d bytes, %v", n, err)
	}
	if _, err := a.c.Export(t.Context(), "nope", io.Discard); !errors.Is(err, image.ErrNotFound) {
		t.Fatalf("export of unknown image = %v", err)
	}
	// A chunk lost on the server breaks the stream off: an error, not a
	// short but well-formed tar.
	last := m.ChunkHashes()[len(m.ChunkHashes())-1].String()
	lastPath := filepath.Join(a.repo.Root(), "chunks", last[:2], last)
	saved, err := os.ReadFile(lastPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(lastPath); err != nil {
		t.Fatal(err)
	}
	if n, err := a.c.Export(t.Context(), "golden", io.Discard); err == nil {
		t.Fatalf("export with a lost chunk succeeded (%d bytes)", n)
	} else {
		t.Logf("export with a lost chunk: %v", err)
	}
	if err := os.WriteFile(lastPath, saved, 0o644); err != nil {
		t.Fatal(err)
	}
	info, err := b.c.Import(t.Context(), bytes.NewReader(tarBuf.Bytes()), "copy")
	if err != nil {
		t.Fatal(err)
	}
	if info.Name != "copy" || info.Used != m.Sizes.Used {
		t.Fatalf("import: %+v", info)
	}
	if _, err := b.c.Import(t.Context(), bytes.NewReader(tarBuf.Bytes()), "copy"); !errors.Is(err, image.ErrExists) {
		t.Fatalf("second import = %v, want ErrExists", err)
	}
	// A truncated archive is refused and publishes nothing.
	if _, err := b.c.Import(t.Context(), bytes.NewReader(tarBuf.Bytes()[:tarBuf.Len()/2]), "half"); err == nil {
		t.Fatal("truncated import succeeded")
	}
	got, err := b.c.Manifest(t.Context(), "copy")
	if err != nil {
		t.Fatal(err)
	}
	dst, err := restore(t.Context(), t, got, b.c)
	if err != nil {
		t.Fatal(err)
	}
	sameUsed(t, got, src, dst)

	// Verify finds a damaged chunk on the server's disk.
	h := m.ChunkHashes()[0].String()
	p := filepath.Join(b.repo.Root(), "chunks", h[:2], h)
	if err := os.WriteFile(p, []byte("rotten"), 0o644); err != nil {
		t.Fatal(err)
	}
	v, err := b.c.Verify(t.Context(), "copy")
	if err != nil || v.OK || !strings.Contains(v.Error, h) {
		t.Fatalf("verify of damaged image: %+v %v", v, err)
	}

	if err := b.c.Remove(t.Context(), "copy"); err != nil {
		t.Fatal(err)
	}
	if err := b.c.Remove(t.Context(), "copy"); !errors.Is(err, image.ErrNotFound) {
		t.Fatalf("second remove = %v", err)
	}
	if l, err := b.c.List(t.Context()); err != nil || len(l.Images) != 0 {
		t.Fatalf("list after remove: %+v %v", l, err)
	}
}

func TestAccessHook(t *testing.T) {
	e := newEnv(t, nil, func(h *httpstore.Handler) {
		h.Access = func(r *http.Request) httpstore.Access {
			// A restore job's token that may read image "pub" only.
			if r.Header.Get("Authorization") == "Bearer job" {
				return httpstore.Access{Job: 7, Image: "pub", Read: true}
			}
			return httpstore.Access{Admin: true}
		}
	})
	src, layout := synthDisk(t, 6)
	for _, name := range []string{"pub", "secret"} {
		m := capture(t, src, layout, e.c, name)
		if err := e.c.Publish(t.Context(), m); err != nil {
			t.Fatal(err)
		}
	}
	// Make "secret" hold a chunk "pub" lacks.
	local, err := image.OpenRepo(tmpDir(t), image.RepoOptions{})
	if err != nil {
		t.Fatal(err)
	}
	src2, layout2 := synthDisk(t, 7)
	m2 := capture(t, src2, layout2, local, "secret")
	for _, h := range m2.ChunkHashes() {
		data, _ := local.Get(t.Context(), h, nil)
		if err := e.c.Put(t.Context(), h, data); err != nil {
			t.Fatal(err)
		}
	}
	rc := &httpstore.Client{BaseURL: e.c.BaseURL, Replace: true}
	if err := rc.Publish(t.Context(), m2); err != nil {
		t.Fatal(err)
	}

	job := &httpstore.Client{BaseURL: e.srv.URL, Token: "job", Image: "pub", Attempts: 1}
	m, err := job.Manifest(t.Context(), "pub")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := restore(t.Context(), t, m, job); err != nil {
		t.Fatalf("job restore of its image: %v", err)
	}
	var se *httpstore.StatusError
	if _, err := job.Manifest(t.Context(), "secret"); !errors.As(err, &se) || se.StatusCode != http.StatusForbidden {
		t.Fatalf("job read of another image = %v, want 403", err)
	}
	if _, err := job.Get(t.Context(), m2.ChunkHashes()[0], nil); !errors.As(err, &se) || se.StatusCode != http.StatusForbidden {
		t.Fatalf("job read of a chunk outside its image = %v, want 403", err)
	}
	if err := job.Remove(t.Context(), "pub"); !errors.As(err, &se) || se.StatusCode != http.StatusForbidden {
		t.Fatalf("job remove = %v, want 403", err)
	}
	l, err := job.List(t.Context())
	if err != nil || len(l.Images) != 1 || l.Images[0].Name != "pub" {
		t.Fatalf("job list = %+v %v", l, err)
	}
}

func TestBadURLsAnswerJSON(t *testing.T) {
	e := newEnv(t, nil, nil)
	for _, u := range []string{"/api/v1/images/bad%20name", "/api/v1/images/x/nothing", "/api/v1/chunks/"} {
		resp, err := http.Get(e.srv.URL + u)
		if err != nil {
			t.Fatal(err)
		}
		if eb := checkJSONError(t, resp, resp.StatusCode); resp.StatusCode < 400 {
			t.Fatalf("%s: %s %s", u, resp.Status, eb.Error)
		}
	}
	if _, err := e.c.Detail(t.Context(), "absent"); !errors.Is(err, image.ErrNotFound) {
		t.Fatalf("detail of absent image = %v", err)
	}
}
