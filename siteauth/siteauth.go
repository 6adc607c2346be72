// Package siteauth lets a site server accept the job tokens of its
// upstream (the central server that handed out the job): a job token the
// site does not know is introspected at the upstream (POST
// /api/v1/tokens/introspect, with the site's upstream token), and a
// positive answer is cached briefly, never past the token's expiry.
package siteauth

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/preboot/preboot/jobs"
)

// Defaults of Checker.
const (
	DefaultTTL        = 30 * time.Second
	DefaultMaxEntries = 4096
)

// Upstream asks the upstream's API (httpstore.Client implements it).
type Upstream interface {
	CallJSON(ctx context.Context, method, path string, in, out any) error
}

// Checker introspects job tokens at the upstream and caches the positive
// answers. It is safe for concurrent use.
type Checker struct {
	Upstream Upstream
	// TTL bounds how long a positive answer is kept (DefaultTTL when 0);
	// never longer than the token's own expiry.
	TTL time.Duration
	// MaxEntries bounds the cache (DefaultMaxEntries when 0).
	MaxEntries int
	// Now returns the current time (tests may fix it).
	Now func() time.Time

	mu    sync.Mutex
	cache map[string]entry // by the token's SHA-256
	// Asked counts introspection requests sent to the upstream.
	asked int64
}

type entry struct {
	scope jobs.TokenScope
	until time.Time
}

func (c *Checker) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// Check returns what token may do, as the upstream says: Active false for
// a token the upstream does not know or that ended. An error means the
// upstream could not be asked.
func (c *Checker) Check(ctx context.Context, token string) (jobs.TokenScope, error) {
	key := jobs.HashToken(token)
	now := c.now()
	c.mu.Lock()
	if e, ok := c.cache[key]; ok {
		if now.Before(e.until) {
			c.mu.Unlock()
			return e.scope, nil
		}
		delete(c.cache, key)
	}
	c.asked++
	c.mu.Unlock()

	var ts jobs.TokenScope
	if err := c.Upstream.CallJSON(ctx, "POST", "/tokens/introspect", map[string]string{"token": token}, &ts); err != nil {
		return jobs.TokenScope{}, fmt.Errorf("introspect a job token at the upstream: %w", err)
	}
	if !ts.Active {
		return jobs.TokenScope{}, nil
	}
	ttl := c.TTL
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	until := now.Add(ttl)
	if !ts.ExpiresAt.IsZero() && ts.ExpiresAt.Before(until) {
		until = ts.ExpiresAt
	}
	if until.After(now) {
		c.put(key, entry{scope: ts, until: until}, now)
	}
	return ts, nil
}

// put stores an entry, first dropping expired ones when the cache is full,
// then (still full) the one that expires first.
func (c *Checker) put(key string, e entry, now time.Time) {
	limit := c.MaxEntries
	if limit <= 0 {
		limit = DefaultMaxEntries
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cache == nil {
		c.cache = map[string]entry{}
	}
	if _, ok := c.cache[key]; !ok && len(c.cache) >= limit {
		for k, v := range c.cache {
			if !now.Before(v.until) {
				delete(c.cache, k)
			}
		}
		for len(c.cache) >= limit {
			first := ""
			for k, v := range c.cache {
				if first == "" || v.until.Before(c.cache[first].until) {
					first = k
				}
			}
			delete(c.cache, first)
		}
	}
	c.cache[key] = e
}

// Stats are the checker's counters.
type Stats struct {
	Cached int   // answers held
	Asked  int64 // introspection requests sent
}

// Stats returns the checker's counters.
func (c *Checker) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Stats{Cached: len(c.cache), Asked: c.asked}
}
