package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/preboot/preboot/config"
	"github.com/preboot/preboot/disk"
	"github.com/preboot/preboot/image"
	"github.com/preboot/preboot/image/httpstore"
	"github.com/preboot/preboot/jobs"
	"github.com/preboot/preboot/policy"
	"github.com/preboot/preboot/store"
	"github.com/preboot/preboot/store/sqlite"
)

// imageServer is the server's handler on a real listener, wired as Run
// wires it (repository with OpenJob, jobs pinning restores), and an admin
// token.
func imageServer(t *testing.T) (srv *httptest.Server, js *jobs.Service, repo *image.Repo, admin string) {
	t.Helper()
	ctx := context.Background()
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	if err := cfg.Finish(); err != nil {
		t.Fatal(err)
	}
	st, err := sqlite.Open(ctx, cfg.Store.Path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	log := slog.New(slog.DiscardHandler)
	repo, err = OpenRepo(cfg, st, log)
	if err != nil {
		t.Fatal(err)
	}
	js = &jobs.Service{Store: st, ResolveImage: pinImage(repo)}
	pol := &policy.Engine{Store: st, Boot: cfg.Boot, DefaultSettings: policy.SettingsFromConfig(cfg.Menu), Jobs: js, Imaging: cfg.Imaging, TFTPRoot: cfg.TFTP.Root}
	if err := os.MkdirAll(cfg.TFTP.Root, 0o755); err != nil {
		t.Fatal(err)
	}
	h := Handler(st, pol, js, repo, cfg, prometheus.NewRegistry(), nil, log)
	code, body := callLocal(h, "POST", "/api/v1/tokens", `{"name":"ops"}`)
	if code != http.StatusCreated {
		t.Fatalf("token create: %d %s", code, body)
	}
	var tok struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal([]byte(body), &tok); err != nil {
		t.Fatal(err)
	}
	srv = httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv, js, repo, tok.Token
}

// captureSeed captures a small synthetic disk (content from seed) into
// name through st and returns its manifest (not published).
func captureSeed(t *testing.T, st image.ChunkStore, name string, seed byte) *image.Manifest {
	t.Helper()
	const size = 4 << 20
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i*7+i>>9) ^ seed
	}
	part := image.Area{Index: 1, Start: 1 << 20, Size: 2 << 20, FSType: "ext4",
		Used: []disk.Extent{{Offset: 0, Length: 256 << 10}, {Offset: 1 << 20, Length: 64 << 10}}}
	layout := image.Layout{DiskSize: size, Partitions: []image.Area{part}, Regions: image.Gaps(size, []image.Area{part})}
	m, err := image.Capture(t.Context(), bytes.NewReader(data), layout, st, image.CaptureOptions{Name: name, ChunkSize: 256 << 10, Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func restoreTo(t *testing.T, m *image.Manifest, st image.ChunkStore) error {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "disk")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return image.Restore(t.Context(), f, m, st, image.RestoreOptions{TargetSize: 4 << 20, Workers: 2})
}

func statusOf(err error) int {
	var se *httpstore.StatusError
	if errors.As(err, &se) {
		return se.StatusCode
	}
	return 0
}

// Through the whole server: a restore job pins the version current when
// it starts; a capture adds a version and never changes what that job
// restores; job tokens stay inside their image; versions a bundle
// restores cannot be removed.
func TestImageVersionsThroughTheServer(t *testing.T) {
	ctx := context.Background()
	srv, js, repo, tok := imageServer(t)
	admin := &httpstore.Client{BaseURL: srv.URL, Token: tok, Attempts: 1}
	v1 := captureSeed(t, admin, "mine", 1)
	if err := admin.Publish(ctx, v1); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Store.CreateBundle(ctx, store.Bundle{Name: "r", Kind: store.KindImageRestore, Params: json.RawMessage(`{"image":"mine"}`)}); err != nil {
		t.Fatal(err)
	}
	restore := jobs.StartRequest{MAC: "02:00:00:00:00:02", Bundle: store.Bundle{Name: "r", Kind: store.KindImageRestore, Params: json.RawMessage(`{"image":"mine"}`)}}
	rj, rtok, err := js.Start(ctx, restore)
	if err != nil {
		t.Fatal(err)
	}
	if rj.Image != "mine@1" {
		t.Fatalf("restore job's image = %q, want the pinned mine@1", rj.Image)
	}

	// The capture job publishes version 2.
	capture := jobs.StartRequest{MAC: "02:00:00:00:00:01", Bundle: store.Bundle{Name: "c", Kind: store.KindImageCapture, Params: json.RawMessage(`{"image":"mine"}`)}}
	cj, ctok, err := js.Start(ctx, capture)
	if err != nil {
		t.Fatal(err)
	}
	capc := &httpstore.Client{BaseURL: srv.URL, Token: ctok, Image: "mine", Replace: true, Attempts: 1}
	v2 := captureSeed(t, capc, "mine", 2)
	if err := capc.Publish(ctx, v2); err != nil {
		t.Fatalf("capture job publish: %v", err)
	}
	if vs, err := admin.Versions(ctx, "mine"); err != nil || vs.Current != 2 {
		t.Fatalf("versions: %+v %v", vs, err)
	}
	if _, err := os.Stat(repo.Root() + "/uploads/" + itoa(cj.ID)); err == nil {
		t.Fatal("the capture's upload record outlived its publish")
	}

	// The restore job, asking for "mine" as its bundle says, gets version 1.
	res := &httpstore.Client{BaseURL: srv.URL, Token: rtok, Image: "mine", Attempts: 1}
	m, err := res.Manifest(ctx, "mine")
	if err != nil || !m.Created.Equal(v1.Created) {
		t.Fatalf("pinned restore manifest: %v", err)
	}
	if err := restoreTo(t, m, res); err != nil {
		t.Fatalf("pinned restore: %v", err)
	}
	// Without ?image= its token reads no chunk; v2's chunks are out of reach.
	noImage := &httpstore.Client{BaseURL: srv.URL, Token: rtok, Attempts: 1}
	if _, err := noImage.Get(ctx, v1.ChunkHashes()[0], nil); statusOf(err) != http.StatusForbidden {
		t.Fatalf("chunk read without ?image= by a job token: %v", err)
	}
	if _, err := res.Manifest(ctx, "mine@2"); statusOf(err) != http.StatusForbidden {
		t.Fatalf("pinned job reading mine@2: %v", err)
	}
	// Jobs never delete, import, roll back or collect garbage.
	for _, c := range []*httpstore.Client{capc, res} {
		if err := c.Remove(ctx, "mine"); statusOf(err) != http.StatusForbidden {
			t.Fatalf("job remove: %v", err)
		}
		if _, err := c.Rollback(ctx, "mine", 1); statusOf(err) != http.StatusForbidden {
			t.Fatalf("job rollback: %v", err)
		}
		if _, err := c.GC(ctx); statusOf(err) != http.StatusForbidden {
			t.Fatalf("job gc: %v", err)
		}
	}

	// Removal: the image and its current version are restored by bundle
	// r (409); a bundle pinning mine@1 protects version 1.
	for _, ref := range []string{"mine", "mine@2"} {
		if err := admin.Remove(ctx, ref); statusOf(err) != http.StatusConflict || !strings.Contains(err.Error(), "bundle r") {
			t.Fatalf("admin remove %s while bundle r restores mine: %v", ref, err)
		}
	}
	if _, err := js.Store.CreateBundle(ctx, store.Bundle{Name: "r1", Kind: store.KindImageRestore, Params: json.RawMessage(`{"image":"mine@1"}`)}); err != nil {
		t.Fatalf("a restore bundle of mine@1: %v", err)
	}
	if err := admin.Remove(ctx, "mine@1"); statusOf(err) != http.StatusConflict || !strings.Contains(err.Error(), "bundle r1") {
		t.Fatalf("admin remove mine@1 while bundle r1 restores it: %v", err)
	}
	// Rollback: the next restore job pins version 1 again.
	if vs, err := admin.Rollback(ctx, "mine", 0); err != nil || vs.Current != 1 {
		t.Fatalf("rollback: %+v %v", vs, err)
	}
	if _, err := js.Finish(ctx, rj.ID, true, ""); err != nil {
		t.Fatal(err)
	}
	rj2, _, err := js.Start(ctx, restore)
	if err != nil || rj2.Image != "mine@1" {
		t.Fatalf("restore after rollback pinned %q, %v", rj2.Image, err)
	}
	// GC by the API, as an administrator.
	if st, err := admin.GC(ctx); err != nil || st.Removed != 0 {
		t.Fatalf("gc: %+v %v", st, err)
	}
	// Restore bundles with a bad version are refused.
	resp, err := http.DefaultClient.Do(mustReq(t, "POST", srv.URL+"/api/v1/bundles", tok,
		`{"name":"bad","kind":"image-restore","params":{"image":"mine@0"}}`))
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnprocessableEntity && resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("bundle of mine@0: %s", resp.Status)
	}
}

func mustReq(t *testing.T, method, url, tok, body string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	return req
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// preboot serve collects garbage every imaging.gc_interval: an orphan
// chunk (no manifest, no open job, past the grace period) goes away.
func TestScheduledRepoGC(t *testing.T) {
	dir := t.TempDir()
	repo, err := image.OpenRepo(dir, image.RepoOptions{GCGrace: -1})
	if err != nil {
		t.Fatal(err)
	}
	m := captureSeed(t, repo, "orphan", 3) // chunks stored, never published
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		runRepoGC(ctx, repo, time.Millisecond, slog.New(slog.DiscardHandler))
		close(done)
	}()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		miss, err := repo.Missing(t.Context(), m.ChunkHashes())
		if err != nil {
			t.Fatal(err)
		}
		if len(miss) == len(m.ChunkHashes()) {
			return // every orphan collected
		}
		if time.Now().After(deadline) {
			t.Fatalf("scheduled GC left %d of %d orphan chunks", len(m.ChunkHashes())-len(miss), len(m.ChunkHashes()))
		}
		time.Sleep(5 * time.Millisecond)
	}
}
