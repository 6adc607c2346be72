package storetest

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/preboot/preboot/store"
)

func testSeeDevice(t *testing.T, st store.Store) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	d, created, err := st.SeeDevice(ctx, store.Sighting{MAC: "52-54-00-AA-BB-CC", Manufacturer: "QEMU", Product: "Standard PC",
		Serial: "S1", Arch: "bios", AssetTag: "A-1", Time: t0})
	if err != nil || !created {
		t.Fatalf("first sighting: created=%v err=%v", created, err)
	}
	if d.MAC != "52:54:00:aa:bb:cc" || !d.FirstSeen.Equal(t0) || d.AssetTag != "A-1" || d.Registered || d.ID == 0 {
		t.Fatalf("device = %+v", d)
	}
	// A DHCP sighting knows less: it must not erase, and FillOnly must not overwrite.
	d, created, err = st.SeeDevice(ctx, store.Sighting{MAC: "52:54:00:aa:bb:cc", Arch: "efi-x64", UUID: "u-1", AssetTag: "A-2",
		Time: t0.Add(time.Minute), FillOnly: true})
	if err != nil || created {
		t.Fatalf("second sighting: created=%v err=%v", created, err)
	}
	if d.Manufacturer != "QEMU" || d.Serial != "S1" || d.Arch != "bios" || d.UUID != "u-1" || d.AssetTag != "A-1" {
		t.Fatalf("FillOnly sighting changed known values or missed empty ones: %+v", d)
	}
	if !d.LastSeen.Equal(t0.Add(time.Minute)) || !d.FirstSeen.Equal(t0) {
		t.Fatalf("times: first %v last %v", d.FirstSeen, d.LastSeen)
	}
	// A full sighting overwrites what it knows, keeps the rest; an older
	// time does not move last_seen back.
	d, _, err = st.SeeDevice(ctx, store.Sighting{MAC: "5254.00aa.bbcc", Product: "Other", AssetTag: "A-3", Time: t0.Add(-time.Hour)})
	ok(t, err)
	if d.Product != "Other" || d.AssetTag != "A-3" || d.Manufacturer != "QEMU" || !d.LastSeen.Equal(t0.Add(time.Minute)) {
		t.Fatalf("full sighting: %+v", d)
	}
	got := must[store.Device](t)(st.Device(ctx, "52:54:00:AA:BB:CC"))
	if got.Product != "Other" || got.ID != d.ID || !got.LastSeen.Equal(d.LastSeen) {
		t.Fatalf("Device after sightings = %+v", got)
	}
	_, _, err = st.SeeDevice(ctx, store.Sighting{MAC: "not-a-mac"})
	is(t, err, store.ErrInvalid, "not-a-mac")

	// A device registered by hand is not "created" by its first boot.
	must[store.Device](t)(st.CreateDevice(ctx, store.Device{MAC: "02:00:00:00:00:01", Name: "hand"}))
	d, created, err = st.SeeDevice(ctx, store.Sighting{MAC: "02:00:00:00:00:01", Serial: "X"})
	if err != nil || created || d.Name != "hand" || !d.Registered || d.Serial != "X" {
		t.Fatalf("first boot of a registered device: created=%v %+v %v", created, d, err)
	}
	// Without a time, the sighting is now.
	before := time.Now().Add(-time.Second)
	d, _, err = st.SeeDevice(ctx, store.Sighting{MAC: "02:00:00:00:00:02"})
	if err != nil || d.LastSeen.Before(before) || d.LastSeen.After(time.Now().Add(time.Second)) {
		t.Fatalf("sighting without time: %+v %v", d, err)
	}
}

