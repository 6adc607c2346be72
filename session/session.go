// Package session is the web console's login: console users and their
// passwords (bcrypt), sessions held in a cookie (the store keeps only the
// SHA-256 of its id), CSRF tokens, the login and logout handlers and the
// Require middleware that guards the console's pages.
//
// A session ends after IdleTimeout without use, or MaxAge after the
// login, whichever comes first. Expired sessions are deleted lazily: when
// they are presented, and at every login.
package session

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"runtime"
	"time"

	"github.com/preboot/preboot/hostcheck"
	"github.com/preboot/preboot/store"
)

// Names and limits of the console's sessions.
const (
	// CookieName is the session cookie: the session id, base64url.
	CookieName = "preboot_session"
	// CSRFHeader carries the session's CSRF token on API calls that
	// change something; CSRFField is the form field of HTML forms.
	CSRFHeader = "X-CSRF-Token"
	CSRFField  = "csrf"
	// LoginPath is the login page (GET, package console) and form target
	// (POST, Manager.Login); LogoutPath the logout form's target.
	LoginPath  = "/console/login"
	LogoutPath = "/console/logout"
	// DefaultNext is where a login without a (valid) next parameter goes.
	DefaultNext = "/console/"

	IdleTimeout = 12 * time.Hour
	MaxAge      = 7 * 24 * time.Hour
	// FailDelay is the least time a failed login takes.
	FailDelay = 300 * time.Millisecond
	// RetryAfterHeader is sent with the 429 of a locked login.
	RetryAfterHeader = "Retry-After"
)

// touchEvery: a session's last use (and so its idle expiry) is written
// at most this often.
const touchEvery = time.Minute

// Info is the session a request carries.
type Info struct {
	User    string    // the console user's name
	CSRF    string    // the token pages send as X-CSRF-Token or form field csrf
	Expires time.Time // when the session ends unless used again
}

type ctxKey struct{}

// NewContext returns ctx carrying a session.
func NewContext(ctx context.Context, i Info) context.Context {
	return context.WithValue(ctx, ctxKey{}, i)
}

// FromContext returns the session Require (or NewContext) put in ctx.
func FromContext(ctx context.Context) (Info, bool) {
	i, ok := ctx.Value(ctxKey{}).(Info)
	return i, ok
}

// ErrNoSession: the request carries no session cookie, or one of an
// unknown, ended or expired session.
var ErrNoSession = errors.New("not logged in to the console (no valid session)")

// ErrCSRF is the answer to a change made with a session but without its
// CSRF token.
var ErrCSRF = errors.New("missing or wrong CSRF token")

// Manager checks and creates console sessions over a store.
type Manager struct {
	Store  store.Store
	Logger *slog.Logger
	// Now is the clock (nil: time.Now); tests move it.
	Now func() time.Time
	// FailTime is the least time a failed login takes (0: FailDelay;
	// negative: none, for tests).
	FailTime time.Duration
	// Hosts are the server's names: a login POST whose Origin is not one
	// of them is refused (nil: IP literals and localhost only).
	Hosts *hostcheck.Hosts

	bcrypt   chan struct{} // bounds concurrent bcrypt comparisons
	throttle throttle      // failed logins per user name and client address
}

// New returns a Manager over st; log may be nil.
func New(st store.Store, log *slog.Logger) *Manager {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Manager{Store: st, Logger: log, bcrypt: make(chan struct{}, max(1, runtime.GOMAXPROCS(0)))}
}

func (m *Manager) now() time.Time {
	if m.Now != nil {
		return m.Now()
	}
	return time.Now()
}

// HashID is how a session id (the cookie's value) is kept in the store:
// its SHA-256, hex.
func HashID(id string) string {
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:])
}

// randomToken returns 32 random bytes, base64url without padding.
func randomToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// expiry is when a session used at t ends unless used again.
func expiry(created, t time.Time) time.Time {
	idle, abs := t.Add(IdleTimeout), created.Add(MaxAge)
	if abs.Before(idle) {
		return abs
	}
	return idle
}

