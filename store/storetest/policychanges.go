package storetest

import (
	"strconv"
	"testing"

	"github.com/preboot/preboot/store"
)

// testPolicyChanges checks the policy change log: every version is logged
// with what it changed, a change to one device or one group's menu is
// logged as such and any other change as PolicyChangeAny (caches reload
// everything for those).
func testPolicyChanges(t *testing.T, st store.Store) {
	mac := "02:00:00:00:06:01"
	must[store.Device](t)(st.CreateDevice(ctx, store.Device{MAC: mac}))
	type want struct{ kind, target string }
	// step checks the changes fn logs; check, when given, replaces the
	// comparison of the target (known only once fn ran).
	step := func(what string, w want, fn func() error, check ...func(store.PolicyChange) bool) {
		t.Helper()
		before := version(t, st)
		if err := fn(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		after := version(t, st)
		cs := must[[]store.PolicyChange](t)(st.PolicyChanges(ctx, before, after))
		if len(cs) != int(after-before) || len(cs) == 0 {
			t.Fatalf("%s: versions %d..%d: %d changes logged: %+v", what, before, after, len(cs), cs)
		}
		for i, c := range cs {
			if c.Version != before+int64(i)+1 {
				t.Errorf("%s: change %d has version %d, want %d", what, i, c.Version, before+int64(i)+1)
			}
			if len(check) > 0 && c.Kind == w.kind && check[0](c) {
				continue
			}
			if c.Kind != w.kind || c.Target != w.target {
				t.Errorf("%s: logged as %q %q, want %q %q", what, c.Kind, c.Target, w.kind, w.target)
			}
		}
	}
	any := want{store.PolicyChangeAny, ""}
	dev := want{store.PolicyChangeDevice, mac}
	var bID int64
	bundleChange := func() want { return want{store.PolicyChangeBundle, strconv.FormatInt(bID, 10)} }
	for _, name := range []string{"b0", "b"} {
		b, err := st.CreateBundle(ctx, store.Bundle{Name: name, Kind: store.KindInventory})
		ok(t, err)
		bID = b.ID
	}
	step("update bundle", bundleChange(), func() error {
		_, err := st.UpdateBundle(ctx, "b", func(b *store.Bundle) error { b.Description = "d"; return nil })
		return err
	})
	step("rename bundle", any, func() error {
		_, err := st.UpdateBundle(ctx, "b", func(b *store.Bundle) error { b.Name = "b2"; return nil })
		return err
	})
	step("rename bundle back", any, func() error {
		_, err := st.UpdateBundle(ctx, "b2", func(b *store.Bundle) error { b.Name = "b"; return nil })
		return err
	})
	step("create bundle", want{store.PolicyChangeBundle, ""}, func() error {
		b, err := st.CreateBundle(ctx, store.Bundle{Name: "c", Kind: store.KindInventory})
		bID = b.ID
		return err
	}, func(c store.PolicyChange) bool { return c.Target == strconv.FormatInt(bID, 10) })
	step("delete bundle", bundleChange(), func() error { return st.DeleteBundle(ctx, "c") })
	step("create group", want{store.PolicyChangeGroup, "g"}, func() error { _, err := st.CreateGroup(ctx, store.Group{Name: "g"}); return err })
	step("add member", dev, func() error { return st.AddMember(ctx, "g", mac) })
	step("remove member", dev, func() error { return st.RemoveMember(ctx, "g", mac) })
	var aID int64
	step("device assignment", dev, func() error {
		a, err := st.CreateAssignment(ctx, store.Assignment{Bundle: "b", MAC: mac, Once: true})
		aID = a.ID
		return err
	})
	step("replace device assignment", dev, func() error {
		a, err := st.ReplaceAssignment(ctx, store.Assignment{Bundle: "b", MAC: mac})
		aID = a.ID
		return err
	})
	step("delete device assignment", dev, func() error { return st.DeleteAssignment(ctx, aID) })
	ga := want{store.PolicyChangeGroupAssignment, "g"}
	step("group assignment", ga, func() error {
		a, err := st.CreateAssignment(ctx, store.Assignment{Bundle: "b", Group: "g"})
		aID = a.ID
		return err
	})
	step("delete group assignment", ga, func() error { return st.DeleteAssignment(ctx, aID) })
	step("device menu", dev, func() error { return st.SetMenu(ctx, store.ScopeDevice, mac, store.Menu{Mode: "never"}) })
	step("delete device menu", dev, func() error { return st.DeleteMenu(ctx, store.ScopeDevice, mac) })
	gm := want{store.PolicyChangeGroupMenu, "g"}
	step("group menu", gm, func() error { return st.SetMenu(ctx, store.ScopeGroup, "g", store.Menu{Mode: "always"}) })
	step("delete group menu", gm, func() error { return st.DeleteMenu(ctx, store.ScopeGroup, "g") })
	step("settings", want{store.PolicyChangeSettings, ""}, func() error { return st.SetSettings(ctx, store.Settings{Naming: store.Naming{Prefix: "x"}}) })
	rules := want{store.PolicyChangeRules, ""}
	step("rule", rules, func() error { _, err := st.CreateRule(ctx, store.Rule{Name: "r", Match: "true"}); return err })
	step("update rule", rules, func() error {
		_, err := st.UpdateRule(ctx, "r", func(r *store.Rule) error { r.Enabled = true; return nil })
		return err
	})
	step("delete rule", rules, func() error { return st.DeleteRule(ctx, "r") })
	step("update group", want{store.PolicyChangeGroup, "g"}, func() error {
		_, err := st.UpdateGroup(ctx, "g", func(g *store.Group) error { g.Priority = 3; return nil })
		return err
	})
	step("rename group", any, func() error {
		_, err := st.UpdateGroup(ctx, "g", func(g *store.Group) error { g.Name = "g2"; return nil })
		return err
	})
	step("rename group back", any, func() error {
		_, err := st.UpdateGroup(ctx, "g2", func(g *store.Group) error { g.Name = "g"; return nil })
		return err
	})
	step("add member again", dev, func() error { return st.AddMember(ctx, "g", mac) })
	step("delete device", dev, func() error { return st.DeleteDevice(ctx, mac) })

	// A refused change logs nothing.
	v := version(t, st)
	if err := st.AddMember(ctx, "no-such-group", mac); err == nil {
		t.Fatal("member of a missing group: no error")
	}
	if got := version(t, st); got != v {
		t.Fatalf("refused change: version %d -> %d", v, got)
	}
	if cs := must[[]store.PolicyChange](t)(st.PolicyChanges(ctx, v, v+5)); len(cs) != 0 {
		t.Errorf("refused change logged: %+v", cs)
	}
	// From the start: the log covers every version since the migration.
	cs := must[[]store.PolicyChange](t)(st.PolicyChanges(ctx, 0, v))
	if len(cs) == 0 || cs[len(cs)-1].Version != v {
		t.Errorf("whole log: %d changes, last %+v, want it to end at %d", len(cs), cs[len(cs)-1:], v)
	}
}
