package storetest

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/preboot/preboot/store"
)

func testMenusAndSettings(t *testing.T, st store.Store) {
	set, found, err := st.Settings(ctx)
	if err != nil || found || !reflect.DeepEqual(set, store.Settings{}) {
		t.Fatalf("settings of a new store: %+v %v %v", set, found, err)
	}
	bundle(t, st, "inv", store.KindInventory)
	bundle(t, st, "wipe", store.KindWipe)
	want := store.Settings{
		Menu:         store.Menu{Mode: "hotkey", Hotkey: "ctrl-p", Timeout: store.Duration(3 * time.Second), Title: "Preboot", Bundles: []string{"inv"}, Shell: true},
		Unregistered: store.Unregistered{Action: store.UnregisteredBundle, Bundle: "inv"},
		Naming:       store.Naming{Prefix: "pc-", From: store.NameFromSerial},
	}
	ok(t, st.SetSettings(ctx, want))
	set, found, err = st.Settings(ctx)
	if err != nil || !found || !reflect.DeepEqual(set, want) {
		t.Fatalf("settings = %+v %v %v, want %+v", set, found, err, want)
	}
	bad := want
	bad.Unregistered.Bundle = "ghost"
	is(t, st.SetSettings(ctx, bad), store.ErrNotFound, "ghost")
	bad = want
	bad.Menu.Bundles = []string{"inv", "ghost-2"}
	is(t, st.SetSettings(ctx, bad), store.ErrNotFound, "ghost-2")
	if set, _, _ = st.Settings(ctx); !reflect.DeepEqual(set, want) {
		t.Fatalf("refused settings were stored: %+v", set)
	}

	mac := "02:00:00:00:04:01"
	seen(t, st, mac)
	group(t, st, "lab")
	_, err = st.Menu(ctx, store.ScopeDevice, mac)
	is(t, err, store.ErrNotFound)
	dm := store.Menu{Mode: "always", Timeout: store.Duration(10 * time.Second), Bundles: []string{"wipe", "inv"}}
	ok(t, st.SetMenu(ctx, store.ScopeDevice, "02-00-00-00-04-01", dm))
	gm := store.Menu{Mode: "never"}
	ok(t, st.SetMenu(ctx, store.ScopeGroup, "lab", gm))
	if got := must[store.Menu](t)(st.Menu(ctx, store.ScopeDevice, mac)); !reflect.DeepEqual(got, dm) {
		t.Fatalf("device menu = %+v, want %+v", got, dm)
	}
	if got := must[store.Menu](t)(st.Menu(ctx, store.ScopeGroup, "lab")); !reflect.DeepEqual(got, gm) {
		t.Fatalf("group menu = %+v, want %+v", got, gm)
	}
	dm.Mode, dm.Bundles = "hotkey", nil
	ok(t, st.SetMenu(ctx, store.ScopeDevice, mac, dm))
	if got := must[store.Menu](t)(st.Menu(ctx, store.ScopeDevice, mac)); !reflect.DeepEqual(got, dm) {
		t.Fatalf("replaced device menu = %+v, want %+v", got, dm)
	}
	is(t, st.SetMenu(ctx, store.ScopeDevice, "02:00:00:00:04:09", dm), store.ErrNotFound, "02:00:00:00:04:09")
	is(t, st.SetMenu(ctx, store.ScopeGroup, "ghost-group", dm), store.ErrNotFound, "ghost-group")
	is(t, st.SetMenu(ctx, store.ScopeGroup, "lab", store.Menu{Bundles: []string{"ghost"}}), store.ErrNotFound, "ghost")
	is(t, st.SetMenu(ctx, "planet", "x", dm), store.ErrInvalid, "planet")
	_, err = st.Menu(ctx, "planet", "x")
	is(t, err, store.ErrInvalid)

	ok(t, st.DeleteMenu(ctx, store.ScopeDevice, mac))
	_, err = st.Menu(ctx, store.ScopeDevice, mac)
	is(t, err, store.ErrNotFound)
	is(t, st.DeleteMenu(ctx, store.ScopeDevice, mac), store.ErrNotFound)
	if got := must[store.Menu](t)(st.Menu(ctx, store.ScopeGroup, "lab")); !reflect.DeepEqual(got, gm) {
		t.Fatalf("group menu after the device's went = %+v", got)
	}
}

