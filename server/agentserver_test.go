package server

import (
	"net/http/httptest"
	"net/url"
	"testing"
)

// The agent's base URL is the address the boot request reached, on the
// HTTPS port: IPv6 literals keep their brackets, a link-local address
// its (percent-encoded) zone.
func TestAgentServerIPv6(t *testing.T) {
	f := agentServer("8443")
	for _, c := range []struct{ host, want string }{
		{"10.0.0.2:8080", "https://10.0.0.2:8443"},
		{"10.0.0.2", "https://10.0.0.2:8443"},
		{"[fd51:7e57:b007::2]:8080", "https://[fd51:7e57:b007::2]:8443"},
		{"[fd51:7e57:b007::2]", "https://[fd51:7e57:b007::2]:8443"},
		{"[fe80::2%25eth0]:8080", "https://[fe80::2%25eth0]:8443"},
		// What the policy passes: url.Parse unescapes the zone in Host.
		{"[fe80::2%eth0]:8080", "https://[fe80::2%25eth0]:8443"},
		{"preboot.example:8080", "https://preboot.example:8443"},
		{"", ""},
	} {
		got := f(c.host)
		if got != c.want {
			t.Errorf("agentServer(%q) = %q, want %q", c.host, got, c.want)
			continue
		}
		if got == "" {
			continue
		}
		u, err := url.Parse(got)
		if err != nil || u.Port() != "8443" {
			t.Errorf("agentServer(%q) = %q: not a URL with port 8443 (%v)", c.host, got, err)
		}
	}
}

func TestHTTPSURLIPv6(t *testing.T) {
	for _, c := range []struct{ host, want string }{
		{"[fd51:7e57:b007::2]:8080", "https://[fd51:7e57:b007::2]:8443/console/"},
		{"[fd51:7e57:b007::2]", "https://[fd51:7e57:b007::2]:8443/console/"},
		{"10.0.0.2:8080", "https://10.0.0.2:8443/console/"},
	} {
		r := httptest.NewRequest("GET", "http://x/", nil)
		r.Host = c.host
		if got := httpsURL(r, "8443", "/console/"); got != c.want {
			t.Errorf("httpsURL(%q) = %q, want %q", c.host, got, c.want)
		}
	}
}
