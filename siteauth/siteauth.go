// Package siteauth lets a site server accept the job tokens of its
// upstream (the central server that handed out the job): a job token the
// site does not know is introspected at the upstream (POST
// /api/v1/tokens/introspect, with the site's upstream token), and a
// positive answer is cached briefly, never past the token's expiry.
package siteauth

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/preboot/preboot/jobs"
)

// Defaults of Checker.
const (
	DefaultTTL        = 30 * time.Second
	DefaultMaxEntries = 4096
	// DefaultMaxMisses unknown tokens from one address are asked at the
	// upstream per DefaultMissWindow; beyond that, Check refuses that
	// address's unknown tokens without asking until the window ends.
	DefaultMaxMisses  = 10
	DefaultMissWindow = time.Minute
)

// ErrThrottled is Check's answer to an address that sent too many tokens
// the upstream did not know: it is refused without asking the upstream.
var ErrThrottled = errors.New("too many unknown job tokens from this address: refused without asking the upstream")

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
	// MaxMisses and MissWindow bound the unknown tokens one address may
	// have introspected (DefaultMaxMisses per DefaultMissWindow when 0), so
	// that random tokens sent to a site do not become as many requests to
	// the upstream.
	MaxMisses  int
	MissWindow time.Duration
	// Now returns the current time (tests may fix it).
	Now func() time.Time

	mu     sync.Mutex
	cache  map[string]entry  // by the token's SHA-256
	misses map[string]misses // by the requester's address
	// Asked counts introspection requests sent to the upstream.
	asked int64
}

type entry struct {
	scope jobs.TokenScope
	until time.Time
}

// misses counts one address's unknown tokens in the window that started at since.
type misses struct {
	n     int
	since time.Time
}

func (c *Checker) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// Check returns what token, presented from the address from, may do, as
// the upstream says: Active false for a token the upstream does not know or
// that ended. ErrThrottled means from sent too many such tokens lately;
// another error, that the upstream could not be asked.
func (c *Checker) Check(ctx context.Context, token, from string) (jobs.TokenScope, error) {
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
	if m, ok := c.misses[from]; ok && now.Sub(m.since) < c.missWindow() && m.n >= c.maxMisses() {
		c.mu.Unlock()
		return jobs.TokenScope{}, ErrThrottled
	}
	c.asked++
	c.mu.Unlock()

	var ts jobs.TokenScope
	if err := c.Upstream.CallJSON(ctx, "POST", "/tokens/introspect", map[string]string{"token": token}, &ts); err != nil {
		return jobs.TokenScope{}, fmt.Errorf("introspect a job token at the upstream: %w", err)
	}
	if !ts.Active {
		c.miss(from, now)
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

func (c *Checker) maxMisses() int {
	if c.MaxMisses > 0 {
		return c.MaxMisses
	}
	return DefaultMaxMisses
}

func (c *Checker) missWindow() time.Duration {
	if c.MissWindow > 0 {
		return c.MissWindow
	}
	return DefaultMissWindow
}

// miss counts an unknown token from an address. The table is bounded like
// the cache: when full, windows that ended go first, then all of them (an
// address then gets its full budget again, which only costs upstream calls).
func (c *Checker) miss(from string, now time.Time) {
	limit := c.MaxEntries
	if limit <= 0 {
		limit = DefaultMaxEntries
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.misses == nil {
		c.misses = map[string]misses{}
	}
	m, ok := c.misses[from]
	if !ok || now.Sub(m.since) >= c.missWindow() {
		if !ok && len(c.misses) >= limit {
			for k, v := range c.misses {
				if now.Sub(v.since) >= c.missWindow() {
					delete(c.misses, k)
				}
			}
			if len(c.misses) >= limit {
				clear(c.misses)
			}
		}
		m = misses{since: now}
	}
	m.n++
	c.misses[from] = m
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
