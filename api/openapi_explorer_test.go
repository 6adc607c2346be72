package api_test

import (
	"log/slog"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/preboot/preboot/image"
	"github.com/preboot/preboot/image/httpstore"
	"github.com/preboot/preboot/imagefs/imagefstest"
)

// explorerRoutes are exercised by TestOpenAPIMatchesLiveExplorerAnswers
// (on a disk of real filesystems) rather than with the other image routes.
var explorerRoutes = map[string]bool{
	"GET /images/{name}/partitions":             true,
	"GET /images/{name}/partitions/{n}/files":   true,
	"GET /images/{name}/partitions/{n}/content": true,
	"GET /images/{name}/diff/{other}":           true,
}

// TestOpenAPIMatchesLiveExplorerAnswers validates the image explorer's
// requests and answers with the document, against the real handler and an
// image of real ext4, FAT and NTFS filesystems.
func TestOpenAPIMatchesLiveExplorerAnswers(t *testing.T) {
	imagefstest.Need(t)
	dir := t.TempDir()
	d := imagefstest.Build(t, dir)
	repo, err := image.OpenRepo(filepath.Join(dir, "repo"), image.RepoOptions{GCGrace: -1})
	if err != nil {
		t.Fatal(err)
	}
	imagefstest.Capture(t.Context(), t, d, repo, "lab", 1<<20)
	imagefstest.Capture(t.Context(), t, d, repo, "lab", 1<<20)
	h := &httpstore.Handler{Repo: repo, Logger: slog.New(slog.DiscardHandler)}
	mux := http.NewServeMux()
	for _, p := range h.Prefixes() {
		mux.Handle(p, h)
	}
	l := newLive(t, mux)
	l.token = "pba_unchecked"

	l.do("GET", "/images/lab/partitions", nil, 200, nil)
	l.do("GET", "/images/lab@1/partitions", nil, 200, nil)
	l.bad("GET", "/images/nope/partitions", nil, 404)
	l.do("GET", "/images/lab/partitions/1/files", nil, 200, nil)
	l.do("GET", "/images/lab/partitions/1/files?path=/etc", nil, 200, nil)
	l.do("GET", "/images/lab/partitions/1/files?path=/link", nil, 200, nil)
	l.do("GET", "/images/lab/partitions/3/files?path=/EFI/BOOT", nil, 200, nil)
	l.do("GET", "/images/lab/partitions/6/files", nil, 200, nil)
	l.bad("GET", "/images/lab/partitions/1/files?path=/../x", nil, 400)
	l.bad("GET", "/images/lab/partitions/1/files?path=/nope", nil, 404)
	l.bad("GET", "/images/lab/partitions/9/files", nil, 404)
	l.do("GET", "/images/lab/partitions/1/content?path=/etc/hostname", nil, 200, nil)
	l.bad("GET", "/images/lab/partitions/1/content?path=/etc", nil, 400)
	l.do("GET", "/images/lab/partitions/1/content?path=/big.bin&check=true", nil, 204, nil)
	l.do("GET", "/images/lab@1/diff/lab@2", nil, 200, nil)
	l.bad("GET", "/images/lab/diff/nope", nil, 404)

	for r := range explorerRoutes {
		if !l.covered[r] {
			t.Errorf("%s: not exercised against the real handler", r)
		}
	}
}
