package httpstore_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/preboot/preboot/image"
	"github.com/preboot/preboot/image/httpstore"
)

// Tokens of the scoped environment: "cap" is capture job 5 of image
// "cap", "rest" a restore job 6 of scopedEnv.restImage; anything else is
// an administrator.
type scopedEnv struct {
	*env
	mu        sync.Mutex
	restImage string
}

func newScopedEnv(t *testing.T, configure func(*httpstore.Handler)) *scopedEnv {
	t.Helper()
	s := &scopedEnv{restImage: "pub"}
	s.env = newEnv(t, nil, func(h *httpstore.Handler) {
		h.Access = func(r *http.Request) httpstore.Access {
			switch r.Header.Get("Authorization") {
			case "Bearer cap":
				return httpstore.Access{Job: 5, Image: "cap", Capture: true}
			case "Bearer cap2":
				return httpstore.Access{Job: 8, Image: "cap2", Capture: true}
			case "Bearer rest":
				s.mu.Lock()
				defer s.mu.Unlock()
				return httpstore.Access{Job: 6, Image: s.restImage, Read: true}
			}
			return httpstore.Access{Admin: true}
		}
		if configure != nil {
			configure(h)
		}
	})
	return s
}

func (s *scopedEnv) pin(ref string) {
	s.mu.Lock()
	s.restImage = ref
	s.mu.Unlock()
}

func (s *scopedEnv) client(token, img string) *httpstore.Client {
	return &httpstore.Client{BaseURL: s.srv.URL, Token: token, Image: img, Attempts: 1}
}

// publishSeed captures synthetic disk seed as image name through the
// admin client and returns the manifest.
func (s *scopedEnv) publishSeed(t *testing.T, name string, seed uint64) *image.Manifest {
	t.Helper()
	src, layout := synthDisk(t, seed)
	m := capture(t, src, layout, s.c, name)
	c := &httpstore.Client{BaseURL: s.srv.URL, Replace: true, Attempts: 1}
	if err := c.Publish(t.Context(), m); err != nil {
		t.Fatal(err)
	}
	return m
}

// only returns a chunk of a that b does not reference.
func only(t *testing.T, a, b *image.Manifest) image.Hash {
	t.Helper()
	in := map[image.Hash]bool{}
	for _, h := range b.ChunkHashes() {
		in[h] = true
	}
	for _, h := range a.ChunkHashes() {
		if !in[h] {
			return h
		}
	}
	t.Fatal("no chunk of one image is absent from the other")
	return image.Hash{}
}

func do(t *testing.T, method, url, token string, body io.Reader) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func wantStatus(t *testing.T, err error, code int, what string) {
	t.Helper()
	var se *httpstore.StatusError
	if !errors.As(err, &se) || se.StatusCode != code {
		t.Fatalf("%s = %v, want %d", what, err, code)
	}
}

// A job token reads chunks only with ?image= naming its image, and only
// chunks that image's manifest references.
func TestJobChunkReadsScopedToItsImage(t *testing.T) {
	s := newScopedEnv(t, nil)
	pub := s.publishSeed(t, "pub", 11)
	secret := s.publishSeed(t, "secret", 12)
	own, foreign := pub.ChunkHashes()[0], only(t, secret, pub)

	for _, tc := range []struct {
		hash  image.Hash
		query string
		code  int
	}{
		{own, "", http.StatusForbidden},     // no ?image=: refused (was: any chunk)
		{foreign, "", http.StatusForbidden}, // idem
		{foreign, "?image=pub", http.StatusForbidden},
		{foreign, "?image=secret", http.StatusForbidden},
		{own, "?image=secret", http.StatusForbidden},
		{own, "?image=pub", http.StatusOK},
		{own, "?image=pub@1", http.StatusOK},
		{own, "?image=pub@2", http.StatusNotFound}, // no such version
	} {
		resp := do(t, "GET", s.srv.URL+"/api/v1/chunks/"+tc.hash.String()+tc.query, "rest", nil)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.code {
			t.Errorf("restore job GET chunk %s…%s = %s, want %d", tc.hash.String()[:8], tc.query, resp.Status, tc.code)
		}
	}
	// A capture job of another image reads neither.
	resp := do(t, "GET", s.srv.URL+"/api/v1/chunks/"+own.String()+"?image=pub", "cap", nil)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("capture job of cap reading pub's chunk = %s, want 403", resp.Status)
	}
	// Administrators read anything.
	if _, err := s.c.Get(t.Context(), foreign, nil); err != nil {
		t.Fatalf("admin read: %v", err)
	}
	// The restore still works end to end with the job's token.
	job := s.client("rest", "pub")
	m, err := job.Manifest(t.Context(), "pub")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := restore(t.Context(), t, m, job); err != nil {
		t.Fatalf("job restore of its image: %v", err)
	}
}

