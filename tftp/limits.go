package tftp

import (
	"hash/maphash"
	"net/netip"
	"sync"
)

// Default limits on transfers in progress.
const (
	DefaultMaxTransfers          = 1024
	DefaultMaxTransfersPerClient = 16
	// DefaultRetriesBeforeAck bounds the retransmissions of the first
	// packet (OACK or DATA 1) before the client has acknowledged anything.
	DefaultRetriesBeforeAck = 2
)

// Reasons a request is refused without a transfer, as counted in
// preboot_tftp_requests_refused_total.
const (
	refusedBusy       = "busy"        // the global cap on transfers is reached
	refusedClientBusy = "client_busy" // the cap of the request's source address is reached
	refusedDuplicate  = "duplicate"   // a retransmitted request of a transfer in progress
)

// transferKey identifies a request: the client's address and port and the
// request's exact bytes (file name, mode, options), so that a
// retransmitted RRQ matches the transfer it asked for while a new request
// from the same port (PXE firmware asks for tsize first, aborts and asks
// again with other options) does not.
type transferKey struct {
	peer netip.AddrPort
	sum  uint64
}

// limiter admits transfers: at most max in all, perClient per source
// address, and one per transferKey. A refusal costs no socket, file or
// goroutine.
type limiter struct {
	max, perClient int
	seed           maphash.Seed

	mu     sync.Mutex
	total  int
	per    map[netip.Addr]int
	active map[transferKey]struct{}
}

func newLimiter(max, perClient int) *limiter {
	return &limiter{
		max: max, perClient: perClient, seed: maphash.MakeSeed(),
		per: map[netip.Addr]int{}, active: map[transferKey]struct{}{},
	}
}

func (l *limiter) key(peer netip.AddrPort, request []byte) transferKey {
	return transferKey{peer: peer, sum: maphash.Bytes(l.seed, request)}
}

// acquire admits a transfer for key, or returns the reason it is refused.
func (l *limiter) acquire(k transferKey) (reason string, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, dup := l.active[k]; dup {
		return refusedDuplicate, false
	}
	if l.total >= l.max {
		return refusedBusy, false
	}
	ip := k.peer.Addr()
	if l.per[ip] >= l.perClient {
		return refusedClientBusy, false
	}
	l.total++
	l.per[ip]++
	l.active[k] = struct{}{}
	return "", true
}

// release ends a transfer admitted by acquire.
func (l *limiter) release(k transferKey) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.active[k]; !ok {
		return
	}
	delete(l.active, k)
	l.total--
	ip := k.peer.Addr()
	if l.per[ip] <= 1 {
		delete(l.per, ip)
	} else {
		l.per[ip]--
	}
}

// counts reports the transfers in progress, in all and from ip (tests).
func (l *limiter) counts(ip netip.Addr) (total, client int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total, l.per[ip]
}
