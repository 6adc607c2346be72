package fleet

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/preboot/preboot/policy"
	"github.com/preboot/preboot/store"
	"github.com/preboot/preboot/store/sqlstore"
)

// TestFleet: a small fleet populates and settles, every decision source
// the benchmark means to exercise occurs, stored unregistered devices
// walk all the rules without a match, and a new VM is registered by the
// registration rule.
func TestFleet(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := sqlstore.OpenSQLite(ctx, filepath.Join(dir, "f.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	e, err := Engine(st, filepath.Join(dir, "tftp"))
	if err != nil {
		t.Fatal(err)
	}
	c := Small()
	c.Devices, c.Rules, c.Groups, c.GroupAssignments = 300, 40, 40, 12
	f, err := Populate(ctx, st, c, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Requests) != c.Devices || f.Bundles != 5*len(store.BundleKinds) || f.DynamicGroups != 4 ||
		f.RulesEnabled+f.RulesDisabled != c.Rules || f.DeviceAssignments != 30 || f.GroupAssignments != 12 {
		t.Fatalf("fleet: %+v", f)
	}
	if err := Settle(ctx, e, f, c); err != nil {
		t.Fatal(err)
	}
	sources := map[string]int{}
	unregistered := 0
	for i, s := range f.Requests {
		dev, err := st.Device(ctx, s.MAC)
		if err != nil {
			t.Fatal(err)
		}
		if dev.Registered != f.Registered[i] {
			t.Errorf("%s: registered %v after settling, want %v (no stored device matches a rule)", s.MAC, dev.Registered, f.Registered[i])
		}
		d, err := e.Decide(ctx, dev)
		if err != nil {
			t.Fatal(err)
		}
		src, _, _ := strings.Cut(d.Source, ":")
		sources[src]++
		if !dev.Registered {
			unregistered++
			if src == "rule" {
				t.Errorf("%s: matched %s", s.MAC, d.Source)
			}
		}
	}
	for _, src := range []string{"device", "group", "none", "unregistered-default"} {
		if sources[src] == 0 {
			t.Errorf("no decision from %s: %v", src, sources)
		}
	}
	if unregistered < c.Devices/10 || unregistered > c.Devices*3/10 {
		t.Errorf("%d unregistered devices of %d, want about 20 %%", unregistered, c.Devices)
	}

	s := NewDevice(0, time.Now())
	script, err := e.Script(ctx, "http://10.0.0.1:8080", s.MAC, "", "", s)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(script, "preboot.job=") {
		t.Errorf("new VM's script starts no job:\n%s", script)
	}
	dev, err := st.Device(ctx, s.MAC)
	if err != nil {
		t.Fatal(err)
	}
	if !dev.Registered {
		t.Error("new VM not registered by the rule")
	}
	d, err := e.Decide(ctx, dev)
	if err != nil {
		t.Fatal(err)
	}
	if d.Source != "device" || d.Action != policy.ActionBundle || d.Bundle.Name != "inventory-1" {
		t.Errorf("new VM's next decision: %s %s %+v", d.Source, d.Action, d.Bundle)
	}
}