func testPolicyVersion(t *testing.T, st store.Store) {
	mac := "02:00:00:00:05:01"
	last := version(t, st)
	step := func(what string, changes bool, fn func() error) {
		t.Helper()
		if err := fn(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		v := version(t, st)
		if changes && v <= last {
			t.Errorf("%s did not change the policy version (%d)", what, v)
		}
		if !changes && v != last {
			t.Errorf("%s changed the policy version (%d -> %d)", what, last, v)
		}
		last = v
	}
	step("a sighting", false, func() error { _, _, err := st.SeeDevice(ctx, store.Sighting{MAC: mac}); return err })
	step("an event", false, func() error { _, err := st.AddEvent(ctx, store.Event{MAC: mac, Kind: store.EventBoot}); return err })
	step("device info", false, func() error { return st.SetDeviceInfo(ctx, mac, nil, 1, 2) })
	step("device update", false, func() error {
		_, err := st.UpdateDevice(ctx, mac, func(d *store.Device) error { d.Registered = true; return nil })
		return err
	})
	step("a token", false, func() error { _, err := st.CreateToken(ctx, store.Token{Name: "t", Hash: "h"}); return err })
	step("a job", false, func() error { _, err := st.CreateJob(ctx, store.Job{MAC: mac, TokenHash: "j"}); return err })
	step("applied", false, func() error { return st.SetApplied(ctx, mac, store.Applied{BundleID: 1, Bundle: "x"}) })
	step("create bundle", true, func() error {
		_, err := st.CreateBundle(ctx, store.Bundle{Name: "b", Kind: store.KindInventory})
		return err
	})
	step("update bundle", true, func() error {
		_, err := st.UpdateBundle(ctx, "b", func(b *store.Bundle) error { return nil })
		return err
	})
	step("create group", true, func() error { _, err := st.CreateGroup(ctx, store.Group{Name: "g"}); return err })
	step("update group", true, func() error {
		_, err := st.UpdateGroup(ctx, "g", func(g *store.Group) error { g.Match = "true"; return nil })
		return err
	})
	step("add member", true, func() error { return st.AddMember(ctx, "g", mac) })
	step("remove member", true, func() error { return st.RemoveMember(ctx, "g", mac) })
	var aID int64
	step("create assignment", true, func() error {
		a, err := st.CreateAssignment(ctx, store.Assignment{Bundle: "b", Group: "g"})
		aID = a.ID
		return err
	})
	step("delete assignment", true, func() error { return st.DeleteAssignment(ctx, aID) })
	step("create rule", true, func() error { _, err := st.CreateRule(ctx, store.Rule{Name: "r", Match: "true"}); return err })
	step("update rule", true, func() error {
		_, err := st.UpdateRule(ctx, "r", func(r *store.Rule) error { r.Enabled = true; return nil })
		return err
	})
	step("delete rule", true, func() error { return st.DeleteRule(ctx, "r") })
	step("set menu", true, func() error { return st.SetMenu(ctx, store.ScopeGroup, "g", store.Menu{Mode: "always"}) })
	step("delete menu", true, func() error { return st.DeleteMenu(ctx, store.ScopeGroup, "g") })
	step("set settings", true, func() error { return st.SetSettings(ctx, store.Settings{Naming: store.Naming{Prefix: "x"}}) })
	step("delete group", true, func() error { return st.DeleteGroup(ctx, "g") })
	step("delete bundle", true, func() error { return st.DeleteBundle(ctx, "b") })
	// Refused changes leave it alone.
	step("a refused assignment", false, func() error {
		must[store.Bundle](t)(st.CreateBundle(ctx, store.Bundle{Name: "b2", Kind: store.KindInventory}))
		last = version(t, st)
		_, err := st.CreateAssignment(ctx, store.Assignment{Bundle: "b2", Group: "ghost"})
		if !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("want not found, got %v", err)
		}
		return nil
	})
}

