package agent

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/preboot/preboot/tlspin"
)

// preboot.tls= on the kernel command line pins the server's certificate:
// a malformed pin is refused at once.
func TestParseCmdlineTLS(t *testing.T) {
	pin := "sha256:" + strings.Repeat("ab", 32)
	env, err := ParseCmdline("quiet preboot.server=https://10.0.0.2:8443 preboot.token=pbj_x preboot.job=3 preboot.tls=" + pin)
	if err != nil || env.TLS != pin || env.Server != "https://10.0.0.2:8443" {
		t.Fatalf("%+v %v", env, err)
	}
	if _, err := ParseCmdline("preboot.server=https://10.0.0.2:8443 preboot.tls=md5:00"); err == nil {
		t.Fatal("a malformed pin was accepted")
	}
}

// Auto with a pinned https server: the right pin reaches the job API
// (here: no job), a wrong one never sends the token.
func TestAutoPinnedServer(t *testing.T) {
	var sawToken bool
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sawToken = r.Header.Get("Authorization") == "Bearer pbj_secret"
		http.Error(w, `{"error":"no job"}`, http.StatusNotFound)
	}))
	defer srv.Close()
	pin := tlspin.Fingerprint(srv.Certificate().Raw)
	_, err := Auto(context.Background(), Env{Server: srv.URL, Token: "pbj_secret", TLS: pin}, AutoOptions{Attempts: 1})
	if !errors.Is(err, ErrNoJob) || !sawToken {
		t.Fatalf("right pin: %v (token seen %v)", err, sawToken)
	}
	sawToken = false
	_, err = Auto(context.Background(), Env{Server: srv.URL, Token: "pbj_secret", TLS: "sha256:" + strings.Repeat("00", 32)}, AutoOptions{Attempts: 1})
	if err == nil || errors.Is(err, ErrNoJob) || !strings.Contains(err.Error(), "pinned fingerprint") || sawToken {
		t.Fatalf("wrong pin: %v (token seen %v)", err, sawToken)
	}
	// Without a pin the self-signed certificate is not trusted either.
	if _, err := Auto(context.Background(), Env{Server: srv.URL, Token: "pbj_secret"}, AutoOptions{Attempts: 1}); err == nil || errors.Is(err, ErrNoJob) {
		t.Fatalf("no pin: %v", err)
	}
}
