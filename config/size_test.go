package config

import (
	"os"
	"path/filepath"
	"testing"
)

func TestByteSize(t *testing.T) {
	for in, want := range map[string]ByteSize{"0": 0, "1024": 1024, "2TiB": 2 << 40, "500GB": 500e9, "1.5GiB": 3 << 29, "10 MiB": 10 << 20, "4k": 4096} {
		got, err := ParseByteSize(in)
		if err != nil || got != want {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "x", "-1GiB", "1XB", "GiB"} {
		if _, err := ParseByteSize(bad); err == nil {
			t.Errorf("ParseByteSize(%q) accepted", bad)
		}
	}
	if s := ByteSize(2 << 40).String(); s != "2TiB" {
		t.Errorf("String = %s", s)
	}
	p := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(p, []byte("imaging:\n  max_repo_size: 750GiB\n  gc_interval: 1h\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := Load(p)
	if err != nil || c.Imaging.MaxRepoSize != 750<<30 || c.Imaging.GCInterval.Hours() != 1 {
		t.Fatalf("Load: %+v %v", c.Imaging, err)
	}
	if Default().Imaging.GCInterval.Hours() != 6 {
		t.Errorf("default gc_interval %s, want 6h", Default().Imaging.GCInterval)
	}
}
