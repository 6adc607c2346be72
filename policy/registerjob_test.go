package policy

import (
	"context"
	"strings"
	"testing"

	"github.com/preboot/preboot/store"
)

// TestNewDeviceJobWithRegistration: a new device a rule registers into
// agent work gets its job in its registration's transaction — the
// request is one write (registration, assignment, job and its four
// events) — and the job is the one Start would have made: bound to the
// request's address, from the once assignment, its token working. A MAC
// whose earlier device left an open job behind goes through Start (the
// pending job is handed out again, not doubled).
func TestNewDeviceJobWithRegistration(t *testing.T) {
	ctx := context.Background()
	e := newEngine(t, "never")
	st := e.Store
	writeEnv(t, e)
	mkBundle(t, st, "inv", store.KindInventory, `{}`)
	if _, err := st.CreateGroup(ctx, store.Group{Name: "vms"}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateRule(ctx, store.Rule{Name: "vms", Match: `mac ^= "525400"`, Bundle: "inv", Group: "vms", Enabled: true}); err != nil {
		t.Fatal(err)
	}
	bs, ok := st.(interface{ BatchStats() (int64, int64) })
	if !ok {
		t.Fatalf("%T does not count its writes", st)
	}
	_, w0 := bs.BatchStats()
	body := get(t, e, first)
	if _, w1 := bs.BatchStats(); w1-w0 != 1 {
		t.Fatalf("a new device's request wrote %d times, want once (its registration with its job and events)", w1-w0)
	}
	mustContain(t, body, "job 1: inventory inv", "preboot.job=1", "preboot.ip=10.0.0.50")
	as, _ := st.Assignments(ctx, store.AssignmentFilter{MAC: mac})
	if len(as) != 1 || !as[0].Once {
		t.Fatalf("assignments %+v", as)
	}
	j, err := e.Jobs.Authenticate(ctx, tokenIn(t, body), "10.0.0.50:999")
	if err != nil {
		t.Fatal(err)
	}
	if j.ID != 1 || j.AssignmentID != as[0].ID || j.ClientIP != "10.0.0.50" || j.Boots != 1 || j.State != store.JobPending {
		t.Fatalf("job %+v: want job 1 of assignment %d handed to 10.0.0.50", j, as[0].ID)
	}
	es, _ := st.Events(ctx, store.EventFilter{MAC: mac, AfterID: -1})
	var kinds []string
	for _, ev := range es {
		kinds = append(kinds, ev.Kind)
	}
	if got := strings.Join(kinds, ","); got != "boot,policy,job,work" {
		t.Fatalf("events %s: want boot,policy,job,work", got)
	}
	if es[2].Job != 1 || es[3].Job != 1 || !strings.Contains(es[2].Message, "job 1 created") || !strings.Contains(es[3].Message, "imaging environment (job 1, rule:vms)") {
		t.Fatalf("job events %+v", es[2:])
	}

	// The device is forgotten while its job is pending, and boots again:
	// a new device whose MAC has an open job. Its registration creates
	// no job; Start hands the pending one out again.
	if err := st.DeleteDevice(ctx, mac); err != nil {
		t.Fatal(err)
	}
	again := get(t, e, first)
	mustContain(t, again, "job 1: inventory inv")
	if js, _ := st.Jobs(ctx, store.JobFilter{MAC: mac}); len(js) != 1 || js[0].Boots != 2 {
		t.Fatalf("jobs %+v: want job 1 handed out twice", js)
	}
	if _, err := e.Jobs.Authenticate(ctx, tokenIn(t, body), "10.0.0.50:999"); err == nil {
		t.Fatal("the first token still works")
	}
	if d, _ := st.Device(ctx, mac); !d.Registered {
		t.Fatalf("device %+v: not registered again", d)
	}
}
