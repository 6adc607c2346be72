package storetest

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/preboot/preboot/store"
)

func leases(t *testing.T, st store.Store) store.Leases {
	t.Helper()
	ls, ok := st.(store.Leases)
	if !ok {
		t.Fatalf("%T does not implement store.Leases", st)
	}
	return ls
}

var (
	leaseRange = store.LeaseRange{Start: netip.MustParseAddr("10.9.0.10"), End: netip.MustParseAddr("10.9.0.13")}
	leaseT0    = time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
)

func leaseReq(client string, now time.Time) store.LeaseRequest {
	return store.LeaseRequest{ClientID: client, MAC: "02:00:00:00:0a:01", Server: "test", Range: leaseRange, Now: now}
}

func wantIP(t *testing.T, ip string) func(store.Lease, error) store.Lease {
	return func(l store.Lease, err error) store.Lease {
		t.Helper()
		if err != nil {
			t.Fatalf("want %s: %v", ip, err)
		}
		if l.IP.String() != ip {
			t.Fatalf("got %s, want %s", l.IP, ip)
		}
		return l
	}
}

func testLeases(t *testing.T, st store.Store) {
	ls := leases(t, st)
	now := leaseT0
	hold, life := time.Minute, time.Hour

	// The lowest address first; the same client is offered the same one.
	a := wantIP(t, "10.9.0.10")(ls.OfferLease(ctx, leaseReq("a", now), hold))
	if a.State != store.LeaseOffered || !a.Expires.Equal(now.Add(hold)) {
		t.Fatalf("offer %+v", a)
	}
	wantIP(t, "10.9.0.10")(ls.OfferLease(ctx, leaseReq("a", now), hold))
	// Offered to a, so b gets the next one.
	wantIP(t, "10.9.0.11")(ls.OfferLease(ctx, leaseReq("b", now), hold))
	bound := wantIP(t, "10.9.0.10")(ls.BindLease(ctx, netip.MustParseAddr("10.9.0.10"), leaseReq("a", now), life))
	if bound.State != store.LeaseBound || !bound.Expires.Equal(now.Add(life)) {
		t.Fatalf("bind %+v", bound)
	}
	// An offer to a bound client keeps the lease's expiry.
	if l := must[store.Lease](t)(ls.OfferLease(ctx, leaseReq("a", now), hold)); l.State != store.LeaseBound || !l.Expires.Equal(now.Add(life)) {
		t.Fatalf("offer to a bound client %+v", l)
	}
	// Nobody else gets a's address, by request or by binding.
	r := leaseReq("c", now)
	r.Requested = netip.MustParseAddr("10.9.0.10")
	wantIP(t, "10.9.0.12")(ls.OfferLease(ctx, r, hold))
	_, err := ls.BindLease(ctx, netip.MustParseAddr("10.9.0.10"), leaseReq("c", now), life)
	is(t, err, store.ErrConflict, "10.9.0.10")
	_, err = ls.BindLease(ctx, netip.MustParseAddr("10.9.1.10"), leaseReq("c", now), life)
	is(t, err, store.ErrInvalid, "outside")
	// The client's own address comes before the one it asks for (RFC
	// 2131 4.3.1); a free requested address is honoured.
	r = leaseReq("c", now)
	r.Requested = netip.MustParseAddr("10.9.0.13")
	wantIP(t, "10.9.0.12")(ls.OfferLease(ctx, r, hold))
	r.ClientID = "d"
	wantIP(t, "10.9.0.13")(ls.OfferLease(ctx, r, hold))
	// Exhausted: a, b, c and d hold all four.
	_, err = ls.OfferLease(ctx, leaseReq("e", now), hold)
	is(t, err, store.ErrExhausted, "10.9.0.10")

	// Release: a's address is free for others at once, but a gets it
	// back while nobody took it.
	is(t, ls.ReleaseLease(ctx, netip.MustParseAddr("10.9.0.10"), "b", now), store.ErrNotFound)
	ok(t, ls.ReleaseLease(ctx, netip.MustParseAddr("10.9.0.10"), "a", now))
	if l := must[store.Lease](t)(ls.LeaseByClient(ctx, "a")); l.State != store.LeaseReleased {
		t.Fatalf("released %+v", l)
	}
	wantIP(t, "10.9.0.10")(ls.OfferLease(ctx, leaseReq("a", now), hold))
	ok(t, ls.ReleaseLease(ctx, netip.MustParseAddr("10.9.0.10"), "a", now))
	wantIP(t, "10.9.0.10")(ls.OfferLease(ctx, leaseReq("e", now), hold))
	_, err = ls.LeaseByClient(ctx, "a")
	is(t, err, store.ErrNotFound)

	// Decline: the address is quarantined, no client holds it.
	later := now.Add(10 * time.Second)
	ok(t, ls.DeclineLease(ctx, netip.MustParseAddr("10.9.0.10"), "e", later, later.Add(10*time.Minute)))
	is(t, ls.DeclineLease(ctx, netip.MustParseAddr("10.9.0.10"), "e", later, later), store.ErrNotFound)
	_, err = ls.LeaseByClient(ctx, "e")
	is(t, err, store.ErrNotFound)
	_, err = ls.BindLease(ctx, netip.MustParseAddr("10.9.0.10"), leaseReq("e", later), life)
	is(t, err, store.ErrConflict, "declined")

	// Offers expire (after hold): b's, c's and d's addresses are free
	// again at now+2m, reused oldest first — but the quarantine holds
	// until later+10m.
	t2 := now.Add(2 * time.Minute)
	// Make b's offer the newest expiry among the expired, c's the oldest.
	wantIP(t, "10.9.0.11")(ls.OfferLease(ctx, leaseReq("b", now.Add(30*time.Second)), hold))
	got := map[string]bool{}
	for _, c := range []string{"x", "y", "z"} {
		l := must[store.Lease](t)(ls.OfferLease(ctx, leaseReq(c, t2), hold))
		got[l.IP.String()] = true
		wantIP(t, l.IP.String())(ls.BindLease(ctx, l.IP, leaseReq(c, t2), life))
		if c == "x" && l.IP.String() == "10.9.0.11" {
			t.Fatalf("x was given b's address, whose offer expired last")
		}
		if c == "z" && l.IP.String() != "10.9.0.11" {
			t.Fatalf("z got %s, want the last expired 10.9.0.11", l.IP)
		}
	}
	if got["10.9.0.10"] || len(got) != 3 {
		t.Fatalf("offers after expiry %v: the declined address must stay quarantined", got)
	}
	_, err = ls.OfferLease(ctx, leaseReq("w", t2), hold)
	is(t, err, store.ErrExhausted)
	// After the quarantine the declined address is free again.
	wantIP(t, "10.9.0.10")(ls.OfferLease(ctx, leaseReq("w", later.Add(11*time.Minute)), hold))

	list := must[[]store.Lease](t)(ls.LeaseList(ctx, store.LeaseFilter{Range: leaseRange}))
	if len(list) != 4 || list[0].IP.String() != "10.9.0.10" || list[0].ClientID != "w" || list[0].Server != "test" {
		t.Fatalf("lease list %+v", list)
	}
	if l := must[[]store.Lease](t)(ls.LeaseList(ctx, store.LeaseFilter{ClientID: "z"})); len(l) != 1 || l[0].IP.String() != "10.9.0.11" {
		t.Fatalf("lease list of z %+v", l)
	}
	_, err = ls.OfferLease(ctx, store.LeaseRequest{Range: leaseRange}, hold)
	is(t, err, store.ErrInvalid, "client")
}

