package session

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"
	"unicode"

	"golang.org/x/crypto/bcrypt"

	"github.com/preboot/preboot/store"
)

// SafeNext returns next if it is a local path of the console (under
// /console, no scheme, host or backslash, nothing that climbs out with
// ".."), else DefaultNext: a login never sends the browser elsewhere.
func SafeNext(next string) string {
	if next == "" || len(next) > 2000 || !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") ||
		strings.ContainsAny(next, "\\") || strings.ContainsFunc(next, unicode.IsControl) {
		return DefaultNext
	}
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || u.Opaque != "" {
		return DefaultNext
	}
	p := path.Clean(u.Path)
	if p != "/console" && !strings.HasPrefix(p, "/console/") {
		return DefaultNext
	}
	return next
}

// Login handles POST /console/login, form fields user, password and next.
// Success: a new session in the cookie, 303 to next. Failure: 303 back to
// the login page with failed=1, no sooner than FailDelay after the
// request came (unknown users cost a bcrypt comparison too). A login
// sent by a page of another site (Origin, Sec-Fetch-Site) is refused
// with 403. After MaxFailures wrong passwords for a user name (or
// MaxFailuresPerIP from a client address) logins for it are refused with
// 429 and Retry-After for a lockout that doubles each time; each lockout
// (not each failure) is recorded as a "security" event.
func (m *Manager) Login(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	ctx := r.Context()
	if !m.Hosts.SameOrigin(r) {
		m.Logger.WarnContext(ctx, "console login from another site refused", "origin", r.Header.Get("Origin"),
			"sec_fetch_site", r.Header.Get("Sec-Fetch-Site"), "remote", r.RemoteAddr)
		http.Error(w, "login refused: the form was sent by a page of another site (Origin "+
			strconv.Quote(r.Header.Get("Origin"))+"); log in from this server's own login page", http.StatusForbidden)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad login form: "+err.Error(), http.StatusBadRequest)
		return
	}
	name, password := r.PostForm.Get("user"), r.PostForm.Get("password")
	next := SafeNext(r.PostForm.Get("next"))
	userKey, ipKey := "user:"+name, "ip:"+remoteIP(r)
	now := m.now()
	if d := max(m.throttle.locked(userKey, now), m.throttle.locked(ipKey, now)); d > 0 {
		secs := int((d + time.Second - 1) / time.Second)
		w.Header().Set(RetryAfterHeader, strconv.Itoa(secs))
		w.Header().Set("Cache-Control", "no-store")
		http.Error(w, fmt.Sprintf("too many failed logins: try again in %d seconds", secs), http.StatusTooManyRequests)
		return
	}
	u, err := m.check(ctx, name, password)
	if errors.Is(err, errWrongPassword) {
		m.Logger.WarnContext(ctx, "console login failed", "user", quoteName(name), "remote", r.RemoteAddr)
		now := m.now()
		if d := m.throttle.fail(userKey, MaxFailures, now); d > 0 {
			m.lockoutEvent(ctx, fmt.Sprintf("console logins for user %s locked for %s after %d wrong passwords (the last from %s)",
				quoteName(name), d, MaxFailures, remoteIP(r)))
		}
		if d := m.throttle.fail(ipKey, MaxFailuresPerIP, now); d > 0 {
			m.lockoutEvent(ctx, fmt.Sprintf("console logins from %s locked for %s after %d wrong passwords",
				remoteIP(r), d, MaxFailuresPerIP))
		}
		least := m.FailTime
		if least == 0 {
			least = FailDelay
		}
		if d := least - time.Since(start); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return
			}
		}
		http.Redirect(w, r, LoginURL(next, true), http.StatusSeeOther)
		return
	}
	if err != nil {
		m.Logger.ErrorContext(ctx, "console login", "user", quoteName(name), "err", err)
		http.Error(w, "login failed: "+err.Error(), http.StatusInternalServerError)
		return
	}
	m.throttle.succeed(userKey)
	id, err := m.start(ctx, u)
	if err != nil {
		m.Logger.ErrorContext(ctx, "console login", "user", u.Name, "err", err)
		http.Error(w, "login failed: "+err.Error(), http.StatusInternalServerError)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: id, Path: "/", HttpOnly: true, Secure: r.TLS != nil,
		SameSite: http.SameSiteStrictMode, Expires: m.now().Add(MaxAge)})
	m.event(ctx, store.Event{Kind: store.EventAdmin, Actor: "user:" + u.Name, Message: "console login from " + remoteIP(r)})
	m.Logger.InfoContext(ctx, "console login", "user", u.Name, "remote", r.RemoteAddr)
	http.Redirect(w, r, next, http.StatusSeeOther)
}

