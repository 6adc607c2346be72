package session_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/preboot/preboot/session"
	"github.com/preboot/preboot/store"
	"github.com/preboot/preboot/store/sqlite"
)

// console is a session.Manager behind a real HTTP server over a real
// SQLite store, with a stand-in page behind Require that echoes the
// session it sees.
type console struct {
	st     store.Store
	m      *session.Manager
	url    string
	offset atomic.Int64 // added to the manager's clock
}

func newConsole(t *testing.T) *console {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "preboot.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	c := &console{st: st, m: session.New(st, nil)}
	c.m.Now = func() time.Time { return time.Now().Add(time.Duration(c.offset.Load())) }
	mux := http.NewServeMux()
	mux.HandleFunc("POST /console/login", c.m.Login)
	mux.HandleFunc("POST /console/logout", c.m.Logout)
	mux.Handle("/console/", c.m.Require(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		i, ok := session.FromContext(r.Context())
		if !ok {
			http.Error(w, "no session in the context", http.StatusInternalServerError)
			return
		}
		json.NewEncoder(w).Encode(map[string]string{"user": i.User, "csrf": i.CSRF, "path": r.URL.Path})
	})))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	c.url = srv.URL
	return c
}

// addUser stores a user with a cheap bcrypt hash (the cost of the hash
// is in the hash: the login checks it the same way).
func (c *console) addUser(t *testing.T, name, pw string) store.User {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	u, err := c.st.CreateUser(context.Background(), store.User{Name: name, PasswordHash: string(h)})
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// browser keeps cookies and does not follow redirects.
type browser struct {
	t   *testing.T
	c   *console
	hc  *http.Client
	jar *cookiejar.Jar
}

func (c *console) browser(t *testing.T) *browser {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &browser{t: t, c: c, jar: jar, hc: &http.Client{Jar: jar, Timeout: time.Minute,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

type answer struct {
	code     int
	location string
	body     string
	cookies  []*http.Cookie
}

func (b *browser) do(method, path string, form url.Values, header map[string]string) answer {
	b.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, b.c.url+path, body)
	if err != nil {
		b.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := b.hc.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, resp.Header.Get("Location"), string(raw), resp.Cookies()}
}

func (b *browser) login(user, pw, next string) answer {
	b.t.Helper()
	return b.do("POST", "/console/login", url.Values{"user": {user}, "password": {pw}, "next": {next}}, nil)
}

// page GETs a console page and returns what the page saw.
func (b *browser) page(path string) map[string]string {
	b.t.Helper()
	a := b.do("GET", path, nil, nil)
	if a.code != http.StatusOK {
		b.t.Fatalf("GET %s: %d %s %s", path, a.code, a.location, a.body)
	}
	var seen map[string]string
	if err := json.Unmarshal([]byte(a.body), &seen); err != nil {
		b.t.Fatalf("GET %s: %v: %s", path, err, a.body)
	}
	return seen
}

func (b *browser) sessionCookie() *http.Cookie {
	u, _ := url.Parse(b.c.url)
	for _, c := range b.jar.Cookies(u) {
		if c.Name == session.CookieName {
			return c
		}
	}
	return nil
}

func wantRedirect(t *testing.T, what string, a answer, location string) {
	t.Helper()
	if a.code != http.StatusSeeOther || a.location != location {
		t.Fatalf("%s: %d to %q, want 303 to %q (%s)", what, a.code, a.location, location, a.body)
	}
}

func wantJSONError(t *testing.T, what string, a answer, code int, msg string) {
	t.Helper()
	var e struct{ Error string }
	if a.code != code || json.Unmarshal([]byte(a.body), &e) != nil || !strings.Contains(e.Error, msg) {
		t.Fatalf("%s: %d %s, want %d with an error saying %q", what, a.code, a.body, code, msg)
	}
}

func TestLoginSessionLogout(t *testing.T) {
	ctx := context.Background()
	c := newConsole(t)
	c.addUser(t, "ann", "correct horse battery")
	b := c.browser(t)

	// Without a session: pages go to the login page, changes are refused.
	wantRedirect(t, "page without session", b.do("GET", "/console/devices?q=lab%201", nil, nil),
		"/console/login?next=%2Fconsole%2Fdevices%3Fq%3Dlab%25201")
	wantJSONError(t, "POST without session", b.do("POST", "/console/x", url.Values{"a": {"b"}}, nil), http.StatusUnauthorized, "not logged in")

	// Login: a cookie with a random id, of which the store keeps the hash.
	a := b.login("ann", "correct horse battery", "/console/devices?q=lab")
	wantRedirect(t, "login", a, "/console/devices?q=lab")
	var ck *http.Cookie
	for _, x := range a.cookies {
		if x.Name == session.CookieName {
			ck = x
		}
	}
	if ck == nil || !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Path != "/" || ck.Secure || len(ck.Value) != 43 {
		t.Fatalf("session cookie: %+v", ck)
	}
	if _, err := c.st.SessionByHash(ctx, ck.Value); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the store keeps the session id itself: %v", err)
	}
	seen := b.page("/console/devices")
	if seen["user"] != "ann" || len(seen["csrf"]) != 43 || seen["csrf"] == ck.Value {
		t.Fatalf("page saw %v", seen)
	}
	csrf := seen["csrf"]
	if u, err := c.st.User(ctx, "ann"); err != nil || u.LastLogin.IsZero() {
		t.Fatalf("last login not recorded: %+v %v", u, err)
	}
	evs, err := c.st.Events(ctx, store.EventFilter{Kind: store.EventAdmin})
	if err != nil || len(evs) != 1 || evs[0].Actor != "user:ann" || !strings.Contains(evs[0].Message, "console login from 127.0.0.1") {
		t.Fatalf("login event: %+v %v", evs, err)
	}

	// Changes need the CSRF token: header or form field.
	wantJSONError(t, "POST without CSRF", b.do("POST", "/console/x", url.Values{"a": {"b"}}, nil), http.StatusForbidden, "CSRF")
	wantJSONError(t, "POST with a wrong CSRF", b.do("DELETE", "/console/x", nil, map[string]string{"X-CSRF-Token": csrf + "x"}), http.StatusForbidden, "CSRF")
	if a := b.do("DELETE", "/console/x", nil, map[string]string{"X-CSRF-Token": csrf}); a.code != http.StatusOK {
		t.Fatalf("DELETE with the CSRF header: %d %s", a.code, a.body)
	}
	if a := b.do("POST", "/console/x", url.Values{"csrf": {csrf}}, nil); a.code != http.StatusOK {
		t.Fatalf("POST with the CSRF field: %d %s", a.code, a.body)
	}

	// A second login is another session with another CSRF token.
	b2 := c.browser(t)
	wantRedirect(t, "second login", b2.login("ann", "correct horse battery", ""), "/console/")
	if s2 := b2.page("/console/"); s2["csrf"] == csrf || b2.sessionCookie().Value == ck.Value {
		t.Fatal("two logins share a session")
	}

	// Logout: refused with a wrong token, then the session is gone, even
	// for a copy of the cookie.
	if a := b.do("POST", "/console/logout", url.Values{"csrf": {"nope"}}, nil); a.code != http.StatusForbidden {
		t.Fatalf("logout with a wrong CSRF token: %d %s", a.code, a.body)
	}
	b.page("/console/")
	a = b.do("POST", "/console/logout", url.Values{"csrf": {csrf}}, nil)
	wantRedirect(t, "logout", a, "/console/login")
	if b.sessionCookie() != nil {
		t.Fatal("the cookie is still set after logout")
	}
	if _, err := c.st.SessionByHash(ctx, sha256hex(ck.Value)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("session after logout: %v", err)
	}
	u, _ := url.Parse(c.url)
	b.jar.SetCookies(u, []*http.Cookie{{Name: session.CookieName, Value: ck.Value, Path: "/"}})
	wantRedirect(t, "old cookie after logout", b.do("GET", "/console/", nil, nil), "/console/login?next=%2Fconsole%2F")
	// The other session lives on.
	b2.page("/console/")
	// Logout without a session just goes to the login page.
	wantRedirect(t, "logout without session", c.browser(t).do("POST", "/console/logout", url.Values{}, nil), "/console/login")
}

func sha256hex(s string) string {
	return session.HashID(s)
}

func TestLoginRefused(t *testing.T) {
	ctx := context.Background()
	c := newConsole(t)
	c.addUser(t, "ann", "correct horse battery")
	for _, tc := range []struct{ what, user, pw string }{
		{"wrong password", "ann", "correct horse batterY"},
		{"unknown user", "bob", "correct horse battery"},
		{"empty password", "ann", ""},
		{"too long password", "ann", "correct horse battery" + strings.Repeat("x", 80)},
	} {
		b := c.browser(t)
		start := time.Now()
		a := b.login(tc.user, tc.pw, "/console/jobs")
		if d := time.Since(start); d < session.FailDelay {
			t.Errorf("%s: answered after %v, before the failure delay", tc.what, d)
		}
		wantRedirect(t, tc.what, a, "/console/login?failed=1&next=%2Fconsole%2Fjobs")
		if b.sessionCookie() != nil {
			t.Errorf("%s: a session cookie was set", tc.what)
		}
		// A failure alone is logged, not stored: only lockouts are events
		// (TestLoginThrottle), so guessing cannot flood the store.
		evs, err := c.st.Events(ctx, store.EventFilter{Limit: 10})
		if err != nil || len(evs) != 0 {
			t.Errorf("%s: events %+v %v", tc.what, evs, err)
		}
		wantRedirect(t, tc.what+": then a page", b.do("GET", "/console/", nil, nil), "/console/login?next=%2Fconsole%2F")
	}
}

func TestNextStaysLocal(t *testing.T) {
	c := newConsole(t)
	c.addUser(t, "ann", "correct horse battery")
	for next, want := range map[string]string{
		"":                              "/console/",
		"/console/jobs/7?x=1":           "/console/jobs/7?x=1",
		"/console":                      "/console",
		"https://evil.example/console/": "/console/",
		"//evil.example/console/":       "/console/",
		"/\\evil.example/console/":      "/console/",
		"/console/../api/v1/tokens":     "/console/",
		"/api/v1/devices":               "/console/",
		"javascript:alert(1)":           "/console/",
		"console/devices":               "/console/",
		"/console/\r\nSet-Cookie: x=1":  "/console/",
	} {
		wantRedirect(t, "next "+next, c.browser(t).login("ann", "correct horse battery", next), want)
		if got := session.SafeNext(next); got != want {
			t.Errorf("SafeNext(%q) = %q, want %q", next, got, want)
		}
	}
	if got := session.LoginURL("https://evil.example/", true); got != "/console/login?failed=1&next=%2Fconsole%2F" {
		t.Errorf("LoginURL = %q", got)
	}
}

func TestExpiry(t *testing.T) {
	ctx := context.Background()
	c := newConsole(t)
	c.addUser(t, "ann", "correct horse battery")

	// Idle: 11 hours later the session still works (and is extended),
	// 12 hours after the last use it is refused and deleted.
	b := c.browser(t)
	wantRedirect(t, "login", b.login("ann", "correct horse battery", ""), "/console/")
	hash := session.HashID(b.sessionCookie().Value)
	c.offset.Store(int64(11 * time.Hour))
	b.page("/console/")
	c.offset.Store(int64(22 * time.Hour))
	b.page("/console/")
	s, err := c.st.SessionByHash(ctx, hash)
	if err != nil || s.Expires.Sub(s.CreatedAt) < 33*time.Hour {
		t.Fatalf("session not extended by its use: %+v %v", s, err)
	}
	c.offset.Store(int64(34*time.Hour + time.Minute))
	wantRedirect(t, "idle session", b.do("GET", "/console/", nil, nil), "/console/login?next=%2Fconsole%2F")
	if _, err := c.st.SessionByHash(ctx, hash); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("expired session not deleted: %v", err)
	}

	// Absolute: used every 11 hours, it still ends 7 days after the login.
	c.offset.Store(0)
	b = c.browser(t)
	wantRedirect(t, "login", b.login("ann", "correct horse battery", ""), "/console/")
	hash = session.HashID(b.sessionCookie().Value)
	var last time.Duration
	for h := 11 * time.Hour; h < session.MaxAge; h += 11 * time.Hour {
		c.offset.Store(int64(h))
		b.page("/console/")
		last = h
	}
	c.offset.Store(int64(session.MaxAge))
	if last+session.IdleTimeout <= session.MaxAge {
		t.Fatal("test setup: the idle timeout alone would end the session")
	}
	wantJSONError(t, "POST after the maximum age", b.do("POST", "/console/x", url.Values{}, nil), http.StatusUnauthorized, "not logged in")
	if _, err := c.st.SessionByHash(ctx, hash); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("expired session not deleted: %v", err)
	}

	// Sessions nobody presents again go at the next login.
	b = c.browser(t)
	wantRedirect(t, "login", b.login("ann", "correct horse battery", ""), "/console/")
	stale := session.HashID(b.sessionCookie().Value)
	c.offset.Store(int64(session.MaxAge + 13*time.Hour))
	wantRedirect(t, "login", c.browser(t).login("ann", "correct horse battery", ""), "/console/")
	if _, err := c.st.SessionByHash(ctx, stale); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("stale session not deleted at the next login: %v", err)
	}
}

