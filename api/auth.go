package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/preboot/preboot/hostcheck"
	"github.com/preboot/preboot/jobs"
	"github.com/preboot/preboot/session"
	"github.com/preboot/preboot/store"
)

// Token prefixes: administrators' API tokens and the per-job tokens of the
// imaging agent.
const (
	AdminTokenPrefix = "pba_"
	JobTokenPrefix   = "pbj_"
)

// Auth decides who may use the admin API (and the image repository's
// administrative side): a client of the local admin socket whose OS
// identity the server accepted (a Peer in the request's context); else a
// bearer admin token; else the web console's session cookie (when
// Sessions is set); else — only when TrustLoopback is set, which is
// unsafe — any client on the loopback interface. A request that carries
// a valid session cookie and no token acts as the console user even
// from loopback, so that a browser on the server itself is CSRF-checked
// and audited by name too.
type Auth struct {
	Store store.Store
	// TrustLoopback makes every loopback client without a token an
	// administrator: every local user, and every client of a reverse
	// proxy on this host. Off by default; kept for those who want it.
	// Requests that a proxy forwarded (Forwarded, X-Forwarded-For,
	// X-Real-IP) or a browser sent for another site never get it.
	TrustLoopback bool
	Logger        *slog.Logger
	// Sessions checks the console's session cookie (nil: cookies are
	// ignored). Requests it authenticates act as "user:<name>"; those that
	// change something (not GET, HEAD or OPTIONS) must send the session's
	// CSRF token in the X-CSRF-Token header.
	Sessions *session.Manager
	// Hosts are the names the server answers to: a browser's Origin is
	// judged against them (nil: IP literals and localhost only).
	Hosts *hostcheck.Hosts

	mu      sync.Mutex
	touched map[int64]time.Time // last_used written at most once a minute
}

// Peer is the OS identity of a client of the local admin socket
// (SO_PEERCRED), put in the request's context by the socket's server.
type Peer struct {
	UID, GID, PID int
	User          string // the user name of UID ("uid N" when unknown)
	// Allowed: root, the server's own user or a member of the admin
	// group; Why says why not otherwise.
	Allowed bool
	Why     string
}

type peerKey struct{}

// WithPeer returns ctx carrying the admin socket's peer.
func WithPeer(ctx context.Context, p Peer) context.Context {
	return context.WithValue(ctx, peerKey{}, p)
}

// PeerFrom returns the admin socket's peer of a request, if it came
// through the socket.
func PeerFrom(ctx context.Context) (Peer, bool) {
	p, ok := ctx.Value(peerKey{}).(Peer)
	return p, ok
}

// NewToken returns a fresh admin token and its hash.
func NewToken() (token, hash string, err error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", "", err
	}
	token = AdminTokenPrefix + hex.EncodeToString(b)
	return token, jobs.HashToken(token), nil
}

// Errors of Authenticate.
var (
	ErrNoCredentials = errors.New("authentication required: send an admin token (Authorization: Bearer pba_...; create one with `preboot token create NAME` on the server host, which uses the admin socket)")
	ErrBadToken      = errors.New("unknown or revoked admin token")
	ErrJobToken      = errors.New("a job token only reaches its job's agent endpoints and image, not the admin API")
	// ErrPeerDenied: a local user the admin socket does not accept.
	ErrPeerDenied = errors.New("not allowed on the admin socket")
	// ErrCSRF: a change made with the console's session cookie without
	// the session's X-CSRF-Token header.
	ErrCSRF = session.ErrCSRF
)

// Authenticate returns the actor a request acts as.
func (a *Auth) Authenticate(ctx context.Context, r *http.Request) (string, error) {
	actor, _, err := a.authenticate(ctx, r)
	return actor, err
}

