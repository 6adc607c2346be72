package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/preboot/preboot/store"
)

// testRegister checks Store.Register: name, membership, once assignment
// and event in one transaction, logged as one change of the device; a
// taken name gets a suffix; a name the device has is kept.
func testRegister(t *testing.T, st store.Store) {
	mac, other := "02:00:00:00:0b:01", "02:00:00:00:0b:02"
	seen(t, st, mac)
	must[store.Device](t)(st.CreateDevice(ctx, store.Device{MAC: other, Name: "lab-x"}))
	b := bundle(t, st, "inv", store.KindInventory)
	group(t, st, "lab")
	v := version(t, st)
	r := must[store.Registered](t)(st.Register(ctx, store.Registration{MAC: mac, Name: "lab-x", Group: "lab", BundleID: b.ID,
		Event: func(r store.Registered) store.Event {
			return store.Event{Kind: store.EventPolicy, Message: fmt.Sprintf("registered as %s, joined %v", r.Name, r.Joined)}
		}}))
	if r.Name != "lab-x-2" || r.Device.Name != "lab-x-2" || !r.Device.Registered || !r.Joined {
		t.Fatalf("registered %+v: want name lab-x-2, registered, joined", r)
	}
	if r.Assignment == nil || r.Assignment.MAC != mac || !r.Assignment.Once || r.Assignment.BundleID != b.ID || r.Assignment.Bundle != "inv" {
		t.Fatalf("assignment %+v: want a once assignment of inv to %s", r.Assignment, mac)
	}
	if r.Event.ID == 0 || r.Event.MAC != mac || r.Event.Message != "registered as lab-x-2, joined true" {
		t.Fatalf("event %+v", r.Event)
	}
	d := must[store.Device](t)(st.Device(ctx, mac))
	if d.Name != "lab-x-2" || !d.Registered || d.LastEvent == nil || d.LastEvent.ID != r.Event.ID {
		t.Fatalf("stored device %+v", d)
	}
	if gs := must[[]store.Group](t)(st.DeviceGroups(ctx, mac)); names(gs, func(g store.Group) string { return g.Name }) != "lab" {
		t.Fatalf("groups of %s: %+v", mac, gs)
	}
	if g := must[store.Group](t)(st.Group(ctx, "lab")); g.Members != 1 {
		t.Fatalf("group lab has %d members, want 1", g.Members)
	}
	as := must[[]store.Assignment](t)(st.Assignments(ctx, store.AssignmentFilter{MAC: mac}))
	if len(as) != 1 || as[0].ID != r.Assignment.ID {
		t.Fatalf("assignments of %s: %+v", mac, as)
	}
	after := version(t, st)
	cs := must[[]store.PolicyChange](t)(st.PolicyChanges(ctx, v, after))
	if r.Version != after {
		t.Errorf("registration says version %d, the store is at %d", r.Version, after)
	}
	if after != v+1 || len(cs) != 1 || cs[0].Kind != store.PolicyChangeDevice || cs[0].Target != mac {
		t.Fatalf("versions %d..%d, changes %+v: want one change of device %s", v, after, cs, mac)
	}

	// Again, with nothing new: the name is kept, the membership stays.
	r = must[store.Registered](t)(st.Register(ctx, store.Registration{MAC: mac, Name: "other", Group: "lab"}))
	if r.Name != "lab-x-2" || r.Joined || r.Assignment != nil || r.Event.ID != 0 {
		t.Fatalf("registered again: %+v", r)
	}
	// No name, no group, no bundle: only registered, and no policy change.
	plain := "02:00:00:00:0b:03"
	seen(t, st, plain)
	v = version(t, st)
	r = must[store.Registered](t)(st.Register(ctx, store.Registration{MAC: plain}))
	if r.Name != "" || !r.Device.Registered || version(t, st) != v || r.Version != 0 {
		t.Fatalf("plain registration: %+v, version %d -> %d", r, v, version(t, st))
	}
	_, err := st.Register(ctx, store.Registration{MAC: "02:00:00:00:0b:09"})
	is(t, err, store.ErrNotFound, "02:00:00:00:0b:09")
	_, err = st.Register(ctx, store.Registration{MAC: "02:00:00:00:0b:09", Name: "x", Group: "lab", BundleID: b.ID})
	is(t, err, store.ErrNotFound, "02:00:00:00:0b:09")
	// Every suffix taken.
	for i := 2; i <= 20; i++ {
		must[store.Device](t)(st.CreateDevice(ctx, store.Device{MAC: fmt.Sprintf("02:00:00:00:0c:%02x", i), Name: fmt.Sprintf("full-%d", i)}))
	}
	must[store.Device](t)(st.CreateDevice(ctx, store.Device{MAC: "02:00:00:00:0c:01", Name: "full"}))
	full := "02:00:00:00:0b:04"
	seen(t, st, full)
	_, err = st.Register(ctx, store.Registration{MAC: full, Name: "full"})
	is(t, err, store.ErrConflict, "full")
}

