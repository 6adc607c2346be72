package session

import (
	"math"
	"sync"
	"time"
)

// Throttling of password guesses: after MaxFailures wrong passwords for
// one user name, or MaxFailuresPerIP from one client address, within
// FailureWindow, further logins for that name (or from that address) are
// refused with 429 for a lockout that doubles with every lockout in a row
// (LockoutBase, 2×, 4× … up to LockoutMax). A successful login clears
// the user name's count.
const (
	MaxFailures      = 5
	MaxFailuresPerIP = 20
	FailureWindow    = 15 * time.Minute
	LockoutBase      = 30 * time.Second
	LockoutMax       = 30 * time.Minute
	// maxTracked bounds the memory the throttle uses: beyond it, entries
	// that are neither locked nor recent are dropped first.
	maxTracked = 10000
)

// throttle counts failed logins per key ("user:NAME", "ip:ADDR"). It is
// kept in memory: a restart forgets it (servers that share a database
// each throttle on their own).
type throttle struct {
	mu      sync.Mutex
	entries map[string]*failures
}

type failures struct {
	count    int
	first    time.Time // first failure of the current window
	until    time.Time // locked until
	lockouts int       // lockouts in a row (the next one is twice as long)
	last     time.Time
}

// locked returns how long key stays locked (0: not locked).
func (t *throttle) locked(key string, now time.Time) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	f := t.entries[key]
	if f == nil || !now.Before(f.until) {
		return 0
	}
	return f.until.Sub(now)
}

// fail records a failure for key; it returns the lockout it starts (0:
// none yet) — the caller records one event per lockout.
func (t *throttle) fail(key string, limit int, now time.Time) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.entries == nil {
		t.entries = map[string]*failures{}
	}
	f := t.entries[key]
	if f == nil {
		t.makeRoom(now)
		f = &failures{}
		t.entries[key] = f
	}
	if now.Sub(f.last) > FailureWindow+lockoutFor(f.lockouts) {
		f.lockouts = 0 // quiet for long enough: start over
	}
	if f.count == 0 || now.Sub(f.first) > FailureWindow {
		f.count, f.first = 0, now
	}
	f.count++
	f.last = now
	if f.count < limit {
		return 0
	}
	f.lockouts++
	d := lockoutFor(f.lockouts)
	f.until = now.Add(d)
	f.count = 0
	return d
}

// succeed forgets key's failures.
func (t *throttle) succeed(key string) {
	t.mu.Lock()
	delete(t.entries, key)
	t.mu.Unlock()
}

// lockoutFor is the length of the n-th lockout in a row (n >= 1).
func lockoutFor(n int) time.Duration {
	if n < 1 {
		return 0
	}
	d := float64(LockoutBase) * math.Pow(2, float64(min(n-1, 20)))
	return min(time.Duration(d), LockoutMax)
}

// makeRoom drops old entries when the table is full (caller holds mu).
func (t *throttle) makeRoom(now time.Time) {
	if len(t.entries) < maxTracked {
		return
	}
	for k, f := range t.entries {
		if !now.Before(f.until) && now.Sub(f.last) > FailureWindow {
			delete(t.entries, k)
		}
	}
	for k := range t.entries {
		if len(t.entries) < maxTracked {
			break
		}
		delete(t.entries, k)
	}
}