func testEventsAndDeviceList(t *testing.T, st store.Store) {
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i, mac := range []string{"00:00:00:00:00:01", "00:00:00:00:00:02"} {
		if _, _, err := st.SeeDevice(ctx, store.Sighting{MAC: mac, Time: base.Add(time.Duration(i) * time.Hour)}); err != nil {
			t.Fatal(err)
		}
		for j := 0; j < 3; j++ {
			e, err := st.AddEvent(ctx, store.Event{MAC: mac, Time: base.Add(time.Duration(j) * time.Minute), Kind: store.EventBoot, Message: mac})
			ok(t, err)
			if e.ID == 0 || e.MAC != mac {
				t.Fatalf("added event = %+v", e)
			}
		}
	}
	last := must[store.Event](t)(st.AddEvent(ctx, store.Event{MAC: "00-00-00-00-00-01", Time: base.Add(time.Hour), Kind: store.EventLocalBoot,
		Message: "last", Job: 7, Actor: "policy"}))
	devs := must[[]store.Device](t)(st.Devices(ctx, store.DeviceFilter{}))
	if len(devs) != 2 || devs[0].MAC != "00:00:00:00:00:02" {
		t.Fatalf("devices not most recently seen first: %+v", devs)
	}
	if le := devs[1].LastEvent; le == nil || *le != last {
		t.Fatalf("last event of device 1: %+v, want %+v", le, last)
	}
	if le := devs[0].LastEvent; le == nil || le.MAC != devs[0].MAC || le.Kind != store.EventBoot {
		t.Fatalf("last event of device 2: %+v", le)
	}
	evs := must[[]store.Event](t)(st.Events(ctx, store.EventFilter{MAC: "00-00-00-00-00-01", Kind: store.EventBoot, Limit: 2}))
	if len(evs) != 2 || !evs[0].Time.After(evs[1].Time) || evs[0].ID < evs[1].ID {
		t.Fatalf("filtered events: %+v", evs)
	}
	evs = must[[]store.Event](t)(st.Events(ctx, store.EventFilter{Since: base.Add(2 * time.Minute)}))
	if len(evs) != 3 {
		t.Fatalf("since filter: got %d events, want 3", len(evs))
	}
	d := must[store.Device](t)(st.Device(ctx, "00:00:00:00:00:01"))
	if d.LastEvent == nil || *d.LastEvent != last {
		t.Fatalf("device with last event: %+v", d.LastEvent)
	}
	_, err := st.Device(ctx, "00:00:00:00:00:09")
	is(t, err, store.ErrNotFound, "00:00:00:00:00:09")
	_, err = st.Device(ctx, "junk")
	is(t, err, store.ErrInvalid)
}

func testEventFilters(t *testing.T, st store.Store) {
	base := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	var ids []int64
	for i := 0; i < 20; i++ {
		e := store.Event{Time: base.Add(time.Duration(i) * time.Second), Kind: store.EventBoot, Message: fmt.Sprint(i)}
		switch {
		case i%5 == 0:
			e.Kind, e.Actor = store.EventAdmin, "token-1" // no MAC
		case i%2 == 0:
			e.MAC, e.Job, e.Kind = "02:00:00:00:00:0a", 42, store.EventJob
		default:
			e.MAC = "02:00:00:00:00:0b"
		}
		e, err := st.AddEvent(ctx, e)
		ok(t, err)
		ids = append(ids, e.ID)
	}
	for i := 1; i < len(ids); i++ {
		if ids[i] <= ids[i-1] {
			t.Fatalf("event ids do not grow: %v", ids)
		}
	}
	msgs := func(f store.EventFilter) string {
		t.Helper()
		return names(must[[]store.Event](t)(st.Events(ctx, f)), func(e store.Event) string { return e.Message })
	}
	for _, c := range []struct {
		name string
		f    store.EventFilter
		want string
	}{
		{"all newest first", store.EventFilter{Limit: 4}, "19,18,17,16"},
		{"admin", store.EventFilter{Kind: store.EventAdmin}, "15,10,5,0"},
		{"job", store.EventFilter{Job: 42}, "18,16,14,12,8,6,4,2"},
		{"device and kind", store.EventFilter{MAC: "02-00-00-00-00-0B", Kind: store.EventBoot, Limit: 3}, "19,17,13"},
		{"since until", store.EventFilter{Since: base.Add(3 * time.Second), Until: base.Add(6 * time.Second)}, "5,4,3"},
		{"after id oldest first", store.EventFilter{AfterID: ids[16], Limit: 2}, "17,18"},
		{"before id", store.EventFilter{BeforeID: ids[3], Limit: 10}, "2,1,0"},
		{"before id with device", store.EventFilter{BeforeID: ids[10], MAC: "02:00:00:00:00:0a"}, "8,6,4,2"},
	} {
		if got := msgs(c.f); got != c.want {
			t.Errorf("%s: events %s, want %s", c.name, got, c.want)
		}
	}
	if n := len(must[[]store.Event](t)(st.Events(ctx, store.EventFilter{}))); n != 20 {
		t.Errorf("default limit: %d events", n)
	}
	evs := must[[]store.Event](t)(st.Events(ctx, store.EventFilter{Kind: store.EventAdmin, Limit: 1}))
	if len(evs) != 1 || evs[0].MAC != "" || evs[0].Actor != "token-1" || !evs[0].Time.Equal(base.Add(15*time.Second)) {
		t.Fatalf("admin event = %+v", evs)
	}
	_, err := st.AddEvent(ctx, store.Event{MAC: "bad", Kind: store.EventBoot})
	is(t, err, store.ErrInvalid)
	// The default limit is 100.
	for i := 0; i < 110; i++ {
		must[store.Event](t)(st.AddEvent(ctx, store.Event{Kind: store.EventPolicy}))
	}
	if n := len(must[[]store.Event](t)(st.Events(ctx, store.EventFilter{Kind: store.EventPolicy}))); n != 100 {
		t.Errorf("default limit: %d events, want 100", n)
	}
}