// testEventBuffer checks a request's event buffer: events added with it
// are held (ID 0) until the request's registration, which writes them
// first in its transaction, or its flush; a failed registration leaves
// them held.
func testEventBuffer(t *testing.T, st store.Store) {
	mac := "02:00:00:00:10:01"
	seen(t, st, mac)
	group(t, st, "lab")
	count := func() int {
		t.Helper()
		return len(must[[]store.Event](t)(st.Events(ctx, store.EventFilter{MAC: mac, Limit: 100})))
	}
	bctx, buf := store.WithEventBuffer(ctx)
	e := must[store.Event](t)(st.AddEvent(bctx, store.Event{MAC: mac, Kind: store.EventBoot, Message: "first"}))
	if e.ID != 0 || count() != 0 {
		t.Fatalf("buffered event: ID %d, %d stored; want 0, 0", e.ID, count())
	}
	_, err := st.Register(bctx, store.Registration{MAC: mac, Group: "missing"})
	is(t, err, store.ErrNotFound)
	if count() != 0 {
		t.Fatal("a failed registration wrote the buffered event")
	}
	r := must[store.Registered](t)(st.Register(bctx, store.Registration{MAC: mac, Group: "lab",
		Event: func(store.Registered) store.Event { return store.Event{Kind: store.EventPolicy, Message: "registered"} }}))
	es := must[[]store.Event](t)(st.Events(ctx, store.EventFilter{MAC: mac, Limit: 100}))
	if len(es) != 2 || es[1].Message != "first" || es[0].Message != "registered" || es[0].ID != r.Event.ID || es[1].ID > es[0].ID {
		t.Fatalf("after the registration: %+v, want first then registered", es)
	}
	must[store.Event](t)(st.AddEvent(bctx, store.Event{MAC: mac, Kind: store.EventWork, Message: "a"}))
	must[store.Event](t)(st.AddEvent(bctx, store.Event{MAC: mac, Kind: store.EventWork, Message: "b"}))
	if count() != 2 {
		t.Fatal("events written before the flush")
	}
	ok(t, st.FlushEvents(bctx))
	es = must[[]store.Event](t)(st.Events(ctx, store.EventFilter{MAC: mac, Limit: 100}))
	if len(es) != 4 || es[1].Message != "a" || es[0].Message != "b" {
		t.Fatalf("after the flush: %+v", es)
	}
	if len(buf.Take()) != 0 {
		t.Error("the buffer holds events after the flush")
	}
	ok(t, st.FlushEvents(bctx)) // nothing held: nothing written
	ok(t, st.FlushEvents(ctx))  // no buffer
	if count() != 4 {
		t.Errorf("%d events after empty flushes, want 4", count())
	}
}

// testRegisterAtomic checks that a registration that fails leaves nothing
// of itself: no name, no registered flag, no membership, no assignment,
// no event, no policy change.
func testRegisterAtomic(t *testing.T, st store.Store) {
	mac := "02:00:00:00:0d:01"
	seen(t, st, mac)
	b := bundle(t, st, "inv", store.KindInventory)
	other := bundle(t, st, "other", store.KindInventory)
	group(t, st, "lab")
	nothing := func(what string, v int64, events int) {
		t.Helper()
		d := must[store.Device](t)(st.Device(ctx, mac))
		if d.Name != "" || d.Registered {
			t.Fatalf("%s: device %+v: want no name, not registered", what, d)
		}
		if gs := must[[]store.Group](t)(st.DeviceGroups(ctx, mac)); len(gs) != 0 {
			t.Fatalf("%s: groups %+v", what, gs)
		}
		if g := must[store.Group](t)(st.Group(ctx, "lab")); g.Members != 0 {
			t.Fatalf("%s: group lab counts %d members", what, g.Members)
		}
		if es := must[[]store.Event](t)(st.Events(ctx, store.EventFilter{MAC: mac})); len(es) != events {
			t.Fatalf("%s: %d events, want %d: %+v", what, len(es), events, es)
		}
		if got := version(t, st); got != v {
			t.Fatalf("%s: policy version %d -> %d", what, v, got)
		}
	}
	event := func(store.Registered) store.Event { return store.Event{Kind: store.EventPolicy, Message: "registered"} }
	v := version(t, st)
	_, err := st.Register(ctx, store.Registration{MAC: mac, Name: "n", Group: "missing", BundleID: b.ID, Event: event})
	is(t, err, store.ErrNotFound, "missing")
	nothing("missing group", v, 0)
	if as := must[[]store.Assignment](t)(st.Assignments(ctx, store.AssignmentFilter{MAC: mac})); len(as) != 0 {
		t.Fatalf("missing group: assignments %+v", as)
	}
	_, err = st.Register(ctx, store.Registration{MAC: mac, Name: "n", Group: "lab", BundleID: 999999, Event: event})
	is(t, err, store.ErrNotFound)
	nothing("missing bundle", v, 0)

	// The device already has an assignment: the registration fails as a
	// whole (the membership it would have added is not there).
	must[store.Assignment](t)(st.CreateAssignment(ctx, store.Assignment{BundleID: other.ID, MAC: mac}))
	v = version(t, st)
	_, err = st.Register(ctx, store.Registration{MAC: mac, Name: "n", Group: "lab", BundleID: b.ID, Event: event})
	is(t, err, store.ErrConflict)
	nothing("assignment conflict", v, 0)

	// An event without a kind is invalid: nothing else is written either.
	_, err = st.Register(ctx, store.Registration{MAC: mac, Name: "n", Group: "lab", Event: func(store.Registered) store.Event { return store.Event{} }})
	is(t, err, store.ErrInvalid)
	nothing("event without a kind", v, 0)
}