// testLeaseGaps: an address a client left (it moved to another one) is
// never-used again, offered before any expired lease once the range's top
// is reached.
func testLeaseGaps(t *testing.T, st store.Store) {
	ls := leases(t, st)
	rng := store.LeaseRange{Start: netip.MustParseAddr("10.9.2.20"), End: netip.MustParseAddr("10.9.2.23")}
	req := func(c, want string) store.LeaseRequest {
		r := store.LeaseRequest{ClientID: c, Range: rng, Now: leaseT0}
		if want != "" {
			r.Requested = netip.MustParseAddr(want)
		}
		return r
	}
	wantIP(t, "10.9.2.20")(ls.OfferLease(ctx, req("p", ""), time.Minute))
	wantIP(t, "10.9.2.21")(ls.OfferLease(ctx, req("q", ""), time.Minute))
	wantIP(t, "10.9.2.22")(ls.OfferLease(ctx, req("r", ""), time.Minute))
	// q binds another address (INIT-REBOOT with an old lease): .21 is left.
	wantIP(t, "10.9.2.23")(ls.BindLease(ctx, netip.MustParseAddr("10.9.2.23"), req("q", ""), time.Hour))
	wantIP(t, "10.9.2.21")(ls.OfferLease(ctx, req("s", ""), time.Minute))
	_, err := ls.OfferLease(ctx, req("u", ""), time.Minute)
	is(t, err, store.ErrExhausted)
}

