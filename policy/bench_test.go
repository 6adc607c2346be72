package policy_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/preboot/preboot/bench/policy/fleet"
	"github.com/preboot/preboot/policy"
	"github.com/preboot/preboot/store"
	"github.com/preboot/preboot/store/sqlstore"
)

// benchFleet is a settled small fleet (1,000 devices, 50 rules, 100
// groups) on SQLite; bench/policy runs the full-size benchmark.
func benchFleet(b *testing.B) (*policy.Engine, *fleet.Fleet, []store.Device) {
	b.Helper()
	ctx := context.Background()
	dir := b.TempDir()
	st, err := sqlstore.OpenSQLite(ctx, filepath.Join(dir, "bench.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	e, err := fleet.Engine(st, filepath.Join(dir, "tftp"))
	if err != nil {
		b.Fatal(err)
	}
	c := fleet.Small()
	f, err := fleet.Populate(ctx, st, c, nil)
	if err != nil {
		b.Fatal(err)
	}
	if err := fleet.Settle(ctx, e, f, c); err != nil {
		b.Fatal(err)
	}
	devs := make([]store.Device, len(f.Requests))
	for i, s := range f.Requests {
		if devs[i], err = st.Device(ctx, s.MAC); err != nil {
			b.Fatal(err)
		}
	}
	return e, f, devs
}

// BenchmarkDecide is the read path of a boot decision: policy version,
// the device's static groups, the cached groups, rules and assignments.
func BenchmarkDecide(b *testing.B) {
	e, _, devs := benchFleet(b)
	ctx := context.Background()
	i := 0
	for b.Loop() {
		if _, err := e.Decide(ctx, devs[i%len(devs)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkScript is a device's boot request as the HTTP handler runs
// it: sighting, boot event, decision and what it writes.
func BenchmarkScript(b *testing.B) {
	e, f, _ := benchFleet(b)
	ctx := context.Background()
	i := 0
	for b.Loop() {
		s := f.Requests[i%len(f.Requests)]
		s.Time = time.Now()
		if _, err := e.Script(ctx, "http://10.0.0.1:8080", s.MAC, "", "", s); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkRegister is the first boot request of a new device that a
// rule registers: it is named, joins a group, gets its bundle assigned
// once and a job, and the next decision follows those changes.
func BenchmarkRegister(b *testing.B) {
	e, _, _ := benchFleet(b)
	ctx := context.Background()
	i := 0
	for b.Loop() {
		s := fleet.NewDevice(i, time.Now())
		if _, err := e.Script(ctx, "http://10.0.0.1:8080", s.MAC, "", "", s); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
