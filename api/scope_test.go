package api_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/preboot/preboot/api"
	"github.com/preboot/preboot/config"
	"github.com/preboot/preboot/jobs"
	"github.com/preboot/preboot/policy"
	"github.com/preboot/preboot/store"
	"github.com/preboot/preboot/store/sqlstore"
)

// TestReplicationTokenScope: a replication token gets 403 on every admin
// API route but job token introspection; an admin token on none.
func TestReplicationTokenScope(t *testing.T) {
	ctx := context.Background()
	st, err := sqlstore.OpenSQLite(ctx, filepath.Join(t.TempDir(), "scope.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	const repl, admin = "pba_replication-test-token", "pba_admin-test-token"
	if _, err := st.CreateToken(ctx, store.Token{Name: "site-a", Hash: jobs.HashToken(repl), Scope: store.ScopeReplication}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateToken(ctx, store.Token{Name: "admin", Hash: jobs.HashToken(admin)}); err != nil {
		t.Fatal(err)
	}
	js := &jobs.Service{Store: st}
	pol := &policy.Engine{Store: st, Boot: config.Default().Boot, DefaultSettings: policy.SettingsFromConfig(config.Default().Menu), Jobs: js}
	h := api.New(api.Options{Store: st, Policy: pol, Jobs: js, Auth: &api.Auth{Store: st},
		Status: func(context.Context) (api.StatusInfo, error) { return api.StatusInfo{}, nil }})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)

	param := regexp.MustCompile(`\{[^}]+\}`)
	send := func(method, path, tok string) int {
		body := strings.NewReader(`{}`)
		if path == api.IntrospectPath {
			body = strings.NewReader(`{"token":"pbj_unknown"}`)
		}
		req, err := http.NewRequest(method, srv.URL+path, body)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "application/json")
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	n := 0
	for _, p := range h.Patterns() {
		method, path, _ := strings.Cut(p, " ")
		if path == "/api/v1/openapi.json" {
			continue // public
		}
		path = param.ReplaceAllStringFunc(path, func(s string) string {
			switch s {
			case "{mac}":
				return "52:54:00:00:00:01"
			case "{id}":
				return "999"
			}
			return "x"
		})
		code := send(method, path, repl)
		if p == "POST "+api.IntrospectPath {
			if code != http.StatusOK {
				t.Errorf("%s with a replication token: %d, want 200", p, code)
			}
		} else if code != http.StatusForbidden {
			t.Errorf("%s with a replication token: %d, want 403", p, code)
		}
		if code := send(method, path, admin); code == http.StatusForbidden || code == http.StatusUnauthorized {
			t.Errorf("%s with an admin token: %d", p, code)
		}
		n++
	}
	if n < 60 {
		t.Fatalf("only %d routes checked", n)
	}
}
