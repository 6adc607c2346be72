package store

import (
	"context"
	"errors"
	"net/netip"
	"time"
)

// ErrExhausted is returned (wrapped) when a DHCP address range has no
// address left to offer: every one is bound, offered or quarantined.
var ErrExhausted = errors.New("no free address")

// States of a DHCP lease. An address whose lease has expired (Expires in
// the past) is free again whatever its state says; a released address is
// free at once.
const (
	LeaseOffered  = "offered"  // reserved for a client between OFFER and REQUEST
	LeaseBound    = "bound"    // acknowledged, in use until Expires
	LeaseReleased = "released" // the client gave it back (DHCPRELEASE)
	LeaseDeclined = "declined" // a client found it in use (DHCPDECLINE): quarantined until Expires
)

// Lease is the embedded DHCP server's record of one IPv4 address, or the
// DHCPv6 server's of one IPv6 address (its ClientID is then the client's
// DUID and IAID, "duid-hex/iaid-hex").
type Lease struct {
	IP       netip.Addr `json:"ip"`
	ClientID string     `json:"client_id,omitempty"` // "" once declined
	MAC      string     `json:"mac,omitempty"`
	Hostname string     `json:"hostname,omitempty"`
	State    string     `json:"state"`
	Expires  time.Time  `json:"expires"`
	Updated  time.Time  `json:"updated"`
	// Server names the server that last wrote the lease (several servers
	// may share a PostgreSQL database).
	Server string `json:"server,omitempty"`
}

// Free reports whether the address can be given to another client at now.
func (l Lease) Free(now time.Time) bool {
	return l.State == LeaseReleased || !l.Expires.After(now)
}

// LeaseRange is an inclusive range of IPv4 or of IPv6 addresses.
type LeaseRange struct {
	Start, End netip.Addr
}

// Contains reports whether a is inside the range (and of its family).
func (r LeaseRange) Contains(a netip.Addr) bool {
	return a.IsValid() && !a.Is4In6() && a.BitLen() == r.Start.BitLen() && r.Start.Compare(a) <= 0 && a.Compare(r.End) <= 0
}

// LeaseRequest is who asks for an address, and when.
type LeaseRequest struct {
	// ClientID identifies the client: option 61 when it sent one, else
	// its hardware address (the caller builds the key).
	ClientID string
	MAC      string
	Hostname string
	Server   string
	Range    LeaseRange
	// Requested is the address the client asked for (option 50), if any.
	Requested netip.Addr
	// Now is the time of the request (the zero value means now).
	Now time.Time
}

// LeaseFilter selects leases; zero values mean "any".
type LeaseFilter struct {
	Range    LeaseRange // only addresses in this range (when Start is valid)
	ClientID string
	// IPv6 lists the DHCPv6 leases instead of the DHCPv4 ones (so does
	// a Range of IPv6 addresses).
	IPv6 bool
	Page
}

// Leases is the durable lease database of the embedded DHCP servers
// (DHCPv4 and DHCPv6: a request's Range, an address, picks the family). Every
// change is one committed transaction, and an address is claimed through
// the database's unique constraint or a conditional update, never from
// memory only: several servers sharing a database never hand out one
// address twice.
type Leases interface {
	// OfferLease reserves an address for the client until Now+hold (a
	// bound lease keeps its longer expiry). It prefers, in this order,
	// the client's own current or last address, the requested address,
	// an address never used (the one above the highest used, else the
	// lowest gap), then the free address whose lease ended longest ago.
	// ErrExhausted when none is free.
	OfferLease(ctx context.Context, r LeaseRequest, hold time.Duration) (Lease, error)
	// BindLease binds ip to the client until Now+d. ErrConflict when
	// another client holds ip, ErrInvalid when ip is outside r.Range.
	BindLease(ctx context.Context, ip netip.Addr, r LeaseRequest, d time.Duration) (Lease, error)
	// ReleaseLease frees the client's lease on ip (kept as "released",
	// so that the client gets it back if still free). ErrNotFound when
	// the client holds no lease on ip.
	ReleaseLease(ctx context.Context, ip netip.Addr, clientID string, now time.Time) error
	// DeclineLease quarantines ip until until and forgets its client.
	// ErrNotFound when the client holds no lease on ip.
	DeclineLease(ctx context.Context, ip netip.Addr, clientID string, now, until time.Time) error
	// LeaseByClient returns the client's lease, IPv4 else IPv6
	// (ErrNotFound if none).
	LeaseByClient(ctx context.Context, clientID string) (Lease, error)
	// LeaseList returns leases by address.
	LeaseList(ctx context.Context, f LeaseFilter) ([]Lease, error)
}
