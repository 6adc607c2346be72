package replica

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/preboot/preboot/image"
	"github.com/preboot/preboot/image/httpstore"
)

const chunk = image.MinChunkSize

// upstream is a real repository served over HTTPS by the real handler;
// hook (when set) may answer a chunk GET itself.
type upstream struct {
	repo   *image.Repo
	srv    *httptest.Server
	client *httpstore.Client
	gets   atomic.Int64
	mu     sync.Mutex
	hook   func(w http.ResponseWriter, r *http.Request, h *httpstore.Handler) bool
}

func newUpstream(t *testing.T) *upstream {
	t.Helper()
	repo, err := image.OpenRepo(t.TempDir(), image.RepoOptions{})
	if err != nil {
		t.Fatal(err)
	}
	u := &upstream{repo: repo}
	h := &httpstore.Handler{Repo: repo}
	u.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/api/v1/chunks/") {
			u.gets.Add(1)
			u.mu.Lock()
			hook := u.hook
			u.mu.Unlock()
			if hook != nil && hook(w, r, h) {
				return
			}
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(u.srv.Close)
	u.client = &httpstore.Client{BaseURL: u.srv.URL, HTTP: u.srv.Client(), Attempts: 1}
	return u
}

func (u *upstream) setHook(f func(w http.ResponseWriter, r *http.Request, h *httpstore.Handler) bool) {
	u.mu.Lock()
	u.hook = f
	u.mu.Unlock()
}

// disk returns n chunks of random (half compressible) data.
func disk(seed uint64, n int) []byte {
	rng := rand.New(rand.NewPCG(seed, 7))
	b := make([]byte, n*chunk)
	for i := range b {
		if (i/512)%2 == 0 {
			b[i] = byte(rng.Uint32())
		} else {
			b[i] = byte(i / 4096)
		}
	}
	return b
}