// TestUsers covers the real password path (bcrypt cost 12): the first
// admin, its login, and what user management refuses.
func TestUsers(t *testing.T) {
	ctx := context.Background()
	c := newConsole(t)
	pw, err := session.EnsureFirstAdmin(ctx, c.st)
	if err != nil || len(pw) < session.MinPasswordLen {
		t.Fatalf("first admin: %q %v", pw, err)
	}
	u, err := c.st.User(ctx, session.FirstAdmin)
	if err != nil || !strings.HasPrefix(u.PasswordHash, "$2a$12$") || strings.Contains(u.PasswordHash, pw) {
		t.Fatalf("first admin stored as %+v %v", u, err)
	}
	if again, err := session.EnsureFirstAdmin(ctx, c.st); err != nil || again != "" {
		t.Fatalf("first admin again: %q %v", again, err)
	}
	wantRedirect(t, "first admin login", c.browser(t).login(session.FirstAdmin, pw, ""), "/console/")

	for _, tc := range []struct{ name, pw, msg string }{
		{"bob", "short", "too short"},
		{"bob", "123456789", "too short"},
		{"bob", strings.Repeat("é", 40), "too long"},
		{"-bob", "long enough password", "user name"},
		{"bob smith", "long enough password", "user name"},
		{"", "long enough password", "user name"},
	} {
		_, err := session.CreateUser(ctx, c.st, tc.name, tc.pw)
		if !errors.Is(err, store.ErrInvalid) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("CreateUser(%q, %q) = %v, want invalid: %s", tc.name, tc.pw, err, tc.msg)
		}
	}
	if err := session.SetPassword(ctx, c.st, session.FirstAdmin, "short"); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("short new password: %v", err)
	}
	if err := session.SetPassword(ctx, c.st, "ghost", "long enough password"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("new password of an unknown user: %v", err)
	}
	if err := session.ValidatePassword("ten chars!"); err != nil {
		t.Errorf("a 10-character password: %v", err)
	}
	if a, b := session.GeneratePassword(), session.GeneratePassword(); a == b || len(a) < 20 {
		t.Errorf("generated passwords %q %q", a, b)
	}
}

