package cli_test

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/preboot/preboot/api"
	"github.com/preboot/preboot/api/sessionstest"
	"github.com/preboot/preboot/mcast"
)

// The session commands, first against the server as the harness builds
// it (no multicast configured: a clear refusal), then against the API
// with a stand-in session manager (the real one is tested in package
// mcast) over TCP with an admin token.
func TestSessionCommands(t *testing.T) {
	s := newServer(t)
	c := newCLI(t, "PREBOOT_SOCKET="+s.sock)
	for _, args := range [][]string{{"session", "list"}, {"session", "show", "s1"}, {"session", "cancel", "s1"}, {"sessions", "list", "-o", "json"}} {
		c.fails(t, "multicast is not configured on this server", args...)
	}

	now := time.Now().UTC()
	fake := sessionstest.New(sessionstest.Running("s2", now), sessionstest.Done("s1", now))
	h := api.New(api.Options{Store: s.st, Auth: &api.Auth{Store: s.st}, Sessions: fake})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	c = newCLI(t, "PREBOOT_SERVER="+srv.URL, "PREBOOT_TOKEN="+s.adminToken(t, "sessions"))

	// list: newest first, receivers by state, progress over all of them.
	out := c.ok(t, "session", "list")
	contains(t, out, "ID", "IMAGE", "STATE", "GROUP", "RECEIVERS", "PROGRESS", "SENT", "REPAIR", "SERVED",
		"lab-base@1", "239.255.12.7:9000", "2: 1 multicast, 1 unicast", "42%", "40.0 MiB", "2.0 MiB", "10.0 MiB",
		"1: 1 done", "100%")
	if i, j := strings.Index(out, "s2 "), strings.Index(out, "s1 "); i < 0 || j < 0 || i > j {
		t.Fatalf("list not newest first:\n%s", out)
	}
	var list []mcast.SessionInfo
	c.json(t, &list, "session", "list")
	if len(list) != 2 || list[0].ID != "s2" || len(list[0].Receivers) != 2 || list[0].Receivers[1].Bytes.Peers != 4<<20 {
		t.Fatalf("list -o json: %+v", list)
	}

	// show: the header, then a row per receiver with its sources.
	out = c.ok(t, "session", "show", "s2")
	contains(t, out, "Session:", "s2", "Image:", "lab-base@1 (16 chunks, 64.0 MiB)", "State:", "running, started 2m ago",
		"Group:", "239.255.12.7:9000 on eth0", "Starts with:", "2 receivers or 5m0s after the first join",
		"Rate cap:", "500 Mbit/s", "Sent:", "40.0 MiB data + 2.0 MiB repair in 31000 packets",
		"Served:", "10.0 MiB by unicast, 3 pointed at peers", "Receivers:",
		"NAME", "ADDR", "STATE", "PROGRESS", "RATE", "LOSS", "MULTICAST", "REPAIR", "PEERS", "UNICAST", "REASON")
	lines := strings.Split(out, "\n")
	row := func(name string) []string {
		for _, l := range lines {
			if f := strings.Fields(l); len(f) > 0 && f[0] == name {
				return f
			}
		}
		t.Fatalf("no row for %s in:\n%s", name, out)
		return nil
	}
	pc1 := strings.Join(row("pc-01"), " ")
	pc2 := strings.Join(row("pc-02"), " ")
	for _, w := range []string{"10.20.0.11", "multicast", "60%", "48.0 MiB/s", "2.1%", "36.0 MiB 2.0 MiB 0 B 0 B -"} {
		if !strings.Contains(pc1, w) {
			t.Errorf("pc-01's row %q lacks %q", pc1, w)
		}
	}
	for _, w := range []string{"10.20.0.12", "unicast", "25%", "20.0 MiB/s", "31.0%", "6.0 MiB 0 B 4.0 MiB 10.0 MiB", "lost 31% of the group's packets (over 20%)"} {
		if !strings.Contains(pc2, w) {
			t.Errorf("pc-02's row %q lacks %q", pc2, w)
		}
	}
	var one mcast.SessionInfo
	c.json(t, &one, "session", "show", "s2")
	if one.ID != "s2" || one.Receivers[0].Name != "pc-01" || one.Receivers[0].Bytes.Repair != 2<<20 || one.SentPackets != 31000 {
		t.Fatalf("show -o json: %+v", one)
	}
	contains(t, c.ok(t, "session", "show", "s1"), "done, ended 50m ago", "Starts with:", "the first receiver", "pc-09", "100%")
	c.fails(t, "session nope: no such session", "session", "show", "nope")
	c.fails(t, "accepts 1 arg", "session", "show")

	// cancel: the session and an admin event; a second time is refused.
	contains(t, c.ok(t, "session", "cancel", "s2"), "session s2 cancelled; its receivers finish over unicast")
	c.json(t, &one, "session", "show", "s2")
	if one.State != mcast.StateCancelled || one.Receivers[0].State != mcast.RecvUnicast {
		t.Fatalf("after cancel: %+v", one)
	}
	contains(t, c.ok(t, "event", "list", "--kind", "admin"), "multicast session s2 cancelled", "token:sessions")
	c.fails(t, "the session has ended", "session", "cancel", "s2")
	c.fails(t, "no such session", "session", "cancel", "nope")
	fake.Put(sessionstest.Running("s3", now))
	c.json(t, &one, "session", "cancel", "s3")
	if one.ID != "s3" || one.State != mcast.StateCancelled {
		t.Fatalf("cancel -o json: %+v", one)
	}

	// Without a token: refused, with the hint.
	c = newCLI(t, "PREBOOT_SERVER="+srv.URL)
	c.fails(t, "give an admin token", "session", "list")
}
