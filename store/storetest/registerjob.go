package storetest

import (
	"fmt"
	"testing"
	"time"

	"github.com/preboot/preboot/store"
)

// testRegisterJob checks a registration that creates its job (and the
// job's events) in its transaction: the job carries the once assignment
// created with it; a device with an open job gets none (the registration
// still happens); a failure of the job leaves nothing of the
// registration, and a failure of the registration no job.
func testRegisterJob(t *testing.T, st store.Store) {
	mac := "02:00:00:00:0e:01"
	seen(t, st, mac)
	b := bundle(t, st, "inv", store.KindInventory)
	group(t, st, "lab")
	job := func(hash string) *store.Job {
		return &store.Job{Kind: b.Kind, BundleID: b.ID, Bundle: b.Name, BundleVersion: b.Version, State: store.JobPending,
			TokenHash: hash, ClientIP: "10.0.0.9", Boots: 1, TokenIssuedAt: time.Now(), CreatedAt: time.Now()}
	}
	jobEvents := func(j store.Job) []store.Event {
		return []store.Event{
			{Kind: store.EventJob, Message: fmt.Sprintf("job %d created", j.ID)},
			{Kind: store.EventWork, Message: fmt.Sprintf("imaging (job %d)", j.ID)},
		}
	}
	event := func(store.Registered) store.Event { return store.Event{Kind: store.EventPolicy, Message: "registered"} }
	r := must[store.Registered](t)(st.Register(ctx, store.Registration{MAC: mac, Name: "n", Group: "lab", BundleID: b.ID,
		Event: event, Job: job("hash-1"), JobEvents: jobEvents}))
	if r.Assignment == nil || r.Job == nil {
		t.Fatalf("registered %+v: want an assignment and a job", r)
	}
	if r.Job.ID == 0 || r.Job.MAC != mac || r.Job.AssignmentID != r.Assignment.ID || r.Job.State != store.JobPending {
		t.Fatalf("job %+v: want a pending job of %s from assignment %d", r.Job, mac, r.Assignment.ID)
	}
	got := must[store.Job](t)(st.Job(ctx, r.Job.ID))
	if got.MAC != mac || got.AssignmentID != r.Assignment.ID || got.Bundle != "inv" || got.ClientIP != "10.0.0.9" {
		t.Fatalf("stored job %+v", got)
	}
	if j := must[store.Job](t)(st.JobByToken(ctx, "hash-1")); j.ID != r.Job.ID {
		t.Fatalf("job by token: %d, want %d", j.ID, r.Job.ID)
	}
	es := must[[]store.Event](t)(st.Events(ctx, store.EventFilter{MAC: mac}))
	if len(es) != 3 {
		t.Fatalf("events %+v: want the registration's and the job's two", es)
	}
	// Newest first: work, job, policy.
	if es[2].Kind != store.EventPolicy || es[1].Kind != store.EventJob || es[0].Kind != store.EventWork ||
		es[1].Job != r.Job.ID || es[0].Job != r.Job.ID || es[1].Message != fmt.Sprintf("job %d created", r.Job.ID) ||
		!(es[2].ID < es[1].ID && es[1].ID < es[0].ID) {
		t.Fatalf("events %+v: want policy, job %d created, work in that order, the job's with its ID", es, r.Job.ID)
	}

	// The device has an open job now: a registration with a job creates
	// none (the caller claims as usual) and still registers.
	other := bundle(t, st, "inv2", store.KindInventory)
	ok(t, st.DeleteAssignment(ctx, r.Assignment.ID))
	r = must[store.Registered](t)(st.Register(ctx, store.Registration{MAC: mac, BundleID: other.ID, Job: job("hash-2"), JobEvents: jobEvents}))
	if r.Job != nil || r.Assignment == nil {
		t.Fatalf("registered %+v: want an assignment and no job (one is open)", r)
	}
	if js := must[[]store.Job](t)(st.Jobs(ctx, store.JobFilter{MAC: mac})); len(js) != 1 {
		t.Fatalf("jobs %+v: want the first one only", js)
	}

	// A job that cannot be stored (its token's hash is taken) fails the
	// registration as a whole.
	mac2 := "02:00:00:00:0e:02"
	seen(t, st, mac2)
	v := version(t, st)
	_, err := st.Register(ctx, store.Registration{MAC: mac2, Name: "m", Group: "lab", BundleID: b.ID, Event: event,
		Job: job("hash-1"), JobEvents: jobEvents})
	if err == nil {
		t.Fatal("a job with a taken token hash: registered")
	}
	noRegistration(t, st, mac2, v, "taken token hash")

	// A job event without a kind is invalid: nothing is written.
	_, err = st.Register(ctx, store.Registration{MAC: mac2, Name: "m", Group: "lab", BundleID: b.ID, Event: event,
		Job: job("hash-3"), JobEvents: func(store.Job) []store.Event { return []store.Event{{Message: "no kind"}} }})
	is(t, err, store.ErrInvalid)
	noRegistration(t, st, mac2, v, "job event without a kind")

	// The registration fails (no such group): no job either.
	_, err = st.Register(ctx, store.Registration{MAC: mac2, Name: "m", Group: "missing", BundleID: b.ID, Event: event,
		Job: job("hash-4"), JobEvents: jobEvents})
	is(t, err, store.ErrNotFound)
	noRegistration(t, st, mac2, v, "missing group")
	if _, err := st.JobByToken(ctx, "hash-4"); err == nil {
		t.Fatal("missing group: the job was stored")
	}
}

// noRegistration fails t unless mac is unregistered and has no name, no
// group, no assignment, no job and no event, and the policy is at v.
func noRegistration(t *testing.T, st store.Store, mac string, v int64, what string) {
	t.Helper()
	d := must[store.Device](t)(st.Device(ctx, mac))
	if d.Name != "" || d.Registered {
		t.Fatalf("%s: device %+v: want no name, not registered", what, d)
	}
	if gs := must[[]store.Group](t)(st.DeviceGroups(ctx, mac)); len(gs) != 0 {
		t.Fatalf("%s: groups %+v", what, gs)
	}
	if as := must[[]store.Assignment](t)(st.Assignments(ctx, store.AssignmentFilter{MAC: mac})); len(as) != 0 {
		t.Fatalf("%s: assignments %+v", what, as)
	}
	if js := must[[]store.Job](t)(st.Jobs(ctx, store.JobFilter{MAC: mac})); len(js) != 0 {
		t.Fatalf("%s: jobs %+v", what, js)
	}
	if es := must[[]store.Event](t)(st.Events(ctx, store.EventFilter{MAC: mac})); len(es) != 0 {
		t.Fatalf("%s: events %+v", what, es)
	}
	if got := version(t, st); got != v {
		t.Fatalf("%s: policy version %d -> %d", what, v, got)
	}
}
