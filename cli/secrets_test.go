package cli_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/preboot/preboot/store"
)

// os-install secrets come from files (never argv), need
// --secrets-in-boot-script, are never printed, and survive an edit.
func TestBundleSecretFiles(t *testing.T) {
	s := newServer(t)
	c := newCLI(t, "PREBOOT_SOCKET="+s.sock)
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("s3cr3t-pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"bundle", "create", "ks", "--kind", "os-install", "--kernel", "boot/k", "--cmdline", "ks=https://x/ks.cfg pw={{secret:pw}}", "--secret-file", "pw=" + pw}
	c.fails(t, "secrets_in_boot_script", args...)
	out := c.ok(t, append(args, "--secrets-in-boot-script")...)
	contains(t, out, "bundle ks created")
	if strings.Contains(out, "s3cr3t-pw") {
		t.Fatalf("create prints the secret: %s", out)
	}
	for _, a := range [][]string{{"bundle", "show", "ks"}, {"bundle", "show", "ks", "-o", "json"}, {"bundle", "list"}} {
		if out := c.ok(t, a...); strings.Contains(out, "s3cr3t-pw") || !strings.Contains(out, "secret") {
			t.Fatalf("%v: %s", a, out)
		}
	}
	b, err := s.st.Bundle(t.Context(), "ks")
	if err != nil || !strings.Contains(string(b.Params), `"pw":"s3cr3t-pw"`) {
		t.Fatalf("stored: %s %v", b.Params, err)
	}
	// An edit of other parameters keeps the secret; a second file adds one.
	tok := filepath.Join(dir, "tok")
	if err := os.WriteFile(tok, []byte("t0ken"), 0o600); err != nil {
		t.Fatal(err)
	}
	c.ok(t, "bundle", "edit", "ks", "--cmdline", "ks=https://x/ks2.cfg pw={{secret:pw}} t={{secret:tok}}", "--secret-file", "tok="+tok)
	b, _ = s.st.Bundle(t.Context(), "ks")
	if p := string(b.Params); !strings.Contains(p, `"pw":"s3cr3t-pw"`) || !strings.Contains(p, `"tok":"t0ken"`) || !strings.Contains(p, "ks2.cfg") {
		t.Fatalf("after edit: %s", b.Params)
	}
	c.fails(t, "NAME=PATH", "bundle", "edit", "ks", "--secret-file", "pw")
	c.fails(t, "a script bundle has no such parameter", "bundle", "create", "x", "--kind", "script", "--script-file", pw, "--secret-file", "a="+pw)
	if b.Kind != store.KindOSInstall {
		t.Fatal(b.Kind)
	}
}