// testConcurrentLeases races many clients for a small range: each address
// is bound to at most one client, and the losers are told the range is
// exhausted.
func testConcurrentLeases(t *testing.T, st store.Store) {
	rng := store.LeaseRange{Start: netip.MustParseAddr("10.9.1.1"), End: netip.MustParseAddr("10.9.1.20")}
	raceLeases(t, leases(t, st), rng, 32, 20, func(i int) string { return fmt.Sprint("client-", i) })
}

// raceLeases has clients clients (named by id) offer and bind in parallel
// in rng, which holds size addresses: each address goes to one client at
// most, every address is bound, and the others are told the range is
// exhausted.
func raceLeases(t *testing.T, ls store.Leases, rng store.LeaseRange, clients, size int, id func(int) string) {
	t.Helper()
	var mu sync.Mutex
	owner := map[netip.Addr]string{}
	exhausted := 0
	noErrors(t, parallel(clients, func(i int) error {
		req := store.LeaseRequest{ClientID: id(i), Range: rng}
		l, err := ls.OfferLease(ctx, req, time.Hour)
		if errors.Is(err, store.ErrExhausted) {
			mu.Lock()
			exhausted++
			mu.Unlock()
			return nil
		}
		if err != nil {
			return err
		}
		if _, err := ls.BindLease(ctx, l.IP, req, time.Hour); err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		if o, dup := owner[l.IP]; dup {
			return fmt.Errorf("%s bound to %s and %s", l.IP, o, req.ClientID)
		}
		owner[l.IP] = req.ClientID
		return nil
	}))
	if len(owner) != size || exhausted != clients-size {
		t.Fatalf("%d addresses bound, %d clients refused; want %d and %d", len(owner), exhausted, size, clients-size)
	}
}

