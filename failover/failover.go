// Package failover sends the imaging agent's requests to one of several
// Preboot servers that share a database and an image store: requests go
// to the current server, and when it does not answer (connection refused
// or reset, a dial or TLS handshake that fails) the same request goes to
// the next server, which becomes the current one for every later request.
//
// It works below the agent's own clients (the job API and the image
// repository client), which keep their retries: a chunk download cut off
// when its server dies is retried by the repository client, and that
// retry reaches the next server. A restore therefore goes on where it is;
// what was already written is not fetched again.
package failover

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
)

// Transport is an http.RoundTripper over several servers. Requests to
// the origin (scheme and host) of any of the servers go to the current
// one; other requests (a peer agent, say) pass through unchanged.
type Transport struct {
	servers []*url.URL
	base    http.RoundTripper
	log     *slog.Logger

	mu  sync.Mutex
	cur int
}

// Split reads a list of server URLs as preboot.server= carries it
// ("https://A:8443,https://B:8443"): trimmed, without trailing slashes,
// empty items and repeats dropped, in order.
func Split(list string) []string {
	var out []string
	for s := range strings.SplitSeq(list, ",") {
		s = strings.TrimRight(strings.TrimSpace(s), "/")
		if s == "" || slices.Contains(out, s) {
			continue
		}
		out = append(out, s)
	}
	return out
}

// New returns a transport over servers (base URLs such as
// https://10.0.0.1:8443; the first is the current one) that sends
// requests with base (http.DefaultTransport when nil).
func New(servers []string, base http.RoundTripper, log *slog.Logger) (*Transport, error) {
	if len(servers) == 0 {
		return nil, errors.New("failover: no server")
	}
	if base == nil {
		base = http.DefaultTransport
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t := &Transport{base: base, log: log}
	for _, s := range servers {
		u, err := url.Parse(s)
		if err != nil {
			return nil, fmt.Errorf("failover: server %q: %w", s, err)
		}
		if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("failover: server %q: want http(s)://HOST[:PORT]", s)
		}
		t.servers = append(t.servers, &url.URL{Scheme: u.Scheme, Host: u.Host})
	}
	return t, nil
}

// Current returns the base URL requests go to now.
func (t *Transport) Current() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.servers[t.cur].String()
}

// ours reports whether a request is addressed to one of the servers.
func (t *Transport) ours(u *url.URL) bool {
	for _, s := range t.servers {
		if strings.EqualFold(s.Scheme, u.Scheme) && strings.EqualFold(s.Host, u.Host) {
			return true
		}
	}
	return false
}

// RoundTrip implements http.RoundTripper. A request that fails at the
// current server is sent to each other server once at most, in order; a
// request whose body cannot be sent again (no GetBody) is not, nor one
// whose context is done. Answers with a status, whatever it is, are
// returned as they are: the server is alive and the caller decides.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !t.ours(req.URL) {
		return t.base.RoundTrip(req)
	}
	replayable := req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
	var errs []error
	for range len(t.servers) {
		t.mu.Lock()
		i := t.cur
		t.mu.Unlock()
		r, err := t.to(req, t.servers[i], len(errs) > 0)
		if err != nil {
			return nil, err
		}
		resp, err := t.base.RoundTrip(r)
		if err == nil {
			return resp, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", t.servers[i], err))
		if req.Context().Err() != nil || !replayable || len(t.servers) == 1 {
			break
		}
		t.next(i, err)
	}
	if len(errs) == 1 {
		return nil, errs[0]
	}
	return nil, fmt.Errorf("no server answered: %w", errors.Join(errs...))
}

// to is req addressed to server (its body renewed for a second try).
func (t *Transport) to(req *http.Request, server *url.URL, again bool) (*http.Request, error) {
	r := req.Clone(req.Context())
	r.URL.Scheme, r.URL.Host = server.Scheme, server.Host
	r.Host = ""
	if again && req.GetBody != nil {
		b, err := req.GetBody()
		if err != nil {
			return nil, fmt.Errorf("failover: request body: %w", err)
		}
		r.Body = b
	}
	return r, nil
}

// next makes the server after i the current one, unless another request
// already moved on from i (requests failing together move one step).
func (t *Transport) next(i int, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.cur != i {
		return
	}
	t.cur = (i + 1) % len(t.servers)
	t.log.Warn("server not answering: switching to the next one", "from", t.servers[i].String(),
		"to", t.servers[t.cur].String(), "err", err)
}
