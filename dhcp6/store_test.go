package dhcp6

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"

	"github.com/preboot/preboot/store"
	"github.com/preboot/preboot/store/pgtest"
	"github.com/preboot/preboot/store/sqlstore"
)

var pg pgtest.Shared

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "1" { // the namespace tests' server process
		os.Exit(m.Run())
	}
	os.Exit(pg.Main(m))
}

// TestRestartKeepsLeases reopens the database as a restarted server
// would: a client renewing gets its address, no other client is given it,
// and the lease is listed with its DUID/IAID, MAC and server.
func TestRestartKeepsLeases(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	path := filepath.Join(t.TempDir(), "leases.db")
	st, err := sqlstore.OpenSQLite(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	s := newTestServerOn(st, &now)
	a := handle(t, s, msg(t, dhcpv6.MessageTypeSolicit, pxe, 1, withIA(""), dhcpv6.WithRapidCommit))
	ipA, _ := replyAddr(t, a)
	if !testRange.Contains(ipA) {
		t.Fatalf("rapid commit gave %v", ipA)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	st2 := openSQLite(t, path)
	s = newTestServerOn(st2, &now)
	sid := dhcpv6.WithServerID(s.ServerID)
	b := handle(t, s, msg(t, dhcpv6.MessageTypeSolicit, plain, 2, withIA(""), dhcpv6.WithRapidCommit))
	if ip, _ := replyAddr(t, b); ip == ipA || !testRange.Contains(ip) {
		t.Fatalf("after a restart another client got %v (a holds %v)", ip, ipA)
	}
	// A Request without an address: the client's own lease.
	now = now.Add(time.Minute)
	a = handle(t, s, msg(t, dhcpv6.MessageTypeRequest, pxe, 1, withIA(""), sid))
	if ip, lt := replyAddr(t, a); ip != ipA || lt != DefaultLeaseTime {
		t.Fatalf("after a restart a's request: %v %v, want %v", ip, lt, ipA)
	}
	ls, err := st2.LeaseList(context.Background(), store.LeaseFilter{IPv6: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) != 2 || ls[0].IP != ipA || ls[0].State != store.LeaseBound || ls[0].MAC != "52:54:00:00:00:01" ||
		ls[0].Server != "test" || len(ls[0].ClientID) < 10 || !ls[0].Expires.Equal(now.Add(DefaultLeaseTime)) {
		t.Fatalf("leases %+v", ls)
	}
}

// TestTwoServersSharePostgres: two servers, each with its own connection
// pool to one PostgreSQL database, and a crowd of clients larger than the
// range asking both with rapid commit: no address is given to two.
func TestTwoServersSharePostgres(t *testing.T) {
	ctx := context.Background()
	dsn := pg.Database(t)
	now := time.Unix(1_800_000_000, 0)
	var servers [2]*Server
	for i := range servers {
		st, err := sqlstore.OpenPostgres(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		servers[i] = newTestServerOn(st, &now)
		servers[i].Name = fmt.Sprint("server-", i)
	}
	var (
		mu    sync.Mutex
		owner = map[netip.Addr]byte{}
		wg    sync.WaitGroup
		errs  = make(chan error, 32)
	)
	for i := range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, s := range servers {
				a, err := s.Handle(ctx, msg(t, dhcpv6.MessageTypeSolicit, plain, byte(10+i), withIA(""), dhcpv6.WithRapidCommit),
					Inbound{Peer: netip.MustParseAddr("fe80::1"), Iface: testIface})
				if err != nil && a.Result != ResultExhausted {
					errs <- fmt.Errorf("client %d: %w", i, err)
					return
				}
				if !a.Addr.IsValid() {
					continue
				}
				mu.Lock()
				if o, dup := owner[a.Addr]; dup && o != byte(i) {
					errs <- fmt.Errorf("%v given to clients %d and %d", a.Addr, o, i)
				}
				owner[a.Addr] = byte(i)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if len(owner) != 3 {
		t.Fatalf("%d addresses given, want the range's 3", len(owner))
	}
}