func testTokens(t *testing.T, st store.Store) {
	tk, err := st.CreateToken(ctx, store.Token{Name: "admin", Hash: "hash-1", Prefix: "pba_abcd"})
	ok(t, err)
	if tk.ID == 0 || tk.CreatedAt.IsZero() || !tk.LastUsed.IsZero() {
		t.Fatalf("token = %+v", tk)
	}
	_, err = st.CreateToken(ctx, store.Token{Name: "admin", Hash: "hash-2"})
	is(t, err, store.ErrConflict, "admin")
	_, err = st.CreateToken(ctx, store.Token{Name: "other", Hash: "hash-1"})
	is(t, err, store.ErrConflict)
	_, err = st.CreateToken(ctx, store.Token{Name: "nohash"})
	is(t, err, store.ErrInvalid)
	tk2 := must[store.Token](t)(st.CreateToken(ctx, store.Token{Name: "ci", Hash: "hash-3", Prefix: "pba_ci"}))

	got := must[store.Token](t)(st.TokenByHash(ctx, "hash-1"))
	if got != tk {
		t.Fatalf("by hash = %+v, want %+v", got, tk)
	}
	_, err = st.TokenByHash(ctx, "nope")
	is(t, err, store.ErrNotFound)
	at := time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC)
	ok(t, st.TouchToken(ctx, tk.ID, at))
	if got := must[store.Token](t)(st.TokenByHash(ctx, "hash-1")); !got.LastUsed.Equal(at) {
		t.Fatalf("last used = %v, want %v", got.LastUsed, at)
	}
	is(t, st.TouchToken(ctx, 9999, at), store.ErrNotFound)
	list := must[[]store.Token](t)(st.Tokens(ctx))
	if names(list, func(t store.Token) string { return t.Name }) != "admin,ci" || list[1] != tk2 {
		t.Fatalf("tokens = %+v", list)
	}
	ok(t, st.DeleteToken(ctx, tk.ID))
	is(t, st.DeleteToken(ctx, tk.ID), store.ErrNotFound)
	_, err = st.TokenByHash(ctx, "hash-1")
	is(t, err, store.ErrNotFound)
	// The name is free again.
	must[store.Token](t)(st.CreateToken(ctx, store.Token{Name: "admin", Hash: "hash-4"}))
}

