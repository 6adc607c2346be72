package policy

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/preboot/preboot/store"
)

// TestSnapshotFollowsDeviceChanges: a change to one device (membership,
// assignment, menu, deletion), a group (its fields, menu or assignment),
// a bundle, the rules or the settings brings the cached
// snapshot up to date without a full load — in the engine that decides
// and in a second engine on the same database (another server), which
// follows several changes at once — and any other change reloads it.
func TestSnapshotFollowsDeviceChanges(t *testing.T) {
	ctx := context.Background()
	e := newEngine(t, "never")
	st := e.Store
	other := &Engine{Store: st, DefaultSettings: e.DefaultSettings}
	const d1, d2 = "02:00:00:00:07:01", "02:00:00:00:07:02"
	for _, m := range []string{d1, d2} {
		if _, err := st.CreateDevice(ctx, store.Device{MAC: m, Registered: true}); err != nil {
			t.Fatal(err)
		}
	}
	inv := mkBundle(t, st, "inv", store.KindInventory, `{}`)
	mkBundle(t, st, "inv2", store.KindInventory, `{}`)
	if _, err := st.CreateGroup(ctx, store.Group{Name: "lab", Priority: 5}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateGroup(ctx, store.Group{Name: "vms", Priority: 7, Match: `mac ^= "02:00:00:00:07"`}); err != nil {
		t.Fatal(err)
	}
	assign(t, st, store.Assignment{BundleID: inv.ID, Group: "lab"})

	type want struct{ source, menu, groups string }
	check := func(what string, en *Engine, mac string, w want) {
		t.Helper()
		d, err := en.Decide(ctx, store.Device{MAC: mac, Registered: true})
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if d.Source != w.source || d.Menu.Mode != w.menu || strings.Join(d.Groups, ",") != w.groups {
			t.Errorf("%s: %s: source %q, menu %q, groups %q; want %q, %q, %q", what, mac, d.Source, d.Menu.Mode, strings.Join(d.Groups, ","), w.source, w.menu, w.groups)
		}
	}
	check("start", e, d1, want{"none", "never", "vms"})
	check("start", other, d1, want{"none", "never", "vms"})
	lazy, otherLazy := e.cache.snap.lazy, other.cache.snap.lazy
	followed := func(what string) {
		t.Helper()
		if e.cache.snap.lazy != lazy || other.cache.snap.lazy != otherLazy {
			t.Errorf("%s: the snapshot was loaded again instead of following the change", what)
		}
		v, err := st.PolicyVersion(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if e.cache.snap.version != v || other.cache.snap.version != v {
			t.Errorf("%s: snapshots at versions %d and %d, the store at %d", what, e.cache.snap.version, other.cache.snap.version, v)
		}
	}

	if err := st.AddMember(ctx, "lab", d1); err != nil {
		t.Fatal(err)
	}
	check("member", e, d1, want{"group:lab", "never", "lab,vms"})
	check("member", e, d2, want{"none", "never", "vms"})
	a := assign(t, st, store.Assignment{Bundle: "inv2", MAC: d2})
	if err := st.SetMenu(ctx, store.ScopeDevice, d1, store.Menu{Mode: "always"}); err != nil {
		t.Fatal(err)
	}
	if err := st.SetMenu(ctx, store.ScopeGroup, "vms", store.Menu{Mode: "hotkey"}); err != nil {
		t.Fatal(err)
	}
	check("assignment and menus", e, d2, want{"device", "hotkey", "vms"})
	check("assignment and menus", e, d1, want{"group:lab", "always", "lab,vms"})
	// The other engine follows the four changes at once.
	check("four changes", other, d1, want{"group:lab", "always", "lab,vms"})
	check("four changes", other, d2, want{"device", "hotkey", "vms"})
	followed("members, assignment, menus")

	if err := st.RemoveMember(ctx, "lab", d1); err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteAssignment(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteMenu(ctx, store.ScopeDevice, d1); err != nil {
		t.Fatal(err)
	}
	for _, en := range []*Engine{e, other} {
		check("removed", en, d1, want{"none", "hotkey", "vms"})
		check("removed", en, d2, want{"none", "hotkey", "vms"})
	}
	if err := st.AddMember(ctx, "lab", d2); err != nil {
		t.Fatal(err)
	}
	check("member again", e, d2, want{"group:lab", "hotkey", "lab,vms"})
	if err := st.DeleteDevice(ctx, d2); err != nil {
		t.Fatal(err)
	}
	check("deleted device", other, d2, want{"none", "hotkey", "vms"})
	check("deleted device", e, d2, want{"none", "hotkey", "vms"})
	followed("removals")

	// Rules and settings: followed too (read again, nothing else).
	if _, err := st.CreateRule(ctx, store.Rule{Name: "r1", Match: `mac = "02:00:00:00:07:03"`, Group: "lab", Enabled: true}); err != nil {
		t.Fatal(err)
	}
	if err := st.SetSettings(ctx, store.Settings{Menu: store.Menu{Mode: "always"}}); err != nil {
		t.Fatal(err)
	}
	for _, en := range []*Engine{e, other} {
		d, err := en.Decide(ctx, store.Device{MAC: "02:00:00:00:07:03"})
		if err != nil {
			t.Fatal(err)
		}
		if d.Source != "rule:r1" || d.JoinGroup != "lab" {
			t.Errorf("new rule: %+v", d)
		}
		check("settings", en, "02:00:00:00:09:01", want{"none", "always", ""})
	}
	followed("rules and settings")

	// Groups (created, changed), their assignments and bundles (created,
	// changed): followed too.
	if _, err := st.UpdateGroup(ctx, "vms", func(g *store.Group) error { g.Match = `mac = "02:00:00:00:07:09"`; return nil }); err != nil {
		t.Fatal(err)
	}
	check("group changed", e, d1, want{"none", "always", ""})
	check("group changed", other, d1, want{"none", "always", ""})
	if _, err := st.CreateGroup(ctx, store.Group{Name: "all", Priority: 1, Match: `mac ^= "02:00:00:00:07"`}); err != nil {
		t.Fatal(err)
	}
	ga := assign(t, st, store.Assignment{Bundle: "inv2", Group: "all"})
	if _, err := st.UpdateBundle(ctx, "inv2", func(b *store.Bundle) error { b.Description = "changed"; return nil }); err != nil {
		t.Fatal(err)
	}
	mkBundle(t, st, "inv3", store.KindInventory, `{}`)
	for _, en := range []*Engine{e, other} {
		check("new group, its assignment", en, d1, want{"group:all", "always", "all"})
		d, err := en.Decide(ctx, store.Device{MAC: d1, Registered: true})
		if err != nil {
			t.Fatal(err)
		}
		if d.Bundle == nil || d.Bundle.Description != "changed" || d.Bundle.Version != 2 {
			t.Errorf("changed bundle: the decision has %+v", d.Bundle)
		}
		if _, ok, err := en.bundleByName(ctx, "inv3"); !ok || err != nil {
			t.Errorf("new bundle inv3 not in the snapshot (%v)", err)
		}
	}
	if err := st.DeleteAssignment(ctx, ga.ID); err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteBundle(ctx, "inv3"); err != nil {
		t.Fatal(err)
	}
	for _, en := range []*Engine{e, other} {
		check("group assignment deleted", en, d1, want{"none", "always", "all"})
		if _, ok, err := en.bundleByName(ctx, "inv3"); ok || err != nil {
			t.Errorf("deleted bundle inv3 still in the snapshot (%v)", err)
		}
	}
	followed("groups, a group's assignment, bundles")

	// Anything else (here a renamed group): a full load.
	if _, err := st.UpdateGroup(ctx, "all", func(g *store.Group) error { g.Name = "every"; return nil }); err != nil {
		t.Fatal(err)
	}
	check("group renamed", e, d1, want{"none", "always", "every"})
	check("group renamed", other, d1, want{"none", "always", "every"})
	if e.cache.snap.lazy == lazy || other.cache.snap.lazy == otherLazy {
		t.Error("a group's rename did not reload the snapshot")
	}
}

// TestLazyCacheKeepsNoValueReadBeforeADrop: a value read by a decision on
// an older snapshot than the last change followed to its device is not
// cached (it may predate the change).
func TestLazyCacheKeepsNoValueReadBeforeADrop(t *testing.T) {
	l := newLazyCache()
	k := menuKey{store.ScopeDevice, "02:00:00:00:07:01"}
	if !l.keeps(k, 1) {
		t.Fatal("nothing dropped: a value is not kept")
	}
	l.members[k.target] = []string{"lab"}
	l.drop([]string{k.target}, nil, 7)
	if _, ok := l.members[k.target]; ok {
		t.Error("drop left the device's groups cached")
	}
	if l.keeps(k, 6) {
		t.Error("a value read at version 6 is kept after a change at 7")
	}
	if !l.keeps(k, 7) || !l.keeps(menuKey{store.ScopeGroup, "lab"}, 1) {
		t.Error("values read at or after the change (or of other keys) are not kept")
	}
}

// TestAssignIndex: a snapshot's device assignments after many followed
// changes (past the overlay's bound) are the latest, and an older
// snapshot's stay as they were.
func TestAssignIndex(t *testing.T) {
	x := assignIndex{base: map[string]store.Assignment{"a": {ID: 1}, "b": {ID: 2}}}
	var versions []assignIndex
	for i := range 3 * maxOverlay {
		versions = append(versions, x)
		x = x.edit()
		x.set(fmt.Sprintf("m%d", i), &store.Assignment{ID: int64(100 + i)})
		if i == 5 {
			x.set("a", nil)
		}
		if i == maxOverlay+3 {
			x.set("b", &store.Assignment{ID: 22})
		}
	}
	if _, ok := x.get("a"); ok {
		t.Error("removed assignment of a is there")
	}
	if a, ok := x.get("b"); !ok || a.ID != 22 {
		t.Errorf("b: %+v %v, want the changed assignment 22", a, ok)
	}
	for i := range 3 * maxOverlay {
		if a, ok := x.get(fmt.Sprintf("m%d", i)); !ok || a.ID != int64(100+i) {
			t.Fatalf("m%d: %+v %v", i, a, ok)
		}
	}
	// The first snapshot: unchanged.
	if a, ok := versions[0].get("a"); !ok || a.ID != 1 {
		t.Errorf("first version lost a: %+v %v", a, ok)
	}
	if a, _ := versions[0].get("b"); a.ID != 2 {
		t.Errorf("first version's b changed: %+v", a)
	}
	if _, ok := versions[0].get("m0"); ok {
		t.Error("first version sees a later change")
	}
	// One in the middle sees the changes up to its own.
	mid := versions[maxOverlay+10]
	if _, ok := mid.get(fmt.Sprintf("m%d", maxOverlay+9)); !ok {
		t.Error("middle version lost its own change")
	}
	if _, ok := mid.get(fmt.Sprintf("m%d", maxOverlay+10)); ok {
		t.Error("middle version sees a later change")
	}
}

// TestSnapshotFollowsOwnRegistrations: devices a rule registers through
// this engine (joined to a group, a once assignment) are decided on with
// their group and assignment by this engine, which knows its own changes,
// and by another one on the same database, which reads the change log —
// with an administrator's change in between.
func TestSnapshotFollowsOwnRegistrations(t *testing.T) {
	ctx := context.Background()
	e := newEngine(t, "never")
	st := e.Store
	other := &Engine{Store: st, DefaultSettings: e.DefaultSettings}
	mkBundle(t, st, "inv", store.KindInventory, `{}`)
	mkBundle(t, st, "wipe", store.KindWipe, `{"confirm":true}`)
	if _, err := st.CreateGroup(ctx, store.Group{Name: "new", Priority: 5}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateRule(ctx, store.Rule{Name: "r", Match: `mac ^= "02:00:00:00:0a"`, Bundle: "inv", Group: "new", Enabled: true}); err != nil {
		t.Fatal(err)
	}
	macs := []string{"02:00:00:00:0a:01", "02:00:00:00:0a:02", "02:00:00:00:0a:03"}
	for _, en := range []*Engine{e, other} {
		if _, err := en.Decide(ctx, store.Device{MAC: "02:00:00:00:0b:01"}); err != nil { // a snapshot to follow from
			t.Fatal(err)
		}
	}
	lazy := e.cache.snap.lazy
	for i, mac := range macs {
		if _, err := e.Script(ctx, "http://10.0.0.1:8080", mac, "", "", store.Sighting{MAC: mac, IP: "10.0.0.9"}); err != nil {
			t.Fatal(err)
		}
		if i == 1 {
			// An administrator's change between two registrations.
			if _, err := st.UpdateBundle(ctx, "wipe", func(b *store.Bundle) error { b.Description = "x"; return nil }); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, en := range []*Engine{e, other} {
		for _, mac := range macs {
			dev, err := st.Device(ctx, mac)
			if err != nil {
				t.Fatal(err)
			}
			d, err := en.Decide(ctx, dev)
			if err != nil {
				t.Fatal(err)
			}
			if !dev.Registered || strings.Join(d.Groups, ",") != "new" || d.Source != "device" || d.Bundle == nil || d.Bundle.Name != "inv" || d.Assignment == nil || !d.Assignment.Once {
				t.Errorf("%s after its registration: registered %v, groups %v, source %s, bundle %+v, assignment %+v", mac, dev.Registered, d.Groups, d.Source, d.Bundle, d.Assignment)
			}
		}
	}
	if e.cache.snap.lazy != lazy {
		t.Error("the registering engine loaded its snapshot again instead of following")
	}
	v, err := st.PolicyVersion(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if e.cache.snap.version != v || len(e.cache.own) != 0 {
		t.Errorf("engine at version %d with %d own changes left, the store at %d", e.cache.snap.version, len(e.cache.own), v)
	}
}
