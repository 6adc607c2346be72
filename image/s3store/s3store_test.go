package s3store_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/preboot/preboot/image"
	"github.com/preboot/preboot/image/httpstore"
	"github.com/preboot/preboot/image/repotest"
	"github.com/preboot/preboot/image/s3store"
	"github.com/preboot/preboot/image/s3store/s3test"
)

func TestParseURL(t *testing.T) {
	o, err := s3store.ParseURL("s3://images/site-a/repo?endpoint=10.0.0.5:8333&region=eu-west-1&insecure=true&credentials=/etc/preboot/s3&profile=lab&create=1")
	if err != nil {
		t.Fatal(err)
	}
	want := s3store.Options{Endpoint: "10.0.0.5:8333", Region: "eu-west-1", Insecure: true, Bucket: "images", Prefix: "site-a/repo",
		CredentialsFile: "/etc/preboot/s3", Profile: "lab", Create: true}
	if o != want {
		t.Fatalf("ParseURL = %+v, want %+v", o, want)
	}
	o, err = s3store.ParseURL("s3://images")
	if err != nil || o.Endpoint != "s3.amazonaws.com" || o.Insecure || o.Prefix != "" {
		t.Fatalf("defaults: %+v, %v", o, err)
	}
	for _, bad := range []string{
		"s3://key:secret@images?endpoint=x:1", // credentials never in the URL
		"http://images",
		"s3:///prefix",
		"s3://images?endpoint=x:1&secret=y",
	} {
		if _, err := s3store.ParseURL(bad); err == nil {
			t.Errorf("ParseURL(%q) accepted", bad)
		} else if strings.Contains(err.Error(), "secret@") {
			t.Errorf("ParseURL(%q) error repeats the credentials: %v", bad, err)
		}
	}
}

// TestRepoConformanceS3 runs the repository conformance suite on a bucket
// of a real SeaweedFS: each repository its own prefix.
func TestRepoConformanceS3(t *testing.T) {
	srv := s3test.Start(t)
	// Without create=true a missing bucket is an error at startup, not at
	// the first upload.
	u := strings.Replace(srv.URL("absent", ""), "&create=true", "", 1)
	if _, err := s3store.Open(t.Context(), u); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("Open of a missing bucket: %v", err)
	}
	var n atomic.Int64
	repotest.Run(t, func(t *testing.T, opts image.RepoOptions) *image.Repo {
		b, err := s3store.Open(t.Context(), srv.URL("preboot", fmt.Sprintf("conf/%d", n.Add(1))))
		if err != nil {
			t.Fatal(err)
		}
		return image.OpenRepoBackend(b, opts)
	})
}

// restarting is a ChunkStore (the capturing agent's side) that kills the
// S3 server before its killAt-th upload and starts it again a moment
// later, while the capture goes on.
type restarting struct {
	image.ChunkStore
	srv     *s3test.Server
	killAt  int64
	n       atomic.Int64
	wg      sync.WaitGroup
	restart error
}

func (r *restarting) Put(ctx context.Context, h image.Hash, data []byte) error {
	if r.n.Add(1) == r.killAt {
		r.srv.Kill()
		r.wg.Go(func() {
			time.Sleep(time.Second)
			r.restart = r.srv.Restart(context.Background())
		})
	}
	return r.ChunkStore.Put(ctx, h, data)
}

// TestS3RestartedMidCapture: a capture through the server's HTTP handler
// into a bucket whose server is killed (SIGKILL) after a few uploads and
// restarted: the uploads are retried, the image publishes and verifies,
// and a restore from it is exact.
func TestS3RestartedMidCapture(t *testing.T) {
	srv := s3test.Start(t)
	b, err := s3store.Open(t.Context(), srv.URL("preboot", "restart"))
	if err != nil {
		t.Fatal(err)
	}
	repo := image.OpenRepoBackend(b, image.RepoOptions{GCGrace: -1})
	h := &httpstore.Handler{Repo: repo, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	mux := http.NewServeMux()
	for _, p := range h.Prefixes() {
		mux.Handle(p, h)
	}
	web := httptest.NewServer(mux)
	t.Cleanup(web.Close)
	client := &httpstore.Client{BaseURL: web.URL, Attempts: 12, Backoff: 250 * time.Millisecond, Timeout: 30 * time.Second}

	d := repotest.NewDisk(42)
	st := &restarting{ChunkStore: client, srv: srv, killAt: 3}
	m, err := repotest.Capture(t.Context(), d, st, "restarted")
	st.wg.Wait()
	if err != nil {
		t.Fatalf("capture across the S3 restart: %v", err)
	}
	if st.restart != nil {
		t.Fatalf("restart: %v", st.restart)
	}
	if st.n.Load() < st.killAt {
		t.Fatalf("only %d uploads: the server was never killed mid-capture", st.n.Load())
	}
	if err := client.Publish(t.Context(), m); err != nil {
		t.Fatal(err)
	}
	if err := repo.Verify(t.Context(), "restarted", 2); err != nil {
		t.Fatal(err)
	}
	if err := repotest.Restore(t.Context(), d, m, client); err != nil {
		t.Fatal(err)
	}

	// The store dies between a capture's uploads and its publish: the
	// publish fails, nothing of it appears, and after the restart the
	// retried publish takes version 1 and the repository is whole.
	d2 := repotest.NewDisk(43)
	m2, err := repotest.Capture(t.Context(), d2, repo, "down")
	if err != nil {
		t.Fatal(err)
	}
	srv.Kill()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	_, err = repo.PublishVersion(ctx, m2)
	cancel()
	if err == nil {
		t.Fatal("publish with the store down succeeded")
	}
	if err := srv.Restart(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := repo.Manifest("down"); !errors.Is(err, image.ErrNotFound) {
		t.Fatalf("a publish that failed left %v", err)
	}
	if v, err := repo.PublishVersion(t.Context(), m2); err != nil || v != 1 {
		t.Fatalf("publish after the restart: @%d, %v; want @1", v, err)
	}
	if _, err := repo.GC(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"restarted", "down"} {
		if err := repo.Verify(t.Context(), name, 2); err != nil {
			t.Fatal(err)
		}
	}
}
