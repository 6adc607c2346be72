package sqlite

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/preboot/preboot/store"
)

func open(t *testing.T) *Store {
	t.Helper()
	st, err := Open(context.Background(), filepath.Join(t.TempDir(), "preboot.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func TestSeeDeviceRegistersThenKeepsKnownValues(t *testing.T) {
	ctx := context.Background()
	st := open(t)
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	d, created, err := st.SeeDevice(ctx, store.Sighting{MAC: "52-54-00-AA-BB-CC", Manufacturer: "QEMU", Product: "Standard PC", Serial: "S1", Arch: "bios", Time: t0})
	if err != nil || !created {
		t.Fatalf("first sighting: created=%v err=%v", created, err)
	}
	if d.MAC != "52:54:00:aa:bb:cc" || !d.FirstSeen.Equal(t0) {
		t.Fatalf("device = %+v", d)
	}
	// A DHCP sighting knows less: it must not erase, and FillOnly must not overwrite.
	d, created, err = st.SeeDevice(ctx, store.Sighting{MAC: "52:54:00:aa:bb:cc", Arch: "efi-x64", UUID: "u-1", Time: t0.Add(time.Minute), FillOnly: true})
	if err != nil || created {
		t.Fatalf("second sighting: created=%v err=%v", created, err)
	}
	if d.Manufacturer != "QEMU" || d.Serial != "S1" || d.Arch != "bios" || d.UUID != "u-1" {
		t.Fatalf("FillOnly sighting changed known values or missed empty ones: %+v", d)
	}
	if !d.LastSeen.Equal(t0.Add(time.Minute)) || !d.FirstSeen.Equal(t0) {
		t.Fatalf("times: first %v last %v", d.FirstSeen, d.LastSeen)
	}
	d, _, err = st.SeeDevice(ctx, store.Sighting{MAC: "5254.00aa.bbcc", Product: "Other", Time: t0.Add(-time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if d.Product != "Other" || !d.LastSeen.Equal(t0.Add(time.Minute)) {
		t.Fatalf("full sighting: %+v", d)
	}
	if _, _, err := st.SeeDevice(ctx, store.Sighting{MAC: "not-a-mac"}); err == nil {
		t.Fatal("bad MAC accepted")
	}
}

func TestEventsAndDeviceList(t *testing.T) {
	ctx := context.Background()
	st := open(t)
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i, mac := range []string{"00:00:00:00:00:01", "00:00:00:00:00:02"} {
		if _, _, err := st.SeeDevice(ctx, store.Sighting{MAC: mac, Time: base.Add(time.Duration(i) * time.Hour)}); err != nil {
			t.Fatal(err)
		}
		for j := 0; j < 3; j++ {
			if err := st.AddEvent(ctx, store.Event{MAC: mac, Time: base.Add(time.Duration(j) * time.Minute), Kind: store.EventBoot, Message: mac}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := st.AddEvent(ctx, store.Event{MAC: "00:00:00:00:00:01", Time: base.Add(time.Hour), Kind: store.EventLocalBoot, Message: "last"}); err != nil {
		t.Fatal(err)
	}
	devs, err := st.Devices(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(devs) != 2 || devs[0].MAC != "00:00:00:00:00:02" {
		t.Fatalf("devices not newest first: %+v", devs)
	}
	if devs[1].LastEvent == nil || devs[1].LastEvent.Kind != store.EventLocalBoot {
		t.Fatalf("last event of device 1: %+v", devs[1].LastEvent)
	}
	evs, err := st.Events(ctx, store.EventFilter{MAC: "00-00-00-00-00-01", Kind: store.EventBoot, Limit: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2 || !evs[0].Time.After(evs[1].Time) {
		t.Fatalf("filtered events: %+v", evs)
	}
	evs, err = st.Events(ctx, store.EventFilter{Since: base.Add(2 * time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 3 {
		t.Fatalf("since filter: got %d events, want 3", len(evs))
	}
	d, err := st.Device(ctx, "00:00:00:00:00:01")
	if err != nil || d.LastEvent == nil || d.LastEvent.Message != "last" {
		t.Fatalf("device with last event: %+v, %v", d, err)
	}
	if _, err := st.Device(ctx, "00:00:00:00:00:09"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown device: %v", err)
	}
}

func TestWork(t *testing.T) {
	ctx := context.Background()
	st := open(t)
	mac := "aa:bb:cc:dd:ee:ff"
	if _, err := st.Work(ctx, mac); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("no work yet: %v", err)
	}
	w := store.Work{MAC: mac, Kernel: "boot/kernel", Initrd: []string{"boot/a", "boot/b"}, Cmdline: "console=ttyS0", Once: true}
	if err := st.SetWork(ctx, w); err != nil {
		t.Fatal(err)
	}
	// SetWork registers an unknown device.
	if _, err := st.Device(ctx, mac); err != nil {
		t.Fatalf("device not registered by SetWork: %v", err)
	}
	got, err := st.Work(ctx, mac)
	if err != nil {
		t.Fatal(err)
	}
	if got.Kernel != w.Kernel || len(got.Initrd) != 2 || got.Initrd[1] != "boot/b" || !got.Once || got.Loader != store.LoaderIPXE {
		t.Fatalf("work = %+v", got)
	}
	w.Loader, w.Initrd = store.LoaderPXELinux, nil
	if err := st.SetWork(ctx, w); err != nil {
		t.Fatal(err)
	}
	if got, _ = st.Work(ctx, mac); got.Loader != store.LoaderPXELinux || len(got.Initrd) != 0 {
		t.Fatalf("replaced work = %+v", got)
	}
	if err := st.ClearWork(ctx, mac); err != nil {
		t.Fatal(err)
	}
	if err := st.ClearWork(ctx, mac); err != nil {
		t.Fatalf("clearing nothing: %v", err)
	}
	if _, err := st.Work(ctx, mac); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("work after clear: %v", err)
	}
}

func TestConcurrentSightingsAndReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "preboot.db")
	st, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for j := 0; j < 8; j++ {
				if _, _, err := st.SeeDevice(ctx, store.Sighting{MAC: "02:00:00:00:00:0" + string(rune('0'+i))}); err != nil {
					errs <- err
				}
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	st.Close()
	// Reopening runs the migrations again: they must be idempotent.
	st, err = Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	devs, err := st.Devices(ctx)
	if err != nil || len(devs) != 8 {
		t.Fatalf("after reopen: %d devices, %v", len(devs), err)
	}
}
