package api_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/preboot/preboot/api"
	"github.com/preboot/preboot/session"
	"github.com/preboot/preboot/store"
	"github.com/preboot/preboot/store/sqlstore"
)

// cookieEnv is the API with console sessions, as the server mounts it:
// the login handler beside /api/v1/, over HTTP on loopback.
type cookieEnv struct {
	t    *testing.T
	st   store.Store
	url  string
	hc   *http.Client
	jar  *cookiejar.Jar
	csrf string
}

func newCookieEnv(t *testing.T, trustLoopback bool) *cookieEnv {
	t.Helper()
	ctx := context.Background()
	db, err := sqlstore.OpenSQLite(ctx, filepath.Join(t.TempDir(), "api.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	st := api.NotifyingStore{Store: db, N: &api.Notifier{}}
	sessions := session.New(st, nil)
	h := api.New(api.Options{Store: st, Auth: &api.Auth{Store: st, TrustLoopback: trustLoopback, Sessions: sessions}, Version: "test"})
	mux := http.NewServeMux()
	mux.Handle("/api/v1/", h)
	mux.HandleFunc("POST /console/login", sessions.Login)
	mux.HandleFunc("POST /console/logout", sessions.Logout)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	hash, err := bcrypt.GenerateFromPassword([]byte("correct horse battery"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateUser(ctx, store.User{Name: "ann", PasswordHash: string(hash)}); err != nil {
		t.Fatal(err)
	}
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &cookieEnv{t: t, st: st, url: srv.URL, jar: jar, hc: &http.Client{Jar: jar, Timeout: time.Minute,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

// login logs in over HTTP and learns the session's CSRF token (which the
// console's pages get from session.FromContext).
func (e *cookieEnv) login() {
	e.t.Helper()
	resp, err := e.hc.PostForm(e.url+"/console/login", url.Values{"user": {"ann"}, "password": {"correct horse battery"}})
	if err != nil {
		e.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/console/" {
		e.t.Fatalf("login: %d to %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	u, _ := url.Parse(e.url)
	for _, c := range e.jar.Cookies(u) {
		if c.Name == session.CookieName {
			s, err := e.st.SessionByHash(context.Background(), session.HashID(c.Value))
			if err != nil {
				e.t.Fatal(err)
			}
			e.csrf = s.CSRF
			return
		}
	}
	e.t.Fatal("login set no session cookie")
}

func (e *cookieEnv) call(method, path, body string, header map[string]string, want int) string {
	e.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.url+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := e.hc.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		e.t.Fatalf("%s %s: %d, want %d: %s", method, path, resp.StatusCode, want, raw)
	}
	return string(raw)
}

func (e *cookieEnv) lastAdminEvent() store.Event {
	e.t.Helper()
	evs, err := e.st.Events(context.Background(), store.EventFilter{Kind: store.EventAdmin, Limit: 1})
	if err != nil || len(evs) != 1 {
		e.t.Fatalf("admin events: %+v %v", evs, err)
	}
	return evs[0]
}

func TestSessionCookieAuth(t *testing.T) {
	e := newCookieEnv(t, false)
	e.call("GET", "/api/v1/devices", "", nil, http.StatusUnauthorized)
	e.login()

	// Reading needs only the cookie.
	e.call("GET", "/api/v1/devices", "", nil, http.StatusOK)
	e.call("GET", "/api/v1/status", "", nil, http.StatusNotFound) // no Status hook here

	// Changing needs the CSRF token too.
	group := `{"name":"lab-a"}`
	for _, h := range []map[string]string{nil, {"X-CSRF-Token": ""}, {"X-CSRF-Token": e.csrf[:20]}, {"X-CSRF-Token": e.csrf + "A"}} {
		body := e.call("POST", "/api/v1/groups", group, h, http.StatusForbidden)
		var ae api.Error
		if json.Unmarshal([]byte(body), &ae) != nil || ae.Error != "missing or wrong CSRF token" {
			t.Fatalf("CSRF refusal body: %s", body)
		}
	}
	if _, err := e.st.Group(context.Background(), "lab-a"); err == nil {
		t.Fatal("a refused request created the group")
	}
	e.call("POST", "/api/v1/groups", group, map[string]string{"X-CSRF-Token": e.csrf}, http.StatusCreated)
	if ev := e.lastAdminEvent(); ev.Actor != "user:ann" || !strings.Contains(ev.Message, "lab-a") {
		t.Fatalf("audit event: %+v", ev)
	}
	e.call("DELETE", "/api/v1/groups/lab-a", "", map[string]string{"X-CSRF-Token": e.csrf}, http.StatusNoContent)

	// A bearer token wins over the cookie: no CSRF token needed, its own actor.
	tok, hash, err := api.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.CreateToken(context.Background(), store.Token{Name: "ci", Hash: hash, Prefix: tok[:10]}); err != nil {
		t.Fatal(err)
	}
	e.call("POST", "/api/v1/groups", `{"name":"by-token"}`, map[string]string{"Authorization": "Bearer " + tok}, http.StatusCreated)
	if ev := e.lastAdminEvent(); ev.Actor != "token:ci" {
		t.Fatalf("audit event with a token and a cookie: %+v", ev)
	}
	e.call("GET", "/api/v1/devices", "", map[string]string{"Authorization": "Bearer pba_wrong"}, http.StatusUnauthorized)

	// After logout the cookie is worthless.
	e.call("POST", "/console/logout", "csrf="+e.csrf, map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, http.StatusSeeOther)
	e.call("GET", "/api/v1/devices", "", nil, http.StatusUnauthorized)
}

// With loopback trusted, a browser on the server host that carries a
// session acts as its user, CSRF check included; without a cookie,
// loopback clients (the CLI) go on as before.
func TestSessionCookieBeforeLoopback(t *testing.T) {
	e := newCookieEnv(t, true)
	e.call("POST", "/api/v1/groups", `{"name":"from-cli"}`, nil, http.StatusCreated)
	if ev := e.lastAdminEvent(); ev.Actor != "loopback" {
		t.Fatalf("loopback event: %+v", ev)
	}
	e.login()
	e.call("POST", "/api/v1/groups", `{"name":"lab-b"}`, nil, http.StatusForbidden)
	e.call("POST", "/api/v1/groups", `{"name":"lab-b"}`, map[string]string{"X-CSRF-Token": e.csrf}, http.StatusCreated)
	if ev := e.lastAdminEvent(); ev.Actor != "user:ann" {
		t.Fatalf("audit event of the console user on loopback: %+v", ev)
	}
	// An unknown cookie is no session: loopback trust applies.
	e.jar.SetCookies(mustURL(t, e.url), []*http.Cookie{{Name: session.CookieName, Value: "forged", Path: "/"}})
	e.call("POST", "/api/v1/groups", `{"name":"lab-c"}`, nil, http.StatusCreated)
	if ev := e.lastAdminEvent(); ev.Actor != "loopback" {
		t.Fatalf("event with a forged cookie: %+v", ev)
	}
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
