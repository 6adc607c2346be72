package policy

import (
	"context"
	"strings"
	"testing"

	"github.com/preboot/preboot/store"
)

// TestSnapshotFollowsDeviceChanges: a change to one device (membership,
// assignment, menu, deletion), a group's menu, the rules or the settings
// brings the cached
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

	// Anything else: a full load.
	if _, err := st.UpdateGroup(ctx, "vms", func(g *store.Group) error { g.Match = `mac = "02:00:00:00:07:09"`; return nil }); err != nil {
		t.Fatal(err)
	}
	check("group changed", e, d1, want{"none", "always", ""})
	check("group changed", other, d1, want{"none", "always", ""})
	if e.cache.snap.lazy == lazy || other.cache.snap.lazy == otherLazy {
		t.Error("a group's change did not reload the snapshot")
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
