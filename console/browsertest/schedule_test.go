package browsertest

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/preboot/preboot/api"
	"github.com/preboot/preboot/store"
	"github.com/preboot/preboot/wake"
)

// TestSchedulePage is the scheduled-work page against the console and the
// API wired as the server wires them: a scheduled assignment waiting for
// its wake, one a scheduler already woke, and the "Wake now" button
// (Wake-on-LAN on loopback only: the test's fallback interface).
func TestSchedulePage(t *testing.T) {
	exe, err := chromium()
	if err != nil {
		t.Fatal(err)
	}
	site := newConsoleSite(t)
	st, ctx := site.st, context.Background()
	const mac1, mac2 = "52:54:00:00:90:01", "52:54:00:00:90:02"
	for _, m := range []string{mac1, mac2} {
		if _, err := st.CreateDevice(ctx, store.Device{MAC: m, Registered: true}); err != nil {
			t.Fatal(err)
		}
	}
	b, err := st.CreateBundle(ctx, store.Bundle{Name: "inv", Kind: store.KindInventory, Params: []byte(`{}`)})
	if err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(24 * time.Hour).Truncate(time.Second)
	waiting, err := st.CreateAssignment(ctx, store.Assignment{BundleID: b.ID, MAC: mac1, At: later.Add(time.Hour), Wake: true, Once: true})
	if err != nil {
		t.Fatal(err)
	}
	woken, err := st.CreateAssignment(ctx, store.Assignment{BundleID: b.ID, MAC: mac2, At: later, Wake: true})
	if err != nil {
		t.Fatal(err)
	}
	if due, err := st.ClaimDueWakes(ctx, later); err != nil || len(due) != 1 {
		t.Fatalf("claim: %v %+v", err, due)
	}

	b2 := site.open(t, exe, api.Options{Waker: &wake.Service{Store: site.ns, Sender: &wake.Sender{Interfaces: []string{"lo"}}}})
	ui := b2.first
	ui.login("/console/schedule")
	ui.waitFor("the schedule page", `location.pathname === "/console/schedule" && document.body.dataset.page === "schedule"`)
	ui.waitFor("its navigation entry", `!!document.querySelector('a[data-nav="schedule"][aria-current="page"]')`)
	ui.waitFor("both scheduled assignments", `document.querySelectorAll("#schedule-body tr.schedule-row").length === 2`)

	row := func(id int64) string {
		return `document.querySelector('tr.schedule-row[data-id="` + strconv.FormatInt(id, 10) + `"]')`
	}
	// Soonest first: the woken one, then the waiting one.
	if got := ui.str(`document.querySelector("#schedule-body tr.schedule-row").dataset.id`); got != strconv.FormatInt(woken.ID, 10) {
		ui.fatalf("first row is assignment %s, want %d (the earliest)", got, woken.ID)
	}
	for _, c := range []struct {
		id        int64
		sel, want string
	}{
		{waiting.ID, ".target", mac1}, {waiting.ID, ".bundle", "inv"}, {waiting.ID, ".apply", "once"},
		{waiting.ID, ".wake", "yes"}, {waiting.ID, ".state", "waiting"},
		{woken.ID, ".target", mac2}, {woken.ID, ".wake", "woken"}, {woken.ID, ".state", "woken"},
	} {
		if got := ui.str(row(c.id) + `.querySelector("` + c.sel + `").textContent`); !strings.Contains(got, c.want) {
			ui.fatalf("assignment %d: %s shows %q, want %q", c.id, c.sel, got, c.want)
		}
	}
	if got := ui.str(row(waiting.ID) + `.querySelector(".at time").getAttribute("datetime")`); got == "" {
		ui.fatalf("assignment %d shows no time", waiting.ID)
	}
	ui.shot(screenshotDir(t), "schedule")

	// Wake now: the API sends the packet and the page says where.
	ui.click(`tr.schedule-row[data-id="` + strconv.FormatInt(waiting.ID, 10) + `"] button.wake-now`)
	ui.waitFor("the wake's answer", `document.querySelector("#flash").textContent.includes("1 of 1 devices sent their magic packet (127.255.255.255 on lo)")`)
	if evs, err := st.Events(ctx, store.EventFilter{MAC: mac1, Kind: store.EventWake}); err != nil || len(evs) != 1 || evs[0].Actor == "" {
		t.Fatalf("wake events of %s: %v %+v", mac1, err, evs)
	}
	if ex := b2.exceptions(); len(ex) > 0 {
		t.Errorf("the page threw %d uncaught JavaScript exceptions:\n%s", len(ex), strings.Join(ex, "\n"))
	}
}
