package tlspin_test

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/preboot/preboot/tlspin"
)

func TestParse(t *testing.T) {
	good := "sha256:" + strings.Repeat("0a", 32)
	for _, s := range []string{good, strings.ToUpper(good[:7]) + strings.ToUpper(good[7:]), "sha256:" + strings.TrimSuffix(strings.Repeat("0a:", 32), ":")} {
		if _, err := tlspin.Parse(s); err != nil {
			t.Errorf("%s: %v", s, err)
		}
	}
	for _, s := range []string{"", "0a0a", "sha1:" + strings.Repeat("0a", 20), "sha256:" + strings.Repeat("0a", 31), "sha256:" + strings.Repeat("zz", 32)} {
		if _, err := tlspin.Parse(s); err == nil {
			t.Errorf("%q accepted", s)
		}
	}
}

// A pinned client talks to exactly the pinned certificate: the server's
// own (self-signed, for another name) is accepted, any other is refused
// during the handshake, before a request is sent.
func TestPin(t *testing.T) {
	hit := 0
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hit++ }))
	defer srv.Close()
	fp := tlspin.Fingerprint(srv.Certificate().Raw)
	c, err := tlspin.Client(fp)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Get(srv.URL)
	if err != nil {
		t.Fatalf("right pin: %v", err)
	}
	resp.Body.Close()
	c, _ = tlspin.Client("sha256:" + strings.Repeat("00", 32))
	if _, err := c.Get(srv.URL); err == nil || !strings.Contains(err.Error(), "does not match the pinned fingerprint") {
		t.Fatalf("wrong pin: %v", err)
	}
	if hit != 1 {
		t.Fatalf("requests that reached the server: %d", hit)
	}
	tc, _ := tlspin.Config(fp)
	if !tc.InsecureSkipVerify || tc.VerifyPeerCertificate == nil || tc.MinVersion < tls.VersionTLS12 {
		t.Fatalf("config: %+v", tc)
	}
}
