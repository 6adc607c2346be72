package storetest

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"

	"github.com/preboot/preboot/store"
)

func testBundles(t *testing.T, st store.Store) {
	b, err := st.CreateBundle(ctx, store.Bundle{Name: "win11", Kind: store.KindImageRestore, Description: "Windows 11",
		Params: json.RawMessage(`{"image":"win11-2026","device":"/dev/sda"}`)})
	ok(t, err)
	if b.ID == 0 || b.Version != 1 || b.CreatedAt.IsZero() || !b.UpdatedAt.Equal(b.CreatedAt) {
		t.Fatalf("created bundle = %+v", b)
	}
	got := must[store.Bundle](t)(st.Bundle(ctx, "win11"))
	if got.ID != b.ID || got.Kind != b.Kind || got.Description != "Windows 11" || !got.CreatedAt.Equal(b.CreatedAt) {
		t.Fatalf("bundle = %+v, want %+v", got, b)
	}
	var p map[string]string
	if err := json.Unmarshal(got.Params, &p); err != nil || p["image"] != "win11-2026" || p["device"] != "/dev/sda" {
		t.Fatalf("params = %s (%v)", got.Params, err)
	}
	if byID := must[store.Bundle](t)(st.BundleByID(ctx, b.ID)); byID.Name != "win11" {
		t.Fatalf("by id = %+v", byID)
	}
	_, err = st.Bundle(ctx, "nope")
	is(t, err, store.ErrNotFound, "nope")
	_, err = st.BundleByID(ctx, 9999)
	is(t, err, store.ErrNotFound)

	_, err = st.CreateBundle(ctx, store.Bundle{Name: "win11", Kind: store.KindInventory})
	is(t, err, store.ErrConflict, "win11")
	_, err = st.CreateBundle(ctx, store.Bundle{Name: "x", Kind: "teleport"})
	is(t, err, store.ErrInvalid, "teleport")
	_, err = st.CreateBundle(ctx, store.Bundle{Kind: store.KindInventory})
	is(t, err, store.ErrInvalid, "name")
	_, err = st.CreateBundle(ctx, store.Bundle{Name: "bad", Kind: store.KindScript, Params: json.RawMessage(`[1`)})
	is(t, err, store.ErrInvalid, "params")

	inv := must[store.Bundle](t)(st.CreateBundle(ctx, store.Bundle{Name: "inventory", Kind: store.KindInventory}))
	if string(inv.Params) != "{}" {
		t.Errorf("empty params stored as %q", inv.Params)
	}
	bundle(t, st, "capture-lab", store.KindImageCapture) // image img-capture-lab
	bundle(t, st, "a-restore", store.KindImageRestore)   // image img-a-restore
	must[store.Bundle](t)(st.CreateBundle(ctx, store.Bundle{Name: "mc", Kind: store.KindMulticast, Params: json.RawMessage(`{"image":"win11-2026","min_clients":3}`)}))
	list := func(f store.BundleFilter) string {
		t.Helper()
		return names(must[[]store.Bundle](t)(st.Bundles(ctx, f)), func(b store.Bundle) string { return b.Name })
	}
	for _, c := range []struct {
		f    store.BundleFilter
		want string
	}{
		{store.BundleFilter{}, "a-restore,capture-lab,inventory,mc,win11"},
		{store.BundleFilter{Kind: store.KindImageRestore}, "a-restore,win11"},
		{store.BundleFilter{Image: "win11-2026"}, "mc,win11"},
		{store.BundleFilter{Image: "img-capture-lab"}, "capture-lab"},
		{store.BundleFilter{Image: "none"}, ""},
		{store.BundleFilter{Page: store.Page{Limit: 2, Offset: 2}}, "inventory,mc"},
	} {
		if got := list(c.f); got != c.want {
			t.Errorf("bundles %+v = %s, want %s", c.f, got, c.want)
		}
	}

	// Update: version grows, kind cannot change, names stay unique.
	u, err := st.UpdateBundle(ctx, "win11", func(b *store.Bundle) error {
		b.Description, b.Params = "Windows 11 24H2", json.RawMessage(`{"image":"win11-2027"}`)
		return nil
	})
	ok(t, err)
	if u.Version != 2 || u.Description != "Windows 11 24H2" || !u.UpdatedAt.After(b.CreatedAt) && !u.UpdatedAt.Equal(b.CreatedAt) || !u.CreatedAt.Equal(b.CreatedAt) {
		t.Fatalf("updated bundle = %+v", u)
	}
	if list(store.BundleFilter{Image: "win11-2027"}) != "win11" || list(store.BundleFilter{Image: "win11-2026"}) != "mc" {
		t.Error("the image filter does not follow updated params")
	}
	_, err = st.UpdateBundle(ctx, "win11", func(b *store.Bundle) error { b.Kind = store.KindWipe; return nil })
	is(t, err, store.ErrInvalid, "kind")
	_, err = st.UpdateBundle(ctx, "win11", func(b *store.Bundle) error { b.Name = "inventory"; return nil })
	is(t, err, store.ErrConflict, "inventory")
	_, err = st.UpdateBundle(ctx, "nope", func(b *store.Bundle) error { return nil })
	is(t, err, store.ErrNotFound)
	u = must[store.Bundle](t)(st.UpdateBundle(ctx, "win11", func(b *store.Bundle) error { b.Name = "windows"; return nil }))
	if u.Version != 3 || u.ID != b.ID {
		t.Fatalf("renamed bundle = %+v", u)
	}
	if got := must[store.Bundle](t)(st.Bundle(ctx, "windows")); got.Version != 3 || got.Description != "Windows 11 24H2" {
		t.Fatalf("stored renamed bundle = %+v", got)
	}
	_, err = st.Bundle(ctx, "win11")
	is(t, err, store.ErrNotFound)

	ok(t, st.DeleteBundle(ctx, "windows"))
	_, err = st.BundleByID(ctx, b.ID)
	is(t, err, store.ErrNotFound)
	is(t, st.DeleteBundle(ctx, "windows"), store.ErrNotFound)
}

