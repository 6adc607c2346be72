package postgres

import (
	"context"
	"testing"

	"github.com/preboot/preboot/store"
)

// TestSightingReadsPolicyVersion: on PostgreSQL a sighting (new device,
// changed device, unchanged device) leaves the policy version in the
// request's slot, read in the same statement; the slot is used once.
func TestSightingReadsPolicyVersion(t *testing.T) {
	st := open(t)
	bg := context.Background()
	mac := "02:00:00:00:08:01"
	for i, s := range []store.Sighting{{MAC: mac, IP: "10.0.0.1"}, {MAC: mac, IP: "10.0.0.2"}, {MAC: mac, IP: "10.0.0.2"}} {
		if _, err := st.CreateBundle(bg, store.Bundle{Name: "b" + string(rune('0'+i)), Kind: store.KindInventory}); err != nil {
			t.Fatal(err)
		}
		want, err := st.PolicyVersion(bg)
		if err != nil {
			t.Fatal(err)
		}
		ctx := store.WithVersionSlot(bg)
		if _, _, err := st.SeeDevice(ctx, s); err != nil {
			t.Fatal(err)
		}
		v, ok := store.TakeVersion(ctx)
		if !ok || v != want {
			t.Errorf("sighting %d: version %d, %v; want %d", i, v, ok, want)
		}
		if _, ok := store.TakeVersion(ctx); ok {
			t.Errorf("sighting %d: the version was there twice", i)
		}
	}
}
