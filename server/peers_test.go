package server

import (
	"bytes"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/preboot/preboot/tlspin"
)

func TestPeerServersConfig(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	got, err := peerServers(t.Context(), []string{"https://10.0.0.3:8443/", "https://10.0.0.4:8443,https://10.0.0.5:8443"}, "", log)
	if err != nil || strings.Join(got, " ") != "https://10.0.0.3:8443 https://10.0.0.4:8443 https://10.0.0.5:8443" {
		t.Fatalf("peers %q, %v", got, err)
	}
	pin := "sha256:" + strings.Repeat("ab", 32)
	for _, bad := range []string{"10.0.0.3:8443", "ftp://x", "https://x/api", "https://u:p@x", "http://10.0.0.3:8080"} {
		if _, err := peerServers(t.Context(), []string{bad}, pin, log); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// The check at start tells a peer with the same certificate from one
// with another (agents pin one certificate for all servers).
func TestCheckPeerCert(t *testing.T) {
	peer := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(peer.Close)
	same := tlspin.Fingerprint(peer.Certificate().Raw)
	for _, c := range []struct{ pin, want string }{
		{same, "peer server serves the same certificate"},
		{"sha256:" + strings.Repeat("ab", 32), "peer server has another TLS certificate"},
	} {
		var buf bytes.Buffer
		checkPeerCert(t.Context(), peer.URL, c.pin, slog.New(slog.NewTextHandler(&buf, nil)))
		if !strings.Contains(buf.String(), c.want) {
			t.Errorf("pin %s: log %q, want %q", c.pin, buf.String(), c.want)
		}
	}
	var buf bytes.Buffer
	peer.Close()
	checkPeerCert(t.Context(), peer.URL, same, slog.New(slog.NewTextHandler(&buf, nil)))
	if !strings.Contains(buf.String(), "peer server not reachable now") {
		t.Errorf("peer down: log %q", buf.String())
	}
}