func testBundleReferences(t *testing.T, st store.Store) {
	mac := "02:00:00:00:00:40"
	seen(t, st, mac)
	g := group(t, st, "lab")
	for _, n := range []string{"assigned-dev", "assigned-group", "ruled", "in-menu", "in-default-menu", "unreg"} {
		bundle(t, st, n, store.KindInventory)
	}
	must[store.Assignment](t)(st.CreateAssignment(ctx, store.Assignment{Bundle: "assigned-dev", MAC: mac}))
	must[store.Assignment](t)(st.CreateAssignment(ctx, store.Assignment{Bundle: "assigned-group", Group: g.Name}))
	must[store.Rule](t)(st.CreateRule(ctx, store.Rule{Name: "r1", Match: "true", Bundle: "ruled", Enabled: true}))
	ok(t, st.SetMenu(ctx, store.ScopeGroup, "lab", store.Menu{Mode: "always", Bundles: []string{"in-menu"}}))
	ok(t, st.SetSettings(ctx, store.Settings{Menu: store.Menu{Mode: "hotkey", Bundles: []string{"in-default-menu"}},
		Unregistered: store.Unregistered{Action: store.UnregisteredBundle, Bundle: "unreg"}}))

	for name, what := range map[string]string{"assigned-dev": mac, "assigned-group": `"lab"`, "ruled": `rule "r1"`,
		"in-menu": "menu of group lab", "in-default-menu": "default menu", "unreg": "unregistered default"} {
		is(t, st.DeleteBundle(ctx, name), store.ErrConflict, name, what)
		if _, err := st.Bundle(ctx, name); err != nil {
			t.Fatalf("refused delete removed %s: %v", name, err)
		}
	}

	// Renaming a bundle carries the name into menus and settings.
	must[store.Bundle](t)(st.UpdateBundle(ctx, "in-menu", func(b *store.Bundle) error { b.Name = "in-menu-2"; return nil }))
	must[store.Bundle](t)(st.UpdateBundle(ctx, "unreg", func(b *store.Bundle) error { b.Name = "unreg-2"; return nil }))
	must[store.Bundle](t)(st.UpdateBundle(ctx, "in-default-menu", func(b *store.Bundle) error { b.Name = "idm-2"; return nil }))
	m := must[store.Menu](t)(st.Menu(ctx, store.ScopeGroup, "lab"))
	if !slices.Equal(m.Bundles, []string{"in-menu-2"}) {
		t.Errorf("group menu bundles after rename = %v", m.Bundles)
	}
	set, found, err := st.Settings(ctx)
	if err != nil || !found || set.Unregistered.Bundle != "unreg-2" || !slices.Equal(set.Menu.Bundles, []string{"idm-2"}) {
		t.Errorf("settings after renames = %+v %v %v", set, found, err)
	}
	// Assignments and rules follow by reference.
	must[store.Bundle](t)(st.UpdateBundle(ctx, "ruled", func(b *store.Bundle) error { b.Name = "ruled-2"; return nil }))
	if r := must[store.Rule](t)(st.Rule(ctx, "r1")); r.Bundle != "ruled-2" {
		t.Errorf("rule bundle after rename = %q", r.Bundle)
	}

	// Remove the users, then the bundles go.
	for _, a := range must[[]store.Assignment](t)(st.Assignments(ctx, store.AssignmentFilter{})) {
		ok(t, st.DeleteAssignment(ctx, a.ID))
	}
	ok(t, st.DeleteRule(ctx, "r1"))
	ok(t, st.DeleteMenu(ctx, store.ScopeGroup, "lab"))
	ok(t, st.SetSettings(ctx, store.Settings{Menu: store.Menu{Mode: "never"}, Unregistered: store.Unregistered{Action: store.UnregisteredLocal}}))
	for _, n := range []string{"assigned-dev", "assigned-group", "ruled-2", "in-menu-2", "idm-2", "unreg-2"} {
		ok(t, st.DeleteBundle(ctx, n))
	}
	if bs := must[[]store.Bundle](t)(st.Bundles(ctx, store.BundleFilter{})); len(bs) != 0 {
		t.Errorf("bundles left: %+v", bs)
	}
}

