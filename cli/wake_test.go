package cli_test

import (
	"strings"
	"testing"
	"time"

	"github.com/preboot/preboot/store"
)

// TestWakeAndSchedules drives device wake, group wake and scheduled
// assignments through the real server.
func TestWakeAndSchedules(t *testing.T) {
	s := newServer(t)
	c := newCLI(t, "PREBOOT_SOCKET="+s.sock)
	const mac, other = "52:54:00:77:00:01", "52:54:00:77:00:02"
	c.ok(t, "device", "add", mac, "--name", "pc1")
	c.ok(t, "bundle", "create", "inv", "--kind", "inventory")
	c.ok(t, "group", "add", "night", "--priority", "5")
	c.ok(t, "group", "member", "add", "night", mac)

	// An unknown device among known ones: nothing sent, no event.
	c.fails(t, "unknown device "+other, "device", "wake", mac, other)
	if evs, _ := s.st.Events(t.Context(), store.EventFilter{Kind: store.EventWake}); len(evs) != 0 {
		t.Fatalf("wake events after a refused wake: %+v", evs)
	}
	// Nothing known of where pc1 is: the configured fallback (loopback
	// here).
	contains(t, c.ok(t, "device", "wake", mac), mac+" (pc1): magic packet sent to 127.255.255.255:9 on lo", "every interface")
	contains(t, c.ok(t, "group", "wake", "night"), mac+" (pc1): magic packet sent to")
	contains(t, c.ok(t, "event", "list", "--device", mac), "wake", "127.255.255.255:9 on lo")
	c.fails(t, "not found", "group", "wake", "nosuch")

	// Schedules: --at in the past or unparsable, --wake without --at.
	c.fails(t, "in the past", "assign", "inv", "--device", mac, "--at", "2001-01-01 10:00")
	c.fails(t, "want RFC 3339", "assign", "inv", "--device", mac, "--at", "tomorrow")
	c.fails(t, "--wake needs --at", "assign", "inv", "--device", mac, "--wake")
	at := time.Now().Add(48 * time.Hour).Truncate(time.Minute)
	out := c.ok(t, "assign", "inv", "--device", mac, "--at", at.Format("2006-01-02 15:04"), "--wake")
	contains(t, out, "scheduled: not before "+at.Format("2006-01-02 15:04"), "wakes the devices")
	out = c.ok(t, "assign", "list", "--scheduled")
	contains(t, out, "AT", at.Format("2006-01-02 15:04")+" + wake")
	c.ok(t, "assign", "inv", "--group", "night", "--at", at.UTC().Format(time.RFC3339))
	var as []store.Assignment
	c.json(t, &as, "assign", "list", "--scheduled")
	if len(as) != 2 || !as[0].At.Equal(at) || !as[0].Wake || as[1].Wake || !as[1].At.Equal(at) {
		t.Fatalf("scheduled assignments: %+v", as)
	}
	if out := c.ok(t, "device", "show", mac); !strings.Contains(out, "scheduled for") {
		t.Fatalf("device show does not say the work is scheduled:\n%s", out)
	}
}
