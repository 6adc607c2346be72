package browsertest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/preboot/preboot/api"
	"github.com/preboot/preboot/api/sessionstest"
	"github.com/preboot/preboot/mcast"
	"github.com/preboot/preboot/store"
)

// TestSessionsPage is the multicast sessions page against the console and
// the API wired as the server wires them (console sessions, CSRF), in this
// process, with a stand-in session manager (the real one is tested in
// package mcast): one running session with two receivers. The page shows
// each receiver's progress, rate, loss and how it got its bytes, follows
// the session as it moves, and cancels it.
func TestSessionsPage(t *testing.T) {
	exe, err := chromium()
	if err != nil {
		t.Fatal(err)
	}
	site := newConsoleSite(t)
	st, ctx := site.st, context.Background()
	now := time.Now().UTC()
	fake := sessionstest.New(sessionstest.Running("s2", now))

	b := site.open(t, exe, api.Options{Sessions: fake})
	ui := b.first
	shots := screenshotDir(t)

	ui.login("/console/sessions")
	ui.waitFor("the sessions page", `location.pathname === "/console/sessions" && document.body.dataset.page === "sessions"`)
	ui.waitFor("its navigation entry", `!!document.querySelector('a[data-nav="sessions"][aria-current="page"]')`)

	const card = `document.querySelector('section.mc-session[data-session="s2"]')`
	recv := func(id string) string {
		return card + `.querySelector('tr.receiver-row[data-receiver="` + id + `"]')`
	}
	ui.waitFor("the running session with its two receivers", card+` !== null && `+card+`.dataset.state === "running" && `+
		card+`.querySelectorAll("tr.receiver-row").length === 2`)
	if got := ui.str(card + `.querySelector(".session-image").textContent`); got != "lab-base@1" {
		ui.fatalf("the session's image: %q", got)
	}
	for _, want := range []string{"239.255.12.7:9000 on eth0", "when 2 receivers joined, or 5m0s after the first join", "500 Mbit/s",
		"40.0 MiB data + 2.00 MiB repair, 31000 packets", "10.0 MiB, 3 requests pointed at peers"} {
		if got := ui.str(card + `.querySelector(".session-info").textContent`); !strings.Contains(got, want) {
			ui.fatalf("the session's details %q lack %q", got, want)
		}
	}

	// Progress, rate, loss, reason: in the data and on the screen.
	bar := func(id string) string { return recv(id) + `.querySelector(".progress")` }
	progressAt := func(id, pct string) {
		ui.t.Helper()
		text := pct + "%"
		if pct == "100.0" {
			text = "100%"
		}
		ui.waitFor(fmt.Sprintf("receiver %s's progress bar at %s%%", id, pct), fmt.Sprintf(
			`(() => { const b = %s; return !!b && b.dataset.percent === %q && Math.abs(parseFloat(b.querySelector(".progress-bar").style.width) - %s) < 0.01 && b.querySelector(".percent").textContent === %q; })()`,
			bar(id), pct, pct, text))
	}
	progressAt("r1", "60.0")
	progressAt("r2", "25.0")
	for _, c := range []struct{ id, sel, want string }{
		{"r1", ".recv", "pc-01"}, {"r1", ".recv", "10.20.0.11"}, {"r1", ".state", "multicast"},
		{"r1", ".rate", "48.0 MiB/s"}, {"r1", ".loss", "2.1%"}, {"r1", ".progress .phase", "600 MiB of 1000 MiB · 10/16 chunks"},
		{"r2", ".recv", "pc-02"}, {"r2", ".state", "unicast"}, {"r2", ".state .reason", "lost 31% of the group's packets (over 20%)"},
		{"r2", ".rate", "20.0 MiB/s"}, {"r2", ".loss", "31.0%"}, {"r2", ".dropped", "7 refused"},
	} {
		if got := ui.str(recv(c.id) + `.querySelector("` + c.sel + `").textContent`); !strings.Contains(got, c.want) {
			ui.fatalf("receiver %s's %s shows %q, want %q", c.id, c.sel, got, c.want)
		}
	}

	// How each got its bytes: the figures, the legend and the bar's shares.
	const mib = 1 << 20
	sources := func(id string, want map[string]int64) {
		ui.t.Helper()
		var total int64
		for _, n := range want {
			total += n
		}
		src := recv(id) + `.querySelector(".sources")`
		for _, k := range []string{"multicast", "repair", "peers", "unicast"} {
			if got := ui.str(src + `.dataset.` + k); got != fmt.Sprint(want[k]) {
				ui.fatalf("receiver %s: %s bytes %s, want %d", id, k, got, want[k])
			}
			legend := ui.str(src + `.querySelector('.sources-legend li[data-source="` + k + `"]').textContent`)
			if !strings.Contains(legend, k) || !strings.Contains(legend, pbBytes(want[k])) {
				ui.fatalf("receiver %s: the legend of %s says %q", id, k, legend)
			}
			w := ui.num(`parseFloat(` + src + `.querySelector('.sources-bar .src[data-source="` + k + `"]').style.width)`)
			if share := 100 * float64(want[k]) / float64(total); w < share-0.01 || w > share+0.01 {
				ui.fatalf("receiver %s: the bar gives %s %.2f%%, want %.2f%%", id, k, w, share)
			}
			visible := ui.num(src + `.querySelector('.sources-bar .src[data-source="` + k + `"]').getBoundingClientRect().width`)
			if (want[k] > 0) != (visible > 0) {
				ui.fatalf("receiver %s: the %s part of the bar is %.1f px wide for %d bytes", id, k, visible, want[k])
			}
		}
	}
	sources("r1", map[string]int64{"multicast": 36 * mib, "repair": 2 * mib})
	sources("r2", map[string]int64{"multicast": 6 * mib, "peers": 4 * mib, "unicast": 10 * mib})
	ui.shot(shots, "sessions")

	// Live: the receivers move, one finishes, without a reload.
	ui.markPage()
	moved := sessionstest.Running("s2", now)
	moved.Receivers[0].BytesDone, moved.Receivers[0].ChunksDone = 800*mib, 13
	moved.Receivers[0].Bytes.Multicast = 48 * mib
	moved.Receivers[1].State, moved.Receivers[1].BytesDone, moved.Receivers[1].ChunksDone = mcast.RecvDone, 1000*mib, 16
	moved.Receivers[1].Bytes.Unicast = 40 * mib
	fake.Put(moved)
	progressAt("r1", "80.0")
	progressAt("r2", "100.0")
	ui.waitFor("pc-02 done, its rate gone", recv("r2")+`.dataset.state === "done" && `+recv("r2")+`.querySelector(".rate").textContent === "—"`)
	ui.waitFor("pc-01's multicast bytes grown", recv("r1")+`.querySelector(".sources").dataset.multicast === "`+fmt.Sprint(48*mib)+`"`)
	ui.samePage("the sessions page followed the session")

	// Cancel (the button asks for a confirmation): the page shows it,
	// the request carried the session's CSRF token.
	const cancelSel = `section.mc-session[data-session="s2"] button.session-cancel`
	cancel := `document.querySelector('` + cancelSel + `')`
	ui.waitFor("the cancel button", `!!`+cancel+` && !`+cancel+`.hidden`)
	ui.click(cancelSel)
	ui.waitFor("the cancel button armed", cancel+`.dataset.armed === "true"`)
	ui.click(cancelSel)
	ui.waitFor("the session cancelled", card+`.dataset.state === "cancelled" && `+card+`.querySelector(".session-state .badge").textContent === "cancelled"`)
	ui.waitFor("the cancel button gone", cancel+`.hidden`)
	ui.waitFor("the flash message", `document.querySelector("#flash").textContent.includes("Session s2 cancelled")`)
	ui.waitFor("pc-01 finishing over unicast", recv("r1")+`.dataset.state === "unicast" && `+recv("r1")+`.querySelector(".reason").textContent.includes("cancelled")`)
	if s, _ := fake.Get("s2"); s.State != mcast.StateCancelled {
		t.Fatalf("the manager's session after the cancel: %s", s.State)
	}
	evs, err := st.Events(ctx, store.EventFilter{Kind: store.EventAdmin, Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) == 0 || evs[0].Message != "multicast session s2 cancelled" || evs[0].Actor != "user:"+adminUser {
		t.Fatalf("admin events: %+v", evs)
	}

	// A session that appears is listed first.
	ui.markPage()
	fake.Put(sessionstest.Running("s3", now))
	ui.waitFor("the new session first", `document.querySelector("#sessions-list section.mc-session").dataset.session === "s3"`)
	ui.samePage("the new session appeared by itself")

	if ex := b.exceptions(); len(ex) > 0 {
		t.Errorf("the page threw %d uncaught JavaScript exceptions:\n%s", len(ex), strings.Join(ex, "\n"))
	}
}

// pbBytes formats a byte count as the console does (PB.bytes).
func pbBytes(n int64) string {
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	v, units := float64(n), []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB"}
	i := 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	prec := 0
	switch {
	case v < 10:
		prec = 2
	case v < 100:
		prec = 1
	}
	return fmt.Sprintf("%.*f %s", prec, v, units[i])
}