// chunks/missing answers a job only about chunks it may read: everything
// else is "missing", so it cannot probe other images' content.
func TestJobMissingOracleClosed(t *testing.T) {
	s := newScopedEnv(t, nil)
	pub := s.publishSeed(t, "pub", 21)
	secret := s.publishSeed(t, "secret", 22)
	probe := only(t, secret, pub)
	own := pub.ChunkHashes()[0]
	ask := []image.Hash{probe, own}

	admin, err := s.c.Missing(t.Context(), ask)
	if err != nil || len(admin) != 0 {
		t.Fatalf("admin: missing %v, %v; want none", admin, err)
	}
	for _, tc := range []struct{ token, img string }{{"rest", "pub"}, {"cap", "cap"}} {
		miss, err := s.client(tc.token, tc.img).Missing(t.Context(), ask)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := miss[probe]; !ok {
			t.Errorf("%s job: another image's chunk reported present: the oracle is open", tc.token)
		}
		_, ownMissing := miss[own]
		if tc.token == "rest" && ownMissing {
			t.Errorf("restore job: a chunk of its own image reported missing")
		}
		if tc.token == "cap" && !ownMissing {
			t.Errorf("capture job of cap: pub's chunk reported present")
		}
	}
	// Without ?image= a job gets nothing at all.
	if _, err := s.client("rest", "").Missing(t.Context(), ask); err == nil {
		t.Fatal("missing without ?image= accepted for a job token")
	} else {
		wantStatus(t, err, http.StatusForbidden, "missing without ?image=")
	}
}