// testConcurrentWrites checks the store's writes under concurrency (group
// commit where the store batches them): every event and registration of
// 32 concurrent requests is stored once with its own ID, a registration
// that fails fails alone, and a request whose context ended writes
// nothing.
func testConcurrentWrites(t *testing.T, st store.Store) {
	const workers, each = 32, 8
	b := bundle(t, st, "inv", store.KindInventory)
	group(t, st, "lab")
	for w := range workers {
		seen(t, st, fmt.Sprintf("02:00:00:00:0e:%02x", w))
	}
	// Worker 7's device has an assignment already: its registration
	// conflicts, in whatever batch it lands.
	must[store.Assignment](t)(st.CreateAssignment(ctx, store.Assignment{BundleID: b.ID, MAC: "02:00:00:00:0e:07"}))
	var wg sync.WaitGroup
	ids := make([][]int64, workers)
	errs := make([]error, workers)
	for w := range workers {
		wg.Go(func() {
			mac := fmt.Sprintf("02:00:00:00:0e:%02x", w)
			for i := range each {
				e, err := st.AddEvent(ctx, store.Event{MAC: mac, Kind: store.EventBoot, Message: fmt.Sprintf("boot %d", i)})
				if err != nil {
					errs[w] = err
					return
				}
				ids[w] = append(ids[w], e.ID)
				if i == each/2 {
					r, err := st.Register(ctx, store.Registration{MAC: mac, Name: fmt.Sprintf("pc-%d", w), Group: "lab", BundleID: b.ID,
						Event: func(r store.Registered) store.Event {
							return store.Event{Kind: store.EventPolicy, Message: "registered as " + r.Name}
						}})
					if w == 7 {
						if !errors.Is(err, store.ErrConflict) {
							errs[w] = fmt.Errorf("registration of %s: %v, want a conflict", mac, err)
							return
						}
						continue
					}
					if err != nil {
						errs[w] = err
						return
					}
					ids[w] = append(ids[w], r.Event.ID)
				}
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		ok(t, err)
	}
	seenIDs := map[int64]bool{}
	for w := range workers {
		mac := fmt.Sprintf("02:00:00:00:0e:%02x", w)
		es := must[[]store.Event](t)(st.Events(ctx, store.EventFilter{MAC: mac, Limit: 1000}))
		if len(es) != len(ids[w]) {
			t.Fatalf("%s: %d events stored, %d acknowledged", mac, len(es), len(ids[w]))
		}
		for _, e := range es {
			if seenIDs[e.ID] {
				t.Fatalf("event ID %d twice", e.ID)
			}
			seenIDs[e.ID] = true
		}
		for _, id := range ids[w] {
			if !seenIDs[id] {
				t.Fatalf("%s: acknowledged event %d is not stored under its MAC", mac, id)
			}
		}
		d := must[store.Device](t)(st.Device(ctx, mac))
		if want := w != 7; d.Registered != want || (d.Name == fmt.Sprintf("pc-%d", w)) != want {
			t.Fatalf("%s: %+v: registered and named: want %v", mac, d, want)
		}
	}
	if g := must[store.Group](t)(st.Group(ctx, "lab")); g.Members != workers-1 {
		t.Fatalf("group lab has %d members, want %d", g.Members, workers-1)
	}
	// A context that ended: refused, nothing written.
	done, cancel := context.WithCancel(ctx)
	cancel()
	_, err := st.AddEvent(done, store.Event{MAC: "02:00:00:00:0e:00", Kind: store.EventBoot, Message: "never"})
	is(t, err, context.Canceled)
	_, err = st.Register(done, store.Registration{MAC: "02:00:00:00:0e:07"})
	is(t, err, context.Canceled)
	if es := must[[]store.Event](t)(st.Events(ctx, store.EventFilter{MAC: "02:00:00:00:0e:00", Limit: 1000})); len(es) != len(ids[0]) {
		t.Fatalf("an event with an ended context was stored")
	}
}