// capture captures data as a new version of name at the upstream.
func (u *upstream) capture(t *testing.T, name string, data []byte, source map[string]string) *image.Manifest {
	t.Helper()
	l := image.Layout{DiskSize: int64(len(data)), Partitions: []image.Area{{Index: 1, Start: 0, Size: int64(len(data)), FSType: "raw"}}}
	m, err := image.Capture(context.Background(), bytes.NewReader(data), l, u.repo, image.CaptureOptions{Name: name, ChunkSize: chunk, Source: source, Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.repo.PublishVersion(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	return m
}

func newReplicator(t *testing.T, u *upstream, sel string, mod func(*Options)) (*Replicator, *image.Repo) {
	t.Helper()
	local, err := image.OpenRepo(t.TempDir(), image.RepoOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s, err := ParseSelector(sel)
	if err != nil {
		t.Fatal(err)
	}
	o := Options{Upstream: u.client, UpstreamURL: u.srv.URL, Local: local, Select: s, Parallel: 3, Backoff: 1,
		StateFile: filepath.Join(t.TempDir(), "replicas.json")}
	if mod != nil {
		mod(&o)
	}
	r, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return r, local
}

// restore restores ref from repo and returns the bytes.
func restore(t *testing.T, repo image.ChunkStore, m *image.Manifest) []byte {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "disk")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(m.Disk.Size); err != nil {
		t.Fatal(err)
	}
	if err := image.Restore(context.Background(), f, m, repo, image.RestoreOptions{TargetSize: m.Disk.Size}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func encode(t *testing.T, m *image.Manifest) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := m.Encode(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func statusOf(r *Replicator, name string) ImageStatus {
	for _, s := range r.Status().Images {
		if s.Name == name {
			return s
		}
	}
	return ImageStatus{}
}

func TestReplicateIncremental(t *testing.T) {
	ctx := context.Background()
	u := newUpstream(t)
	d1 := disk(1, 12)
	m1 := u.capture(t, "lab", d1, nil)
	r, local := newReplicator(t, u, "all", nil)
	if err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := local.Manifest("lab@1")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(encode(t, got), encode(t, m1)) {
		t.Fatal("replicated manifest differs from the upstream's")
	}
	if !bytes.Equal(restore(t, local, got), d1) {
		t.Fatal("restore from the replica differs from the captured disk")
	}
	n1 := len(m1.ChunkHashes())
	if g := u.gets.Load(); g != int64(n1) {
		t.Fatalf("first round fetched %d chunks, want %d", g, n1)
	}
	st := statusOf(r, "lab")
	if st.State != StateInSync || st.Version != 1 || st.ChunksDone != n1 || st.Bytes == 0 || st.LastSuccess.IsZero() || st.LagSeconds != 0 {
		t.Fatalf("status after the first round: %+v", st)
	}

	// A second capture changing two windows: only those are fetched.
	d2 := bytes.Clone(d1)
	d2[3*chunk+5] ^= 0xff
	d2[9*chunk+77] ^= 0xff
	m2 := u.capture(t, "lab", d2, nil)
	u.gets.Store(0)
	if err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if g := u.gets.Load(); g != 2 {
		t.Fatalf("second round fetched %d chunks, want 2", g)
	}
	got2, err := local.Manifest("lab")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(encode(t, got2), encode(t, m2)) {
		t.Fatal("current version at the site is not the upstream's version 2")
	}
	if !bytes.Equal(restore(t, local, got2), d2) {
		t.Fatal("restore of version 2 from the replica differs")
	}
	// A round with nothing new fetches nothing.
	u.gets.Store(0)
	if err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if g := u.gets.Load(); g != 0 {
		t.Fatalf("an idle round fetched %d chunks", g)
	}
	// A rollback upstream rolls back the site.
	if _, err := u.repo.Rollback(ctx, "lab", 1); err != nil {
		t.Fatal(err)
	}
	if err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if _, v, err := local.Resolve("lab"); err != nil || v != 1 {
		t.Fatalf("site current after upstream rollback: %d, %v", v, err)
	}
	var sb strings.Builder
	if err := writeMetrics(r, &sb); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"preboot_replication_chunks_fetched_total " + itoa(n1+2), `preboot_replication_lag_seconds{image="lab"} 0`} {
		if !strings.Contains(sb.String(), want) {
			t.Errorf("metrics lack %q:\n%s", want, sb.String())
		}
	}
}

func TestResumeAfterCancel(t *testing.T) {
	u := newUpstream(t)
	d := disk(2, 16)
	m := u.capture(t, "big", d, nil)
	total := len(m.ChunkHashes())
	r, local := newReplicator(t, u, "all", func(o *Options) { o.Parallel = 2 })

	// The upstream serves 5 chunks, then hangs until the round is
	// cancelled: replication interrupted midway.
	ctx, cancel := context.WithCancel(context.Background())
	var served atomic.Int64
	u.setHook(func(w http.ResponseWriter, r *http.Request, h *httpstore.Handler) bool {
		if served.Add(1) <= 5 {
			return false
		}
		cancel()
		<-r.Context().Done()
		return true
	})
	err := r.Sync(ctx)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted round: %v", err)
	}
	if _, err := local.Manifest("big"); !errors.Is(err, image.ErrNotFound) {
		t.Fatalf("a manifest was published before all its chunks: %v", err)
	}
	miss, err := local.Missing(context.Background(), m.ChunkHashes())
	if err != nil {
		t.Fatal(err)
	}
	// Two workers, six requests started: at least four fetches ended
	// with their chunk stored (the fifth may have lost its Put to the
	// cancellation).
	stored := total - len(miss)
	if stored < 4 || stored == total {
		t.Fatalf("after the interruption %d of %d chunks stored", stored, total)
	}

	// Resume: only the rest is pulled.
	u.setHook(nil)
	u.gets.Store(0)
	if err := r.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if g := u.gets.Load(); g != int64(len(miss)) {
		t.Fatalf("resumed round fetched %d chunks, want the %d missing", g, len(miss))
	}
	got, err := local.Manifest("big")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(restore(t, local, got), d) {
		t.Fatal("restore after resume differs")
	}
}

func TestCorruptChunkFromUpstreamRefused(t *testing.T) {
	u := newUpstream(t)
	d := disk(3, 6)
	m := u.capture(t, "img", d, nil)
	bad := m.ChunkHashes()[2]
	var tries atomic.Int64
	// The first two answers for one chunk are another chunk's bytes (a
	// valid zstd frame with the wrong content), then the right one.
	other := m.ChunkHashes()[0]
	u.setHook(func(w http.ResponseWriter, r *http.Request, h *httpstore.Handler) bool {
		if !strings.HasSuffix(r.URL.Path, bad.String()) || tries.Add(1) > 2 {
			return false
		}
		data, err := u.repo.Get(r.Context(), other, nil)
		if err != nil {
			t.Error(err)
		}
		w.Write(data)
		return true
	})
	r, local := newReplicator(t, u, "all", nil)
	if err := r.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := statusOf(r, "img"); st.CorruptFetched != 2 || st.State != StateInSync {
		t.Fatalf("status: %+v", st)
	}
	if err := local.Verify(context.Background(), "img", 1); err != nil {
		t.Fatal(err)
	}

	// Always corrupt: bounded attempts, the image fails, nothing published.
	u2 := newUpstream(t)
	m2 := u2.capture(t, "img", d, nil)
	bad2 := m2.ChunkHashes()[1]
	u2.setHook(func(w http.ResponseWriter, r *http.Request, h *httpstore.Handler) bool {
		if !strings.HasSuffix(r.URL.Path, bad2.String()) {
			return false
		}
		w.Write([]byte("not zstd"))
		return true
	})
	r2, local2 := newReplicator(t, u2, "all", func(o *Options) { o.Attempts = 3 })
	err := r2.Sync(context.Background())
	if !errors.Is(err, image.ErrCorruptChunk) {
		t.Fatalf("always-corrupt chunk: %v", err)
	}
	if st := statusOf(r2, "img"); st.State != StateFailed || st.CorruptFetched != 3 || st.Error == "" {
		t.Fatalf("status: %+v", st)
	}
	if _, err := local2.Manifest("img"); !errors.Is(err, image.ErrNotFound) {
		t.Fatalf("published with a chunk refused: %v", err)
	}
}

func TestScrubRepairsCorruptChunk(t *testing.T) {
	ctx := context.Background()
	u := newUpstream(t)
	d := disk(4, 8)
	m := u.capture(t, "img", d, nil)
	r, local := newReplicator(t, u, "all", nil)
	if err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	// Flip a byte of one chunk at rest, delete another.
	hs := m.ChunkHashes()
	p := filepath.Join(local.Root(), "chunks", hs[1].String()[:2], hs[1].String())
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x55
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(local.Root(), "chunks", hs[4].String()[:2], hs[4].String())); err != nil {
		t.Fatal(err)
	}
	if err := local.Verify(ctx, "img", 1); err == nil {
		t.Fatal("verify passed with a corrupt chunk")
	}
	res, err := r.Scrub(ctx, "", false)
	if err != nil {
		t.Fatal(err)
	}
	if res.Corrupt != 1 || res.Missing != 1 || res.Repaired != 0 || res.Chunks != len(hs) {
		t.Fatalf("scrub without repair: %+v", res)
	}
	u.gets.Store(0)
	res, err = r.Scrub(ctx, "img", true)
	if err != nil {
		t.Fatal(err)
	}
	if res.Corrupt != 1 || res.Missing != 1 || res.Repaired != 2 {
		t.Fatalf("scrub with repair: %+v", res)
	}
	if g := u.gets.Load(); g != 2 {
		t.Fatalf("repair fetched %d chunks, want 2", g)
	}
	if err := local.Verify(ctx, "img", 1); err != nil {
		t.Fatalf("after repair: %v", err)
	}
	if !bytes.Equal(restore(t, local, m), d) {
		t.Fatal("restore after repair differs")
	}
	if st := r.Status(); st.LastScrub == nil || st.LastScrub.Repaired != 2 {
		t.Fatalf("status last scrub: %+v", st.LastScrub)
	}
}

func TestSelector(t *testing.T) {
	info := func(name string, src map[string]string) httpstore.ImageInfo {
		return httpstore.ImageInfo{Name: name, Source: src}
	}
	cases := []struct {
		sel  string
		img  httpstore.ImageInfo
		want bool
	}{
		{"", info("x", nil), true},
		{"all", info("x", nil), true},
		{"win11", info("win11", nil), true},
		{"win11", info("win10", nil), false},
		{"lab-*", info("lab-base", nil), true},
		{"lab-*", info("office", nil), false},
		{"office, lab-*", info("office", nil), true},
		{"label:hostname=pc7", info("a", map[string]string{"hostname": "pc7"}), true},
		{"label:hostname=pc7", info("a", map[string]string{"hostname": "pc8"}), false},
		{"label:hostname=pc7", info("a", nil), false},
		{"x,all", info("y", nil), true},
	}
	for _, c := range cases {
		s, err := ParseSelector(c.sel)
		if err != nil {
			t.Fatalf("%q: %v", c.sel, err)
		}
		if got := s.Match(c.img); got != c.want {
			t.Errorf("%q matches %s: %v, want %v", c.sel, c.img.Name, got, c.want)
		}
	}
	for _, bad := range []string{"label:", "label:=x", "label:k", "[", " , "} {
		if _, err := ParseSelector(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if s, _ := ParseSelector("lab-*, label:a=b"); s.String() != "lab-*,label:a=b" {
		t.Errorf("String: %q", s.String())
	}

	// Through a round: only the selected images are pulled.
	u := newUpstream(t)
	u.capture(t, "lab-a", disk(5, 2), nil)
	u.capture(t, "office", disk(6, 2), map[string]string{"hostname": "pc7"})
	u.capture(t, "other", disk(7, 2), nil)
	_, local := newReplicatorSync(t, u, "lab-*,label:hostname=pc7", nil)
	names, err := local.List()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(names, ",") != "lab-a,office" {
		t.Fatalf("replicated %v", names)
	}
}

func newReplicatorSync(t *testing.T, u *upstream, sel string, mod func(*Options)) (*Replicator, *image.Repo) {
	t.Helper()
	r, local := newReplicator(t, u, sel, mod)
	if err := r.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	return r, local
}

func TestDeletionPolicy(t *testing.T) {
	ctx := context.Background()
	for _, keep := range []bool{false, true} {
		u := newUpstream(t)
		u.capture(t, "a", disk(8, 2), nil)
		u.capture(t, "a", disk(9, 2), nil)
		u.capture(t, "b", disk(10, 2), nil)
		r, local := newReplicatorSync(t, u, "all", func(o *Options) { o.KeepDeleted = keep })
		// An image of the site's own is never touched.
		own := disk(11, 2)
		l := image.Layout{DiskSize: int64(len(own)), Partitions: []image.Area{{Index: 1, Start: 0, Size: int64(len(own)), FSType: "raw"}}}
		om, err := image.Capture(ctx, bytes.NewReader(own), l, local, image.CaptureOptions{Name: "mine", ChunkSize: chunk})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := local.PublishVersion(ctx, om); err != nil {
			t.Fatal(err)
		}
		if err := u.repo.Remove(ctx, "b"); err != nil {
			t.Fatal(err)
		}
		if err := u.repo.Remove(ctx, "a@1"); err != nil {
			t.Fatal(err)
		}
		if err := r.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		names, _ := local.List()
		vs, err := local.VersionNumbers("a")
		if err != nil {
			t.Fatal(err)
		}
		if keep {
			if strings.Join(names, ",") != "a,b,mine" || len(vs) != 2 {
				t.Fatalf("keep: images %v, versions of a %v", names, vs)
			}
		} else {
			if strings.Join(names, ",") != "a,mine" || len(vs) != 1 || vs[0] != 2 {
				t.Fatalf("mirror: images %v, versions of a %v", names, vs)
			}
			if st := r.Status(); len(st.Removed) != 1 || st.Removed[0] != "b" {
				t.Fatalf("removed: %v", st.Removed)
			}
		}
		// An upstream that lists nothing removes nothing.
		if err := u.repo.Remove(ctx, "a"); err != nil {
			t.Fatal(err)
		}
		if err := r.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		if names2, _ := local.List(); !strings.Contains(strings.Join(names2, ","), "a") {
			t.Fatalf("keep=%v: an empty upstream removed replicas: %v", keep, names2)
		}
	}
}

func TestOwnImageNotOverwrittenAndNumbering(t *testing.T) {
	ctx := context.Background()
	u := newUpstream(t)
	for i := range 4 {
		u.capture(t, "n", disk(uint64(20+i), 2), nil)
	}
	// Versions 1 and 2 gone before the site first sees the image; current
	// rolled back to 3.
	for _, ref := range []string{"n@1", "n@2"} {
		if err := u.repo.Remove(ctx, ref); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := u.repo.Rollback(ctx, "n", 3); err != nil {
		t.Fatal(err)
	}
	u.capture(t, "x", disk(30, 2), nil)
	r, local := newReplicator(t, u, "all", nil)
	own := disk(31, 1)
	l := image.Layout{DiskSize: int64(len(own)), Partitions: []image.Area{{Index: 1, Start: 0, Size: int64(len(own)), FSType: "raw"}}}
	om, err := image.Capture(ctx, bytes.NewReader(own), l, local, image.CaptureOptions{Name: "x", ChunkSize: chunk})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := local.PublishVersion(ctx, om); err != nil {
		t.Fatal(err)
	}
	err = r.Sync(ctx)
	if err == nil || !strings.Contains(err.Error(), "not a replica") {
		t.Fatalf("site's own image x: %v", err)
	}
	if st := statusOf(r, "x"); st.State != StateFailed {
		t.Fatalf("x: %+v", st)
	}
	if m, err := local.Manifest("x"); err != nil || !bytes.Equal(encode(t, m), encode(t, om)) {
		t.Fatal("the site's own image was changed")
	}
	vs, err := local.VersionNumbers("n")
	if err != nil {
		t.Fatal(err)
	}
	if len(vs) != 2 || vs[0] != 3 || vs[1] != 4 {
		t.Fatalf("site versions of n: %v, want [3 4]", vs)
	}
	for _, v := range vs {
		um, _ := u.repo.Manifest(image.Ref("n", v))
		lm, _ := local.Manifest(image.Ref("n", v))
		if !bytes.Equal(encode(t, um), encode(t, lm)) {
			t.Fatalf("n@%d differs from the upstream's", v)
		}
	}
	if _, cur, _ := local.Resolve("n"); cur != 3 {
		t.Fatalf("site current %d, want 3", cur)
	}
	// The state survives a restart: a new replicator knows n is a replica.
	r2, err := New(r.o)
	if err != nil {
		t.Fatal(err)
	}
	if !r2.isReplica("n") || r2.isReplica("x") {
		t.Fatal("replica state not kept")
	}
}
