package browsertest

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/preboot/preboot/api"
	"github.com/preboot/preboot/store"
)

// TestLeasesPage is the DHCP leases page against the console and the API
// wired as the server wires them, over a SQLite store holding a DHCPv4
// and a DHCPv6 lease as the servers write them: both are listed with
// their client, hostname, state and server, and the family filter works.
func TestLeasesPage(t *testing.T) {
	exe, err := chromium()
	if err != nil {
		t.Fatal(err)
	}
	site := newConsoleSite(t)
	st, ctx := site.st, context.Background()
	now := time.Now()
	if _, err := st.BindLease(ctx, netip.MustParseAddr("10.80.0.7"), store.LeaseRequest{ClientID: "01:52:54:00:00:80:07", MAC: "52:54:00:00:80:07",
		Hostname: "lab-pc7", Server: "srv-a", Range: store.LeaseRange{Start: netip.MustParseAddr("10.80.0.7"), End: netip.MustParseAddr("10.80.0.9")}, Now: now}, time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, err := st.BindLease(ctx, netip.MustParseAddr("fd00:80::107"), store.LeaseRequest{ClientID: "00040011/00000001", MAC: "52:54:00:00:80:08",
		Server: "srv-b", Range: store.LeaseRange{Start: netip.MustParseAddr("fd00:80::100"), End: netip.MustParseAddr("fd00:80::1ff")}, Now: now}, time.Hour); err != nil {
		t.Fatal(err)
	}

	b := site.open(t, exe, api.Options{})
	ui := b.first
	ui.login("/console/leases")
	ui.waitFor("the leases page", `location.pathname === "/console/leases" && document.body.dataset.page === "leases"`)
	ui.waitFor("its navigation entry", `!!document.querySelector('a[data-nav="leases"][aria-current="page"]')`)
	ui.waitFor("both leases", `document.querySelectorAll("#leases-body tr.lease-row").length === 2`)

	row := func(ip string) string { return `document.querySelector('tr.lease-row[data-ip="` + ip + `"]')` }
	for _, c := range []struct{ ip, sel, want string }{
		{"10.80.0.7", ".mac", "52:54:00:00:80:07"}, {"10.80.0.7", ".client", "01:52:54:00:00:80:07"},
		{"10.80.0.7", ".hostname", "lab-pc7"}, {"10.80.0.7", ".state", "bound"}, {"10.80.0.7", ".server", "srv-a"},
		{"fd00:80::107", ".mac", "52:54:00:00:80:08"}, {"fd00:80::107", ".client", "00040011/00000001"},
		{"fd00:80::107", ".state", "bound"}, {"fd00:80::107", ".server", "srv-b"},
	} {
		if got := ui.str(row(c.ip) + `.querySelector("` + c.sel + `").textContent`); !strings.Contains(got, c.want) {
			ui.fatalf("lease %s: %s shows %q, want %q", c.ip, c.sel, got, c.want)
		}
	}
	if got := ui.str(row("10.80.0.7") + `.querySelector(".expires time").getAttribute("datetime")`); got == "" {
		ui.fatalf("lease 10.80.0.7 shows no expiry")
	}
	ui.shot(screenshotDir(t), "leases")

	// The family filter asks the API again.
	ui.do("choose IPv6", chromedp.Evaluate[chromedp.Void](`(() => { const s = document.querySelector("#leases-family"); s.value = "6"; s.dispatchEvent(new Event("change")); })()`))
	ui.waitFor("only the IPv6 lease", `document.querySelectorAll("#leases-body tr.lease-row").length === 1 && !!`+row("fd00:80::107"))

	if ex := b.exceptions(); len(ex) > 0 {
		t.Errorf("the page threw %d uncaught JavaScript exceptions:\n%s", len(ex), strings.Join(ex, "\n"))
	}
}