// A capture job publishes only manifests whose chunks it uploaded (and
// so proved it holds) or may read: naming another image's chunks by hash
// is refused; uploading their content first works (dedupe on disk).
func TestJobPublishForeignChunksRefused(t *testing.T) {
	s := newScopedEnv(t, nil)
	secret := s.publishSeed(t, "secret", 31)
	stolen := *secret
	stolen.Name = "cap"
	job := s.client("cap", "cap")
	err := job.Publish(t.Context(), &stolen)
	wantStatus(t, err, http.StatusForbidden, "publish of a manifest naming chunks the job never uploaded")
	if _, err := s.repo.Manifest("cap"); !errors.Is(err, image.ErrNotFound) {
		t.Fatalf("image cap exists after a refused publish: %v", err)
	}
	// A garbage body for an existing chunk does not count as an upload.
	h := secret.ChunkHashes()[0]
	resp := do(t, "PUT", s.srv.URL+"/api/v1/chunks/"+h.String()+"?image=cap", "cap", strings.NewReader("not the chunk"))
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnprocessableEntity {
		t.Fatalf("job PUT of a bogus body for an existing chunk = %s, want 422", resp.Status)
	}
	if err := job.Publish(t.Context(), &stolen); err == nil {
		t.Fatal("publish accepted after a bogus upload")
	}
	// Uploading the real content of every chunk proves possession.
	for _, c := range secret.ChunkHashes() {
		data, err := s.repo.Get(t.Context(), c, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := job.Put(t.Context(), c, data); err != nil {
			t.Fatal(err)
		}
	}
	if err := job.Publish(t.Context(), &stolen); err != nil {
		t.Fatalf("publish after uploading every chunk: %v", err)
	}
	// A restore job never publishes; a capture job not under its name.
	wantStatus(t, s.client("rest", "pub").Publish(t.Context(), secret), http.StatusForbidden, "restore job publish")
	wantStatus(t, job.Publish(t.Context(), secret), http.StatusForbidden, "capture job publishing another name")
}

// Jobs never import, remove, roll back or collect garbage.
func TestJobAdminActionsRefused(t *testing.T) {
	s := newScopedEnv(t, nil)
	s.publishSeed(t, "cap", 41)
	s.publishSeed(t, "cap", 42)
	var tar bytes.Buffer
	if _, err := s.c.Export(t.Context(), "cap", &tar); err != nil {
		t.Fatal(err)
	}
	for _, tok := range []string{"cap", "rest"} {
		c := s.client(tok, "cap")
		_, err := c.Import(t.Context(), bytes.NewReader(tar.Bytes()), "copy")
		wantStatus(t, err, http.StatusForbidden, tok+" job import")
		wantStatus(t, c.Remove(t.Context(), "cap"), http.StatusForbidden, tok+" job remove")
		wantStatus(t, c.Remove(t.Context(), "cap@1"), http.StatusForbidden, tok+" job remove of a version")
		_, err = c.Rollback(t.Context(), "cap", 1)
		wantStatus(t, err, http.StatusForbidden, tok+" job rollback")
		_, err = c.GC(t.Context())
		wantStatus(t, err, http.StatusForbidden, tok+" job gc")
	}
	vs, err := s.c.Versions(t.Context(), "cap")
	if err != nil || vs.Current != 2 || len(vs.Versions) != 2 {
		t.Fatalf("versions after refused job actions: %+v %v", vs, err)
	}
}

// A capture publishes version N+1; a restore job pinned to the version
// current when it started keeps getting it; rollback and NAME@N work.
func TestCaptureAddsVersionRestorePinned(t *testing.T) {
	s := newScopedEnv(t, nil)
	v1 := s.publishSeed(t, "cap", 51)
	s.pin("cap@1") // the restore job started now: jobs.Service pinned cap@1

	// The capture job captures another disk into "cap".
	src, layout := synthDisk(t, 52)
	job := s.client("cap", "cap")
	v2 := capture(t, src, layout, job, "cap")
	if err := job.Publish(t.Context(), v2); err != nil {
		t.Fatalf("capture job publish: %v", err)
	}
	vs, err := s.c.Versions(t.Context(), "cap")
	if err != nil || vs.Current != 2 || len(vs.Versions) != 2 {
		t.Fatalf("versions after capture: %+v %v", vs, err)
	}
	if m, err := s.c.Manifest(t.Context(), "cap"); err != nil || !m.Created.Equal(v2.Created) {
		t.Fatalf("cap is not the new capture: %v", err)
	}
	// The capture's upload record is gone once it published.
	if up, err := s.repo.Uploads(5); err != nil || len(up) != 0 {
		t.Fatalf("upload record after publish: %d entries, %v", len(up), err)
	}

	// The pinned restore job asks for "cap" and gets version 1.
	rest := s.client("rest", "cap")
	m, err := rest.Manifest(t.Context(), "cap")
	if err != nil || !m.Created.Equal(v1.Created) {
		t.Fatalf("pinned restore got another version: %v", err)
	}
	if _, err := restore(t.Context(), t, m, rest); err != nil {
		t.Fatalf("pinned restore: %v", err)
	}
	if _, err := rest.Manifest(t.Context(), "cap@2"); err == nil {
		t.Fatal("a job pinned to cap@1 read cap@2")
	}
	resp := do(t, "GET", s.srv.URL+"/api/v1/chunks/"+only(t, v2, v1).String()+"?image=cap", "rest", nil)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("pinned job reading a chunk of version 2 = %s, want 403", resp.Status)
	}

	// NAME@N everywhere: manifest, restore, verify, export.
	at1 := s.client("", "cap@1")
	m1, err := at1.Manifest(t.Context(), "cap@1")
	if err != nil || !m1.Created.Equal(v1.Created) {
		t.Fatalf("manifest cap@1: %v", err)
	}
	if _, err := restore(t.Context(), t, m1, at1); err != nil {
		t.Fatalf("restore cap@1: %v", err)
	}
	if r, err := s.c.Verify(t.Context(), "cap@1"); err != nil || !r.OK {
		t.Fatalf("verify cap@1: %+v %v", r, err)
	}
	var tar bytes.Buffer
	if _, err := s.c.Export(t.Context(), "cap@1", &tar); err != nil {
		t.Fatal(err)
	}
	if info, err := s.c.Import(t.Context(), &tar, "cap-v1"); err != nil || info.Version != 1 {
		t.Fatalf("import of the export of cap@1: %+v %v", info, err)
	}

	// Rollback makes version 1 current again; version 2 stays.
	rb, err := s.c.Rollback(t.Context(), "cap", 0)
	if err != nil || rb.Current != 1 || len(rb.Versions) != 2 {
		t.Fatalf("rollback: %+v %v", rb, err)
	}
	if m, err := s.c.Manifest(t.Context(), "cap"); err != nil || !m.Created.Equal(v1.Created) {
		t.Fatalf("cap after rollback is not version 1: %v", err)
	}
	_, err = s.c.Rollback(t.Context(), "cap", 0)
	wantStatus(t, err, http.StatusConflict, "rollback past the oldest version")
	if rb, err := s.c.Rollback(t.Context(), "cap", 2); err != nil || rb.Current != 2 {
		t.Fatalf("rollback --to 2: %+v %v", rb, err)
	}
	// Removing one version keeps the others; the next capture is 3.
	if err := s.c.Remove(t.Context(), "cap@1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.c.Manifest(t.Context(), "cap@1"); !errors.Is(err, image.ErrNotFound) {
		t.Fatalf("cap@1 after removal: %v", err)
	}
	v3 := s.publishSeed(t, "cap", 53)
	vs, err = s.c.Versions(t.Context(), "cap")
	if err != nil || vs.Current != 3 || len(vs.Versions) != 2 || vs.Versions[1].Version != 3 {
		t.Fatalf("versions after removing 1 and capturing again: %+v %v", vs, err)
	}
	_ = v3
}

