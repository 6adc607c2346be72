package storetest

import (
	"sync"
	"testing"
	"time"

	"github.com/preboot/preboot/store"
)

// testSchedules: scheduled assignments keep their time and wake flag, and
// a due wake is claimed once, at its time and not before.
func testSchedules(t *testing.T, st store.Store) {
	dev, grp := "02:00:00:00:0d:01", "night"
	seen(t, st, dev)
	group(t, st, grp)
	b := bundle(t, st, "restore", store.KindImageRestore)
	at := time.Date(2030, 12, 8, 18, 0, 0, 0, time.UTC)

	_, err := st.CreateAssignment(ctx, store.Assignment{BundleID: b.ID, MAC: dev, Wake: true})
	is(t, err, store.ErrInvalid, "wake needs a time")

	a := must[store.Assignment](t)(st.CreateAssignment(ctx, store.Assignment{BundleID: b.ID, MAC: dev, At: at, Wake: true, Once: true}))
	if !a.At.Equal(at) || !a.Wake || !a.WokenAt.IsZero() {
		t.Fatalf("created %+v: want at %v, wake, not woken", a, at)
	}
	g := must[store.Assignment](t)(st.CreateAssignment(ctx, store.Assignment{BundleID: b.ID, Group: grp, At: at.Add(time.Hour)}))
	if a.Due(at.Add(-time.Second)) || !a.Due(at) || !(store.Assignment{}).Due(time.Time{}) {
		t.Fatal("Due: wrong before or at the time, or for an unscheduled assignment")
	}
	if got := must[[]store.Assignment](t)(st.Assignments(ctx, store.AssignmentFilter{Scheduled: true})); len(got) != 2 {
		t.Fatalf("%d scheduled assignments, want 2", len(got))
	}

	if got := must[[]store.Assignment](t)(st.ClaimDueWakes(ctx, at.Add(-time.Microsecond))); len(got) != 0 {
		t.Fatalf("claimed %+v before its time", got)
	}
	got := must[[]store.Assignment](t)(st.ClaimDueWakes(ctx, at.Add(2*time.Hour)))
	if len(got) != 1 || got[0].ID != a.ID || !got[0].WokenAt.Equal(at.Add(2*time.Hour)) {
		t.Fatalf("claimed %+v: want assignment %d woken at %v (group %d has no wake)", got, a.ID, at.Add(2*time.Hour), g.ID)
	}
	if again := must[[]store.Assignment](t)(st.ClaimDueWakes(ctx, at.Add(3*time.Hour))); len(again) != 0 {
		t.Fatalf("claimed %+v twice", again)
	}
	if r := must[store.Assignment](t)(st.Assignment(ctx, a.ID)); r.WokenAt.IsZero() {
		t.Fatal("woken_at not stored")
	}

	// The interface a device was last seen on: a later sighting on
	// another interface replaces it, one without an interface keeps it.
	must[store.Device](t)(func() (store.Device, error) {
		d, _, err := st.SeeDevice(ctx, store.Sighting{MAC: dev, Interface: "eth1", FillOnly: true})
		return d, err
	}())
	must[store.Device](t)(func() (store.Device, error) {
		d, _, err := st.SeeDevice(ctx, store.Sighting{MAC: dev, IP: "10.0.0.9"})
		return d, err
	}())
	if d := must[store.Device](t)(st.Device(ctx, dev)); d.Interface != "eth1" || d.IP != "10.0.0.9" {
		t.Fatalf("device interface %q ip %q, want eth1 10.0.0.9", d.Interface, d.IP)
	}
	must[store.Device](t)(func() (store.Device, error) {
		d, _, err := st.SeeDevice(ctx, store.Sighting{MAC: dev, Interface: "eth2", FillOnly: true})
		return d, err
	}())
	if d := must[store.Device](t)(st.Device(ctx, dev)); d.Interface != "eth2" {
		t.Fatalf("device interface %q after a sighting on eth2", d.Interface)
	}
}

// testConcurrentWakeClaims: schedulers racing for the same due wakes
// (servers sharing a database) claim each one once.
func testConcurrentWakeClaims(t *testing.T, st store.Store) {
	b := bundle(t, st, "inv", store.KindInventory)
	at := time.Now().Add(time.Hour)
	const n = 12
	for i := range n {
		mac := "02:00:00:00:0e:" + string("0123456789abcdef"[i/16]) + string("0123456789abcdef"[i%16])
		seen(t, st, mac)
		must[store.Assignment](t)(st.CreateAssignment(ctx, store.Assignment{BundleID: b.ID, MAC: mac, At: at, Wake: true}))
	}
	var mu sync.Mutex
	claims := map[int64]int{}
	noErrors(t, parallel(8, func(int) error {
		got, err := st.ClaimDueWakes(ctx, at.Add(time.Minute))
		mu.Lock()
		defer mu.Unlock()
		for _, a := range got {
			claims[a.ID]++
		}
		return err
	}))
	if len(claims) != n {
		t.Fatalf("%d assignments claimed, want %d", len(claims), n)
	}
	for id, c := range claims {
		if c != 1 {
			t.Fatalf("assignment %d claimed %d times", id, c)
		}
	}
}