func testDeviceFilters(t *testing.T, st store.Store) {
	base := time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)
	sightings := []store.Sighting{
		{MAC: "02:00:00:00:00:01", Manufacturer: "Dell Inc.", Product: "OptiPlex 7010", Serial: "SER_1", IP: "10.0.0.1"},
		{MAC: "02:00:00:00:00:02", Manufacturer: "LENOVO", Product: "ThinkPad", Serial: "SER%2", IP: "10.0.0.2", AssetTag: "INV-77"},
		{MAC: "02:00:00:00:00:03", Manufacturer: "QEMU", Product: "Standard PC", IP: "192.168.1.3"},
		{MAC: "aa:bb:00:00:00:04", Manufacturer: "HP", Product: "EliteDesk"},
	}
	for i, s := range sightings {
		s.Time = base.Add(time.Duration(i) * time.Minute)
		if _, _, err := st.SeeDevice(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	must[store.Device](t)(st.UpdateDevice(ctx, "02:00:00:00:00:03", func(d *store.Device) error {
		d.Name, d.Registered = "lab-pc", true
		return nil
	}))
	g := group(t, st, "lab")
	ok(t, st.AddMember(ctx, g.Name, "02:00:00:00:00:01"))
	ok(t, st.AddMember(ctx, g.Name, "aa:bb:00:00:00:04"))
	yes, no := true, false
	for _, c := range []struct {
		name string
		f    store.DeviceFilter
		want string
	}{
		{"all", store.DeviceFilter{}, "04,03,02,01"},
		{"maker case-insensitive", store.DeviceFilter{Search: "dell"}, "01"},
		{"model", store.DeviceFilter{Search: "thinkPAD"}, "02"},
		{"ip", store.DeviceFilter{Search: "10.0.0."}, "02,01"},
		{"mac", store.DeviceFilter{Search: "AA:BB"}, "04"},
		{"name", store.DeviceFilter{Search: "LAB-"}, "03"},
		{"asset tag", store.DeviceFilter{Search: "inv-7"}, "02"},
		{"percent is literal", store.DeviceFilter{Search: "ser%"}, "02"},
		{"underscore is literal", store.DeviceFilter{Search: "ser_"}, "01"},
		{"group", store.DeviceFilter{Group: "lab"}, "04,01"},
		{"unknown group", store.DeviceFilter{Group: "nope"}, ""},
		{"registered", store.DeviceFilter{Registered: &yes}, "03"},
		{"unregistered in group", store.DeviceFilter{Registered: &no, Group: "lab", Search: "hp"}, "04"},
		{"page", store.DeviceFilter{Page: store.Page{Limit: 2, Offset: 1}}, "03,02"},
		{"past the end", store.DeviceFilter{Page: store.Page{Offset: 10}}, ""},
	} {
		devs := must[[]store.Device](t)(st.Devices(ctx, c.f))
		got := names(devs, func(d store.Device) string { return d.MAC[len(d.MAC)-2:] })
		if got != c.want {
			t.Errorf("%s: devices %s, want %s", c.name, got, c.want)
		}
		count := c.f
		count.Page = store.Page{}
		n := must[int](t)(st.CountDevices(ctx, count))
		want := len(devs)
		if c.name == "page" || c.name == "past the end" {
			want = 4
		}
		if n != want {
			t.Errorf("%s: count %d, want %d", c.name, n, want)
		}
	}
	if devs := must[[]store.Device](t)(st.Devices(ctx, store.DeviceFilter{})); devs == nil {
		t.Error("Devices returns nil instead of an empty or full list")
	}
}

func testCreateUpdateDevice(t *testing.T, st store.Store) {
	d, err := st.CreateDevice(ctx, store.Device{MAC: "02-00-00-00-00-10", Name: "pc-10", AssetTag: "T10", Notes: "desk 3"})
	ok(t, err)
	if d.MAC != "02:00:00:00:00:10" || !d.Registered || d.Name != "pc-10" || d.Notes != "desk 3" || d.FirstSeen.IsZero() || d.ID == 0 {
		t.Fatalf("created device = %+v", d)
	}
	_, err = st.CreateDevice(ctx, store.Device{MAC: "02:00:00:00:00:10"})
	is(t, err, store.ErrConflict, "02:00:00:00:00:10")
	_, err = st.CreateDevice(ctx, store.Device{MAC: "02:00:00:00:00:11", Name: "pc-10"})
	is(t, err, store.ErrConflict, "pc-10")
	if _, err := st.Device(ctx, "02:00:00:00:00:11"); err == nil {
		t.Fatal("a refused device was stored")
	}
	// Empty names do not collide.
	must[store.Device](t)(st.CreateDevice(ctx, store.Device{MAC: "02:00:00:00:00:12"}))
	must[store.Device](t)(st.CreateDevice(ctx, store.Device{MAC: "02:00:00:00:00:13"}))
	_, err = st.CreateDevice(ctx, store.Device{MAC: "zz"})
	is(t, err, store.ErrInvalid)

	seen(t, st, "02:00:00:00:00:14")
	d, err = st.UpdateDevice(ctx, "02:00:00:00:00:14", func(d *store.Device) error {
		d.Name, d.AssetTag, d.Notes, d.Registered = "pc-14", "T14", "n", true
		return nil
	})
	ok(t, err)
	if d.Name != "pc-14" || d.AssetTag != "T14" || d.Notes != "n" || !d.Registered {
		t.Fatalf("updated device = %+v", d)
	}
	if got := must[store.Device](t)(st.Device(ctx, "02:00:00:00:00:14")); got.Name != "pc-14" || !got.Registered {
		t.Fatalf("stored device = %+v", got)
	}
	_, err = st.UpdateDevice(ctx, "02:00:00:00:00:14", func(d *store.Device) error { d.Name = "pc-10"; return nil })
	is(t, err, store.ErrConflict, "pc-10")
	_, err = st.UpdateDevice(ctx, "02:00:00:00:00:99", func(d *store.Device) error { return nil })
	is(t, err, store.ErrNotFound)
	boom := fmt.Errorf("boom")
	_, err = st.UpdateDevice(ctx, "02:00:00:00:00:14", func(d *store.Device) error { d.Name = "x"; return boom })
	is(t, err, boom)
	if got := must[store.Device](t)(st.Device(ctx, "02:00:00:00:00:14")); got.Name != "pc-14" {
		t.Fatalf("a failed update changed the device: %+v", got)
	}
}

func testDeleteDevice(t *testing.T, st store.Store) {
	mac := "02:00:00:00:00:20"
	seen(t, st, mac)
	b := bundle(t, st, "inv", store.KindInventory)
	g := group(t, st, "g")
	ok(t, st.AddMember(ctx, g.Name, mac))
	a := must[store.Assignment](t)(st.CreateAssignment(ctx, store.Assignment{BundleID: b.ID, MAC: mac}))
	ok(t, st.SetMenu(ctx, store.ScopeDevice, mac, store.Menu{Mode: "always"}))
	j := must[store.Job](t)(st.CreateJob(ctx, store.Job{MAC: mac, Kind: store.KindInventory, TokenHash: "h20"}))
	must[store.Event](t)(st.AddEvent(ctx, store.Event{MAC: mac, Kind: store.EventBoot}))

	v := version(t, st)
	ok(t, st.DeleteDevice(ctx, mac))
	if version(t, st) <= v {
		t.Error("deleting a device with an assignment did not change the policy version")
	}
	_, err := st.Device(ctx, mac)
	is(t, err, store.ErrNotFound)
	_, err = st.Assignment(ctx, a.ID)
	is(t, err, store.ErrNotFound)
	if g := must[store.Group](t)(st.Group(ctx, "g")); g.Members != 0 {
		t.Errorf("group still counts %d members", g.Members)
	}
	_, err = st.Menu(ctx, store.ScopeDevice, mac)
	is(t, err, store.ErrNotFound)
	if _, err := st.Job(ctx, j.ID); err != nil {
		t.Errorf("the device's job went with it: %v", err)
	}
	if evs := must[[]store.Event](t)(st.Events(ctx, store.EventFilter{MAC: mac})); len(evs) != 1 {
		t.Errorf("the device's events went with it: %d left", len(evs))
	}
	err = st.DeleteDevice(ctx, mac)
	is(t, err, store.ErrNotFound)

	// A device nothing refers to leaves the policy version alone.
	seen(t, st, "02:00:00:00:00:21")
	v = version(t, st)
	ok(t, st.DeleteDevice(ctx, "02-00-00-00-00-21"))
	if version(t, st) != v {
		t.Error("deleting a plain device changed the policy version")
	}
	// Deleted and seen again: a new device.
	_, created, err := st.SeeDevice(ctx, store.Sighting{MAC: mac})
	if err != nil || !created {
		t.Fatalf("sighting after delete: created=%v %v", created, err)
	}
}

func testDeviceInfoAndApplied(t *testing.T, st store.Store) {
	mac := "02:00:00:00:00:30"
	seen(t, st, mac)
	info := json.RawMessage(`{"disks":[{"name":"sda","size":128000000000}]}`)
	ok(t, st.SetDeviceInfo(ctx, mac, info, 8<<30, 128e9))
	d := must[store.Device](t)(st.Device(ctx, mac))
	if string(d.Info) != string(info) || d.RAMBytes != 8<<30 || d.DiskBytes != 128e9 || d.Applied != nil {
		t.Fatalf("device = %+v", d)
	}
	is(t, st.SetDeviceInfo(ctx, "02:00:00:00:00:39", info, 1, 1), store.ErrNotFound)
	is(t, st.SetDeviceInfo(ctx, mac, json.RawMessage(`{`), 1, 1), store.ErrInvalid)

	at := time.Date(2026, 4, 5, 6, 7, 8, 9000, time.UTC)
	a := store.Applied{BundleID: 3, Bundle: "win11", BundleVersion: 4, AssignmentID: 7, Job: 9, Time: at}
	ok(t, st.SetApplied(ctx, mac, a))
	d = must[store.Device](t)(st.Device(ctx, mac))
	if d.Applied == nil || *d.Applied != a {
		t.Fatalf("applied = %+v, want %+v", d.Applied, a)
	}
	devs := must[[]store.Device](t)(st.Devices(ctx, store.DeviceFilter{}))
	if len(devs) != 1 || devs[0].Applied == nil || *devs[0].Applied != a || devs[0].RAMBytes != 8<<30 {
		t.Fatalf("listed device = %+v", devs)
	}
	ok(t, st.SetApplied(ctx, mac, store.Applied{}))
	if d = must[store.Device](t)(st.Device(ctx, mac)); d.Applied != nil {
		t.Fatalf("cleared applied = %+v", d.Applied)
	}
	is(t, st.SetApplied(ctx, "02:00:00:00:00:39", a), store.ErrNotFound)
}

// One boot sights a device several times within seconds: a sighting with
// nothing new less than 30 s after the last one is not written, anything
// new is.
func testSeeDeviceWritesOnlyNews(t *testing.T, st store.Store) {
	t0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	mac := "52:54:00:0e:0e:01"
	if _, created, err := st.SeeDevice(ctx, store.Sighting{MAC: mac, IP: "10.0.0.5", Serial: "S", Time: t0}); err != nil || !created {
		t.Fatalf("first: %v %v", created, err)
	}
	d, created, err := st.SeeDevice(ctx, store.Sighting{MAC: mac, IP: "10.0.0.5", Time: t0.Add(10 * time.Second)})
	if err != nil || created || !d.LastSeen.Equal(t0) || d.Serial != "S" || d.MAC != mac {
		t.Fatalf("same sighting 10 s later: created=%v err=%v %+v", created, err, d)
	}
	d, _, err = st.SeeDevice(ctx, store.Sighting{MAC: mac, IP: "10.0.0.6", Time: t0.Add(20 * time.Second)})
	if err != nil || d.IP != "10.0.0.6" || !d.LastSeen.Equal(t0.Add(20*time.Second)) {
		t.Fatalf("new IP: %v %+v", err, d)
	}
	d, _, err = st.SeeDevice(ctx, store.Sighting{MAC: mac, Arch: "bios", FillOnly: true, Time: t0.Add(21 * time.Second)})
	if err != nil || d.Arch != "bios" {
		t.Fatalf("fill-only news: %v %+v", err, d)
	}
	d, _, err = st.SeeDevice(ctx, store.Sighting{MAC: mac, IP: "10.0.0.6", Time: t0.Add(2 * time.Minute)})
	if err != nil || !d.LastSeen.Equal(t0.Add(2*time.Minute)) {
		t.Fatalf("same sighting 2 min later: %v %+v", err, d)
	}
}
