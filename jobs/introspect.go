package jobs

import (
	"context"
	"errors"
	"time"

	"github.com/preboot/preboot/store"
)

// TokenScope is what a job token may do, as the server that handed it
// out answers a site server's introspection (POST
// /api/v1/tokens/introspect): the image a restore reads, from which
// address, until when. Active false says nothing else.
type TokenScope struct {
	Active bool   `json:"active"`
	Job    int64  `json:"job,omitempty"`
	MAC    string `json:"mac,omitempty"`
	Kind   string `json:"kind,omitempty"`
	// Image is the job's image reference: NAME@N for a restore (the
	// version pinned when the job started).
	Image string `json:"image,omitempty"`
	// Read: the token may read Image (restore, multicast); capture jobs
	// are not Read (captures go to the server that handed out the job).
	Read bool `json:"read,omitempty"`
	// ClientIP is the address the job was handed to: the token works only
	// from there ("" for a job started without one).
	ClientIP string `json:"client_ip,omitempty"`
	// ExpiresAt is when the token expires if nothing else happens (a
	// pending job's TTL, a started one's silence limit): an answer may be
	// cached until then, no longer.
	ExpiresAt time.Time `json:"expires_at,omitzero"`
}

// Introspect answers what token may do. An unknown, ended or expired
// job's token is inactive (not an error); errors are the store's.
func (s *Service) Introspect(ctx context.Context, token string) (TokenScope, error) {
	j, err := s.Authenticate(ctx, token, "")
	switch {
	case errors.Is(err, ErrUnauthorized), errors.Is(err, ErrJobOver):
		return TokenScope{}, nil
	case err != nil:
		return TokenScope{}, err
	}
	ts := TokenScope{Active: true, Job: j.ID, MAC: j.MAC, Kind: j.Kind, Image: j.Image, ClientIP: j.ClientIP,
		Read: j.Kind == store.KindImageRestore || j.Kind == store.KindMulticast}
	since, ttl := s.lifetime(j)
	ts.ExpiresAt = since.Add(ttl)
	return ts, nil
}
