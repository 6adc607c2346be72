// Package hostcheck decides which names a Preboot server answers to on
// TCP: the Host header of every request to the console, the API and the
// image repository must be an IP literal, "localhost", this machine's
// host name or one of the configured names (config http.hosts). A DNS
// rebinding attack — a hostile name that first resolves to the attacker
// and then to this server, so that a browser treats this server as the
// attacker's site — arrives with the hostile name in Host and is refused.
// Browser Origin headers are judged against the same names, never against
// the client-chosen Host alone.
package hostcheck

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"
)

// ConfigKey is the configuration key that lists the names.
const ConfigKey = "http.hosts"

// Hosts is the set of names a server answers to. The zero value and nil
// accept IP literals and localhost only.
type Hosts struct {
	names map[string]bool
}

// New returns the names plus, when withHostname, this machine's host name
// (and its first label).
func New(names []string, withHostname bool) *Hosts {
	h := &Hosts{names: map[string]bool{}}
	for _, n := range names {
		if n = normalize(n); n != "" {
			h.names[n] = true
		}
	}
	if withHostname {
		if hn, err := os.Hostname(); err == nil && hn != "" {
			hn = normalize(hn)
			h.names[hn] = true
			if short, _, ok := strings.Cut(hn, "."); ok && short != "" {
				h.names[short] = true
			}
		}
	}
	return h
}

func normalize(name string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(name)), ".")
}

// hostname strips the port (and IPv6 brackets) of a Host value.
func hostname(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return strings.TrimSuffix(strings.TrimPrefix(hostport, "["), "]")
}

// isIP reports whether h is an IP literal (zone included).
func isIP(h string) bool {
	_, err := netip.ParseAddr(h)
	return err == nil
}

// Allowed reports whether a Host header value (with or without a port)
// names this server.
func (h *Hosts) Allowed(hostport string) bool {
	name := normalize(hostname(hostport))
	if name == "" {
		return false
	}
	if isIP(name) || name == "localhost" {
		return true
	}
	return h != nil && h.names[name]
}

// SameOrigin reports whether a browser sent the request from one of this
// server's own pages: no Sec-Fetch-Site of another site, and an Origin
// (when there is one) whose host is an allowed name — for an IP literal
// or localhost, the very host the request was sent to. Requests without
// these headers (the CLI, curl, old browsers) pass: the Host check and
// the credentials decide for them.
func (h *Hosts) SameOrigin(r *http.Request) bool {
	switch r.Header.Get("Sec-Fetch-Site") {
	case "cross-site", "same-site":
		return false
	}
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	u, err := url.Parse(o)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return false // includes "null"
	}
	oh := normalize(u.Hostname())
	if isIP(oh) || oh == "localhost" {
		return oh == normalize(hostname(r.Host))
	}
	return h != nil && h.names[oh] && h.Allowed(r.Host)
}

// Message is the answer to a request whose Host is not one of the names.
func Message(host string) string {
	return fmt.Sprintf("this server does not answer to the name %q: add it to %s in the server's configuration "+
		"(IP addresses, localhost and the machine's host name are always accepted)", hostname(host), ConfigKey)
}

// Middleware answers 421 Misdirected Request to requests whose Host is
// not allowed, except those skip lets through (boot firmware's paths).
func (h *Hosts) Middleware(next http.Handler, skip func(*http.Request) bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if (skip != nil && skip(r)) || h.Allowed(r.Host) {
			next.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusMisdirectedRequest)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": Message(r.Host)})
	})
}
