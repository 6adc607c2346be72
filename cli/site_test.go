package cli_test

import (
	"strings"
	"testing"

	"github.com/preboot/preboot/store"
)

// Sites and the replication token through the CLI, against a real server.
func TestSitesAndReplicationToken(t *testing.T) {
	s := newServer(t)
	admin := newCLI(t, "PREBOOT_SOCKET="+s.sock)
	pin := "sha256:" + strings.Repeat("0a", 32)
	contains(t, admin.ok(t, "site", "add", "branch-a", "--subnet", "10.20.0.0/16", "--subnet", "2001:db8:20::/48",
		"--server", "https://site-a.example:8443", "--pin", pin), "site branch-a added")
	admin.fails(t, "subnet", "site", "add", "bad", "--subnet", "10.30.0.0", "--server", "https://x:8443")
	admin.fails(t, "required", "site", "add", "bad", "--subnet", "10.30.0.0/16")
	var ss []store.Site
	admin.json(t, &ss, "site", "list")
	if len(ss) != 1 || ss[0].Name != "branch-a" || len(ss[0].Subnets) != 2 || ss[0].Pin != pin {
		t.Fatalf("site list: %+v", ss)
	}
	contains(t, admin.ok(t, "site", "list"), "branch-a", "10.20.0.0/16,2001:db8:20::/48", "https://site-a.example:8443")
	contains(t, admin.ok(t, "site", "rm", "branch-a"), "removed")
	admin.fails(t, "not found", "site", "rm", "branch-a")

	// A replication token lists images, and nothing else.
	tok := strings.TrimSpace(admin.ok(t, "token", "create", "site-a", "--scope", "replication"))
	contains(t, admin.ok(t, "token", "list"), "site-a", "replication")
	admin.fails(t, "scope", "token", "create", "x", "--scope", "root")
	site := newCLI(t, "PREBOOT_SERVER="+s.url, "PREBOOT_TOKEN="+tok)
	site.ok(t, "image", "list")
	site.fails(t, "scope", "device", "list")
	site.fails(t, "scope", "site", "list")
	site.fails(t, "scope", "token", "create", "y")
}
