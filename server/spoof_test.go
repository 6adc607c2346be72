package server

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/preboot/preboot/store"
)

// clientFrom is an HTTP client whose connections come from ip (an
// address of the loopback network): several "machines" on one host.
func clientFrom(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
}

// fetch is do with a bearer token and headers.
func fetch(t *testing.T, c *http.Client, method, url, token string, hdr map[string]string) (int, string) {
	t.Helper()
	h := map[string]string{}
	for k, v := range hdr {
		h[k] = v
	}
	if token != "" {
		h["Authorization"] = "Bearer " + token
	}
	return do(t, c, method, url, "", h)
}

// Finding 1 of the security review, over real HTTP: claiming a device's
// MAC from another machine gets no job token, fails no job, and the
// device's own token does not work from the spoofer's address — not for
// the agent API, not for the image it restores.
func TestSpoofedMACGetsNothing(t *testing.T) {
	ctx := context.Background()
	h, js, cfg := newHandler(t)
	for _, f := range []string{"boot/kernel", "boot/initrd"} {
		p := filepath.Join(cfg.TFTP.Root, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	const mac = "52:54:00:aa:00:01"
	b, err := js.Store.CreateBundle(ctx, store.Bundle{Name: "restore-win11", Kind: store.KindImageRestore, Params: json.RawMessage(`{"image":"win11"}`)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Store.CreateDevice(ctx, store.Device{MAC: mac, Registered: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Store.CreateAssignment(ctx, store.Assignment{BundleID: b.ID, MAC: mac, Once: true}); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	base := "http://" + ln.Addr().String()
	boot := base + "/boot.ipxe?mac=52-54-00-aa-00-01&action=default"
	device, spoofer := clientFrom("127.0.0.2"), clientFrom("127.0.0.3")
	ipxe := map[string]string{"User-Agent": "iPXE/1.21.1+"}

	code, script := fetch(t, device, "GET", boot, "", ipxe)
	m := regexp.MustCompile(`preboot\.token=(pbj_[0-9a-f]+)`).FindStringSubmatch(script)
	if code != 200 || m == nil || !strings.Contains(script, "preboot.ip=127.0.0.2") {
		t.Fatalf("the device's boot: %d\n%s", code, script)
	}
	token := m[1]
	if code, body := fetch(t, device, "GET", base+"/api/v1/agent/job", token, nil); code != 200 {
		t.Fatalf("the device's agent: %d %s", code, body)
	}

	// The spoofer claims the MAC, by hand and through a web page.
	for _, hdr := range []map[string]string{ipxe, {"User-Agent": "Mozilla/5.0", "Referer": "http://evil.example/"}} {
		code, body := fetch(t, spoofer, "GET", boot, "", hdr)
		if strings.Contains(body, "pbj_") || (code != 200 && code != http.StatusForbidden) {
			t.Fatalf("spoofed claim (%v): %d\n%s", hdr, code, body)
		}
	}
	// With the device's token, from the spoofer's address: nothing.
	for _, u := range []string{"/api/v1/agent/job", "/api/v1/images/win11", "/api/v1/images/win11/export"} {
		if code, body := fetch(t, spoofer, "GET", base+u, token, nil); code != http.StatusForbidden {
			t.Fatalf("the device's token from the spoofer on %s: %d %s", u, code, body)
		}
	}
	js2, err := js.Store.Jobs(ctx, store.JobFilter{MAC: mac})
	if err != nil {
		t.Fatal(err)
	}
	if len(js2) != 1 || js2[0].State != store.JobBooting || js2[0].Error != "" {
		t.Fatalf("the device's job after the spoofer: %+v", js2)
	}
	if code, body := fetch(t, device, "POST", base+"/api/v1/agent/job/progress", token, nil); code == http.StatusForbidden || code == http.StatusUnauthorized {
		t.Fatalf("the device's token after the spoofer: %d %s", code, body)
	}
	evs, err := js.Store.Events(ctx, store.EventFilter{MAC: mac, Kind: store.EventSecurity})
	if err != nil || len(evs) < 2 {
		t.Fatalf("security events: %+v %v", evs, err)
	}
}
