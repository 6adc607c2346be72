package server

import (
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/preboot/preboot/config"
	"github.com/preboot/preboot/image/repotest"
	"github.com/preboot/preboot/image/s3store/s3test"
)

// TestOpenRepoOnS3: imaging.store puts the server's repository in a
// bucket of a real S3 server; images publish there, the status reports
// the store and its usage (no file system figures), and a bad location
// fails the start.
func TestOpenRepoOnS3(t *testing.T) {
	srv := s3test.Start(t)
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.Imaging.Store = srv.URL("preboot", "server")
	if err := cfg.Finish(); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	repo, err := OpenRepo(cfg, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	if repo.Dir() != "" || repo.Root() != "s3://preboot/server" {
		t.Fatalf("repository at %q (dir %q), want s3://preboot/server", repo.Root(), repo.Dir())
	}
	d := repotest.NewDisk(1)
	m, err := repotest.Capture(t.Context(), d, repo, "lab")
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.Publish(t.Context(), m); err != nil {
		t.Fatal(err)
	}
	rs, err := newStatus(cfg, nil, repo).repoStatus(t.Context(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if rs.Path != "s3://preboot/server" || rs.TotalBytes != 0 || rs.UsedByImagesBytes == 0 {
		t.Fatalf("status: %+v", rs)
	}

	bad := cfg
	bad.Imaging.Store = strings.Replace(srv.URL("absent", ""), "&create=true", "", 1)
	if _, err := OpenRepo(bad, nil, log); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("OpenRepo with a missing bucket: %v", err)
	}
}
