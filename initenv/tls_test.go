package initenv_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/preboot/preboot/initenv"
	"github.com/preboot/preboot/tlspin"
)

func TestParseCmdlineTLS(t *testing.T) {
	pin := "sha256:" + strings.Repeat("cd", 32)
	env := initenv.ParseCmdline("preboot.server=https://10.0.0.2:8443/ preboot.tls=" + pin)
	if env.TLS != pin || env.Server != "https://10.0.0.2:8443" {
		t.Fatalf("%+v", env)
	}
}

// updateDrivers.tgz comes from the pinned server only: with a wrong pin
// the server is not reached (logged as unreachable, nothing unpacked).
func TestUpdateDriversPinned(t *testing.T) {
	hits := 0
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits++
		http.NotFound(w, r)
	}))
	defer srv.Close()
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	root := t.TempDir()
	pin := tlspin.Fingerprint(srv.Certificate().Raw)
	if mods, err := initenv.ApplyUpdateDriversTLS(context.Background(), logger, srv.URL, pin, root, nil); err != nil || mods != nil || hits != 1 {
		t.Fatalf("right pin: %v %v, %d requests\n%s", mods, err, hits, logs.String())
	}
	if !strings.Contains(logs.String(), "no updateDrivers.tgz") {
		t.Fatalf("log:\n%s", logs.String())
	}
	logs.Reset()
	if _, err := initenv.ApplyUpdateDriversTLS(context.Background(), logger, srv.URL, "sha256:"+strings.Repeat("00", 32), root, nil); err != nil || hits != 1 {
		t.Fatalf("wrong pin: %v, %d requests", err, hits)
	}
	if !strings.Contains(logs.String(), "server unreachable") {
		t.Fatalf("log:\n%s", logs.String())
	}
}