// Logout handles POST /console/logout (form field csrf, or the
// X-CSRF-Token header): the session ends, the cookie is cleared, 303 to
// the login page. Without a session it only clears the cookie; with a
// wrong CSRF token it is refused (403).
func (m *Manager) Logout(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	i, err := m.Lookup(r)
	switch {
	case errors.Is(err, ErrNoSession):
	case err != nil:
		m.Logger.ErrorContext(ctx, "console logout", "err", err)
		http.Error(w, "logout failed: "+err.Error(), http.StatusInternalServerError)
		return
	case !CheckCSRF(i, RequestCSRF(r)):
		http.Error(w, ErrCSRF.Error(), http.StatusForbidden)
		return
	default:
		c, _ := r.Cookie(CookieName)
		if err := m.Store.DeleteSession(ctx, HashID(c.Value)); err != nil && !errors.Is(err, store.ErrNotFound) {
			m.Logger.ErrorContext(ctx, "console logout", "user", i.User, "err", err)
			http.Error(w, "logout failed: "+err.Error(), http.StatusInternalServerError)
			return
		}
		m.event(ctx, store.Event{Kind: store.EventAdmin, Actor: "user:" + i.User, Message: "console logout from " + remoteIP(r)})
	}
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: "", Path: "/", HttpOnly: true, Secure: r.TLS != nil,
		SameSite: http.SameSiteStrictMode, MaxAge: -1})
	http.Redirect(w, r, LoginPath, http.StatusSeeOther)
}

var errWrongPassword = errors.New("wrong user name or password")

// dummyHash is compared against when the user does not exist, so that an
// unknown user costs what a wrong password does (same bcrypt cost).
const dummyHash = "$2a$12$R21DSmsAFDqVX2BrULspmuGqRqAI4lpkmtJl.H.LSItB9f3aEIyt6"

// check returns the user whose password this is, or errWrongPassword.
func (m *Manager) check(ctx context.Context, name, password string) (store.User, error) {
	hash := dummyHash
	u, err := m.Store.User(ctx, name)
	switch {
	case err == nil:
		hash = u.PasswordHash
	case !errors.Is(err, store.ErrNotFound):
		return store.User{}, err
	}
	select {
	case m.bcrypt <- struct{}{}:
	case <-ctx.Done():
		return store.User{}, ctx.Err()
	}
	// bcrypt reads at most 72 bytes; longer passwords are refused
	// (after the comparison, which costs the same).
	pw := []byte(password)
	if len(pw) > maxPasswordBytes {
		pw = pw[:maxPasswordBytes]
	}
	cmp := bcrypt.CompareHashAndPassword([]byte(hash), pw)
	<-m.bcrypt
	if err != nil || cmp != nil || name == "" || len(password) > maxPasswordBytes {
		return store.User{}, errWrongPassword
	}
	return u, nil
}

// start creates a session for u and returns its id (the cookie's value);
// expired sessions are deleted on the way.
func (m *Manager) start(ctx context.Context, u store.User) (string, error) {
	now := m.now()
	if n, err := m.Store.DeleteExpiredSessions(ctx, now); err != nil {
		m.Logger.WarnContext(ctx, "delete expired console sessions", "err", err)
	} else if n > 0 {
		m.Logger.DebugContext(ctx, "deleted expired console sessions", "count", n)
	}
	id, err := randomToken()
	if err != nil {
		return "", err
	}
	csrf, err := randomToken()
	if err != nil {
		return "", err
	}
	_, err = m.Store.CreateSession(ctx, store.Session{Hash: HashID(id), UserID: u.ID, CSRF: csrf, CreatedAt: now, LastSeen: now,
		Expires: expiry(now, now)})
	if err != nil {
		return "", err
	}
	return id, nil
}

// lockoutEvent records a login lockout (one event per lockout).
func (m *Manager) lockoutEvent(ctx context.Context, msg string) {
	m.Logger.WarnContext(ctx, msg)
	m.event(ctx, store.Event{Kind: store.EventSecurity, Actor: "console", Message: msg})
}

func (m *Manager) event(ctx context.Context, e store.Event) {
	if _, err := m.Store.AddEvent(ctx, e); err != nil {
		m.Logger.ErrorContext(ctx, "record console event", "err", err)
	}
}

// quoteName is a user name as typed, fit for the event log: at most 64
// characters, quoted, control characters escaped.
func quoteName(s string) string {
	if r := []rune(s); len(r) > 64 {
		s = string(r[:64]) + "..."
	}
	return fmt.Sprintf("%q", s)
}

func remoteIP(r *http.Request) string {
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return host
	}
	return r.RemoteAddr
}