func testGroups(t *testing.T, st store.Store) {
	a, err := st.CreateGroup(ctx, store.Group{Name: "a", Description: "first", Match: `maker == "Dell"`})
	ok(t, err)
	if a.ID == 0 || a.Priority != 10 || a.Members != 0 || a.CreatedAt.IsZero() {
		t.Fatalf("group a = %+v", a)
	}
	b := group(t, st, "b")
	if b.Priority != 20 {
		t.Fatalf("second group priority %d, want 20", b.Priority)
	}
	c := must[store.Group](t)(st.CreateGroup(ctx, store.Group{Name: "c", Priority: 5}))
	if c.Priority != 5 {
		t.Fatalf("explicit priority = %d", c.Priority)
	}
	if d := group(t, st, "d"); d.Priority != 30 {
		t.Fatalf("next priority after 5, 10, 20 = %d, want 30", d.Priority)
	}
	_, err = st.CreateGroup(ctx, store.Group{Name: "e", Priority: 20})
	is(t, err, store.ErrConflict, "20", `"b"`)
	_, err = st.CreateGroup(ctx, store.Group{Name: "a"})
	is(t, err, store.ErrConflict, `"a"`)
	_, err = st.CreateGroup(ctx, store.Group{Name: ""})
	is(t, err, store.ErrInvalid)
	_, err = st.CreateGroup(ctx, store.Group{Name: "neg", Priority: -1})
	is(t, err, store.ErrInvalid)

	got := must[store.Group](t)(st.Group(ctx, "a"))
	if got.Match != `maker == "Dell"` || got.Description != "first" || !got.CreatedAt.Equal(a.CreatedAt) {
		t.Fatalf("group = %+v, want %+v", got, a)
	}
	_, err = st.Group(ctx, "zz")
	is(t, err, store.ErrNotFound, "zz")
	list := func(p store.Page) string {
		return names(must[[]store.Group](t)(st.Groups(ctx, p)), func(g store.Group) string { return g.Name })
	}
	if got := list(store.Page{}); got != "c,a,b,d" {
		t.Fatalf("groups by priority = %s", got)
	}
	if got := list(store.Page{Limit: 2, Offset: 1}); got != "a,b" {
		t.Fatalf("page of groups = %s", got)
	}

	ok(t, st.SetMenu(ctx, store.ScopeGroup, "a", store.Menu{Mode: "always"}))
	u, err := st.UpdateGroup(ctx, "a", func(g *store.Group) error {
		g.Name, g.Priority, g.Description, g.Match = "a2", 40, "moved", ""
		return nil
	})
	ok(t, err)
	if u.Name != "a2" || u.Priority != 40 || u.Match != "" || u.ID != a.ID {
		t.Fatalf("updated group = %+v", u)
	}
	if got := list(store.Page{}); got != "c,b,d,a2" {
		t.Fatalf("groups after update = %s", got)
	}
	if _, err := st.Menu(ctx, store.ScopeGroup, "a2"); err != nil {
		t.Fatalf("the group's menu did not follow its new name: %v", err)
	}
	_, err = st.UpdateGroup(ctx, "a2", func(g *store.Group) error { g.Priority = 5; return nil })
	is(t, err, store.ErrConflict, `"c"`)
	_, err = st.UpdateGroup(ctx, "a2", func(g *store.Group) error { g.Name = "b"; return nil })
	is(t, err, store.ErrConflict, `"b"`)
	// Priority 0 moves the group after the last one.
	u = must[store.Group](t)(st.UpdateGroup(ctx, "c", func(g *store.Group) error { g.Priority = 0; return nil }))
	if u.Priority != 50 {
		t.Fatalf("priority 0 on update = %d, want 50", u.Priority)
	}
	// Keeping its own priority is no conflict.
	must[store.Group](t)(st.UpdateGroup(ctx, "c", func(g *store.Group) error { g.Description = "same priority"; return nil }))
	_, err = st.UpdateGroup(ctx, "nope", func(g *store.Group) error { return nil })
	is(t, err, store.ErrNotFound)
}

