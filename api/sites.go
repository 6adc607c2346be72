package api

import (
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"strings"

	"github.com/preboot/preboot/bundle"
	"github.com/preboot/preboot/store"
	"github.com/preboot/preboot/tlspin"
)

// SiteRequest is the body of POST /api/v1/sites.
type SiteRequest struct {
	Name      string   `json:"name"`
	Subnets   []string `json:"subnets"`
	ServerURL string   `json:"server_url"`
	Pin       string   `json:"pin,omitempty"`
}

func (h *Handler) listSites(w http.ResponseWriter, r *http.Request) {
	ss, err := h.Store.Sites(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, nonNil(ss))
}

func (h *Handler) createSite(w http.ResponseWriter, r *http.Request) {
	var req SiteRequest
	if !decode(w, r, &req) {
		return
	}
	if err := bundle.ValidName("site", req.Name); err != nil {
		h.fail(w, r, invalid("%v", err))
		return
	}
	site := store.Site{Name: req.Name, Pin: req.Pin}
	for _, s := range req.Subnets {
		p, err := netip.ParsePrefix(strings.TrimSpace(s))
		if err != nil {
			h.fail(w, r, invalid("subnet %q: want a CIDR prefix such as 10.1.0.0/16 or 2001:db8:1::/48", s))
			return
		}
		site.Subnets = append(site.Subnets, p.Masked())
	}
	u, err := url.Parse(req.ServerURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
		h.fail(w, r, invalid("server_url %q: want the site server's https://HOST:PORT", req.ServerURL))
		return
	}
	site.ServerURL = (&url.URL{Scheme: u.Scheme, Host: u.Host}).String()
	if site.Pin != "" {
		if _, err := tlspin.Parse(site.Pin); err != nil {
			h.fail(w, r, invalid("pin: %v", err))
			return
		}
		if u.Scheme != "https" {
			h.fail(w, r, invalid("pin: the server URL is not https"))
			return
		}
	}
	site, err = h.Store.CreateSite(r.Context(), site)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.audit(r, "", fmt.Sprintf("site %s added: subnets %s, server %s", site.Name, prefixes(site.Subnets), site.ServerURL))
	writeJSON(w, http.StatusCreated, site)
}

func (h *Handler) deleteSite(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := h.Store.DeleteSite(r.Context(), name); err != nil {
		h.fail(w, r, err)
		return
	}
	h.audit(r, "", fmt.Sprintf("site %s removed", name))
	w.WriteHeader(http.StatusNoContent)
}

func prefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}
