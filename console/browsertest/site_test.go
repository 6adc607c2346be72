package browsertest

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"github.com/preboot/preboot/api"
	"github.com/preboot/preboot/console"
	"github.com/preboot/preboot/session"
	"github.com/preboot/preboot/store/sqlstore"
)

// consoleSite is the console, the login and logout handlers and the admin
// API wired as the server wires them, over a new SQLite store holding the
// admin user. A test seeds st, adds routes to mux if its page needs them,
// then opens a browser with the API options of its page.
type consoleSite struct {
	st     *sqlstore.Store
	ns     api.NotifyingStore
	events *api.Notifier
	auth   *api.Auth
	log    *slog.Logger
	mux    *http.ServeMux
}

func newConsoleSite(t *testing.T) *consoleSite {
	t.Helper()
	ctx := context.Background()
	st, err := sqlstore.OpenSQLite(ctx, filepath.Join(t.TempDir(), "preboot.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if _, err := session.CreateUser(ctx, st, adminUser, adminPassword); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	events := &api.Notifier{}
	ns := api.NotifyingStore{Store: st, N: events}
	sessions := session.New(ns, log)
	sessions.FailTime = -1
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+session.LoginPath, sessions.Login)
	mux.HandleFunc("POST "+session.LogoutPath, sessions.Logout)
	mux.Handle("/console/", console.New(console.Options{Version: "test", Logger: log, Require: sessions.Require}))
	return &consoleSite{st: st, ns: ns, events: events, auth: &api.Auth{Store: ns, Sessions: sessions, Logger: log}, log: log, mux: mux}
}

// open mounts the admin API with opts (its store, auth, events, logger
// and version filled in), serves the site over TLS and starts a browser
// that pins its certificate.
func (s *consoleSite) open(t *testing.T, exe string, opts api.Options) *browser {
	t.Helper()
	opts.Store, opts.Auth, opts.Events, opts.Logger, opts.Version = s.ns, s.auth, s.events, s.log, "test"
	s.mux.Handle("/api/v1/", api.New(opts))
	srv := httptest.NewTLSServer(s.mux)
	t.Cleanup(srv.Close)
	sum := sha256.Sum256(srv.Certificate().RawSubjectPublicKeyInfo)
	return startBrowser(t, exe, srv.URL, base64.StdEncoding.EncodeToString(sum[:]))
}

// login opens path, which the console answers with its login page, and
// signs in as the admin user.
func (tb *tab) login(path string) {
	tb.navigate(path)
	tb.waitFor("the login page", `document.body.dataset.page === "login"`)
	tb.typeIn("#login-user", adminUser)
	tb.typeIn("#login-password", adminPassword)
	tb.click("#login-submit")
}
