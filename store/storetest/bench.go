package storetest

import (
	"fmt"
	"testing"

	"github.com/preboot/preboot/store"
)

// BenchMAC is the MAC of the i-th device Populate creates.
func BenchMAC(i int) string {
	return fmt.Sprintf("52:54:%02x:%02x:%02x:%02x", byte(i>>24), byte(i>>16), byte(i>>8), byte(i))
}

// Populate fills st with devices (each a static member of two groups),
// groups (every fourth with an assignment), rules and 50 bundles; one
// device in ten has an assignment of its own.
func Populate(tb testing.TB, st store.Store, devices, groups, rules int) {
	tb.Helper()
	const bundles = 50
	for i := 0; i < bundles; i++ {
		if _, err := st.CreateBundle(ctx, store.Bundle{Name: fmt.Sprint("bundle-", i), Kind: store.KindInventory}); err != nil {
			tb.Fatal(err)
		}
	}
	for i := 0; i < groups; i++ {
		if _, err := st.CreateGroup(ctx, store.Group{Name: fmt.Sprint("group-", i)}); err != nil {
			tb.Fatal(err)
		}
		if i%4 == 0 {
			if _, err := st.CreateAssignment(ctx, store.Assignment{Bundle: fmt.Sprint("bundle-", i%bundles), Group: fmt.Sprint("group-", i)}); err != nil {
				tb.Fatal(err)
			}
		}
	}
	for i := 0; i < rules; i++ {
		r := store.Rule{Name: fmt.Sprint("rule-", i), Enabled: true, Match: fmt.Sprintf(`serial == "S%d"`, i), Bundle: fmt.Sprint("bundle-", i%bundles)}
		if _, err := st.CreateRule(ctx, r); err != nil {
			tb.Fatal(err)
		}
	}
	for i := 0; i < devices; i++ {
		mac := BenchMAC(i)
		if _, _, err := st.SeeDevice(ctx, store.Sighting{MAC: mac, Serial: fmt.Sprint("S", i), Manufacturer: "QEMU", Product: "Standard PC"}); err != nil {
			tb.Fatal(err)
		}
		if groups > 0 {
			for _, g := range []int{i % groups, (i * 7) % groups} {
				if err := st.AddMember(ctx, fmt.Sprint("group-", g), mac); err != nil {
					tb.Fatal(err)
				}
			}
		}
		if i%10 == 0 {
			if _, err := st.CreateAssignment(ctx, store.Assignment{Bundle: fmt.Sprint("bundle-", i%bundles), MAC: mac}); err != nil {
				tb.Fatal(err)
			}
		}
	}
}

// Decide makes the store calls the boot policy makes for one boot: the
// sighting, the device, its groups, its assignment or else its groups'
// (by priority, until one has an assignment), the policy version (for
// its caches) and the boot event.
func Decide(tb testing.TB, st store.Store, mac string) {
	if _, _, err := st.SeeDevice(ctx, store.Sighting{MAC: mac, Arch: "efi-x64", Platform: "efi"}); err != nil {
		tb.Fatal(err)
	}
	if _, err := st.PolicyVersion(ctx); err != nil {
		tb.Fatal(err)
	}
	if _, err := st.Device(ctx, mac); err != nil {
		tb.Fatal(err)
	}
	gs, err := st.DeviceGroups(ctx, mac)
	if err != nil {
		tb.Fatal(err)
	}
	as, err := st.Assignments(ctx, store.AssignmentFilter{MAC: mac})
	if err != nil {
		tb.Fatal(err)
	}
	for _, g := range gs {
		if len(as) > 0 {
			break
		}
		if as, err = st.Assignments(ctx, store.AssignmentFilter{Group: g.Name}); err != nil {
			tb.Fatal(err)
		}
	}
	if _, err := st.AddEvent(ctx, store.Event{MAC: mac, Kind: store.EventBoot, Message: "decided"}); err != nil {
		tb.Fatal(err)
	}
}