func testJobs(t *testing.T, st store.Store) {
	params := json.RawMessage(`{"image":"win11","device":"/dev/sda"}`)
	j, err := st.CreateJob(ctx, store.Job{MAC: "02-00-00-00-06-01", Kind: store.KindImageRestore, BundleID: 3, Bundle: "win11",
		BundleVersion: 2, AssignmentID: 5, Params: params, Image: "win11", Device: "/dev/sda", After: store.AfterReboot,
		Compression: 3, TokenHash: "tok-1", ClientIP: "10.0.0.7", Boots: 1, TokenIssuedAt: time.Date(2026, 6, 1, 1, 0, 0, 0, time.UTC)})
	ok(t, err)
	if j.ID == 0 || j.MAC != "02:00:00:00:06:01" || j.State != store.JobPending || j.CreatedAt.IsZero() || !j.UpdatedAt.Equal(j.CreatedAt) {
		t.Fatalf("job = %+v", j)
	}
	got := must[store.Job](t)(st.Job(ctx, j.ID))
	if !reflect.DeepEqual(got, j) {
		t.Fatalf("stored job = %+v\nwant %+v", got, j)
	}
	if byTok := must[store.Job](t)(st.JobByToken(ctx, "tok-1")); byTok.ID != j.ID || byTok.TokenHash != "tok-1" {
		t.Fatalf("by token = %+v", byTok)
	}
	_, err = st.JobByToken(ctx, "")
	is(t, err, store.ErrNotFound)
	_, err = st.JobByToken(ctx, "nope")
	is(t, err, store.ErrNotFound)
	_, err = st.Job(ctx, 9999)
	is(t, err, store.ErrNotFound)
	_, err = st.CreateJob(ctx, store.Job{MAC: "02:00:00:00:06:01", Kind: store.KindWipe})
	is(t, err, store.ErrInvalid, "token")
	_, err = st.CreateJob(ctx, store.Job{MAC: "02:00:00:00:06:01", Kind: store.KindWipe, TokenHash: "tok-1"})
	is(t, err, store.ErrConflict)

	started := time.Date(2026, 6, 1, 2, 3, 4, 5000, time.UTC)
	u, err := st.UpdateJob(ctx, j.ID, func(j *store.Job) error {
		j.State, j.Phase, j.BytesDone, j.BytesTotal, j.Rate, j.Message, j.StartedAt = store.JobRunning, "restore", 10, 100, 5, "p1", started
		return nil
	})
	ok(t, err)
	if u.State != store.JobRunning || u.BytesDone != 10 || !u.StartedAt.Equal(started) || u.UpdatedAt.Before(j.UpdatedAt) {
		t.Fatalf("updated job = %+v", u)
	}
	if got := must[store.Job](t)(st.Job(ctx, j.ID)); !reflect.DeepEqual(got, u) {
		t.Fatalf("stored updated job = %+v\nwant %+v", got, u)
	}
	boom := errors.New("boom")
	_, err = st.UpdateJob(ctx, j.ID, func(j *store.Job) error { j.State = store.JobFailed; return boom })
	is(t, err, boom)
	if got := must[store.Job](t)(st.Job(ctx, j.ID)); got.State != store.JobRunning {
		t.Fatalf("a failed update changed the job: %+v", got)
	}
	_, err = st.UpdateJob(ctx, 9999, func(j *store.Job) error { return nil })
	is(t, err, store.ErrNotFound)
	// A pending job handed out again gets a fresh token: the old one
	// stops finding it.
	issued := time.Date(2026, 6, 1, 3, 0, 0, 0, time.UTC)
	u = must[store.Job](t)(st.UpdateJob(ctx, j.ID, func(j *store.Job) error {
		j.TokenHash, j.Boots, j.TokenIssuedAt = "tok-2", 2, issued
		return nil
	}))
	if got := must[store.Job](t)(st.JobByToken(ctx, "tok-2")); got.ID != j.ID || got.Boots != 2 || !got.TokenIssuedAt.Equal(issued) || got.ClientIP != "10.0.0.7" {
		t.Fatalf("job by its new token = %+v", got)
	}
	_, err = st.JobByToken(ctx, "tok-1")
	is(t, err, store.ErrNotFound)
	_, err = st.UpdateJob(ctx, j.ID, func(j *store.Job) error { j.TokenHash = ""; return nil })
	is(t, err, store.ErrInvalid)
	u = must[store.Job](t)(st.UpdateJob(ctx, j.ID, func(j *store.Job) error {
		j.State, j.Error, j.FinishedAt = store.JobFailed, "disk gone", time.Now()
		return nil
	}))
	if u.FinishedAt.IsZero() || u.Error != "disk gone" {
		t.Fatalf("finished job = %+v", u)
	}

	// More jobs for the filters.
	mk := func(mac, bundle, state string) store.Job {
		t.Helper()
		return must[store.Job](t)(st.CreateJob(ctx, store.Job{MAC: mac, Kind: store.KindInventory, Bundle: bundle, State: state,
			TokenHash: fmt.Sprintf("tok-%s-%s-%s-%d", mac, bundle, state, time.Now().UnixNano())}))
	}
	j2 := mk("02:00:00:00:06:02", "inv", store.JobPending)
	j3 := mk("02:00:00:00:06:01", "inv", store.JobSucceeded)
	j4 := mk("02:00:00:00:06:02", "inv", store.JobRunning)
	j5 := mk("02:00:00:00:06:03", "other", store.JobCancelled)
	ids := func(js ...store.Job) string { return names(js, func(j store.Job) string { return fmt.Sprint(j.ID) }) }
	for _, c := range []struct {
		f    store.JobFilter
		want string
	}{
		{store.JobFilter{}, ids(j5, j4, j3, j2, j)},
		{store.JobFilter{MAC: "02-00-00-00-06-02"}, ids(j4, j2)},
		{store.JobFilter{State: store.JobSucceeded}, ids(j3)},
		{store.JobFilter{Bundle: "inv"}, ids(j4, j3, j2)},
		{store.JobFilter{Open: true}, ids(j4, j2)},
		{store.JobFilter{BeforeID: j4.ID}, ids(j3, j2, j)},
		{store.JobFilter{BeforeID: j4.ID, Limit: 2}, ids(j3, j2)},
		{store.JobFilter{Bundle: "inv", Open: true, MAC: "02:00:00:00:06:02", BeforeID: j4.ID}, ids(j2)},
	} {
		got := ids(must[[]store.Job](t)(st.Jobs(ctx, c.f))...)
		if got != c.want {
			t.Errorf("jobs %+v = %s, want %s", c.f, got, c.want)
		}
	}
}