func testMembers(t *testing.T, st store.Store) {
	for i := 1; i <= 3; i++ {
		seen(t, st, fmt.Sprintf("02:00:00:00:01:0%d", i))
	}
	hi := must[store.Group](t)(st.CreateGroup(ctx, store.Group{Name: "high", Priority: 1}))
	lo := must[store.Group](t)(st.CreateGroup(ctx, store.Group{Name: "low", Priority: 100}))
	ok(t, st.AddMember(ctx, lo.Name, "02:00:00:00:01:01"))
	ok(t, st.AddMember(ctx, hi.Name, "02-00-00-00-01-01"))
	ok(t, st.AddMember(ctx, hi.Name, "02:00:00:00:01:01")) // idempotent
	ok(t, st.AddMember(ctx, hi.Name, "02:00:00:00:01:02"))
	is(t, st.AddMember(ctx, hi.Name, "02:00:00:00:01:09"), store.ErrNotFound, "02:00:00:00:01:09")
	is(t, st.AddMember(ctx, "nope", "02:00:00:00:01:01"), store.ErrNotFound, "nope")
	is(t, st.AddMember(ctx, hi.Name, "bad"), store.ErrInvalid)

	if g := must[store.Group](t)(st.Group(ctx, "high")); g.Members != 2 {
		t.Fatalf("high has %d members, want 2", g.Members)
	}
	gs := must[[]store.Group](t)(st.DeviceGroups(ctx, "02:00:00:00:01:01"))
	if names(gs, func(g store.Group) string { return g.Name }) != "high,low" || gs[0].Members != 2 || gs[1].Members != 1 {
		t.Fatalf("device groups = %+v", gs)
	}
	if gs := must[[]store.Group](t)(st.DeviceGroups(ctx, "02:00:00:00:01:03")); len(gs) != 0 {
		t.Fatalf("groups of a device in none = %+v", gs)
	}
	ms := must[[]store.Device](t)(st.Members(ctx, "high", store.Page{}))
	if names(ms, func(d store.Device) string { return d.MAC }) != "02:00:00:00:01:02,02:00:00:00:01:01" {
		t.Fatalf("members = %+v", ms)
	}
	if ms := must[[]store.Device](t)(st.Members(ctx, "high", store.Page{Limit: 1, Offset: 1})); len(ms) != 1 || ms[0].MAC != "02:00:00:00:01:01" {
		t.Fatalf("page of members = %+v", ms)
	}
	_, err := st.Members(ctx, "nope", store.Page{})
	is(t, err, store.ErrNotFound)

	ok(t, st.RemoveMember(ctx, "high", "02:00:00:00:01:01"))
	ok(t, st.RemoveMember(ctx, "high", "02:00:00:00:01:01")) // idempotent
	ok(t, st.RemoveMember(ctx, "high", "02:00:00:00:01:09")) // not a device: nothing to do
	is(t, st.RemoveMember(ctx, "nope", "02:00:00:00:01:01"), store.ErrNotFound)
	if g := must[store.Group](t)(st.Group(ctx, "high")); g.Members != 1 {
		t.Fatalf("high has %d members after removal, want 1", g.Members)
	}
	if gs := must[[]store.Group](t)(st.DeviceGroups(ctx, "02:00:00:00:01:01")); len(gs) != 1 || gs[0].Name != "low" {
		t.Fatalf("device groups after removal = %+v", gs)
	}
	// A renamed group keeps its members.
	must[store.Group](t)(st.UpdateGroup(ctx, "low", func(g *store.Group) error { g.Name = "lower"; return nil }))
	if ms := must[[]store.Device](t)(st.Members(ctx, "lower", store.Page{})); len(ms) != 1 {
		t.Fatalf("members after rename = %+v", ms)
	}
}

