package dhcp6

import (
	"errors"
	"net/netip"
	"sync"
	"time"
)

// Lease states.
const (
	stateOffered  = "offered"
	stateBound    = "bound"
	stateReleased = "released"
	stateDeclined = "declined"
)

var (
	errExhausted = errors.New("no free address")
	errConflict  = errors.New("address held by another client")
	errNoBinding = errors.New("no binding for this client")
)

// Range is an inclusive range of IPv6 addresses.
type Range struct {
	Start, End netip.Addr
}

// Contains reports whether a is inside the range.
func (r Range) Contains(a netip.Addr) bool {
	return a.Is6() && !a.Is4In6() && r.Start.Compare(a) <= 0 && a.Compare(r.End) <= 0
}

func (r Range) String() string { return r.Start.String() + "-" + r.End.String() }

// Lease is one address bound or offered to a client's IA_NA.
type Lease struct {
	Addr    netip.Addr
	Key     string // client DUID and IAID, hex
	MAC     string
	State   string
	Expires time.Time
}

func (l *Lease) free(now time.Time) bool {
	return l.State == stateReleased || !l.Expires.After(now)
}

// leaseTable keeps the DHCPv6 leases in memory (see docs/ipv6.md: they
// do not survive a restart; a client renewing after one gets its address
// back when no other client took it meanwhile).
type leaseTable struct {
	mu     sync.Mutex
	byAddr map[netip.Addr]*Lease
	byKey  map[string]*Lease
	cursor map[Range]netip.Addr
}

func newLeaseTable() *leaseTable {
	return &leaseTable{byAddr: map[netip.Addr]*Lease{}, byKey: map[string]*Lease{}, cursor: map[Range]netip.Addr{}}
}

// usable reports whether key may take a: unknown, free, or its own.
func (t *leaseTable) usable(a netip.Addr, key string, now time.Time) bool {
	l, ok := t.byAddr[a]
	switch {
	case !ok:
		return true
	case l.State == stateDeclined:
		return !l.Expires.After(now)
	case l.Key == key:
		return true
	default:
		return l.free(now)
	}
}

func (t *leaseTable) put(a netip.Addr, key, mac, state string, expires time.Time) Lease {
	if old, ok := t.byKey[key]; ok && old.Addr != a {
		if old.State != stateDeclined {
			delete(t.byAddr, old.Addr)
		}
	}
	if old, ok := t.byAddr[a]; ok && old.Key != key {
		if t.byKey[old.Key] == old {
			delete(t.byKey, old.Key)
		}
	}
	l := &Lease{Addr: a, Key: key, MAC: mac, State: state, Expires: expires}
	t.byAddr[a] = l
	t.byKey[key] = l
	return *l
}

// offer reserves an address of r for key until now+hold: the client's
// own address, else hint when free, else the next free one after the
// range's cursor.
func (t *leaseTable) offer(r Range, key, mac string, hint netip.Addr, now time.Time, hold time.Duration) (Lease, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if l, ok := t.byKey[key]; ok && r.Contains(l.Addr) && l.State != stateDeclined {
		if l.State == stateBound && l.Expires.After(now) {
			return *l, nil
		}
		return t.put(l.Addr, key, mac, stateOffered, now.Add(hold)), nil
	}
	if r.Contains(hint) && t.usable(hint, key, now) {
		return t.put(hint, key, mac, stateOffered, now.Add(hold)), nil
	}
	a, ok := t.cursor[r]
	if !ok || !r.Contains(a) {
		a = r.Start
	}
	first := a
	for {
		next := a.Next()
		if !r.Contains(next) {
			next = r.Start
		}
		if t.usable(a, key, now) {
			t.cursor[r] = next
			return t.put(a, key, mac, stateOffered, now.Add(hold)), nil
		}
		a = next
		if a == first {
			return Lease{}, errExhausted
		}
	}
}

// bind binds a (inside r) to key until now+d.
func (t *leaseTable) bind(r Range, a netip.Addr, key, mac string, now time.Time, d time.Duration) (Lease, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !r.Contains(a) {
		return Lease{}, errNoBinding
	}
	if !t.usable(a, key, now) {
		return Lease{}, errConflict
	}
	return t.put(a, key, mac, stateBound, now.Add(d)), nil
}

// byClient returns key's lease.
func (t *leaseTable) byClient(key string) (Lease, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	l, ok := t.byKey[key]
	if !ok {
		return Lease{}, false
	}
	return *l, true
}

// release frees key's lease on a.
func (t *leaseTable) release(a netip.Addr, key string, now time.Time) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	l, ok := t.byAddr[a]
	if !ok || l.Key != key || l.State == stateDeclined {
		return errNoBinding
	}
	l.State, l.Expires = stateReleased, now
	return nil
}

// decline quarantines a until until and forgets its client.
func (t *leaseTable) decline(a netip.Addr, key string, until time.Time) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	l, ok := t.byAddr[a]
	if !ok || l.Key != key {
		return errNoBinding
	}
	delete(t.byKey, key)
	l.Key, l.MAC, l.State, l.Expires = "", "", stateDeclined, until
	return nil
}

// list returns a copy of every lease.
func (t *leaseTable) list() []Lease {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]Lease, 0, len(t.byAddr))
	for _, l := range t.byAddr {
		out = append(out, *l)
	}
	return out
}