func testJobLog(t *testing.T, st store.Store) {
	j := must[store.Job](t)(st.CreateJob(ctx, store.Job{MAC: "02:00:00:00:07:01", Kind: store.KindScript, TokenHash: "log"}))
	if l := must[[]store.JobLine](t)(st.JobLog(ctx, j.ID, 0)); len(l) != 0 {
		t.Fatalf("log of a new job = %+v", l)
	}
	var lines []string
	for i := 0; i < 450; i++ { // more than one INSERT batch
		lines = append(lines, fmt.Sprintf("line %d", i))
	}
	ok(t, st.AddJobLog(ctx, j.ID, lines[:1]))
	ok(t, st.AddJobLog(ctx, j.ID, lines[1:]))
	ok(t, st.AddJobLog(ctx, j.ID, nil))
	all := must[[]store.JobLine](t)(st.JobLog(ctx, j.ID, 0))
	if len(all) != 450 || all[0].Line != "line 0" || all[449].Line != "line 449" || all[0].Time.IsZero() {
		t.Fatalf("log: %d lines, first %+v", len(all), all[0])
	}
	tail := must[[]store.JobLine](t)(st.JobLog(ctx, j.ID, 3))
	var got []string
	for _, l := range tail {
		got = append(got, l.Line)
	}
	if strings.Join(got, ",") != "line 447,line 448,line 449" {
		t.Fatalf("last 3 lines = %v", got)
	}
	is(t, st.AddJobLog(ctx, 9999, []string{"x"}), store.ErrNotFound)
	if l := must[[]store.JobLine](t)(st.JobLog(ctx, 9999, 0)); len(l) != 0 {
		t.Fatalf("log of an unknown job = %+v", l)
	}
}

// testNothingHalfWritten checks that changes failing half-way leave no
// trace.
func testNothingHalfWritten(t *testing.T, st store.Store) {
	mac := "02:00:00:00:08:01"
	seen(t, st, mac)
	b := bundle(t, st, "b", store.KindInventory)
	group(t, st, "g")
	for _, n := range []string{"r1", "r2", "r3"} {
		must[store.Rule](t)(st.CreateRule(ctx, store.Rule{Name: n, Match: "true"}))
	}
	v := version(t, st)
	boom := errors.New("boom")

	_, err := st.UpdateBundle(ctx, "b", func(b *store.Bundle) error { b.Description = "changed"; return boom })
	is(t, err, boom)
	_, err = st.UpdateGroup(ctx, "g", func(g *store.Group) error { g.Priority = 99; return boom })
	is(t, err, boom)
	_, err = st.UpdateRule(ctx, "r3", func(r *store.Rule) error { r.Position = 1; return boom })
	is(t, err, boom)
	// A move that fails on its name must not leave the others shifted.
	_, err = st.UpdateRule(ctx, "r3", func(r *store.Rule) error { r.Position, r.Name = 1, "r1"; return nil })
	is(t, err, store.ErrConflict)
	_, err = st.CreateRule(ctx, store.Rule{Name: "r4", Position: 1, Group: "ghost"})
	is(t, err, store.ErrNotFound)
	_, err = st.CreateAssignment(ctx, store.Assignment{BundleID: b.ID, Group: "ghost"})
	is(t, err, store.ErrNotFound)
	is(t, st.AddMember(ctx, "g", "02:00:00:00:08:09"), store.ErrNotFound)
	is(t, st.DeleteGroup(ctx, "ghost"), store.ErrNotFound)

	if got := version(t, st); got != v {
		t.Errorf("failed changes moved the policy version %d -> %d", v, got)
	}
	if got := must[store.Bundle](t)(st.Bundle(ctx, "b")); got.Description != "" || got.Version != 1 {
		t.Errorf("bundle after failed update = %+v", got)
	}
	if got := must[store.Group](t)(st.Group(ctx, "g")); got.Priority != 10 || got.Members != 0 {
		t.Errorf("group after failed update = %+v", got)
	}
	rs := must[[]store.Rule](t)(st.Rules(ctx))
	if names(rs, func(r store.Rule) string { return fmt.Sprintf("%s@%d", r.Name, r.Position) }) != "r1@1,r2@2,r3@3" {
		t.Errorf("rules after failed changes = %+v", rs)
	}
	if as := must[[]store.Assignment](t)(st.Assignments(ctx, store.AssignmentFilter{})); len(as) != 0 {
		t.Errorf("assignments after failed create = %+v", as)
	}
}
