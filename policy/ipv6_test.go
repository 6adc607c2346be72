package policy

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/preboot/preboot/store"
)

// getOver6 is get with the request's Host and client address set.
func getOver6(t *testing.T, e *Engine, target, host, remote string) string {
	t.Helper()
	req := httptest.NewRequest("GET", target, nil)
	req.Host = host
	req.RemoteAddr = remote
	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, req)
	if rec.Code != 200 || !strings.HasPrefix(rec.Body.String(), "#!ipxe\n") {
		t.Fatalf("GET %s: %d %s", target, rec.Code, rec.Body)
	}
	return rec.Body.String()
}

// An imaging boot asked over IPv6: the kernel and initrd URLs, the
// server URL on the kernel command line and the agent's server use the
// address the client asked, in brackets; preboot.ip= is the client's
// IPv6 address without a zone (the job's token is bound to it).
func TestImagingBootOverIPv6(t *testing.T) {
	for _, c := range []struct{ name, host, remote, server, ip string }{
		{"global", "[fd51:7e57:b007::2]:8080", "[fd51:7e57:b007::150]:40000", "http://[fd51:7e57:b007::2]:8080", "fd51:7e57:b007::150"},
		{"agent on https", "[fd51:7e57:b007::2]:8080", "[fd51:7e57:b007::151]:40000", "https://[fd51:7e57:b007::2]:8443", "fd51:7e57:b007::151"},
		{"link-local", "[fe80::2%25eth0]:8080", "[fe80::5054:ff:fe12:3456%eth0]:40000", "http://[fe80::2%25eth0]:8080", "fe80::5054:ff:fe12:3456"},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEngine(t, "never")
			writeEnv(t, e)
			if strings.HasPrefix(c.server, "https") {
				e.AgentServer = func(string) string { return c.server }
				e.AgentFingerprint = "sha256:" + strings.Repeat("ab", 32)
			}
			b := mkBundle(t, e.Store, "inv", store.KindInventory, `{}`)
			assign(t, e.Store, store.Assignment{BundleID: b.ID, MAC: mac, Once: true})
			base := "http://" + c.host
			body := getOver6(t, e, "/boot.ipxe?mac=52-54-00-12-34-56&platform=efi&arch=x86_64", c.host, c.remote)
			mustContain(t, body,
				"kernel "+base+"/files/boot/kernel ",
				"initrd --name initrd0 "+base+"/files/boot/initrd",
				" preboot.server="+c.server+" ",
				" preboot.ip="+c.ip+" preboot.mac="+mac)
			js, err := e.Store.Jobs(t.Context(), store.JobFilter{MAC: mac})
			if err != nil || len(js) != 1 || js[0].ClientIP != c.ip {
				t.Fatalf("jobs %+v (%v): want one, handed to %s", js, err, c.ip)
			}
		})
	}
}
