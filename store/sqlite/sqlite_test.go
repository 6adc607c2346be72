package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/pressly/goose/v3"

	"github.com/preboot/preboot/bundle"
	"github.com/preboot/preboot/store"
	"github.com/preboot/preboot/store/sqlstore"
	"github.com/preboot/preboot/store/storetest"
)

func open(t *testing.T) store.Store {
	t.Helper()
	st, err := Open(context.Background(), filepath.Join(t.TempDir(), "preboot.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func TestConformance(t *testing.T) {
	storetest.Run(t, open)
}

func TestConcurrentSightingsAndReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "preboot.db")
	st, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 64)
	done := make(chan struct{})
	for i := 0; i < 8; i++ {
		go func(i int) {
			defer func() { done <- struct{}{} }()
			for j := 0; j < 8; j++ {
				if _, _, err := st.SeeDevice(ctx, store.Sighting{MAC: fmt.Sprintf("02:00:00:00:00:0%d", i)}); err != nil {
					errs <- err
				}
			}
		}(i)
	}
	for i := 0; i < 8; i++ {
		<-done
	}
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if _, err := st.CreateBundle(ctx, store.Bundle{Name: "inv", Kind: store.KindInventory}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	// Reopening runs the migrations again: they must be idempotent.
	st, err = Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	devs, err := st.Devices(ctx, store.DeviceFilter{})
	if err != nil || len(devs) != 8 {
		t.Fatalf("after reopen: %d devices, %v", len(devs), err)
	}
	if _, err := st.Bundle(ctx, "inv"); err != nil {
		t.Fatalf("after reopen: %v", err)
	}
}

func TestOpenByDriver(t *testing.T) {
	ctx := context.Background()
	st, err := sqlstore.Open(ctx, "sqlite", filepath.Join(t.TempDir(), "x.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if st.Driver() != "sqlite" {
		t.Fatalf("driver = %q", st.Driver())
	}
	if _, err := sqlstore.Open(ctx, "oracle", "x"); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("unknown driver: %v", err)
	}
	if _, err := Open(ctx, ""); err == nil {
		t.Fatal("empty path accepted")
	}
}

