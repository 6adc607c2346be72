package storetest

import (
	"errors"
	"fmt"
	"sort"
	"sync"
	"testing"

	"github.com/preboot/preboot/store"
)

// parallel runs fn(i) for i in 0..n-1 on n goroutines and returns their
// errors.
func parallel(n int, fn func(i int) error) []error {
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			errs[i] = fn(i)
		}(i)
	}
	wg.Wait()
	return errs
}

func noErrors(t *testing.T, errs []error) {
	t.Helper()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
}

func testConcurrentSightings(t *testing.T, st store.Store) {
	var mu sync.Mutex
	created := map[string]int{}
	noErrors(t, parallel(16, func(i int) error {
		for j := 0; j < 8; j++ {
			// Two goroutines per device race to create it.
			mac := fmt.Sprintf("02:00:00:00:09:%02x", i/2)
			d, c, err := st.SeeDevice(ctx, store.Sighting{MAC: mac, Serial: fmt.Sprint("S", i/2), FillOnly: j%2 == 0})
			if err != nil {
				return err
			}
			if d.MAC != mac {
				return fmt.Errorf("sighting of %s returned %s", mac, d.MAC)
			}
			if c {
				mu.Lock()
				created[mac]++
				mu.Unlock()
			}
			if _, err := st.AddEvent(ctx, store.Event{MAC: mac, Kind: store.EventBoot}); err != nil {
				return err
			}
		}
		return nil
	}))
	devs := must[[]store.Device](t)(st.Devices(ctx, store.DeviceFilter{}))
	if len(devs) != 8 {
		t.Fatalf("%d devices, want 8", len(devs))
	}
	for _, d := range devs {
		if created[d.MAC] != 1 {
			t.Errorf("%s reported created %d times", d.MAC, created[d.MAC])
		}
		if d.LastEvent == nil {
			t.Errorf("%s has no last event", d.MAC)
		}
	}
	if n := len(must[[]store.Event](t)(st.Events(ctx, store.EventFilter{Limit: 1000}))); n != 128 {
		t.Errorf("%d events, want 128", n)
	}
}

func testConcurrentJobUpdates(t *testing.T, st store.Store) {
	j := must[store.Job](t)(st.CreateJob(ctx, store.Job{MAC: "02:00:00:00:0a:01", Kind: store.KindScript, TokenHash: "c"}))
	noErrors(t, parallel(8, func(int) error {
		for k := 0; k < 10; k++ {
			if _, err := st.UpdateJob(ctx, j.ID, func(j *store.Job) error { j.BytesDone++; return nil }); err != nil {
				return err
			}
			if err := st.AddJobLog(ctx, j.ID, []string{"a", "b"}); err != nil {
				return err
			}
		}
		return nil
	}))
	if got := must[store.Job](t)(st.Job(ctx, j.ID)); got.BytesDone != 80 {
		t.Fatalf("bytes done = %d after 80 increments: updates were lost", got.BytesDone)
	}
	if n := len(must[[]store.JobLine](t)(st.JobLog(ctx, j.ID, 0))); n != 160 {
		t.Fatalf("%d log lines, want 160", n)
	}
}

// testConcurrentPolicyChanges: groups created with priority 0, rules
// appended and members added at the same time stay consistent.
func testConcurrentPolicyChanges(t *testing.T, st store.Store) {
	const n = 8
	for i := 0; i < n; i++ {
		seen(t, st, fmt.Sprintf("02:00:00:00:0b:%02x", i))
	}
	group(t, st, "all")
	v := version(t, st)
	noErrors(t, parallel(n, func(i int) error {
		if _, err := st.CreateGroup(ctx, store.Group{Name: fmt.Sprint("g", i)}); err != nil {
			return err
		}
		if _, err := st.CreateRule(ctx, store.Rule{Name: fmt.Sprint("r", i), Match: "true"}); err != nil {
			return err
		}
		if err := st.AddMember(ctx, "all", fmt.Sprintf("02:00:00:00:0b:%02x", i)); err != nil {
			return err
		}
		_, err := st.CreateRule(ctx, store.Rule{Name: fmt.Sprint("first", i), Match: "true", Position: 1})
		return err
	}))
	gs := must[[]store.Group](t)(st.Groups(ctx, store.Page{}))
	prios := map[int]bool{}
	for _, g := range gs {
		if prios[g.Priority] {
			t.Fatalf("priority %d given twice: %+v", g.Priority, gs)
		}
		prios[g.Priority] = true
	}
	if len(gs) != n+1 {
		t.Fatalf("%d groups, want %d", len(gs), n+1)
	}
	rs := must[[]store.Rule](t)(st.Rules(ctx))
	var pos []int
	for _, r := range rs {
		pos = append(pos, r.Position)
	}
	sort.Ints(pos)
	for i, p := range pos {
		if p != i+1 {
			t.Fatalf("rule positions %v are not 1..%d", pos, 2*n)
		}
	}
	if len(rs) != 2*n {
		t.Fatalf("%d rules, want %d", len(rs), 2*n)
	}
	if g := must[store.Group](t)(st.Group(ctx, "all")); g.Members != n {
		t.Fatalf("group counts %d members, want %d", g.Members, n)
	}
	if got := version(t, st); got < v+4*n {
		t.Fatalf("policy version %d after %d changes from %d", got, 4*n, v)
	}
}

func testConcurrentAssignments(t *testing.T, st store.Store) {
	mac := "02:00:00:00:0c:01"
	seen(t, st, mac)
	b := bundle(t, st, "inv", store.KindInventory)
	errs := parallel(8, func(int) error {
		_, err := st.CreateAssignment(ctx, store.Assignment{BundleID: b.ID, MAC: mac})
		return err
	})
	won := 0
	for _, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, store.ErrConflict):
			t.Fatalf("racing assignment: %v", err)
		}
	}
	if won != 1 {
		t.Fatalf("%d racing assignments to one device succeeded, want 1", won)
	}
	if as := must[[]store.Assignment](t)(st.Assignments(ctx, store.AssignmentFilter{MAC: mac})); len(as) != 1 {
		t.Fatalf("%d assignments for the device", len(as))
	}
}
