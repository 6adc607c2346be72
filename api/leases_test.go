package api_test

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/preboot/preboot/api"
	"github.com/preboot/preboot/store"
)

// TestDHCPLeases lists DHCPv4 and DHCPv6 leases written as the servers
// write them, on SQLite and PostgreSQL.
func TestDHCPLeases(t *testing.T) {
	backends(t, func(t *testing.T, open func(t *testing.T) store.Store) {
		st := open(t)
		e := newEnv(t, st)
		ls := st.(store.Leases)
		ctx := context.Background()
		now := time.Now()
		v4 := store.LeaseRange{Start: netip.MustParseAddr("10.60.0.10"), End: netip.MustParseAddr("10.60.0.20")}
		v6 := store.LeaseRange{Start: netip.MustParseAddr("fd00:60::10"), End: netip.MustParseAddr("fd00:60::20")}
		req := func(c, mac, host string, r store.LeaseRange) store.LeaseRequest {
			return store.LeaseRequest{ClientID: c, MAC: mac, Hostname: host, Server: "srv-a", Range: r, Now: now}
		}
		if _, err := ls.BindLease(ctx, netip.MustParseAddr("10.60.0.10"), req("01:52:54:00:00:00:01", "52:54:00:00:00:01", "pc1", v4), time.Hour); err != nil {
			t.Fatal(err)
		}
		if _, err := ls.OfferLease(ctx, req("01:52:54:00:00:00:02", "52:54:00:00:00:02", "", v4), time.Minute); err != nil {
			t.Fatal(err)
		}
		if err := ls.ReleaseLease(ctx, netip.MustParseAddr("10.60.0.11"), "01:52:54:00:00:00:02", now); err != nil {
			t.Fatal(err)
		}
		if _, err := ls.BindLease(ctx, netip.MustParseAddr("fd00:60::10"), req("000100aa/00000001", "52:54:00:00:00:03", "pc3", v6), time.Hour); err != nil {
			t.Fatal(err)
		}

		var got []api.DHCPLease
		e.call("GET", "/api/v1/dhcp/leases", nil, 200, &got)
		if len(got) != 3 || got[0].Family != 4 || got[0].IP.String() != "10.60.0.10" || got[0].Hostname != "pc1" || !got[0].Active ||
			got[0].State != store.LeaseBound || got[0].Server != "srv-a" ||
			got[1].IP.String() != "10.60.0.11" || got[1].Active || got[1].State != store.LeaseReleased ||
			got[2].Family != 6 || got[2].IP.String() != "fd00:60::10" || got[2].ClientID != "000100aa/00000001" || got[2].MAC != "52:54:00:00:00:03" || !got[2].Active {
			t.Fatalf("leases %+v", got)
		}
		e.call("GET", "/api/v1/dhcp/leases?family=6", nil, 200, &got)
		if len(got) != 1 || got[0].Family != 6 {
			t.Fatalf("IPv6 leases %+v", got)
		}
		e.call("GET", "/api/v1/dhcp/leases?active=true&family=4", nil, 200, &got)
		if len(got) != 1 || got[0].IP.String() != "10.60.0.10" {
			t.Fatalf("active IPv4 leases %+v", got)
		}
		e.call("GET", "/api/v1/dhcp/leases?limit=2", nil, 200, &got)
		if len(got) != 2 {
			t.Fatalf("limit 2: %+v", got)
		}
		e.errorOf("GET", "/api/v1/dhcp/leases?family=5", nil, 400, "family")
		e.errorOf("GET", "/api/v1/dhcp/leases?active=maybe", nil, 400, "active")
		// Administrators only.
		e.local.Store(false)
		e.errorOf("GET", "/api/v1/dhcp/leases", nil, 401)
	})
}
