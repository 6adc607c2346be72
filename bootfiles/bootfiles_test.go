package bootfiles

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestStageCopiesNewAndChangedFilesOnly(t *testing.T) {
	ctx := context.Background()
	src, root := t.TempDir(), filepath.Join(t.TempDir(), "tftp")
	a := filepath.Join(src, "a.kpxe")
	if err := os.WriteFile(a, []byte("v1"), 0o644); err != nil {
		t.Fatal(err)
	}
	files := []File{{a, "a.kpxe", "ipxe"}, {filepath.Join(src, "missing.efi"), "sub/missing.efi", "ipxe"}}
	log := slog.New(slog.DiscardHandler)
	missing, err := Stage(ctx, root, files, log)
	if err != nil {
		t.Fatal(err)
	}
	if len(missing) != 1 || missing[0] != "sub/missing.efi" {
		t.Fatalf("missing = %v", missing)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "a.kpxe")); string(b) != "v1" {
		t.Fatalf("staged content %q", b)
	}
	// An admin's own file of another name is never touched; an upgraded package is picked up.
	own := filepath.Join(root, "custom.ipxe")
	if err := os.WriteFile(own, []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(a, []byte("v2-longer"), 0o644); err != nil {
		t.Fatal(err)
	}
	future := time.Now().Add(time.Hour)
	if err := os.Chtimes(a, future, future); err != nil {
		t.Fatal(err)
	}
	if _, err := Stage(ctx, root, files, log); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "a.kpxe")); string(b) != "v2-longer" {
		t.Fatalf("upgrade not picked up: %q", b)
	}
	if b, _ := os.ReadFile(own); string(b) != "mine" {
		t.Fatalf("admin file changed: %q", b)
	}
	// The package removed: the staged copy stays.
	if err := os.Remove(a); err != nil {
		t.Fatal(err)
	}
	missing, err = Stage(ctx, root, files, log)
	if err != nil || len(missing) != 1 {
		t.Fatalf("after removal: %v %v", missing, err)
	}
	if entries, _ := filepath.Glob(filepath.Join(root, ".staging-*")); len(entries) != 0 {
		t.Fatalf("temporary files left: %v", entries)
	}
}

func TestDebianListNamesEveryProgramTheDefaultsHandOut(t *testing.T) {
	names := map[string]bool{}
	for _, f := range Debian() {
		names[f.Name] = true
	}
	for _, want := range []string{"undionly.kpxe", "ipxe.efi", "snponly.efi", "pxelinux.0", "ldlinux.c32"} {
		if !names[want] {
			t.Errorf("Debian() lacks %s", want)
		}
	}
}
