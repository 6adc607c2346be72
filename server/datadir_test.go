package server

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The data directory is created 0700 (or tightened, with a warning), and
// the TFTP root inside it too.
func TestDataDirModes(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	base := t.TempDir()

	fresh := filepath.Join(base, "fresh")
	if err := secureDataDir(fresh, "", filepath.Join(fresh, "tftp"), log); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{fresh, filepath.Join(fresh, "tftp")} {
		if fi, err := os.Stat(d); err != nil || fi.Mode().Perm() != 0o700 {
			t.Fatalf("%s: %v %v, want 0700", d, fi.Mode().Perm(), err)
		}
	}
	if logs.Len() != 0 {
		t.Errorf("warning for a new directory: %s", logs.String())
	}

	open := filepath.Join(base, "open")
	if err := os.MkdirAll(filepath.Join(open, "tftp"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := secureDataDir(open, "", filepath.Join(open, "tftp"), log); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(open); fi.Mode().Perm() != 0o700 {
		t.Fatalf("existing data dir left at %v", fi.Mode().Perm())
	}
	if !strings.Contains(logs.String(), "open to other users") {
		t.Errorf("no warning: %s", logs.String())
	}

	// A TFTP root elsewhere is the administrator's business.
	elsewhere := filepath.Join(base, "srv-tftp")
	if err := os.Mkdir(elsewhere, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := secureDataDir(filepath.Join(base, "d3"), "", elsewhere, log); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(elsewhere); fi.Mode().Perm() != 0o755 {
		t.Fatalf("TFTP root outside the data dir changed to %v", fi.Mode().Perm())
	}
}
