package storetest

import (
	"encoding/json"
	"testing"

	"github.com/preboot/preboot/store"
)

// testJobTiming: a job keeps the time breakdown its agent last reported
// (opaque JSON), through create, update and listing; invalid JSON is
// refused and leaves the job as it was.
func testJobTiming(t *testing.T, st store.Store) {
	j := must[store.Job](t)(st.CreateJob(ctx, store.Job{MAC: "02:00:00:00:07:01", Kind: store.KindImageRestore, Image: "win11", TokenHash: "tok-t1"}))
	if len(j.Timing) != 0 {
		t.Fatalf("new job has a timing: %s", j.Timing)
	}
	if got := must[store.Job](t)(st.Job(ctx, j.ID)); len(got.Timing) != 0 {
		t.Fatalf("stored new job has a timing: %s", got.Timing)
	}
	tm := json.RawMessage(`{"elapsed_us":1000000,"stages":[{"name":"fetch","resource":"network","pool":"workers","workers":4,"busy_us":3900000,"count":9}],"shares":{"network":98,"cpu":0,"disk":0,"waiting":2},"bottleneck":"network","bottleneck_stage":"fetch","busy":98}`)
	u := must[store.Job](t)(st.UpdateJob(ctx, j.ID, func(j *store.Job) error {
		j.State, j.Phase, j.Timing = store.JobRunning, "restore", tm
		return nil
	}))
	same := func(what string, got json.RawMessage) {
		t.Helper()
		var a, b any
		if err := json.Unmarshal(got, &a); err != nil {
			t.Fatalf("%s: timing %q: %v", what, got, err)
		}
		_ = json.Unmarshal(tm, &b)
		if ga, _ := json.Marshal(a); string(ga) != func() string { gb, _ := json.Marshal(b); return string(gb) }() {
			t.Fatalf("%s: timing %s, want %s", what, got, tm)
		}
	}
	same("updated", u.Timing)
	same("stored", must[store.Job](t)(st.Job(ctx, j.ID)).Timing)
	same("by token", must[store.Job](t)(st.JobByToken(ctx, "tok-t1")).Timing)
	list := must[[]store.Job](t)(st.Jobs(ctx, store.JobFilter{MAC: "02:00:00:00:07:01"}))
	if len(list) != 1 {
		t.Fatalf("jobs = %+v", list)
	}
	same("listed", list[0].Timing)

	_, err := st.UpdateJob(ctx, j.ID, func(j *store.Job) error { j.Timing, j.Phase = json.RawMessage(`{"elapsed_us":`), "x"; return nil })
	is(t, err, store.ErrInvalid, "timing")
	if got := must[store.Job](t)(st.Job(ctx, j.ID)); got.Phase != "restore" {
		t.Fatalf("a refused update changed the job: %+v", got)
	}
	_, err = st.CreateJob(ctx, store.Job{MAC: "02:00:00:00:07:02", Kind: store.KindImageRestore, TokenHash: "tok-t2", Timing: json.RawMessage(`nope`)})
	is(t, err, store.ErrInvalid, "timing")

	// Created with a timing (an import, a copy): kept as given.
	c := must[store.Job](t)(st.CreateJob(ctx, store.Job{MAC: "02:00:00:00:07:03", Kind: store.KindImageCapture, TokenHash: "tok-t3", Timing: tm}))
	same("created", must[store.Job](t)(st.Job(ctx, c.ID)).Timing)
}