func testDeleteGroup(t *testing.T, st store.Store) {
	mac := "02:00:00:00:02:01"
	seen(t, st, mac)
	g := group(t, st, "doomed")
	b := bundle(t, st, "inv", store.KindInventory)
	ok(t, st.AddMember(ctx, g.Name, mac))
	a := must[store.Assignment](t)(st.CreateAssignment(ctx, store.Assignment{BundleID: b.ID, Group: g.Name}))
	ok(t, st.SetMenu(ctx, store.ScopeGroup, g.Name, store.Menu{Mode: "never"}))
	must[store.Rule](t)(st.CreateRule(ctx, store.Rule{Name: "adds", Match: "true", Group: g.Name}))

	is(t, st.DeleteGroup(ctx, g.Name), store.ErrConflict, `rule "adds"`)
	if _, err := st.Assignment(ctx, a.ID); err != nil {
		t.Fatalf("a refused group delete removed its assignment: %v", err)
	}
	ok(t, st.DeleteRule(ctx, "adds"))
	v := version(t, st)
	ok(t, st.DeleteGroup(ctx, g.Name))
	if version(t, st) <= v {
		t.Error("deleting a group did not change the policy version")
	}
	_, err := st.Group(ctx, g.Name)
	is(t, err, store.ErrNotFound)
	_, err = st.Assignment(ctx, a.ID)
	is(t, err, store.ErrNotFound)
	_, err = st.Menu(ctx, store.ScopeGroup, g.Name)
	is(t, err, store.ErrNotFound)
	if gs := must[[]store.Group](t)(st.DeviceGroups(ctx, mac)); len(gs) != 0 {
		t.Fatalf("membership survived: %+v", gs)
	}
	is(t, st.DeleteGroup(ctx, g.Name), store.ErrNotFound)
	// The name and priority are free again.
	if g2 := must[store.Group](t)(st.CreateGroup(ctx, store.Group{Name: "doomed", Priority: g.Priority})); g2.Members != 0 {
		t.Fatalf("recreated group = %+v", g2)
	}
}

