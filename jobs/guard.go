package jobs

import (
	"context"
	"sync"
	"time"

	"github.com/preboot/preboot/store"
)

// guardEntries bounds the per-device state the guard keeps: past it the
// oldest half is forgotten, so that a flood of made-up MACs costs memory
// only up to this bound.
const guardEntries = 16384

// securityEvery is how often one kind of refusal for one device is
// recorded as an event: a spoofer repeating a request adds no rows.
const securityEvery = time.Minute

// guard rate-limits job hand-outs per device and security events per
// device and reason. The zero value is ready.
type guard struct {
	mu     sync.Mutex
	claims map[string][]time.Time // MAC → hand-out times within claimWindow
	noted  map[string]time.Time   // MAC + reason → last security event
}

// allowClaim records a hand-out for mac at now unless burst hand-outs
// already happened within claimWindow.
func (g *guard) allowClaim(mac string, now time.Time, burst int) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.claims == nil {
		g.claims = map[string][]time.Time{}
	}
	ts := g.claims[mac]
	keep := ts[:0]
	for _, t := range ts {
		if now.Sub(t) < claimWindow {
			keep = append(keep, t)
		}
	}
	if len(keep) >= burst {
		g.claims[mac] = keep
		return false
	}
	if len(g.claims) >= guardEntries {
		g.claims = forgetOldest(g.claims, func(v []time.Time) time.Time { return v[len(v)-1] })
	}
	g.claims[mac] = append(keep, now)
	return true
}

// note reports whether a security event for key is due at now (and
// remembers it).
func (g *guard) note(key string, now time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.noted == nil {
		g.noted = map[string]time.Time{}
	}
	if last, ok := g.noted[key]; ok && now.Sub(last) < securityEvery {
		return false
	}
	if len(g.noted) >= guardEntries {
		g.noted = forgetOldest(g.noted, func(t time.Time) time.Time { return t })
	}
	g.noted[key] = now
	return true
}

// forgetOldest keeps the newer half of m (by when).
func forgetOldest[V any](m map[string]V, when func(V) time.Time) map[string]V {
	var times []time.Time
	for _, v := range m {
		times = append(times, when(v))
	}
	// Cut at the midpoint of the extremes: strictly newer entries stay,
	// so the map always shrinks (all equal: it empties).
	lo, hi := times[0], times[0]
	for _, t := range times {
		if t.Before(lo) {
			lo = t
		}
		if t.After(hi) {
			hi = t
		}
	}
	cut := lo.Add(hi.Sub(lo) / 2)
	out := make(map[string]V, len(m)/2+1)
	for k, v := range m {
		if when(v).After(cut) {
			out[k] = v
		}
	}
	return out
}

// Security records a refused request that may be an attack as a
// security event of the device (at most one a minute per device and
// reason) and logs it.
func (s *Service) Security(ctx context.Context, mac, reason, msg string) {
	s.log().WarnContext(ctx, "security: request refused", "mac", mac, "reason", reason, "detail", msg)
	if !s.guard.note(mac+"\x00"+reason, s.now()) {
		return
	}
	if _, err := s.Store.AddEvent(ctx, store.Event{MAC: mac, Kind: store.EventSecurity, Message: msg}); err != nil {
		s.log().ErrorContext(ctx, "record security event", "mac", mac, "err", err)
	}
}
