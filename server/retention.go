package server

import (
	"context"
	"log/slog"
	"time"

	"github.com/preboot/preboot/config"
	"github.com/preboot/preboot/store"
)

// RetentionEvery is how often the server prunes events and finished jobs.
const RetentionEvery = time.Hour

// pruneOptions turns the retention settings into what to delete now.
func pruneOptions(r config.Retention, now time.Time) store.PruneOptions {
	var o store.PruneOptions
	if r.Events > 0 {
		o.EventsBefore = now.Add(-r.Events)
	}
	if r.Jobs > 0 {
		o.JobsBefore = now.Add(-r.Jobs)
	}
	o.MaxEvents = r.MaxEvents
	if r.UnregisteredDevices > 0 {
		o.DevicesUnseenBefore = now.Add(-r.UnregisteredDevices)
	}
	return o
}

// pruneOnce applies the retention settings once.
func pruneOnce(ctx context.Context, st store.Store, r config.Retention, log *slog.Logger) (store.PruneStats, error) {
	start := time.Now()
	s, err := st.Prune(ctx, pruneOptions(r, start))
	if err != nil {
		if ctx.Err() == nil {
			log.Error("retention: pruning failed", "err", err, "events_deleted", s.Events, "jobs_deleted", s.Jobs, "devices_deleted", s.Devices)
		}
		return s, err
	}
	if s.Events > 0 || s.Jobs > 0 || s.Devices > 0 {
		log.Info("retention: pruned", "events_deleted", s.Events, "jobs_deleted", s.Jobs, "devices_deleted", s.Devices, "duration", time.Since(start))
	}
	return s, nil
}

// runRetention prunes at start and then every RetentionEvery until ctx
// ends. Several servers sharing a database may all do it: deletes of
// the same rows are harmless.
func runRetention(ctx context.Context, st store.Store, r config.Retention, log *slog.Logger) error {
	if r.Events <= 0 && r.Jobs <= 0 && r.MaxEvents <= 0 && r.UnregisteredDevices <= 0 {
		return nil
	}
	t := time.NewTicker(RetentionEvery)
	defer t.Stop()
	for {
		_, _ = pruneOnce(ctx, st, r, log)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
