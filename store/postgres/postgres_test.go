package postgres

import (
	"context"
	"os"
	"sync"
	"testing"

	"github.com/preboot/preboot/store"
	"github.com/preboot/preboot/store/pgtest"
	"github.com/preboot/preboot/store/sqlstore"
	"github.com/preboot/preboot/store/storetest"
)

// pg is the cluster of this test binary (see package pgtest).
var pg pgtest.Shared

func TestMain(m *testing.M) { os.Exit(pg.Main(m)) }

func open(t *testing.T) store.Store {
	t.Helper()
	st, err := Open(context.Background(), pg.Database(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func TestConformance(t *testing.T) {
	storetest.Run(t, open)
}

// TestServersShareDatabase opens the same database twice at once, as two
// Preboot servers would: migrations serialise, and each sees the other's
// writes.
func TestServersShareDatabase(t *testing.T) {
	ctx := context.Background()
	dsn := pg.Database(t)
	stores := make([]*Store, 4)
	errs := make([]error, len(stores))
	var wg sync.WaitGroup
	for i := range stores {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			stores[i], errs[i] = sqlstore.Open(ctx, "postgres", dsn)
		}(i)
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("server %d: %v", i, err)
		}
		defer stores[i].Close()
	}
	a, b := stores[0], stores[1]
	if a.Driver() != "postgres" {
		t.Fatalf("driver = %q", a.Driver())
	}
	v, err := b.PolicyVersion(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.CreateBundle(ctx, store.Bundle{Name: "inv", Kind: store.KindInventory}); err != nil {
		t.Fatal(err)
	}
	if got, err := b.PolicyVersion(ctx); err != nil || got <= v {
		t.Fatalf("the other server's policy version: %d (was %d), %v", got, v, err)
	}
	if _, err := b.Bundle(ctx, "inv"); err != nil {
		t.Fatalf("the other server does not see the bundle: %v", err)
	}
	if _, err := b.CreateBundle(ctx, store.Bundle{Name: "inv", Kind: store.KindInventory}); err == nil {
		t.Fatal("the same name was accepted by the other server")
	}
}

// BenchmarkBootPath runs the store calls of one boot-policy decision
// against a database holding 10,000 devices, 1,000 groups and 500 rules.
func BenchmarkBootPath(b *testing.B) {
	ctx := context.Background()
	st, err := Open(ctx, pg.Database(b))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	storetest.Populate(b, st, 10000, 1000, 500)
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		storetest.Decide(b, st, storetest.BenchMAC(i%10000))
	}
}
