package cli_test

import (
	"testing"
)

// TestBundleLocalBootMethod: `bundle create --kind local-boot --method`
// stores the method, `bundle edit` changes it, show prints it, and a
// method the policy does not know is refused by the server.
func TestBundleLocalBootMethod(t *testing.T) {
	s := newServer(t)
	c := newCLI(t, "PREBOOT_SOCKET="+s.sock)
	c.ok(t, "bundle", "create", "hp-exit", "--kind", "local-boot", "--method", "exit")
	contains(t, c.ok(t, "bundle", "show", "hp-exit"), "local-boot", "exit")
	contains(t, c.ok(t, "bundle", "list"), "boot the local disk (exit)")
	c.ok(t, "bundle", "edit", "hp-exit", "--method", "sanboot")
	contains(t, c.ok(t, "bundle", "list"), "boot the local disk (sanboot)")
	c.fails(t, "method", "bundle", "create", "bad", "--kind", "local-boot", "--method", "reboot")
	c.fails(t, "", "bundle", "create", "inv", "--kind", "inventory", "--method", "exit")
	// Per group: a dynamic group of one model gets the method.
	c.ok(t, "group", "add", "hp", "--priority", "5", "--match", `product = "EliteDesk"`)
	contains(t, c.ok(t, "assign", "hp-exit", "--group", "hp"), "hp-exit", "hp")
}
