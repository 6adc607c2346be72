package agent

import (
	"os"
	"path/filepath"
	"testing"
)

func TestReadSecureBoot(t *testing.T) {
	sys := t.TempDir()
	r := hostRoots{sys: sys}
	if s := readSecureBoot(r); s != nil {
		t.Fatalf("no efivarfs: %+v", s)
	}
	v := filepath.Join(sys, secureBootVar)
	if err := os.MkdirAll(filepath.Dir(v), 0o755); err != nil {
		t.Fatal(err)
	}
	// What OVMF with Microsoft's keys enrolled exposes (attributes 6).
	if err := os.WriteFile(v, []byte{6, 0, 0, 0, 1}, 0o644); err != nil {
		t.Fatal(err)
	}
	if s := readSecureBoot(r); s == nil || !s.Enabled || s.Lockdown != "" {
		t.Fatalf("enabled, no securityfs: %+v", s)
	}
	ld := filepath.Join(sys, "kernel/security/lockdown")
	if err := os.MkdirAll(filepath.Dir(ld), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ld, []byte("none [integrity] confidentiality\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if s := readSecureBoot(r); s == nil || !s.Enabled || s.Lockdown != "integrity" {
		t.Fatalf("enabled, integrity: %+v", s)
	}
	if err := os.WriteFile(v, []byte{6, 0, 0, 0, 0}, 0o644); err != nil {
		t.Fatal(err)
	}
	if s := readSecureBoot(r); s == nil || s.Enabled {
		t.Fatalf("disabled: %+v", s)
	}
}
