package server

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/preboot/preboot/bootmedia"
	"github.com/preboot/preboot/policy"
)

// TestMediaISO: /files/preboot.iso is built from the TFTP root's imaging
// environment with the agent's https URL and pin for the address asked,
// kept while the environment is unchanged, and refused with the fix when
// there is no environment.
func TestMediaISO(t *testing.T) {
	if miss := bootmedia.MissingTools(); len(miss) > 0 {
		t.Fatalf("missing %v: apt-get install %s", miss, bootmedia.Packages)
	}
	root, data := t.TempDir(), t.TempDir()
	pin := "sha256:" + strings.Repeat("ab", 32)
	pol := &policy.Engine{AgentServer: agentServer("8443"), AgentFingerprint: pin}
	m := newMediaISO(pol, root, "boot/kernel", "boot/initrd", data, slog.New(slog.DiscardHandler))
	srv := httptest.NewServer(m)
	defer srv.Close()

	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "preboot env build") {
		t.Fatalf("no environment: %d %s", resp.StatusCode, body)
	}

	if err := os.MkdirAll(filepath.Join(root, "boot"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"kernel", "initrd"} {
		if err := os.WriteFile(filepath.Join(root, "boot", f), bytes.Repeat([]byte(f), 50000), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	get := func() []byte {
		t.Helper()
		resp, err := http.Get(srv.URL + "/files/preboot.iso")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("GET: %d %s", resp.StatusCode, b)
		}
		return b
	}
	iso := get()
	if len(iso) < 1<<20 || iso[510] != 0x55 || iso[511] != 0xAA {
		t.Fatalf("not a hybrid image: %d bytes", len(iso))
	}
	files, _ := filepath.Glob(filepath.Join(data, "media", "preboot-*.iso"))
	if len(files) != 1 {
		t.Fatalf("cached media: %v", files)
	}
	st1, _ := os.Stat(files[0])
	if again := get(); !bytes.Equal(again, iso) {
		t.Error("the second download differs")
	}
	if st2, _ := os.Stat(files[0]); !st2.ModTime().Equal(st1.ModTime()) {
		t.Error("the medium was rebuilt for an unchanged environment")
	}
	cfg := filepath.Join(t.TempDir(), "grub.cfg")
	if out, err := exec.Command("xorriso", "-osirrox", "on", "-indev", files[0], "-extract", "/boot/grub/grub.cfg", cfg).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	b, _ := os.ReadFile(cfg)
	want := "preboot.server=https://127.0.0.1:8443 preboot.tls=" + pin + " preboot.media=1"
	if !strings.Contains(string(b), want) {
		t.Errorf("grub.cfg lacks %q:\n%s", want, b)
	}
}