// Password guessing is throttled per user name and per client address:
// after session.MaxFailures wrong passwords the name is locked (429 with
// Retry-After, even for the right password) for session.LockoutBase, then
// twice as long after the next series; one security event per lockout.
// The manager's clock is moved, nothing sleeps.
func TestLoginThrottle(t *testing.T) {
	ctx := context.Background()
	c := newConsole(t)
	c.m.FailTime = -1
	c.addUser(t, "ann", "correct horse battery")
	c.addUser(t, "bob", "staple")
	b := c.browser(t)
	for i := range session.MaxFailures {
		a := b.login("ann", "guess", "/console/")
		if a.code != http.StatusSeeOther {
			t.Fatalf("failure %d: %d %s", i+1, a.code, a.body)
		}
	}
	locked := b.login("ann", "correct horse battery", "/console/")
	if locked.code != http.StatusTooManyRequests || b.sessionCookie() != nil {
		t.Fatalf("right password while locked: %d %s", locked.code, locked.body)
	}
	evs, err := c.st.Events(ctx, store.EventFilter{Kind: store.EventSecurity, Limit: 10})
	if err != nil || len(evs) != 1 || !strings.Contains(evs[0].Message, `user "ann" locked for 30s`) {
		t.Fatalf("lockout events: %+v %v", evs, err)
	}
	// The answer says when to come back.
	req, _ := http.NewRequest("POST", c.url+"/console/login", strings.NewReader(url.Values{"user": {"ann"}, "password": {"x"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "30" {
		t.Fatalf("locked: %s Retry-After %q", resp.Status, resp.Header.Get("Retry-After"))
	}
	// Another user from the same address is not locked (below the
	// per-address limit).
	if a := c.browser(t).login("bob", "staple", "/console/"); a.code != http.StatusSeeOther || a.location != "/console/" {
		t.Fatalf("other user: %d %s", a.code, a.location)
	}
	// A second series right after the lockout locks for twice as long.
	c.offset.Add(int64(session.LockoutBase + time.Second))
	for range session.MaxFailures {
		b.login("ann", "guess", "/console/")
	}
	c.offset.Add(int64(session.LockoutBase + time.Second))
	if a := b.login("ann", "correct horse battery", "/console/"); a.code != http.StatusTooManyRequests {
		t.Fatalf("second lockout after %s: %d", session.LockoutBase, a.code)
	}
	// After it the right password works.
	c.offset.Add(int64(session.LockoutBase))
	if a := b.login("ann", "correct horse battery", "/console/"); a.location != "/console/" {
		t.Fatalf("after the second lockout: %d %s", a.code, a.body)
	}
	if evs, _ := c.st.Events(ctx, store.EventFilter{Kind: store.EventSecurity, Limit: 10}); len(evs) != 2 || !strings.Contains(evs[0].Message, "locked for 1m0s") {
		t.Fatalf("second lockout event: %+v", evs)
	}
	// Per address: many user names from one address (known users: an
	// unknown name costs a full bcrypt comparison).
	for i := range 5 {
		c.addUser(t, fmt.Sprintf("user%d", i), "pw")
	}
	for i := range session.MaxFailuresPerIP {
		b.login(fmt.Sprintf("user%d", i%5), "guess", "/console/")
	}
	if a := c.browser(t).login("bob", "staple", "/console/"); a.code != http.StatusTooManyRequests {
		t.Fatalf("address locked: %d", a.code)
	}
}

// A login form posted by a page of another site is refused, with or
// without Sec-Fetch-Site; the server's own page (same origin) logs in.
func TestLoginCrossSiteRefused(t *testing.T) {
	c := newConsole(t)
	c.m.FailTime = -1
	c.addUser(t, "ann", "correct horse battery")
	form := url.Values{"user": {"ann"}, "password": {"correct horse battery"}, "next": {"/console/"}}
	for _, h := range []map[string]string{
		{"Origin": "http://evil.example"},
		{"Origin": "null"},
		{"Origin": "http://10.66.66.66:8080"},
		{"Sec-Fetch-Site": "cross-site"},
		{"Sec-Fetch-Site": "same-site", "Origin": "http://evil.example"},
	} {
		b := c.browser(t)
		if a := b.do("POST", "/console/login", form, h); a.code != http.StatusForbidden || b.sessionCookie() != nil {
			t.Fatalf("%v: %d %s", h, a.code, a.body)
		}
	}
	b := c.browser(t)
	if a := b.do("POST", "/console/login", form, map[string]string{"Origin": c.url, "Sec-Fetch-Site": "same-origin"}); a.code != http.StatusSeeOther || b.sessionCookie() == nil {
		t.Fatalf("same origin: %d %s", a.code, a.body)
	}
}