// Lookup returns the session of a request's cookie and records its use;
// ErrNoSession when there is none (an expired one is deleted), another
// error when the store fails.
func (m *Manager) Lookup(r *http.Request) (Info, error) {
	c, err := r.Cookie(CookieName)
	if err != nil || c.Value == "" || len(c.Value) > 100 {
		return Info{}, ErrNoSession
	}
	ctx := r.Context()
	hash := HashID(c.Value)
	s, err := m.Store.SessionByHash(ctx, hash)
	if errors.Is(err, store.ErrNotFound) {
		return Info{}, ErrNoSession
	}
	if err != nil {
		return Info{}, fmt.Errorf("session: %w", err)
	}
	now := m.now()
	if !now.Before(s.Expires) {
		if err := m.Store.DeleteSession(ctx, hash); err != nil && !errors.Is(err, store.ErrNotFound) {
			m.Logger.WarnContext(ctx, "delete expired console session", "user", s.User, "err", err)
		}
		return Info{}, ErrNoSession
	}
	if now.Sub(s.LastSeen) >= touchEvery {
		s.Expires = expiry(s.CreatedAt, now)
		if err := m.Store.TouchSession(ctx, hash, now, s.Expires); err != nil && !errors.Is(err, store.ErrNotFound) {
			m.Logger.WarnContext(ctx, "record console session use", "user", s.User, "err", err)
		}
	}
	return Info{User: s.User, CSRF: s.CSRF, Expires: s.Expires}, nil
}

// CheckCSRF reports, in constant time, whether token is the session's
// CSRF token.
func CheckCSRF(i Info, token string) bool {
	return i.CSRF != "" && subtle.ConstantTimeCompare([]byte(i.CSRF), []byte(token)) == 1
}

// RequestCSRF is the CSRF token a request sends: the X-CSRF-Token header,
// else the form field csrf.
func RequestCSRF(r *http.Request) string {
	if t := r.Header.Get(CSRFHeader); t != "" {
		return t
	}
	return r.PostFormValue(CSRFField)
}

// Safe reports whether a method only reads (needs no CSRF token).
func Safe(method string) bool {
	return method == http.MethodGet || method == http.MethodHead || method == http.MethodOptions
}

// Require lets through requests with a valid session, with the session in
// their context (FromContext). Without one, GET and HEAD requests are
// redirected (303) to the login page with next=<this page>, others get 401
// JSON. Requests that change something (not GET, HEAD or OPTIONS) must
// also carry the session's CSRF token (header X-CSRF-Token or form field
// csrf), else 403 JSON.
func (m *Manager) Require(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Frame-Options", "DENY")
		i, err := m.Lookup(r)
		switch {
		case errors.Is(err, ErrNoSession):
			if r.Method == http.MethodGet || r.Method == http.MethodHead {
				http.Redirect(w, r, LoginURL(r.URL.RequestURI(), false), http.StatusSeeOther)
				return
			}
			writeError(w, http.StatusUnauthorized, err.Error())
			return
		case err != nil:
			m.Logger.ErrorContext(r.Context(), "console session", "err", err)
			writeError(w, http.StatusInternalServerError, err.Error())
			return
		}
		if !Safe(r.Method) && !CheckCSRF(i, RequestCSRF(r)) {
			writeError(w, http.StatusForbidden, ErrCSRF.Error())
			return
		}
		next.ServeHTTP(w, r.WithContext(NewContext(r.Context(), i)))
	})
}

// LoginURL is the login page's address that comes back to next (a local
// console path, else DefaultNext) after the login; failed adds failed=1.
func LoginURL(next string, failed bool) string {
	q := url.Values{}
	if failed {
		q.Set("failed", "1")
	}
	q.Set("next", SafeNext(next))
	return LoginPath + "?" + q.Encode()
}

func writeError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}