func testAssignments(t *testing.T, st store.Store) {
	mac := "02:00:00:00:03:01"
	seen(t, st, mac)
	seen(t, st, "02:00:00:00:03:02")
	g := group(t, st, "lab")
	group(t, st, "other")
	restore := bundle(t, st, "restore", store.KindImageRestore)
	inv := bundle(t, st, "inv", store.KindInventory)

	a, err := st.CreateAssignment(ctx, store.Assignment{BundleID: restore.ID, MAC: "02-00-00-00-03-01", Once: true, Force: true})
	ok(t, err)
	want := store.Assignment{ID: a.ID, BundleID: restore.ID, Bundle: "restore", BundleKind: store.KindImageRestore, MAC: mac,
		Once: true, Force: true, CreatedAt: a.CreatedAt}
	if a.ID == 0 || a.CreatedAt.IsZero() || a != want {
		t.Fatalf("assignment = %+v, want %+v", a, want)
	}
	if got := must[store.Assignment](t)(st.Assignment(ctx, a.ID)); got != a {
		t.Fatalf("stored assignment = %+v, want %+v", got, a)
	}
	ga := must[store.Assignment](t)(st.CreateAssignment(ctx, store.Assignment{Bundle: "inv", Group: "lab"}))
	if ga.Group != "lab" || ga.MAC != "" || ga.BundleID != inv.ID || ga.BundleKind != store.KindInventory || ga.Once || ga.Force {
		t.Fatalf("group assignment = %+v", ga)
	}
	other := must[store.Assignment](t)(st.CreateAssignment(ctx, store.Assignment{Bundle: "inv", MAC: "02:00:00:00:03:02"}))

	// One assignment per device, one per group.
	_, err = st.CreateAssignment(ctx, store.Assignment{BundleID: inv.ID, MAC: mac})
	is(t, err, store.ErrConflict, mac, "restore")
	_, err = st.CreateAssignment(ctx, store.Assignment{BundleID: restore.ID, Group: g.Name})
	is(t, err, store.ErrConflict, "lab")
	// References must exist, and the error says which one is missing.
	_, err = st.CreateAssignment(ctx, store.Assignment{Bundle: "ghost", MAC: mac})
	is(t, err, store.ErrNotFound, "ghost")
	_, err = st.CreateAssignment(ctx, store.Assignment{BundleID: 9999, Group: "other"})
	is(t, err, store.ErrNotFound, "bundle")
	_, err = st.CreateAssignment(ctx, store.Assignment{BundleID: inv.ID, MAC: "02:00:00:00:03:09"})
	is(t, err, store.ErrNotFound, "02:00:00:00:03:09")
	_, err = st.CreateAssignment(ctx, store.Assignment{BundleID: inv.ID, Group: "ghost-group"})
	is(t, err, store.ErrNotFound, "ghost-group")
	_, err = st.CreateAssignment(ctx, store.Assignment{BundleID: inv.ID, MAC: mac, Group: "other"})
	is(t, err, store.ErrInvalid)
	_, err = st.CreateAssignment(ctx, store.Assignment{BundleID: inv.ID})
	is(t, err, store.ErrInvalid)
	_, err = st.CreateAssignment(ctx, store.Assignment{Group: "other"})
	is(t, err, store.ErrInvalid)

	list := func(f store.AssignmentFilter) string {
		t.Helper()
		return names(must[[]store.Assignment](t)(st.Assignments(ctx, f)), func(a store.Assignment) string { return fmt.Sprint(a.ID) })
	}
	ids := func(as ...store.Assignment) string {
		return names(as, func(a store.Assignment) string { return fmt.Sprint(a.ID) })
	}
	for _, c := range []struct {
		f    store.AssignmentFilter
		want string
	}{
		{store.AssignmentFilter{}, ids(a, ga, other)},
		{store.AssignmentFilter{MAC: "02:00:00:00:03:01"}, ids(a)},
		{store.AssignmentFilter{Group: "lab"}, ids(ga)},
		{store.AssignmentFilter{Group: "other"}, ""},
		{store.AssignmentFilter{Bundle: "inv"}, ids(ga, other)},
		{store.AssignmentFilter{Bundle: "inv", MAC: "02:00:00:00:03:02"}, ids(other)},
		{store.AssignmentFilter{Page: store.Page{Limit: 1, Offset: 1}}, ids(ga)},
	} {
		if got := list(c.f); got != c.want {
			t.Errorf("assignments %+v = %s, want %s", c.f, got, c.want)
		}
	}
	// A renamed bundle shows under its new name.
	must[store.Bundle](t)(st.UpdateBundle(ctx, "inv", func(b *store.Bundle) error { b.Name = "inventory"; return nil }))
	if got := must[store.Assignment](t)(st.Assignment(ctx, ga.ID)); got.Bundle != "inventory" {
		t.Errorf("assignment bundle after rename = %q", got.Bundle)
	}

	ok(t, st.DeleteAssignment(ctx, a.ID))
	_, err = st.Assignment(ctx, a.ID)
	is(t, err, store.ErrNotFound)
	is(t, st.DeleteAssignment(ctx, a.ID), store.ErrNotFound)
	// The device may be assigned again.
	must[store.Assignment](t)(st.CreateAssignment(ctx, store.Assignment{BundleID: inv.ID, MAC: mac}))

	// Replacing (an implementation extra the API uses for "replace": true).
	if rep, found := st.(replacer); found {
		r := must[store.Assignment](t)(rep.ReplaceAssignment(ctx, store.Assignment{BundleID: restore.ID, MAC: mac}))
		if as := must[[]store.Assignment](t)(st.Assignments(ctx, store.AssignmentFilter{MAC: mac})); len(as) != 1 || as[0] != r || r.Bundle != "restore" {
			t.Fatalf("after replace: %+v", as)
		}
		_, err := rep.ReplaceAssignment(ctx, store.Assignment{Bundle: "ghost", MAC: mac})
		is(t, err, store.ErrNotFound, "ghost")
		if as := must[[]store.Assignment](t)(st.Assignments(ctx, store.AssignmentFilter{MAC: mac})); len(as) != 1 || as[0] != r {
			t.Fatalf("a failed replace removed the assignment: %+v", as)
		}
		// Replacing where there is nothing creates.
		must[store.Assignment](t)(rep.ReplaceAssignment(ctx, store.Assignment{BundleID: inv.ID, Group: "other"}))
	}
}