// testLeases6: DHCPv6 leases (IPv6 ranges, clients keyed by DUID and
// IAID) follow the same rules, in their own table: an IPv4 and an IPv6
// lease of one client live side by side.
func testLeases6(t *testing.T, st store.Store) {
	ls := leases(t, st)
	rng := store.LeaseRange{Start: netip.MustParseAddr("fd00:9::fffe"), End: netip.MustParseAddr("fd00:9::1:1")}
	now, hold, life := leaseT0, time.Minute, time.Hour
	req := func(c string, at time.Time) store.LeaseRequest {
		return store.LeaseRequest{ClientID: c, MAC: "02:00:00:00:0b:01", Server: "six", Range: rng, Now: at}
	}
	// Addresses count across a 16-bit boundary: fffe, ffff, 1:0, 1:1.
	wantIP(t, "fd00:9::fffe")(ls.OfferLease(ctx, req("0001/01", now), hold))
	wantIP(t, "fd00:9::ffff")(ls.OfferLease(ctx, req("0002/01", now), hold))
	wantIP(t, "fd00:9::1:0")(ls.OfferLease(ctx, req("0003/01", now), hold))
	b := wantIP(t, "fd00:9::fffe")(ls.BindLease(ctx, netip.MustParseAddr("fd00:9::fffe"), req("0001/01", now), life))
	if b.State != store.LeaseBound || b.Server != "six" {
		t.Fatalf("bind %+v", b)
	}
	_, err := ls.BindLease(ctx, netip.MustParseAddr("fd00:9::fffe"), req("0002/01", now), life)
	is(t, err, store.ErrConflict, "fd00:9::fffe")
	_, err = ls.BindLease(ctx, netip.MustParseAddr("10.9.0.10"), req("0002/01", now), life)
	is(t, err, store.ErrInvalid, "outside")
	// A client moving leaves a gap, offered before the top is exceeded.
	wantIP(t, "fd00:9::1:1")(ls.BindLease(ctx, netip.MustParseAddr("fd00:9::1:1"), req("0002/01", now), life))
	wantIP(t, "fd00:9::ffff")(ls.OfferLease(ctx, req("0004/01", now), hold))
	_, err = ls.OfferLease(ctx, req("0005/01", now), hold)
	is(t, err, store.ErrExhausted, "fd00:9::fffe")
	// Release, decline, expiry.
	ok(t, ls.ReleaseLease(ctx, netip.MustParseAddr("fd00:9::1:1"), "0002/01", now))
	is(t, ls.ReleaseLease(ctx, netip.MustParseAddr("fd00:9::1:1"), "0002/01x", now), store.ErrNotFound)
	wantIP(t, "fd00:9::1:1")(ls.OfferLease(ctx, req("0005/01", now), hold))
	ok(t, ls.DeclineLease(ctx, netip.MustParseAddr("fd00:9::1:0"), "0003/01", now, now.Add(time.Hour)))
	t2 := now.Add(2 * time.Minute) // offers to 0004 and 0005 expired, the quarantine holds
	got := map[string]bool{}
	for _, c := range []string{"00a1/01", "00a2/01"} {
		got[must[store.Lease](t)(ls.OfferLease(ctx, req(c, t2), hold)).IP.String()] = true
	}
	if !got["fd00:9::ffff"] || !got["fd00:9::1:1"] {
		t.Fatalf("offers after expiry %v", got)
	}
	_, err = ls.OfferLease(ctx, req("00a3/01", t2), hold)
	is(t, err, store.ErrExhausted)

	// One client id, one lease per family.
	wantIP(t, "10.9.3.1")(ls.OfferLease(ctx, store.LeaseRequest{ClientID: "0001/01", Range: store.LeaseRange{
		Start: netip.MustParseAddr("10.9.3.1"), End: netip.MustParseAddr("10.9.3.2")}, Now: now}, hold))
	if l := must[[]store.Lease](t)(ls.LeaseList(ctx, store.LeaseFilter{IPv6: true, ClientID: "0001/01"})); len(l) != 1 || l[0].IP.String() != "fd00:9::fffe" {
		t.Fatalf("IPv6 lease list of 0001/01 %+v", l)
	}
	list := must[[]store.Lease](t)(ls.LeaseList(ctx, store.LeaseFilter{Range: rng}))
	if len(list) != 4 || list[0].IP.String() != "fd00:9::fffe" || list[3].IP.String() != "fd00:9::1:1" || list[2].State != store.LeaseDeclined {
		t.Fatalf("IPv6 lease list %+v", list)
	}
	for _, l := range must[[]store.Lease](t)(ls.LeaseList(ctx, store.LeaseFilter{})) {
		if !l.IP.Is4() {
			t.Fatalf("IPv4 lease list holds %s", l.IP)
		}
	}
	_, err = ls.OfferLease(ctx, store.LeaseRequest{ClientID: "x", Range: store.LeaseRange{Start: rng.Start, End: netip.MustParseAddr("10.0.0.1")}}, hold)
	is(t, err, store.ErrInvalid, "range")
}

// testConcurrentLeases6 races many DHCPv6 clients for a small range.
func testConcurrentLeases6(t *testing.T, st store.Store) {
	rng := store.LeaseRange{Start: netip.MustParseAddr("fd00:9:1::1"), End: netip.MustParseAddr("fd00:9:1::a")}
	raceLeases(t, leases(t, st), rng, 16, 10, func(i int) string { return fmt.Sprintf("%04x/00000001", i) })
}
