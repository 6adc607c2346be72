package policy

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/preboot/preboot/jobs"
	"github.com/preboot/preboot/store"
	"github.com/preboot/preboot/tftp"
)

var tokenRE = regexp.MustCompile(`preboot\.token=(pbj_[0-9a-f]+)`)

func tokenIn(t *testing.T, script string) string {
	t.Helper()
	m := tokenRE.FindStringSubmatch(script)
	if m == nil {
		t.Fatalf("no job token in:\n%s", script)
	}
	return m[1]
}

// getFrom is get from another client address, with extra headers.
func getFrom(t *testing.T, h http.Handler, remote, url string, hdr map[string]string) (int, string) {
	t.Helper()
	req := httptest.NewRequest("GET", url, nil)
	req.RemoteAddr = remote
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Code, rec.Body.String()
}

func securityEvents(t *testing.T, e *Engine) []store.Event {
	t.Helper()
	evs, err := e.Store.Events(context.Background(), store.EventFilter{MAC: mac, Kind: store.EventSecurity})
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// A spoofer claiming a device's MAC from another address gets no token
// and changes nothing: the running (or pending) job wins, its token keeps
// working only from the address it was handed to, and the refusal is a
// security event (one per minute, however often it is repeated).
func TestSpoofedClaimNeverTakesOverAJob(t *testing.T) {
	ctx := context.Background()
	e := newEngine(t, "never")
	writeEnv(t, e)
	b := mkBundle(t, e.Store, "restore-win", store.KindImageRestore, `{"image":"win11"}`)
	assign(t, e.Store, store.Assignment{BundleID: b.ID, MAC: mac, Once: true})

	real := get(t, e, first) // from 10.0.0.50
	tok := tokenIn(t, real)
	mustContain(t, real, "preboot.ip=10.0.0.50")
	j, err := e.Jobs.Authenticate(ctx, tok, "10.0.0.50:5000")
	if err != nil || j.ClientIP != "10.0.0.50" {
		t.Fatalf("the device's token: %+v %v", j, err)
	}
	if _, err := e.Jobs.Fetched(ctx, j.ID); err != nil {
		t.Fatal(err)
	}

	for i := range 5 {
		code, body := getFrom(t, e, "10.0.0.66:999", first+"&action=default", nil)
		if code != 200 || strings.Contains(body, "pbj_") || !strings.Contains(body, "is booting for this machine") || !strings.Contains(body, "sleep 30") {
			t.Fatalf("spoofed claim %d: %d\n%s", i, code, body)
		}
	}
	if got, _ := e.Store.Job(ctx, j.ID); got.State != store.JobBooting || got.Error != "" {
		t.Fatalf("the running job after spoofed claims: %+v", got)
	}
	if _, err := e.Jobs.Authenticate(ctx, tok, "10.0.0.66:1"); err == nil {
		t.Fatal("the device's token worked from the spoofer's address")
	}
	if _, err := e.Jobs.Authenticate(ctx, tok, "10.0.0.50:5001"); err != nil {
		t.Fatalf("the device's token after spoofed claims: %v", err)
	}
	evs := securityEvents(t, e)
	if len(evs) != 2 { // one for the refused claims, one for the token used elsewhere
		t.Fatalf("security events: %+v", evs)
	}
	if !strings.Contains(evs[len(evs)-1].Message, "10.0.0.66") {
		t.Fatalf("security event does not name the address: %+v", evs)
	}
	// Even the device's own address cannot restart a started job.
	if code, body := getFrom(t, e, "10.0.0.50:1", first, nil); code != 200 || strings.Contains(body, "pbj_") {
		t.Fatalf("claim of a started job from its own address: %d\n%s", code, body)
	}
}

// A pending job (agent not started) claimed from another address is not
// handed out there either; once it expires, the device gets a new job.
func TestPendingJobExpiresThenRunsAgain(t *testing.T) {
	ctx := context.Background()
	e := newEngine(t, "never")
	writeEnv(t, e)
	now := time.Now()
	e.Jobs.Now = func() time.Time { return now }
	e.Jobs.PendingTTL = time.Minute
	b := mkBundle(t, e.Store, "inv", store.KindInventory, `{}`)
	assign(t, e.Store, store.Assignment{BundleID: b.ID, MAC: mac, Once: true})
	tok := tokenIn(t, get(t, e, first))
	if code, body := getFrom(t, e, "10.0.0.66:999", first, nil); code != 200 || strings.Contains(body, "pbj_") {
		t.Fatalf("claim from another address: %d\n%s", code, body)
	}
	now = now.Add(2 * time.Minute)
	if _, err := e.Jobs.Authenticate(ctx, tok, "10.0.0.50:1"); err == nil {
		t.Fatal("the token of an expired pending job still works")
	}
	if j, _ := e.Store.Job(ctx, 1); j.State != store.JobFailed || !strings.Contains(j.Error, "expired") {
		t.Fatalf("expired job: %+v", j)
	}
	body := get(t, e, first)
	mustContain(t, body, "job 2: inventory inv")
}

// ExpireStale ends started jobs whose agent went silent, and only those.
func TestExpireStale(t *testing.T) {
	ctx := context.Background()
	e := newEngine(t, "never")
	writeEnv(t, e)
	now := time.Now()
	e.Jobs.Now = func() time.Time { return now }
	b := mkBundle(t, e.Store, "inv", store.KindInventory, `{}`)
	assign(t, e.Store, store.Assignment{BundleID: b.ID, MAC: mac, Once: true})
	tok := tokenIn(t, get(t, e, first))
	j, err := e.Jobs.Authenticate(ctx, tok, "10.0.0.50:1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Jobs.Report(ctx, j.ID, jobs.Progress{Phase: "inventory"}); err != nil {
		t.Fatal(err)
	}
	if n, err := e.Jobs.ExpireStale(ctx); err != nil || n != 0 {
		t.Fatalf("live job expired: %d %v", n, err)
	}
	now = now.Add(jobs.DefaultStaleAfter + time.Second)
	if n, err := e.Jobs.ExpireStale(ctx); err != nil || n != 1 {
		t.Fatalf("stale job not expired: %d %v", n, err)
	}
	if got, _ := e.Store.Job(ctx, j.ID); got.State != store.JobFailed || !strings.Contains(got.Error, "no word from its agent") {
		t.Fatalf("stale job: %+v", got)
	}
	if as, _ := e.Store.Assignments(ctx, store.AssignmentFilter{MAC: mac}); len(as) != 1 {
		t.Fatalf("the once assignment must stay for the next boot: %+v", as)
	}
}

// Job hand-outs are rate-limited per device.
func TestClaimsRateLimited(t *testing.T) {
	e := newEngine(t, "never")
	writeEnv(t, e)
	b := mkBundle(t, e.Store, "inv", store.KindInventory, `{}`)
	assign(t, e.Store, store.Assignment{BundleID: b.ID, MAC: mac, Once: true})
	e.Jobs.ClaimBurst = 3
	e.Jobs.MaxBoots = 100
	for i := range 3 {
		if body := get(t, e, first); !strings.Contains(body, "pbj_") {
			t.Fatalf("claim %d refused:\n%s", i, body)
		}
	}
	body := get(t, e, first)
	mustContain(t, body, "too many boots")
	if strings.Contains(body, "pbj_") {
		t.Fatalf("rate-limited claim got a token:\n%s", body)
	}
	if evs := securityEvents(t, e); len(evs) != 1 || !strings.Contains(evs[0].Message, "more than 3") {
		t.Fatalf("security events: %+v", evs)
	}
}

// A page in a browser (an <img src> pointing at the boot policy) cannot
// register a device or claim its work.
func TestBrowserRequestsRefused(t *testing.T) {
	ctx := context.Background()
	e := newEngine(t, "never")
	writeEnv(t, e)
	b := mkBundle(t, e.Store, "inv", store.KindInventory, `{}`)
	assign(t, e.Store, store.Assignment{BundleID: b.ID, MAC: mac, Once: true})
	for _, hdr := range []map[string]string{
		{"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/156.0 Safari/537.36"},
		{"Referer": "http://evil.example/"},
		{"Sec-Fetch-Dest": "image"},
		{"Origin": "http://evil.example"},
	} {
		if code, body := getFrom(t, e, "10.0.0.66:1", first+"&action=default", hdr); code != http.StatusForbidden || strings.Contains(body, "pbj_") {
			t.Fatalf("%v: %d %s", hdr, code, body)
		}
	}
	if js, _ := e.Store.Jobs(ctx, store.JobFilter{}); len(js) != 0 {
		t.Fatalf("a browser request started a job: %+v", js)
	}
	// iPXE itself is served.
	if code, body := getFrom(t, e, "10.0.0.50:1", first+"&action=default", map[string]string{"User-Agent": "iPXE/1.21.1+ (g4e456)"}); code != 200 || !strings.Contains(body, "pbj_") {
		t.Fatalf("iPXE: %d %s", code, body)
	}
}

// The pxelinux path (TFTP pxelinux.cfg/01-MAC) follows the same rules: a
// claim from another address while a job is open gets the local-boot
// default, not the installer's command line.
func TestPXELinuxClaimRefusedWhileJobOpen(t *testing.T) {
	ctx := context.Background()
	e := newEngine(t, "never")
	writeEnv(t, e)
	b := mkBundle(t, e.Store, "inv", store.KindInventory, `{}`)
	a := assign(t, e.Store, store.Assignment{BundleID: b.ID, MAC: mac, Once: true})
	tokenIn(t, get(t, e, first)) // the device's job, from 10.0.0.50
	if err := e.Store.DeleteAssignment(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	inst := osInstall(t, e.Store, "inst", `{"kernel":"boot/kernel","initrd":["boot/initrd"],"loader":"pxelinux","cmdline":"secret=1"}`)
	assign(t, e.Store, store.Assignment{BundleID: inst.ID, MAC: mac, Once: true})
	req := tftp.Request{Filename: "pxelinux.cfg/01-52-54-00-12-34-56"}
	req.Peer = netip.MustParseAddrPort("10.0.0.66:2000")
	_, _, err := e.Generate(ctx, req)
	if err == nil {
		t.Fatal("pxelinux config handed to another address while the device's job is open")
	}
	if js, _ := e.Store.Jobs(ctx, store.JobFilter{Open: true}); len(js) != 1 || js[0].Kind != store.KindInventory {
		t.Fatalf("open jobs: %+v", js)
	}
}

// iPXE's ${product:uristring} leaves "+" as is: it is a plus, not a space.
func TestHardwareStringsKeepPlus(t *testing.T) {
	ctx := context.Background()
	e := newEngine(t, "never")
	u := "http://10.0.0.1:8080/boot.ipxe?mac=52-54-00-12-34-56&manufacturer=QEMU&product=Standard%20PC%20(Q35%20+%20ICH9,%202009)&serial=A+B%2BC&arch=x86_64&platform=efi"
	get(t, e, u)
	d, err := e.Store.Device(ctx, mac)
	if err != nil {
		t.Fatal(err)
	}
	if d.Product != "Standard PC (Q35 + ICH9, 2009)" || d.Serial != "A+B+C" {
		t.Fatalf("product %q serial %q", d.Product, d.Serial)
	}
}