// replacer is implemented by stores that replace a target's assignment
// in one transaction.
type replacer interface {
	ReplaceAssignment(context.Context, store.Assignment) (store.Assignment, error)
}

func testRules(t *testing.T, st store.Store) {
	bundle(t, st, "inv", store.KindInventory)
	group(t, st, "new")
	create := func(name string, pos int) store.Rule {
		t.Helper()
		return must[store.Rule](t)(st.CreateRule(ctx, store.Rule{Name: name, Position: pos, Enabled: true, Match: "mac ~ 52:54:00", Bundle: "inv"}))
	}
	order := func() string {
		t.Helper()
		rs := must[[]store.Rule](t)(st.Rules(ctx))
		for i, r := range rs {
			if r.Position != i+1 {
				t.Fatalf("positions are not 1..n: %+v", rs)
			}
		}
		return names(rs, func(r store.Rule) string { return r.Name })
	}
	r1 := create("r1", 0)
	if r1.Position != 1 || r1.ID == 0 || r1.Bundle != "inv" || r1.Group != "" || !r1.Enabled || r1.Match != "mac ~ 52:54:00" {
		t.Fatalf("rule = %+v", r1)
	}
	create("r2", 0)
	create("r3", 1)  // first
	create("r4", 2)  // second
	create("r5", 99) // past the end = last
	if got := order(); got != "r3,r4,r1,r2,r5" {
		t.Fatalf("rules = %s", got)
	}
	r := must[store.Rule](t)(st.CreateRule(ctx, store.Rule{Name: "g", Match: "true", Group: "new", Position: 3}))
	if r.Group != "new" || r.Bundle != "" || r.Enabled || r.Position != 3 {
		t.Fatalf("rule with a group = %+v", r)
	}
	if got := order(); got != "r3,r4,g,r1,r2,r5" {
		t.Fatalf("rules = %s", got)
	}

	_, err := st.CreateRule(ctx, store.Rule{Name: "r1", Match: "true"})
	is(t, err, store.ErrConflict, "r1")
	_, err = st.CreateRule(ctx, store.Rule{Name: "x", Match: "true", Bundle: "ghost"})
	is(t, err, store.ErrNotFound, "ghost")
	_, err = st.CreateRule(ctx, store.Rule{Name: "x", Match: "true", Group: "ghost-group"})
	is(t, err, store.ErrNotFound, "ghost-group")
	_, err = st.CreateRule(ctx, store.Rule{Match: "true"})
	is(t, err, store.ErrInvalid)
	_, err = st.CreateRule(ctx, store.Rule{Name: "neg", Position: -1})
	is(t, err, store.ErrInvalid)
	if got := order(); got != "r3,r4,g,r1,r2,r5" {
		t.Fatalf("refused rules changed the order: %s", got)
	}

	move := func(name string, pos int) {
		t.Helper()
		r := must[store.Rule](t)(st.UpdateRule(ctx, name, func(r *store.Rule) error { r.Position = pos; return nil }))
		if want := pos; pos != 0 && pos <= 6 && r.Position != want {
			t.Fatalf("moved %s to %d, at %d", name, pos, r.Position)
		}
	}
	move("r5", 1)
	if got := order(); got != "r5,r3,r4,g,r1,r2" {
		t.Fatalf("after moving up: %s", got)
	}
	move("r3", 5)
	if got := order(); got != "r5,r4,g,r1,r3,r2" {
		t.Fatalf("after moving down: %s", got)
	}
	move("r4", 0)
	if got := order(); got != "r5,g,r1,r3,r2,r4" {
		t.Fatalf("after moving to 0 (last): %s", got)
	}
	move("g", 50)
	if got := order(); got != "r5,r1,r3,r2,r4,g" {
		t.Fatalf("after moving past the end: %s", got)
	}

	u, err := st.UpdateRule(ctx, "r1", func(r *store.Rule) error {
		r.Name, r.Match, r.Enabled, r.Bundle, r.Group = "first-boot", "serial ~ X", false, "", "new"
		return nil
	})
	ok(t, err)
	if u.Name != "first-boot" || u.Match != "serial ~ X" || u.Enabled || u.Bundle != "" || u.Group != "new" || u.Position != 2 || u.ID != r1.ID {
		t.Fatalf("updated rule = %+v", u)
	}
	if got := must[store.Rule](t)(st.Rule(ctx, "first-boot")); got != u {
		t.Fatalf("stored rule = %+v, want %+v", got, u)
	}
	_, err = st.UpdateRule(ctx, "first-boot", func(r *store.Rule) error { r.Name = "r2"; return nil })
	is(t, err, store.ErrConflict, "r2")
	_, err = st.UpdateRule(ctx, "first-boot", func(r *store.Rule) error { r.Bundle = "ghost"; r.Position = 1; return nil })
	is(t, err, store.ErrNotFound, "ghost")
	if got := order(); got != "r5,first-boot,r3,r2,r4,g" {
		t.Fatalf("refused updates changed the order: %s", got)
	}
	_, err = st.UpdateRule(ctx, "nope", func(r *store.Rule) error { return nil })
	is(t, err, store.ErrNotFound)
	_, err = st.Rule(ctx, "nope")
	is(t, err, store.ErrNotFound)

	ok(t, st.DeleteRule(ctx, "r3"))
	if got := order(); got != "r5,first-boot,r2,r4,g" {
		t.Fatalf("after delete: %s", got)
	}
	is(t, st.DeleteRule(ctx, "r3"), store.ErrNotFound)
	for _, n := range []string{"r5", "g", "r4"} {
		ok(t, st.DeleteRule(ctx, n))
	}
	if got := order(); got != "first-boot,r2" {
		t.Fatalf("after deletes: %s", got)
	}
	create("r6", 0)
	if got := order(); got != "first-boot,r2,r6" {
		t.Fatalf("appended after deletes: %s", got)
	}
}