// TestMigrateWorkToBundles creates a database at schema version 2 (the
// per-device work table), migrates it and checks that every work row
// became a bundle and a device assignment, then migrates back down.
func TestMigrateWorkToBundles(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "old.db")
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=foreign_keys(1)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	migrations, err := sqlstore.MigrationFS("sqlite")
	if err != nil {
		t.Fatal(err)
	}
	p, err := goose.NewProvider(goose.DialectSQLite3, db, migrations, goose.WithDisableGlobalRegistry(true))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.UpTo(ctx, 2); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`INSERT INTO devices (mac, name, first_seen, last_seen) VALUES
			('52:54:00:00:00:01', 'boot-once', 1, 2), ('52:54:00:00:00:02', 'capture', 1, 2),
			('52:54:00:00:00:03', 'restore', 1, 2), ('52:54:00:00:00:04', 'no-work', 1, 2),
			('52:54:00:00:00:05', 'boot-always', 1, 2), ('52:54:00:00:00:06', 'dup', 1, 2), ('52:54:00:00:00:07', 'dup', 1, 2)`,
		`INSERT INTO work (mac, kind, kernel, initrd, cmdline, loader, once, created_at) VALUES
			('52:54:00:00:00:01', 'boot', 'boot/vmlinuz', '["boot/a.img","boot/b.img"]', 'console=ttyS0', 'pxelinux', 1, 1000),
			('52:54:00:00:00:05', 'boot', 'http://x/k', '[]', '', 'ipxe', 0, 1001)`,
		`INSERT INTO work (mac, kind, kernel, image, compression, device, after, once, created_at) VALUES
			('52:54:00:00:00:02', 'capture', '', 'lab-golden', 9, '/dev/vda', 'poweroff', 0, 2000),
			('52:54:00:00:00:03', 'restore', '', 'lab-golden', 0, '', 'reboot', 0, 3000)`,
		`INSERT INTO events (mac, time, kind, message) VALUES ('52:54:00:00:00:01', 5, 'boot', 'old event')`,
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()

	st, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	bundles, err := st.Bundles(ctx, store.BundleFilter{})
	if err != nil {
		t.Fatal(err)
	}
	type want struct {
		kind   string
		params map[string]any
		once   bool
	}
	wants := map[string]want{
		"525400000001": {store.KindOSInstall, map[string]any{"kernel": "boot/vmlinuz", "initrd": []any{"boot/a.img", "boot/b.img"},
			"cmdline": "console=ttyS0", "loader": "pxelinux"}, true},
		"525400000005": {store.KindOSInstall, map[string]any{"kernel": "http://x/k", "initrd": []any{}, "cmdline": "", "loader": "ipxe"}, false},
		"525400000002": {store.KindImageCapture, map[string]any{"image": "lab-golden", "compression": 9.0, "device": "/dev/vda", "after": "poweroff"}, true},
		"525400000003": {store.KindImageRestore, map[string]any{"image": "lab-golden", "device": "", "after": "reboot"}, true},
	}
	if len(bundles) != len(wants) {
		t.Fatalf("%d bundles after migration: %+v", len(bundles), bundles)
	}
	for hex, w := range wants {
		name := "legacy-" + hex
		b, err := st.Bundle(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		var params map[string]any
		if err := json.Unmarshal(b.Params, &params); err != nil {
			t.Fatal(err)
		}
		if b.Kind != w.kind || !reflect.DeepEqual(params, w.params) || b.Version != 1 {
			t.Errorf("bundle %s = %s %s v%d, want %s %v", name, b.Kind, b.Params, b.Version, w.kind, w.params)
		}
		if _, err := bundle.Normalize(b.Kind, b.Params); err != nil {
			t.Errorf("bundle %s: converted params do not validate: %v", name, err)
		}
		mac := hex[0:2] + ":" + hex[2:4] + ":" + hex[4:6] + ":" + hex[6:8] + ":" + hex[8:10] + ":" + hex[10:12]
		as, err := st.Assignments(ctx, store.AssignmentFilter{MAC: mac})
		if err != nil {
			t.Fatal(err)
		}
		if len(as) != 1 || as[0].Bundle != name || as[0].BundleKind != w.kind || as[0].Once != w.once || as[0].Force {
			t.Errorf("assignment of %s = %+v", mac, as)
		}
		d, err := st.Device(ctx, mac)
		if err != nil || !d.Registered {
			t.Errorf("device %s with work not registered: %+v %v", mac, d, err)
		}
	}
	if b, _ := st.Bundles(ctx, store.BundleFilter{Image: "lab-golden"}); len(b) != 2 {
		t.Errorf("bundles reading or writing lab-golden: %+v", b)
	}
	d, err := st.Device(ctx, "52:54:00:00:00:04")
	if err != nil || d.Registered || d.Name != "no-work" {
		t.Errorf("device without work: %+v %v", d, err)
	}
	// Names become unique.
	d6, err6 := st.Device(ctx, "52:54:00:00:00:06")
	d7, err7 := st.Device(ctx, "52:54:00:00:00:07")
	if err6 != nil || err7 != nil || d6.Name != "dup" || d7.Name != fmt.Sprintf("dup-%d", d7.ID) {
		t.Errorf("duplicate names after migration: %q %q (%v %v)", d6.Name, d7.Name, err6, err7)
	}
	if d, _ := st.Device(ctx, "52:54:00:00:00:01"); d.LastEvent == nil || d.LastEvent.Message != "old event" {
		t.Errorf("old event lost: %+v", d.LastEvent)
	}
	st.Close()

	// Down to version 2: device assignments go back to work.
	db, err = sql.Open("sqlite", "file:"+path+"?_pragma=foreign_keys(1)")
	if err != nil {
		t.Fatal(err)
	}
	p, err = goose.NewProvider(goose.DialectSQLite3, db, migrations, goose.WithDisableGlobalRegistry(true))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.DownTo(ctx, 2); err != nil {
		t.Fatal(err)
	}
	var n int
	var kind, image, after string
	var once bool
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM work`).Scan(&n); err != nil || n != 4 {
		t.Fatalf("work rows after down: %d %v", n, err)
	}
	if err := db.QueryRowContext(ctx, `SELECT kind, image, after, once FROM work WHERE mac = '52:54:00:00:00:02'`).Scan(&kind, &image, &after, &once); err != nil ||
		kind != "capture" || image != "lab-golden" || after != "poweroff" || !once {
		t.Fatalf("capture work after down: %s %s %s %v %v", kind, image, after, once, err)
	}
}

// BenchmarkBootPath runs the store calls of one boot-policy decision
// against a store holding 10,000 devices, 1,000 groups and 500 rules.
func BenchmarkBootPath(b *testing.B) {
	ctx := context.Background()
	st, err := Open(ctx, filepath.Join(b.TempDir(), "bench.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	storetest.Populate(b, st, 10000, 1000, 500)
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		storetest.Decide(b, st, storetest.BenchMAC(i%10000))
	}
}
