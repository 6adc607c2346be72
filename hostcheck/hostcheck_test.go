package hostcheck_test

import (
	"net/http/httptest"
	"os"
	"testing"

	"github.com/preboot/preboot/hostcheck"
)

func TestAllowed(t *testing.T) {
	h := hostcheck.New([]string{"Preboot.Example."}, true)
	hn, _ := os.Hostname()
	for _, host := range []string{"10.0.0.2", "10.0.0.2:8443", "[fe80::1%eth0]:80", "[::1]:8080", "localhost", "LOCALHOST:8080", "preboot.example", "preboot.example.:8443", hn} {
		if !h.Allowed(host) {
			t.Errorf("%q refused", host)
		}
	}
	for _, host := range []string{"", "evil.example", "evil.example:8080", "preboot.example.evil.example", "10.0.0.2.nip.io"} {
		if h.Allowed(host) {
			t.Errorf("%q accepted", host)
		}
	}
	var none *hostcheck.Hosts
	if !none.Allowed("127.0.0.1:1") || none.Allowed("preboot.example") {
		t.Error("nil Hosts")
	}
}

func TestSameOrigin(t *testing.T) {
	h := hostcheck.New([]string{"preboot.example"}, false)
	for _, c := range []struct {
		host, origin, site string
		ok                 bool
	}{
		{"10.0.0.2:8443", "", "", true},
		{"10.0.0.2:8443", "https://10.0.0.2:8443", "same-origin", true},
		{"preboot.example:8443", "https://preboot.example:8443", "", true},
		{"10.0.0.2:8443", "https://preboot.example:8443", "", true}, // a configured name of this server
		{"10.0.0.2:8443", "https://10.6.6.6", "", false},            // another IP is another site
		{"10.0.0.2:8443", "http://evil.example", "", false},
		{"evil.example", "http://evil.example", "", false}, // DNS rebinding
		{"10.0.0.2:8443", "null", "", false},
		{"10.0.0.2:8443", "", "cross-site", false},
		{"10.0.0.2:8443", "", "same-site", false},
	} {
		r := httptest.NewRequest("POST", "http://"+c.host+"/console/login", nil)
		if c.origin != "" {
			r.Header.Set("Origin", c.origin)
		}
		if c.site != "" {
			r.Header.Set("Sec-Fetch-Site", c.site)
		}
		if got := h.SameOrigin(r); got != c.ok {
			t.Errorf("Host %s Origin %q Sec-Fetch-Site %q: %v", c.host, c.origin, c.site, got)
		}
	}
}
