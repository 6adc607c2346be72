package policy

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/preboot/preboot/store"
)

func mediaPost(t *testing.T, h http.Handler, remote, body string, hdr map[string]string) (int, MediaAnswer, string) {
	t.Helper()
	r := httptest.NewRequest(http.MethodPost, MediaPath, strings.NewReader(body))
	r.RemoteAddr = remote
	r.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	var a MediaAnswer
	if w.Code == http.StatusOK {
		if err := json.Unmarshal(w.Body.Bytes(), &a); err != nil {
			t.Fatalf("answer %q: %v", w.Body.String(), err)
		}
	}
	return w.Code, a, w.Body.String()
}

// TestMediaRegistersAndRunsAssignedWork: a machine booted from the medium
// is seen with its hardware; with nothing assigned it gets the manual
// mode, with an imaging bundle assigned a job whose token works from its
// address only; a second machine claiming the same MAC from elsewhere
// waits; os-install bundles need a network boot.
func TestMediaRegistersAndRunsAssignedWork(t *testing.T) {
	e := newEngine(t, "never")
	ctx := context.Background()
	h := e.MediaHandler()
	body := `{"mac":"52-54-00-12-34-56","uuid":"7e1e0000-0000-4000-8000-000000000001","serial":"SN-1\u0007",
		"manufacturer":"QEMU","product":"Standard PC","arch":"bios"}`

	code, a, raw := mediaPost(t, h, "10.0.0.50:40000", body, nil)
	if code != 200 || a.Action != MediaManual || a.MAC != mac || a.Token != "" {
		t.Fatalf("nothing assigned: %d %s", code, raw)
	}
	dev, err := e.Store.Device(ctx, mac)
	if err != nil {
		t.Fatal(err)
	}
	if dev.Serial != "SN-1" || dev.Manufacturer != "QEMU" || dev.Product != "Standard PC" || dev.Arch != "bios" || dev.IP != "10.0.0.50" {
		t.Errorf("device %+v: hardware not recorded as sent", dev)
	}

	b := mkBundle(t, e.Store, "restore-lab", store.KindImageRestore, `{"image":"lab"}`)
	assign(t, e.Store, store.Assignment{BundleID: b.ID, MAC: mac, Once: true})
	code, a, raw = mediaPost(t, h, "10.0.0.50:40001", body, nil)
	if code != 200 || a.Action != MediaWork || a.Job == 0 || a.Token == "" || a.Kind != store.KindImageRestore || a.Bundle != "restore-lab" {
		t.Fatalf("assigned restore: %d %s", code, raw)
	}
	j, err := e.Jobs.Authenticate(ctx, a.Token, "10.0.0.50")
	if err != nil || j.ID != a.Job {
		t.Fatalf("the token does not open job %d from the asking address: %+v %v", a.Job, j, err)
	}
	if _, err := e.Jobs.Authenticate(ctx, a.Token, "10.0.0.99"); err == nil {
		t.Error("the token works from another address")
	}
	if _, err := e.Jobs.Fetched(ctx, a.Job); err != nil {
		t.Fatal(err)
	}
	// The agent is at work: a boot from another address must wait.
	code, a2, raw := mediaPost(t, h, "10.0.0.77:40000", body, nil)
	if code != 200 || a2.Action != MediaWait || a2.RetryAfter <= 0 || a2.Token != "" {
		t.Fatalf("second claim: %d %s", code, raw)
	}
	if _, err := e.Jobs.Finish(ctx, a.Job, true, ""); err != nil {
		t.Fatal(err)
	}
	// Done: the once assignment is gone, back to manual mode.
	if code, a, raw = mediaPost(t, h, "10.0.0.50:40002", body, nil); code != 200 || a.Action != MediaManual {
		t.Fatalf("after the job: %d %s", code, raw)
	}
	// os-install needs a network boot.
	oi := osInstall(t, e.Store, "inst", `{"kernel":"boot/vmlinuz","initrd":["boot/initrd"]}`)
	assign(t, e.Store, store.Assignment{BundleID: oi.ID, MAC: mac, Force: true})
	if code, a, raw = mediaPost(t, h, "10.0.0.50:40003", body, nil); code != 200 || a.Action != MediaManual || !strings.Contains(a.Reason, "network boot") {
		t.Fatalf("os-install: %d %s", code, raw)
	}
	evs, err := e.Store.Events(ctx, store.EventFilter{MAC: mac})
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, ev := range evs {
		kinds = append(kinds, ev.Kind+": "+ev.Message)
	}
	all := strings.Join(kinds, "\n")
	for _, want := range []string{"first contact: manual preboot medium: request from 10.0.0.50 (QEMU Standard PC, bios)",
		"manual preboot medium: bundle restore-lab in the imaging environment", "manual mode: nothing assigned"} {
		if !strings.Contains(all, want) {
			t.Errorf("events lack %q:\n%s", want, all)
		}
	}
}