// An existing repository (one manifest.json per image) keeps working: it
// becomes version 1 when opened.
func TestOldLayoutMigrated(t *testing.T) {
	dir := tmpDir(t)
	repo, err := image.OpenRepo(dir, image.RepoOptions{GCGrace: -1})
	if err != nil {
		t.Fatal(err)
	}
	src, layout := synthDisk(t, 61)
	m := capture(t, src, layout, repo, "old")
	if err := repo.Publish(t.Context(), m); err != nil {
		t.Fatal(err)
	}
	// Rewrite it in the layout of earlier releases.
	data, err := os.ReadFile(filepath.Join(dir, "images", "old", "versions", "1.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(dir, "images", "old")); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "images", "old"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "images", "old", "manifest.json"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	repo2, err := image.OpenRepo(dir, image.RepoOptions{GCGrace: -1})
	if err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{"old", "old@1"} {
		if got, err := repo2.Manifest(ref); err != nil || !got.Created.Equal(m.Created) {
			t.Fatalf("manifest %s after migration: %v", ref, err)
		}
	}
	if st, err := repo2.GC(t.Context()); err != nil || st.Removed != 0 {
		t.Fatalf("gc after migration removed %d chunks: %v", st.Removed, err)
	}
	if err := repo2.Verify(t.Context(), "old", 2); err != nil {
		t.Fatal(err)
	}
}

// Past imaging.max_repo_size uploads and imports are refused with 507 and
// a message naming the sizes; the capture fails with it.
func TestQuotaRefusesWith507(t *testing.T) {
	s := newScopedEnv(t, nil)
	src, layout := synthDisk(t, 71)
	s.publishSeed(t, "first", 72)
	var tar bytes.Buffer
	if _, err := s.c.Export(t.Context(), "first", &tar); err != nil {
		t.Fatal(err)
	}
	u, err := s.repo.Usage(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	// Reopen the same directory with a limit just above what it holds.
	limit := u.StoredBytes + 1000
	repo, err := image.OpenRepo(s.repo.Root(), image.RepoOptions{GCGrace: -1, MaxBytes: limit})
	if err != nil {
		t.Fatal(err)
	}
	s.h = &httpstore.Handler{Repo: repo, Access: func(r *http.Request) httpstore.Access {
		if r.Header.Get("Authorization") == "Bearer cap" {
			return httpstore.Access{Job: 5, Image: "cap", Capture: true}
		}
		return httpstore.Access{Admin: true}
	}}
	mux := http.NewServeMux()
	for _, p := range s.h.Prefixes() {
		mux.Handle(p, s.h)
	}
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	job := &httpstore.Client{BaseURL: srv.URL, Token: "cap", Image: "cap", Attempts: 3}
	f, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	_, err = image.Capture(t.Context(), f, layout, job, image.CaptureOptions{Name: "cap", ChunkSize: chunkSize, Workers: 2})
	wantStatus(t, err, http.StatusInsufficientStorage, "capture past the quota")
	msg := err.Error()
	for _, want := range []string{"quota", "max_repo_size", fmt.Sprintf("limit %d bytes", limit)} {
		if !strings.Contains(msg, want) {
			t.Errorf("quota error %q does not say %q", msg, want)
		}
	}
	if !strings.Contains(msg, "bytes stored") {
		t.Errorf("quota error %q does not name the stored size", msg)
	}
	// An import that adds nothing new still fits; one of new content not.
	admin := &httpstore.Client{BaseURL: srv.URL, Attempts: 1}
	if _, err := admin.Import(t.Context(), bytes.NewReader(tar.Bytes()), "same-chunks"); err != nil {
		t.Fatalf("import of chunks already stored: %v", err)
	}
	local, err := image.OpenRepo(tmpDir(t), image.RepoOptions{})
	if err != nil {
		t.Fatal(err)
	}
	src2, layout2 := synthDisk(t, 73)
	m2 := capture(t, src2, layout2, local, "new")
	if err := local.Publish(t.Context(), m2); err != nil {
		t.Fatal(err)
	}
	var tar2 bytes.Buffer
	if err := local.Export(t.Context(), "new", &tar2); err != nil {
		t.Fatal(err)
	}
	_, err = admin.Import(t.Context(), &tar2, "")
	wantStatus(t, err, http.StatusInsufficientStorage, "import past the quota")
	if l, err := admin.List(t.Context()); err != nil || l.MaxBytes != limit {
		t.Fatalf("list: max_bytes %+v %v", l, err)
	}
}

// A chunk upload never allocates its declared Content-Length: a client
// that declares 60 MiB, sends 1 KiB and stalls costs about what it sent.
func TestStalledUploadDoesNotAllocateDeclaredSize(t *testing.T) {
	s := newScopedEnv(t, nil)
	done := make(chan struct{}, 1)
	started := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		s.h.ServeHTTP(w, r)
		done <- struct{}{}
	}))
	t.Cleanup(srv.Close)
	const declared = 60 << 20
	var hash image.Hash
	hash[0] = 1

	measure := func(token string) uint64 {
		conn, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		fmt.Fprintf(conn, "PUT /api/v1/chunks/%s?image=cap HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n", hash, token, declared)
		if _, err := conn.Write(bytes.Repeat([]byte{0x28}, 1024)); err != nil {
			t.Fatal(err)
		}
		<-started
		// The stall ends when the client goes away: the handler's read
		// fails and it returns (deterministic, no timing).
		conn.(*net.TCPConn).CloseWrite()
		<-done
		runtime.ReadMemStats(&after)
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err == nil {
			resp.Body.Close()
		}
		return after.TotalAlloc - before.TotalAlloc
	}
	for _, tok := range []string{"admin", "cap"} {
		if got := measure(tok); got > 8<<20 {
			t.Errorf("%s: a stalled upload declaring %d bytes allocated %d bytes", tok, declared, got)
		}
	}
}

