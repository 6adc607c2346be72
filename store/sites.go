package store

import (
	"context"
	"fmt"
	"net/netip"
	"time"
)

// Site is a remote site: its site server (a `preboot serve --upstream`
// replicating this server's images) and the subnets its devices boot
// from. A device whose boot request comes from one of Subnets fetches
// its image data (manifests, chunks) from ServerURL; job control stays
// with the server that handed out the job.
type Site struct {
	ID      int64          `json:"id"`
	Name    string         `json:"name"`
	Subnets []netip.Prefix `json:"subnets"`
	// ServerURL is the site server's agent URL (https://HOST:8443).
	ServerURL string `json:"server_url"`
	// Pin is the SHA-256 pin of the site server's TLS certificate
	// ("sha256:HEX"); empty: the agent accepts what its CA roots accept.
	Pin       string    `json:"pin,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Contains reports whether addr is in one of the site's subnets.
func (s Site) Contains(addr netip.Addr) bool {
	addr = addr.Unmap()
	for _, p := range s.Subnets {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// SiteFor returns the site whose subnets hold addr, the most specific
// prefix winning (ok false when none does).
func SiteFor(sites []Site, addr netip.Addr) (Site, bool) {
	addr = addr.Unmap()
	best, bits := -1, -1
	for i, s := range sites {
		for _, p := range s.Subnets {
			if p.Contains(addr) && p.Bits() > bits {
				best, bits = i, p.Bits()
			}
		}
	}
	if best < 0 {
		return Site{}, false
	}
	return sites[best], true
}

// CheckSite validates a site: a name, at least one subnet, an http(s)
// server URL. Subnets are masked to their prefix.
func CheckSite(s *Site) error {
	if s.Name == "" {
		return fmt.Errorf("site: a name is required: %w", ErrInvalid)
	}
	if len(s.Subnets) == 0 {
		return fmt.Errorf("site %s: at least one subnet is required: %w", s.Name, ErrInvalid)
	}
	for i, p := range s.Subnets {
		if !p.IsValid() {
			return fmt.Errorf("site %s: invalid subnet: %w", s.Name, ErrInvalid)
		}
		s.Subnets[i] = p.Masked()
	}
	if s.ServerURL == "" {
		return fmt.Errorf("site %s: a server URL is required: %w", s.Name, ErrInvalid)
	}
	return nil
}

// SiteStore keeps the sites.
type SiteStore interface {
	// CreateSite adds a site (ErrConflict if the name is taken).
	CreateSite(ctx context.Context, s Site) (Site, error)
	// Sites lists every site by name.
	Sites(ctx context.Context) ([]Site, error)
	// DeleteSite removes a site by name (ErrNotFound if unknown).
	DeleteSite(ctx context.Context, name string) error
}

// Token scopes: what an API token may do.
const (
	// ScopeAdmin (the empty scope) may do everything.
	ScopeAdmin = ""
	// ScopeReplication reads images, manifests and chunks, lists images
	// and versions, and introspects job tokens: what a site server needs
	// of its upstream, and nothing else.
	ScopeReplication = "replication"
)
