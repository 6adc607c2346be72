// Package storetest is the conformance suite of store.Store: every
// implementation (SQLite, PostgreSQL) runs the same tests.
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) store.Store { ... a fresh, empty store ... })
//	}
package storetest

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/preboot/preboot/store"
)

// Opener returns a fresh, empty store for one test; it registers closing
// the store with t.Cleanup.
type Opener func(t *testing.T) store.Store

// Run runs every conformance test against stores made by open.
func Run(t *testing.T, open Opener) {
	tests := []struct {
		name string
		fn   func(t *testing.T, st store.Store)
	}{
		{"SeeDevice", testSeeDevice},
		{"SeeDeviceWritesOnlyNews", testSeeDeviceWritesOnlyNews},
		{"EventsAndDeviceList", testEventsAndDeviceList},
		{"EventFilters", testEventFilters},
		{"DeviceFilters", testDeviceFilters},
		{"CreateUpdateDevice", testCreateUpdateDevice},
		{"DeleteDevice", testDeleteDevice},
		{"DeviceInfoAndApplied", testDeviceInfoAndApplied},
		{"Bundles", testBundles},
		{"BundleReferences", testBundleReferences},
		{"Groups", testGroups},
		{"Members", testMembers},
		{"DeleteGroup", testDeleteGroup},
		{"Assignments", testAssignments},
		{"Rules", testRules},
		{"MenusAndSettings", testMenusAndSettings},
		{"PolicyVersion", testPolicyVersion},
		{"PolicyChanges", testPolicyChanges},
		{"Tokens", testTokens},
		{"TokenScopes", testTokenScopes},
		{"Sites", testSites},
		{"Jobs", testJobs},
		{"JobLog", testJobLog},
		{"JobTiming", testJobTiming},
		{"Users", testUsers},
		{"Sessions", testSessions},
		{"Counts", testCounts},
		{"Prune", testPrune},
		{"NothingHalfWritten", testNothingHalfWritten},
		{"ConcurrentSightings", testConcurrentSightings},
		{"ConcurrentJobUpdates", testConcurrentJobUpdates},
		{"ConcurrentPolicyChanges", testConcurrentPolicyChanges},
		{"ConcurrentAssignments", testConcurrentAssignments},
		{"Leases", testLeases},
		{"LeaseGaps", testLeaseGaps},
		{"ConcurrentLeases", testConcurrentLeases},
		{"Leases6", testLeases6},
		{"ConcurrentLeases6", testConcurrentLeases6},
		{"Schedules", testSchedules},
		{"ConcurrentWakeClaims", testConcurrentWakeClaims},
		{"Register", testRegister},
		{"RegisterAtomic", testRegisterAtomic},
		{"RegisterJob", testRegisterJob},
		{"EventBuffer", testEventBuffer},
		{"ConcurrentWrites", testConcurrentWrites},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, open(t))
		})
	}
}

var ctx = context.Background()

// is fails t unless err wraps want and mentions each of words.
func is(t *testing.T, err, want error, words ...string) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("error %v: want one wrapping %q", err, want)
	}
	for _, w := range words {
		if !strings.Contains(err.Error(), w) {
			t.Fatalf("error %q does not mention %q", err, w)
		}
	}
}

func ok(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func must[T any](t *testing.T) func(v T, err error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func seen(t *testing.T, st store.Store, mac string) store.Device {
	t.Helper()
	d, _, err := st.SeeDevice(ctx, store.Sighting{MAC: mac})
	ok(t, err)
	return d
}

func bundle(t *testing.T, st store.Store, name, kind string) store.Bundle {
	t.Helper()
	params := `{}`
	switch kind {
	case store.KindImageRestore, store.KindImageCapture:
		params = `{"image":"img-` + name + `"}`
	}
	return must[store.Bundle](t)(st.CreateBundle(ctx, store.Bundle{Name: name, Kind: kind, Params: []byte(params)}))
}

func group(t *testing.T, st store.Store, name string) store.Group {
	t.Helper()
	return must[store.Group](t)(st.CreateGroup(ctx, store.Group{Name: name}))
}

func version(t *testing.T, st store.Store) int64 {
	t.Helper()
	return must[int64](t)(st.PolicyVersion(ctx))
}

func names[T any](list []T, name func(T) string) string {
	var out []string
	for _, v := range list {
		out = append(out, name(v))
	}
	return strings.Join(out, ",")
}
