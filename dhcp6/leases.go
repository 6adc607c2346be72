package dhcp6

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/preboot/preboot/store"
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

// leaseKey is how a lease names its IA_NA: the client's DUID and the
// IAID, hex, "duid/iaid".
func leaseKey(duid string, iaid [4]byte) string {
	return duid + "/" + hex.EncodeToString(iaid[:])
}

// request is a store lease request for key in r.
func (s *Server) request(r Range, key string, c client, hint netip.Addr, now time.Time) store.LeaseRequest {
	mac := ""
	if len(c.mac) > 0 {
		mac = c.mac.String()
	}
	return store.LeaseRequest{ClientID: key, MAC: mac, Hostname: c.hostname, Server: s.Name,
		Range: store.LeaseRange{Start: r.Start, End: r.End}, Requested: hint, Now: now}
}

// leaseOf returns key's lease (ok false when it has none).
func (s *Server) leaseOf(ctx context.Context, key string) (store.Lease, bool, error) {
	ls, err := s.Leases.LeaseList(ctx, store.LeaseFilter{IPv6: true, ClientID: key})
	if err != nil {
		return store.Lease{}, false, fmt.Errorf("dhcp6: lease of %s: %w", key, err)
	}
	if len(ls) == 0 {
		return store.Lease{}, false, nil
	}
	return ls[0], true, nil
}

// refused reports whether err is the store refusing a lease (the address
// is taken, the range exhausted, the client has no such lease), as
// opposed to the store failing.
func refused(err error) bool {
	return errors.Is(err, store.ErrExhausted) || errors.Is(err, store.ErrConflict) ||
		errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrInvalid)
}
