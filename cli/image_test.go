package cli

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/preboot/preboot/disk"
	"github.com/preboot/preboot/image"
	"github.com/preboot/preboot/image/httpstore"
)

// The image commands run against an httptest server serving a real
// repository through httpstore.Handler (the same handler `preboot serve`
// mounts), without the rest of the server.

func imageServer(t *testing.T) (*image.Repo, string) {
	t.Helper()
	repo, err := image.OpenRepo(t.TempDir(), image.RepoOptions{GCGrace: -1})
	if err != nil {
		t.Fatal(err)
	}
	h := &httpstore.Handler{Repo: repo}
	mux := http.NewServeMux()
	for _, p := range h.Prefixes() {
		mux.Handle(p, h)
	}
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	const size = 6 << 20
	b := make([]byte, size)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 446 {
		b[i] = byte(rng.Uint32())
	}
	for i := 1 << 20; i < 2<<20; i++ {
		b[i] = byte(rng.Uint32())
	}
	parts := []image.Area{{Index: 1, Start: 1 << 20, Size: 5 << 20, FSType: "ext4", Used: []disk.Extent{{Offset: 0, Length: 1 << 20}}}}
	m, err := image.Capture(t.Context(), bytes.NewReader(b), image.Layout{DiskSize: size, Partitions: parts, Regions: image.Gaps(size, parts)},
		repo, image.CaptureOptions{Name: "lab", ChunkSize: 256 << 10, Source: map[string]string{"hostname": "pc1", "mac": "52:54:00:12:34:56"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.Publish(t.Context(), m); err != nil {
		t.Fatal(err)
	}
	return repo, srv.URL
}

// runImage runs `preboot image ARGS... --server URL` in-process.
func runImage(t *testing.T, url string, stdin []byte, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	g := &globals{stdout: &out, stderr: &out}
	cmd := newImage(g)
	cmd.SetArgs(append(args, "--server", url))
	cmd.SetIn(bytes.NewReader(stdin))
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SilenceUsage = true
	cmd.SilenceErrors = true
	err := cmd.ExecuteContext(t.Context())
	return out.String(), err
}

func TestImageCommands(t *testing.T) {
	repo, url := imageServer(t)

	out, err := runImage(t, url, nil, "list")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"NAME", "CREATED", "SOURCE", "LOGICAL", "STORED", "SHARED", "PARTITIONS", "lab", "pc1", "6.0 MiB", "1:ext4"} {
		if !strings.Contains(out, want) {
			t.Fatalf("list lacks %q:\n%s", want, out)
		}
	}
	out, err = runImage(t, url, nil, "list", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var l httpstore.ImageList
	if err := json.Unmarshal([]byte(out), &l); err != nil || len(l.Images) != 1 || l.Images[0].Stored <= 0 {
		t.Fatalf("list -o json: %v\n%s", err, out)
	}

	out, err = runImage(t, url, nil, "show", "lab")
	if err != nil || !strings.Contains(out, "partition 1") || !strings.Contains(out, "region head") || !strings.Contains(out, "mac=52:54:00:12:34:56") {
		t.Fatalf("show: %v\n%s", err, out)
	}
	out, err = runImage(t, url, nil, "verify", "lab")
	if err != nil || !strings.Contains(out, "OK") {
		t.Fatalf("verify: %v\n%s", err, out)
	}

	file := filepath.Join(t.TempDir(), "lab.pbi")
	out, err = runImage(t, url, nil, "export", "lab", file)
	if err != nil || !strings.Contains(out, "exported") {
		t.Fatalf("export: %v\n%s", err, out)
	}
	exported, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := runImage(t, url, nil, "export", "lab", "-")
	if err != nil || stdout != string(exported) {
		t.Fatalf("export to stdout differs from the file (%d vs %d bytes): %v", len(stdout), len(exported), err)
	}
	if _, err := runImage(t, url, nil, "export", "nope", filepath.Join(t.TempDir(), "x.pbi")); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("export of unknown image: %v", err)
	}

	if _, err := runImage(t, url, nil, "import", file); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Fatalf("import over an existing name: %v", err)
	}
	out, err = runImage(t, url, nil, "import", file, "--name", "lab2")
	if err != nil || !strings.Contains(out, "lab2 imported") {
		t.Fatalf("import --name: %v\n%s", err, out)
	}
	if _, err = runImage(t, url, exported, "import", "-", "--name", "lab3"); err != nil {
		t.Fatalf("import from stdin: %v", err)
	}
	out, err = runImage(t, url, nil, "rm", "lab")
	if err != nil || !strings.Contains(out, "removed") {
		t.Fatalf("rm: %v\n%s", err, out)
	}
	if _, err := runImage(t, url, nil, "rm", "lab"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("rm of a removed image: %v", err)
	}
	names, err := repo.List()
	if err != nil || strings.Join(names, ",") != "lab2,lab3" {
		t.Fatalf("repository holds %v, %v", names, err)
	}

	// Damage a chunk: verify fails with a message naming it.
	m, err := repo.Manifest("lab2")
	if err != nil {
		t.Fatal(err)
	}
	h := m.ChunkHashes()[0].String()
	if err := os.WriteFile(filepath.Join(repo.Root(), "chunks", h[:2], h), []byte("bad"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := runImage(t, url, nil, "verify", "lab2"); err == nil || !strings.Contains(err.Error(), h) {
		t.Fatalf("verify of damaged image: %v", err)
	}
}

func TestImageServerDown(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	_, err := runImage(t, url, nil, "list")
	if err == nil || !strings.Contains(err.Error(), url) {
		t.Fatalf("list with no server: %v", err)
	}
}

func TestImgSize(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1288490189: "1.2 GiB", 5 << 40: "5.0 TiB"} {
		if got := size(n); got != want {
			t.Errorf("size(%d) = %q, want %q", n, got, want)
		}
	}
}
