package cli_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/preboot/preboot/api"
	"github.com/preboot/preboot/store"
)

// TestDHCPLeases lists, through the real server, leases the DHCPv4 and
// DHCPv6 servers would have written.
func TestDHCPLeases(t *testing.T) {
	s := newServer(t)
	c := newCLI(t, "PREBOOT_SOCKET="+s.sock)
	contains(t, c.ok(t, "dhcp", "leases"), "ADDRESS", "HOSTNAME", "EXPIRES")

	ls := s.st.(api.NotifyingStore).Store.(store.Leases)
	now := time.Now()
	if _, err := ls.BindLease(t.Context(), netip.MustParseAddr("10.70.0.5"), store.LeaseRequest{ClientID: "01:52:54:00:00:00:07", MAC: "52:54:00:00:00:07",
		Hostname: "lab-pc7", Server: "srv-1", Range: store.LeaseRange{Start: netip.MustParseAddr("10.70.0.5"), End: netip.MustParseAddr("10.70.0.9")}, Now: now}, time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, err := ls.OfferLease(t.Context(), store.LeaseRequest{ClientID: "0004aabb/00000001", MAC: "52:54:00:00:00:08", Server: "srv-1",
		Range: store.LeaseRange{Start: netip.MustParseAddr("fd00:70::100"), End: netip.MustParseAddr("fd00:70::1ff")}, Now: now}, time.Minute); err != nil {
		t.Fatal(err)
	}
	contains(t, c.ok(t, "dhcp", "leases"), "10.70.0.5", "52:54:00:00:00:07", "lab-pc7", "bound", "srv-1",
		"fd00:70::100", "0004aabb/00000001", "offered")
	var got []api.DHCPLease
	c.json(t, &got, "dhcp", "leases", "--family", "6")
	if len(got) != 1 || got[0].Family != 6 || got[0].IP.String() != "fd00:70::100" || got[0].MAC != "52:54:00:00:00:08" || !got[0].Active {
		t.Fatalf("dhcp leases --family 6: %+v", got)
	}
	c.json(t, &got, "dhcp", "leases", "--active", "--limit", "1")
	if len(got) != 1 || got[0].IP.String() != "10.70.0.5" || got[0].Hostname != "lab-pc7" {
		t.Fatalf("dhcp leases --active --limit 1: %+v", got)
	}
	c.fails(t, "family", "dhcp", "leases", "--family", "5")
}