// TestMediaRuleRegisters: rules apply to a machine first seen from the
// medium, as to a PXE boot.
func TestMediaRuleRegisters(t *testing.T) {
	e := newEngine(t, "never")
	ctx := context.Background()
	inv := mkBundle(t, e.Store, "inv", store.KindInventory, `{}`)
	if _, err := e.Store.CreateRule(ctx, store.Rule{Name: "qemu", Match: `maker == "QEMU"`, Bundle: inv.Name, Enabled: true}); err != nil {
		t.Fatal(err)
	}
	code, a, raw := mediaPost(t, e.MediaHandler(), "10.0.0.51:1000", `{"mac":"52:54:00:12:34:56","manufacturer":"QEMU","arch":"efi-x64"}`, nil)
	if code != 200 || a.Action != MediaWork || a.Kind != store.KindInventory {
		t.Fatalf("%d %s", code, raw)
	}
	dev, err := e.Store.Device(ctx, mac)
	if err != nil || !dev.Registered {
		t.Errorf("device not registered by the rule: %+v %v", dev, err)
	}
}

func TestMediaHandlerRefuses(t *testing.T) {
	e := newEngine(t, "never")
	h := e.MediaHandler()
	cases := []struct {
		body string
		hdr  map[string]string
		code int
		want string
	}{
		{`{"mac":"52:54:00:12:34:56"}`, map[string]string{"Origin": "https://evil.example"}, 403, "web browsers"},
		{`{"mac":"52:54:00:12:34:56"}`, map[string]string{"Content-Type": "text/plain"}, 415, "application/json"},
		{`{"mac":"zz"}`, nil, 400, "MAC"},
		{`{"mac":"52:54:00:12:34:56","arch":"sparc"}`, nil, 400, "arch"},
		{`{"mac":`, nil, 400, "media request"},
		{`{"mac":"52:54:00:12:34:56","serial":"` + strings.Repeat("x", maxMediaRequest) + `"}`, nil, 400, "more than"},
	}
	for _, c := range cases {
		code, _, raw := mediaPost(t, h, "10.0.0.5:1", c.body, c.hdr)
		if code != c.code || !strings.Contains(raw, c.want) {
			t.Errorf("%.60s %v: %d %s, want %d %q", c.body, c.hdr, code, raw, c.code, c.want)
		}
	}
	if _, err := e.Store.Device(context.Background(), mac); err == nil {
		t.Error("a refused request registered the device")
	}
}

func FuzzMediaRequest(f *testing.F) {
	f.Add([]byte(`{"mac":"52:54:00:12:34:56","uuid":"u","serial":"s","manufacturer":"m","product":"p","arch":"bios"}`))
	f.Add([]byte(`{"mac":"zz"}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		q, err := DecodeMediaRequest(strings.NewReader(string(b)))
		if err != nil {
			return
		}
		if _, err := store.NormalizeMAC(q.MAC); err != nil {
			t.Fatalf("accepted MAC %q: %v", q.MAC, err)
		}
		for _, s := range []string{q.UUID, q.Serial, q.Manufacturer, q.Product, q.AssetTag} {
			if len(s) > 128 || strings.ContainsAny(s, "\x00\n\r\x1b") {
				t.Fatalf("uncleaned value %q", s)
			}
		}
	})
}
