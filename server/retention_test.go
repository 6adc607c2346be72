package server

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/preboot/preboot/config"
	"github.com/preboot/preboot/store"
	"github.com/preboot/preboot/store/sqlite"
)

// The retention settings prune old events and finished jobs; the defaults
// are 30 days, 90 days and a million events.
func TestRetention(t *testing.T) {
	d := config.Default().Retention
	if d.Events != 30*24*time.Hour || d.Jobs != 90*24*time.Hour || d.MaxEvents != 1_000_000 {
		t.Fatalf("default retention %+v", d)
	}
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	old := time.Now().Add(-31 * 24 * time.Hour)
	for _, tm := range []time.Time{old, old, time.Now()} {
		if _, err := st.AddEvent(ctx, store.Event{Kind: store.EventBoot, Time: tm}); err != nil {
			t.Fatal(err)
		}
	}
	j, err := st.CreateJob(ctx, store.Job{MAC: "02:00:00:00:0a:01", Kind: store.KindInventory, TokenHash: "r"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.UpdateJob(ctx, j.ID, func(j *store.Job) error {
		j.State, j.FinishedAt = store.JobSucceeded, time.Now().Add(-91*24*time.Hour)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	s, err := pruneOnce(ctx, st, d, slog.New(slog.DiscardHandler))
	if err != nil || s.Events != 2 || s.Jobs != 1 {
		t.Fatalf("prune: %+v %v", s, err)
	}
	// runRetention prunes at once, and stops with its context.
	if _, err := st.AddEvent(ctx, store.Event{Kind: store.EventBoot, Time: old}); err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- runRetention(rctx, st, d, slog.New(slog.DiscardHandler)) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		evs, err := st.Events(ctx, store.EventFilter{})
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("runRetention did not prune: %d events", len(evs))
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("runRetention did not stop")
	}
}