// MissingRequest bodies are bounded too.
func TestMissingBodyBounded(t *testing.T) {
	s := newScopedEnv(t, nil)
	big := strings.NewReader(`{"hashes":["` + strings.Repeat("a", 8<<20) + `"]}`)
	resp := do(t, "POST", s.srv.URL+"/api/v1/chunks/missing", "", big)
	defer resp.Body.Close()
	var eb httpstore.ErrorBody
	_ = json.NewDecoder(resp.Body).Decode(&eb)
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("8 MiB missing body = %s (%s), want 413", resp.Status, eb.Error)
	}
}

// After a capture cut short (the server killed mid-upload, restarted),
// GC reclaims its chunks and the temporary files left behind once its
// job is no longer open, but keeps everything a running capture uploaded
// or was told is present, though no manifest references it yet.
func TestGCInterruptedCaptureKeepsRunningOne(t *testing.T) {
	s := newScopedEnv(t, nil)
	base := s.publishSeed(t, "cap2", 81) // cap2's version 1

	// Job 5 (cap) uploads everything, then "dies" before publishing.
	src, layout := synthDisk(t, 82)
	dead := capture(t, src, layout, s.client("cap", "cap"), "cap")
	// Job 8 (cap2) is still running: it uploaded new chunks and was told
	// that cap2@1's chunks are present.
	src2, layout2 := synthDisk(t, 83)
	running := capture(t, src2, layout2, s.client("cap2", "cap2"), "cap2")
	if _, err := s.client("cap2", "cap2").Missing(t.Context(), base.ChunkHashes()); err != nil {
		t.Fatal(err)
	}
	// What a kill -9 leaves: temp files of a Put, a publish, a remove.
	root := s.repo.Root()
	temps := []string{
		filepath.Join(root, "chunks", "ab", ".tmp-123"),
		filepath.Join(root, "images", "cap2", ".tmp-456"),
		filepath.Join(root, "images", "cap2", "versions", ".tmp-789"),
		filepath.Join(root, "tmp", "rm-old-1", "old", "manifest.json"),
	}
	for _, p := range temps {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("half"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// The admin removes cap2@1 meanwhile: the running capture still
	// needs its chunks.
	s.publishSeed(t, "cap2", 84)
	if err := s.c.Remove(t.Context(), "cap2@1"); err != nil {
		t.Fatal(err)
	}

	// Restart: the repository opened again, job 5 failed, job 8 open.
	repo, err := image.OpenRepo(root, image.RepoOptions{GCGrace: -1, OpenJob: func(_ context.Context, id int64) (bool, error) {
		return id == 8, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	h := &httpstore.Handler{Repo: repo, Access: func(r *http.Request) httpstore.Access {
		if r.Header.Get("Authorization") == "Bearer cap2" {
			return httpstore.Access{Job: 8, Image: "cap2", Capture: true}
		}
		return httpstore.Access{Admin: true}
	}}
	mux := http.NewServeMux()
	for _, p := range h.Prefixes() {
		mux.Handle(p, h)
	}
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	st, err := (&httpstore.Client{BaseURL: srv.URL, Attempts: 1}).GC(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if st.Removed == 0 || st.FreedBytes == 0 || st.RecordsDropped != 1 || st.TempRemoved < len(temps)-1 {
		t.Fatalf("gc stats %+v", st)
	}
	keep := map[image.Hash]bool{}
	for _, m := range []*image.Manifest{running, base} {
		for _, c := range m.ChunkHashes() {
			keep[c] = true
		}
	}
	for _, c := range running.ChunkHashes() {
		if _, err := os.Stat(chunkFile(root, c)); err != nil {
			t.Errorf("running capture's chunk %s removed: %v", c, err)
		}
	}
	for _, c := range base.ChunkHashes() {
		if _, err := os.Stat(chunkFile(root, c)); err != nil {
			t.Errorf("chunk %s the running capture was told is present removed: %v", c, err)
		}
	}
	gone := 0
	for _, c := range dead.ChunkHashes() {
		if keep[c] {
			continue
		}
		if _, err := os.Stat(chunkFile(root, c)); err == nil {
			t.Errorf("orphan chunk %s of the dead capture kept", c)
		}
		gone++
	}
	if gone == 0 {
		t.Fatal("the dead capture had no chunk of its own")
	}
	for _, p := range temps {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("temp file %s kept", p)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "uploads", "5")); err == nil {
		t.Error("the dead job's upload record kept")
	}
	// The running capture publishes fine after the restart and the GC:
	// its upload record survived both.
	job := &httpstore.Client{BaseURL: srv.URL, Token: "cap2", Image: "cap2", Attempts: 1}
	if err := job.Publish(t.Context(), running); err != nil {
		t.Fatalf("running capture's publish after GC: %v", err)
	}
	if err := repo.Verify(t.Context(), "cap2", 2); err != nil {
		t.Fatal(err)
	}
}

func chunkFile(root string, h image.Hash) string {
	s := h.String()
	return filepath.Join(root, "chunks", s[:2], s)
}
