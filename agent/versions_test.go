package agent

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"github.com/preboot/preboot/image/httpstore"
)

// The agent captures into NAME (each capture a new version) and restores
// NAME or NAME@N over HTTP.
func TestRestoreImageVersionOverHTTP(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	d := buildDisk(t, dir, "gpt", 64*MiB)
	repo, _ := newRepo(t)
	h := &httpstore.Handler{Repo: repo}
	mux := http.NewServeMux()
	for _, p := range h.Prefixes() {
		mux.Handle(p, h)
	}
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	client := func(img string) *httpstore.Client {
		return &httpstore.Client{BaseURL: srv.URL, Image: img, Replace: true, Attempts: 1}
	}
	v1, err := Capture(ctx, Options{Device: d.path, Image: "lab", Store: client("lab")})
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteImageSafe(d.path, &ImageSafe{DeviceID: "changed"}); err != nil {
		t.Fatal(err)
	}
	v2, err := Capture(ctx, Options{Device: d.path, Image: "lab", Store: client("lab")})
	if err != nil {
		t.Fatal(err)
	}
	if vs, err := repo.Versions("lab"); err != nil || len(vs) != 2 {
		t.Fatalf("versions after two captures: %+v %v", vs, err)
	}
	for ref, want := range map[string]string{"lab@1": v1.Created.String(), "lab": v2.Created.String(), "lab@2": v2.Created.String()} {
		dst := filepath.Join(t.TempDir(), "dst.img")
		makeFile(t, dst, 64*MiB)
		m, err := Restore(ctx, Options{Device: dst, Image: ref, Store: client(ref)})
		if err != nil {
			t.Fatalf("restore %s: %v", ref, err)
		}
		if m.Created.String() != want {
			t.Fatalf("restore %s restored the version of %s, want %s", ref, m.Created, want)
		}
	}
}
