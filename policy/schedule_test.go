package policy

import (
	"context"
	"testing"
	"time"

	"github.com/preboot/preboot/store"
)

// A scheduled assignment is not handed out before its time and is at it:
// the engine's clock decides, the test sets it.
func TestScheduledAssignmentIsDueAtItsTime(t *testing.T) {
	ctx := context.Background()
	e := newEngine(t, "never")
	at := time.Date(2030, 12, 8, 18, 0, 0, 0, time.UTC)
	clock := at.Add(-time.Minute)
	e.Now = func() time.Time { return clock }
	b := osInstall(t, e.Store, "inst", `{"kernel":"boot/k"}`)
	assign(t, e.Store, store.Assignment{BundleID: b.ID, MAC: mac, At: at, Wake: true})

	dev, err := e.Store.Device(ctx, mac)
	if err != nil {
		t.Fatal(err)
	}
	d, err := e.Decide(ctx, dev)
	if err != nil {
		t.Fatal(err)
	}
	if d.Action != ActionLocal || d.Reason != "device assignment of inst is scheduled for 2030-12-08T18:00:00Z" {
		t.Fatalf("before its time: %s (%s)", d.Action, d.Reason)
	}
	mustContain(t, get(t, e, first), "sanboot")

	clock = at
	mustContain(t, get(t, e, first), "kernel http://10.0.0.1:8080/files/boot/k")
}

// A group's scheduled assignment holds back every member until its time.
func TestScheduledGroupAssignment(t *testing.T) {
	ctx := context.Background()
	e := newEngine(t, "never")
	at := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	clock := at.Add(-time.Second)
	e.Now = func() time.Time { return clock }
	b := osInstall(t, e.Store, "inst", `{"kernel":"boot/k"}`)
	if _, err := e.Store.CreateGroup(ctx, store.Group{Name: "lab", Priority: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Store.CreateDevice(ctx, store.Device{MAC: mac, Registered: true}); err != nil {
		t.Fatal(err)
	}
	if err := e.Store.AddMember(ctx, "lab", mac); err != nil {
		t.Fatal(err)
	}
	assign(t, e.Store, store.Assignment{BundleID: b.ID, Group: "lab", At: at})
	mustContain(t, get(t, e, first), "sanboot")
	clock = at.Add(time.Second)
	mustContain(t, get(t, e, first), "files/boot/k")
}
