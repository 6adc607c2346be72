package cli_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/preboot/preboot/store"
)

// TestAgentMedia drives `preboot agent media` (what a boot from the manual
// preboot medium runs) against a real server: with nothing assigned it
// shows the manual menu; "2" restores a named image through the admin API
// quick task (token asked at the console), the server then hands the
// job back and the agent restores it onto a disk-image file; the device
// is registered with its job, as after a PXE boot.
func TestAgentMedia(t *testing.T) {
	s := newServer(t)
	s.addImage(t, "lab")
	tok := s.adminToken(t, "media")
	const mac = "52:54:00:6d:ed:1a"
	target := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(target, make([]byte, 4<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	c := newCLI(t)
	// Nothing assigned: the menu; "4" asks again, "7" powers off (no
	// --reboot: it only says so).
	c.stdin = "4\n7\n"
	r := c.run(t, "agent", "media", "--server", s.url, "--mac", mac, "--device", target)
	if r.code != 0 || !strings.Contains(r.stdout, "done (after: poweroff)") || strings.Count(r.stderr, "Preboot manual mode") != 2 ||
		!strings.Contains(r.stderr, "nothing assigned") {
		t.Fatalf("manual menu: %s", r)
	}
	// A wrong token: refused, nothing assigned, back to the menu.
	c.stdin = "2\nlab\nnot-a-token\n7\n"
	r = c.run(t, "agent", "media", "--server", s.url, "--mac", mac, "--device", target)
	if r.code != 0 || !strings.Contains(r.stderr, "restore lab") || !strings.Contains(r.stdout, "after: poweroff") {
		t.Fatalf("bad token: %s", r)
	}
	if strings.Contains(r.stderr, tok) || strings.Contains(r.stdout, "not-a-token") {
		t.Error("a token was echoed")
	}
	c.stdin = "2\nlab\n" + tok + "\n"
	r = c.run(t, "agent", "media", "--server", s.url, "--mac", mac, "--device", target)
	if r.code != 0 || !strings.Contains(r.stderr, "assigned bundle restore-lab") || !strings.Contains(r.stderr, "job ") ||
		!strings.Contains(r.stdout, "done (after: reboot)") {
		t.Fatalf("restore from the menu: %s", r)
	}
	ctx := context.Background()
	js, err := s.st.Jobs(ctx, store.JobFilter{MAC: mac})
	if err != nil || len(js) != 1 || js[0].Kind != store.KindImageRestore || js[0].State != store.JobSucceeded {
		t.Fatalf("jobs %+v %v", js, err)
	}
	d, err := s.st.Device(ctx, mac)
	if err != nil || d.IP != "127.0.0.1" {
		t.Errorf("device %+v %v", d, err)
	}
	// The file now holds the image's data (the second MiB is random).
	b, _ := os.ReadFile(target)
	zero := true
	for _, x := range b[1<<20 : 2<<20] {
		zero = zero && x == 0
	}
	if zero {
		t.Error("the restore wrote nothing")
	}
	// Bad input: a server URL that does not parse.
	c.stdin = ""
	c.fails(t, "server URL", "agent", "media", "--server", "http://[::1", "--mac", mac)
}