// authenticate also returns the console session the request was
// authenticated with, if any.
func (a *Auth) authenticate(ctx context.Context, r *http.Request) (string, *session.Info, error) {
	if p, ok := PeerFrom(ctx); ok {
		if !p.Allowed {
			return "", nil, fmt.Errorf("%w: %s", ErrPeerDenied, p.Why)
		}
		return "local:" + p.User, nil, nil
	}
	tok := jobs.BearerToken(r)
	if tok == "" && a.Sessions != nil {
		i, err := a.Sessions.Lookup(r)
		switch {
		case err == nil:
			if !session.Safe(r.Method) && !session.CheckCSRF(i, r.Header.Get(session.CSRFHeader)) {
				return "", nil, ErrCSRF
			}
			return "user:" + i.User, &i, nil
		case !errors.Is(err, session.ErrNoSession):
			return "", nil, fmt.Errorf("check console session: %w", err)
		}
	}
	actor, err := a.tokenOrLoopback(ctx, r, tok)
	return actor, nil, err
}

func (a *Auth) tokenOrLoopback(ctx context.Context, r *http.Request, tok string) (string, error) {
	switch {
	case tok == "":
		if a.TrustLoopback && IsLoopback(r.RemoteAddr) && !forwarded(r) && a.Hosts.SameOrigin(r) {
			return "loopback", nil
		}
		return "", ErrNoCredentials
	case strings.HasPrefix(tok, JobTokenPrefix):
		return "", ErrJobToken
	}
	t, err := a.Store.TokenByHash(ctx, jobs.HashToken(tok))
	if errors.Is(err, store.ErrNotFound) {
		return "", ErrBadToken
	}
	if err != nil {
		return "", fmt.Errorf("check token: %w", err)
	}
	if !scopeAllows(t.Scope, r) {
		if a.Logger != nil {
			a.Logger.WarnContext(ctx, "token used outside its scope: refused", "token", t.Name, "scope", t.Scope, "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr)
		}
		return "", fmt.Errorf("%w (token %s, scope %s): %s %s", ErrScope, t.Name, t.Scope, r.Method, r.URL.Path)
	}
	a.touch(ctx, t.ID)
	return "token:" + t.Name, nil
}

func (a *Auth) touch(ctx context.Context, id int64) {
	now := time.Now()
	a.mu.Lock()
	if a.touched == nil {
		a.touched = map[int64]time.Time{}
	}
	last := a.touched[id]
	due := now.Sub(last) > time.Minute
	if due {
		a.touched[id] = now
	}
	a.mu.Unlock()
	if due {
		if err := a.Store.TouchToken(ctx, id, now); err != nil && a.Logger != nil {
			a.Logger.WarnContext(ctx, "record token use", "token", id, "err", err)
		}
	}
}

// Admin authenticates an administrator's request; on failure it answers
// 401 or 403 and returns false.
func (a *Auth) Admin(w http.ResponseWriter, r *http.Request) (context.Context, bool) {
	actor, sess, err := a.authenticate(r.Context(), r)
	switch {
	case err == nil:
		ctx := context.WithValue(r.Context(), actorKey, actor)
		if sess != nil {
			ctx = session.NewContext(ctx, *sess)
		}
		return ctx, true
	case errors.Is(err, ErrJobToken), errors.Is(err, ErrCSRF), errors.Is(err, ErrPeerDenied), errors.Is(err, ErrScope):
		writeError(w, http.StatusForbidden, err.Error())
	case errors.Is(err, ErrNoCredentials), errors.Is(err, ErrBadToken):
		w.Header().Set("WWW-Authenticate", `Bearer realm="preboot"`)
		writeError(w, http.StatusUnauthorized, err.Error())
	default:
		writeError(w, http.StatusInternalServerError, err.Error())
	}
	return nil, false
}

// IsLoopback reports whether a remote address is on the loopback network.
func IsLoopback(remote string) bool {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// forwarded reports whether a proxy relayed the request (it says so in
// one of the usual headers): a loopback peer is then not the client.
func forwarded(r *http.Request) bool {
	for _, h := range []string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Real-Ip"} {
		if r.Header.Get(h) != "" {
			return true
		}
	}
	return false
}
