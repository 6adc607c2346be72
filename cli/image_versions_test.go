package cli

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/preboot/preboot/image"
	"github.com/preboot/preboot/image/httpstore"
)

// preboot image versions / rollback / rm NAME@N / show NAME@N / gc.
func TestImageVersionCommands(t *testing.T) {
	repo, url := imageServer(t)
	m, err := repo.Manifest("lab")
	if err != nil {
		t.Fatal(err)
	}
	m2 := *m
	m2.Created = m.Created.Add(time.Hour)
	if err := repo.Publish(t.Context(), &m2); err != nil {
		t.Fatal(err)
	}

	out, err := runImage(t, url, nil, "versions", "lab")
	if err != nil || !strings.Contains(out, "lab@1") || !strings.Contains(out, "lab@2") {
		t.Fatalf("versions: %v\n%s", err, out)
	}
	out, err = runImage(t, url, nil, "versions", "lab", "-o", "json")
	var vs httpstore.ImageVersions
	if err != nil || json.Unmarshal([]byte(out), &vs) != nil || vs.Current != 2 || len(vs.Versions) != 2 {
		t.Fatalf("versions -o json: %v\n%s", err, out)
	}
	if out, err = runImage(t, url, nil, "list"); err != nil || !strings.Contains(out, "VERSION") || !strings.Contains(out, "2/2") {
		t.Fatalf("list shows no version: %v\n%s", err, out)
	}
	if out, err = runImage(t, url, nil, "show", "lab@1"); err != nil || !strings.Contains(out, "Version:") {
		t.Fatalf("show lab@1: %v\n%s", err, out)
	}
	if out, err = runImage(t, url, nil, "rollback", "lab"); err != nil || !strings.Contains(out, "version 1 is current") {
		t.Fatalf("rollback: %v\n%s", err, out)
	}
	if _, err = runImage(t, url, nil, "rollback", "lab"); err == nil || !strings.Contains(err.Error(), "oldest") {
		t.Fatalf("rollback past the oldest: %v", err)
	}
	if out, err = runImage(t, url, nil, "rollback", "lab", "--to", "2"); err != nil || !strings.Contains(out, "version 2 is current") {
		t.Fatalf("rollback --to 2: %v\n%s", err, out)
	}
	if out, err = runImage(t, url, nil, "verify", "lab@1"); err != nil || !strings.Contains(out, "OK") {
		t.Fatalf("verify lab@1: %v\n%s", err, out)
	}
	if out, err = runImage(t, url, nil, "rm", "lab@1"); err != nil || !strings.Contains(out, "removed") {
		t.Fatalf("rm lab@1: %v\n%s", err, out)
	}
	if _, err := repo.Manifest("lab@1"); err == nil {
		t.Fatal("lab@1 still there")
	}
	if _, err := repo.Manifest("lab"); err != nil {
		t.Fatalf("lab after removing version 1: %v", err)
	}

	// gc over the API: nothing to collect (grace 0, every chunk in use).
	if out, err = runImage(t, url, nil, "gc"); err != nil || !strings.Contains(out, "removed 0 chunks") {
		t.Fatalf("gc: %v\n%s", err, out)
	}
}

// preboot image gc --data-dir works on the repository without a server.
func TestImageGCOffline(t *testing.T) {
	dir := t.TempDir()
	repo, err := image.OpenRepo(filepath.Join(dir, "images"), image.RepoOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// An orphan chunk and a temp file from a capture cut short, old enough.
	data := bytes.Repeat([]byte{1}, 4096)
	var h image.Hash
	h[0] = 0xab
	if err := repo.Put(t.Context(), h, data); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(dir, "images", "chunks", "ab", ".tmp-1")
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-2 * time.Hour)
	for _, p := range []string{tmp, filepath.Join(dir, "images", "chunks", "ab", h.String())} {
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
	}
	var out bytes.Buffer
	g := &globals{stdout: &out, stderr: &out}
	cmd := newImage(g)
	cmd.SetArgs([]string{"gc", "--data-dir", dir})
	cmd.SilenceUsage = true
	if err := cmd.ExecuteContext(t.Context()); err != nil {
		t.Fatalf("gc --data-dir: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "removed 1 chunks (4.0 KiB), 1 temporary files") {
		t.Fatalf("gc --data-dir output:\n%s", out.String())
	}
	for _, p := range []string{tmp, filepath.Join(dir, "images", "chunks", "ab", h.String())} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s kept", p)
		}
	}
}
