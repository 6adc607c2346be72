package bootfiles

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
)

func installed(t *testing.T) {
	for _, f := range Signed() {
		if _, err := os.Stat(f.Source); err == nil {
			t.Skipf("%s is installed on this machine: the cache is not used", f.Package)
		}
	}
}

// Packages already unpacked in the cache are staged without apt-get.
func TestStageSignedFromCache(t *testing.T) {
	installed(t)
	t.Setenv("PATH", "") // no apt-get, no dpkg: the cache must do
	cache, root := t.TempDir(), t.TempDir()
	for _, f := range Signed() {
		p := filepath.Join(cache, f.Package, "root", f.Source)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("signed "+f.Name), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := StageSigned(context.Background(), root, cache, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	for _, f := range Signed() {
		b, err := os.ReadFile(filepath.Join(root, f.Name))
		if err != nil || string(b) != "signed "+f.Name {
			t.Fatalf("%s: %q %v", f.Name, b, err)
		}
	}
	// Staged once, the programs stay when the cache is gone.
	if err := os.RemoveAll(cache); err != nil {
		t.Fatal(err)
	}
	if err := StageSigned(context.Background(), root, cache, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatalf("already staged: %v", err)
	}
}

// Without the packages and without apt-get, staging fails with
// ErrSignedMissing and stages nothing (never an unsigned substitute).
func TestStageSignedMissing(t *testing.T) {
	installed(t)
	t.Setenv("PATH", "")
	root := t.TempDir()
	err := StageSigned(context.Background(), root, t.TempDir(), slog.New(slog.DiscardHandler))
	if !errors.Is(err, ErrSignedMissing) {
		t.Fatalf("err %v, want ErrSignedMissing", err)
	}
	if ents, _ := os.ReadDir(root); len(ents) != 0 {
		t.Fatalf("staged %v", ents)
	}
}
