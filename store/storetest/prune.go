package storetest

import (
	"fmt"
	"testing"
	"time"

	"github.com/preboot/preboot/store"
)

func testPrune(t *testing.T, st store.Store) {
	now := time.Now()
	old, recent := now.Add(-40*24*time.Hour), now.Add(-time.Hour)
	testPruneDevices(t, st, now, old, recent)

	// Nothing asked, nothing deleted.
	if s := must[store.PruneStats](t)(st.Prune(ctx, store.PruneOptions{})); s != (store.PruneStats{}) {
		t.Fatalf("empty prune: %+v", s)
	}

	// Events: by age, then by count (the newest are kept).
	for i := range 5 {
		must[store.Event](t)(st.AddEvent(ctx, store.Event{Kind: store.EventBoot, MAC: "02:00:00:00:09:01", Time: old, Message: fmt.Sprint("old ", i)}))
	}
	var kept []store.Event
	for i := range 6 {
		kept = append(kept, must[store.Event](t)(st.AddEvent(ctx, store.Event{Kind: store.EventBoot, MAC: "02:00:00:00:09:01", Time: recent, Message: fmt.Sprint("new ", i)})))
	}
	s := must[store.PruneStats](t)(st.Prune(ctx, store.PruneOptions{EventsBefore: now.Add(-30 * 24 * time.Hour)}))
	if s.Events != 5 || s.Jobs != 0 {
		t.Fatalf("prune by age: %+v, want 5 events", s)
	}
	evs := must[[]store.Event](t)(st.Events(ctx, store.EventFilter{}))
	if len(evs) != 6 || evs[5].ID != kept[0].ID {
		t.Fatalf("after prune by age: %d events", len(evs))
	}
	s = must[store.PruneStats](t)(st.Prune(ctx, store.PruneOptions{MaxEvents: 4}))
	if s.Events != 2 {
		t.Fatalf("prune by count: %+v, want 2 events", s)
	}
	evs = must[[]store.Event](t)(st.Events(ctx, store.EventFilter{}))
	if len(evs) != 4 || evs[0].ID != kept[5].ID || evs[3].ID != kept[2].ID {
		t.Fatalf("after prune by count: %+v", evs)
	}
	if s := must[store.PruneStats](t)(st.Prune(ctx, store.PruneOptions{MaxEvents: 4})); s.Events != 0 {
		t.Fatalf("second prune by count: %+v", s)
	}

	// Jobs: finished long ago go, with their logs; open or recent ones stay.
	n := 0
	job := func(state string, finished time.Time) store.Job {
		t.Helper()
		n++
		j := must[store.Job](t)(st.CreateJob(ctx, store.Job{MAC: "02:00:00:00:09:02", Kind: store.KindInventory, TokenHash: fmt.Sprint("prune-", n)}))
		j = must[store.Job](t)(st.UpdateJob(ctx, j.ID, func(j *store.Job) error {
			j.State, j.FinishedAt = state, finished
			return nil
		}))
		ok(t, st.AddJobLog(ctx, j.ID, []string{"a", "b"}))
		return j
	}
	gone := []store.Job{job(store.JobSucceeded, old), job(store.JobFailed, old), job(store.JobCancelled, old)}
	stay := []store.Job{job(store.JobSucceeded, recent), job(store.JobRunning, time.Time{}), job(store.JobPending, time.Time{})}
	s = must[store.PruneStats](t)(st.Prune(ctx, store.PruneOptions{JobsBefore: now.Add(-24 * time.Hour)}))
	if s.Jobs != 3 || s.Events != 0 {
		t.Fatalf("prune jobs: %+v, want 3 jobs", s)
	}
	for _, j := range gone {
		_, err := st.Job(ctx, j.ID)
		is(t, err, store.ErrNotFound)
		if l, err := st.JobLog(ctx, j.ID, 0); err == nil && len(l) != 0 {
			t.Fatalf("log of pruned job %d: %d lines", j.ID, len(l))
		}
	}
	for _, j := range stay {
		must[store.Job](t)(st.Job(ctx, j.ID))
		if l := must[[]store.JobLine](t)(st.JobLog(ctx, j.ID, 0)); len(l) != 2 {
			t.Fatalf("log of kept job %d: %d lines", j.ID, len(l))
		}
	}
	// Even a very old open job stays.
	s = must[store.PruneStats](t)(st.Prune(ctx, store.PruneOptions{JobsBefore: now.Add(time.Hour)}))
	if s.Jobs != 1 {
		t.Fatalf("prune everything finished: %+v, want 1 job", s)
	}
}

// Devices a made-up MAC left behind go; anything an administrator or a
// job made of a device stays.
func testPruneDevices(t *testing.T, st store.Store, now, old, recent time.Time) {
	t.Helper()
	see := func(mac string, at time.Time) {
		t.Helper()
		_, _, err := st.SeeDevice(ctx, store.Sighting{MAC: mac, Time: at})
		ok(t, err)
	}
	see("02:00:00:00:0a:01", old)    // spoofed long ago: goes
	see("02:00:00:00:0a:02", recent) // seen lately: stays
	see("02:00:00:00:0a:03", old)    // registered: stays
	_, err := st.UpdateDevice(ctx, "02:00:00:00:0a:03", func(d *store.Device) error { d.Registered = true; return nil })
	ok(t, err)
	see("02:00:00:00:0a:04", old) // in a group: stays
	g := must[store.Group](t)(st.CreateGroup(ctx, store.Group{Name: "prune-g"}))
	ok(t, st.AddMember(ctx, g.Name, "02:00:00:00:0a:04"))
	see("02:00:00:00:0a:05", old) // has a job: stays
	must[store.Job](t)(st.CreateJob(ctx, store.Job{MAC: "02:00:00:00:0a:05", Kind: store.KindInventory, TokenHash: "prune-dev-job"}))
	see("02:00:00:00:0a:06", old) // has an assignment: stays
	b := must[store.Bundle](t)(st.CreateBundle(ctx, store.Bundle{Name: "prune-inv", Kind: store.KindInventory, Params: []byte(`{}`)}))
	must[store.Assignment](t)(st.CreateAssignment(ctx, store.Assignment{BundleID: b.ID, MAC: "02:00:00:00:0a:06"}))

	s := must[store.PruneStats](t)(st.Prune(ctx, store.PruneOptions{DevicesUnseenBefore: now.Add(-30 * 24 * time.Hour)}))
	if s.Devices != 1 || s.Events != 0 || s.Jobs != 0 {
		t.Fatalf("prune devices: %+v, want 1 device", s)
	}
	_, err = st.Device(ctx, "02:00:00:00:0a:01")
	is(t, err, store.ErrNotFound)
	for _, mac := range []string{"02:00:00:00:0a:02", "02:00:00:00:0a:03", "02:00:00:00:0a:04", "02:00:00:00:0a:05", "02:00:00:00:0a:06"} {
		must[store.Device](t)(st.Device(ctx, mac))
	}
}
