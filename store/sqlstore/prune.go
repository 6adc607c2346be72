package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/preboot/preboot/store"
)

// pruneBatch is how many events (or jobs, a tenth of it) one DELETE
// removes: short transactions, so that boots writing events are not held
// up (SQLite has one writer).
const pruneBatch = 5000

// Prune implements store.Store.
func (s *Store) Prune(ctx context.Context, o store.PruneOptions) (store.PruneStats, error) {
	var st store.PruneStats
	if !o.EventsBefore.IsZero() {
		n, err := s.deleteBatches(ctx, `DELETE FROM events WHERE id IN (SELECT id FROM events WHERE time < ? ORDER BY id LIMIT ?)`,
			pruneBatch, micros(o.EventsBefore))
		st.Events += n
		if err != nil {
			return st, fmt.Errorf("prune events: %w", err)
		}
	}
	if o.MaxEvents > 0 {
		// Ids grow with every event: the newest MaxEvents are the highest.
		var keepFrom int64
		err := s.r().queryRow(ctx, `SELECT id FROM events ORDER BY id DESC LIMIT 1 OFFSET ?`, o.MaxEvents-1).Scan(&keepFrom)
		switch {
		case errors.Is(err, sql.ErrNoRows):
		case err != nil:
			return st, fmt.Errorf("prune events: %w", err)
		default:
			n, err := s.deleteBatches(ctx, `DELETE FROM events WHERE id IN (SELECT id FROM events WHERE id < ? ORDER BY id LIMIT ?)`,
				pruneBatch, keepFrom)
			st.Events += n
			if err != nil {
				return st, fmt.Errorf("prune events: %w", err)
			}
		}
	}
	if !o.JobsBefore.IsZero() {
		// job_log rows go with their job (ON DELETE CASCADE).
		n, err := s.deleteBatches(ctx, `DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE state IN (?, ?, ?) AND finished_at > 0 AND finished_at < ? ORDER BY id LIMIT ?)`,
			pruneBatch/10, store.JobSucceeded, store.JobFailed, store.JobCancelled, micros(o.JobsBefore))
		st.Jobs += n
		if err != nil {
			return st, fmt.Errorf("prune jobs: %w", err)
		}
	}
	if !o.DevicesUnseenBefore.IsZero() {
		n, err := s.deleteBatches(ctx, `DELETE FROM devices WHERE id IN (SELECT d.id FROM devices d WHERE d.registered = ? AND d.name = ''
			AND d.last_seen < ?
			AND NOT EXISTS (SELECT 1 FROM assignments a WHERE a.mac = d.mac)
			AND NOT EXISTS (SELECT 1 FROM group_members m WHERE m.mac = d.mac)
			AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.mac = d.mac)
			ORDER BY d.id LIMIT ?)`, pruneBatch/10, false, micros(o.DevicesUnseenBefore))
		st.Devices += n
		if err != nil {
			return st, fmt.Errorf("prune devices: %w", err)
		}
	}
	return st, nil
}

// deleteBatches runs q (whose last placeholder is the batch size) until it
// deletes fewer than batch rows, and returns how many it deleted.
func (s *Store) deleteBatches(ctx context.Context, q string, batch int, args ...any) (int64, error) {
	var total int64
	for {
		if err := ctx.Err(); err != nil {
			return total, err
		}
		n, err := s.r().affected(ctx, q, append(args, batch)...)
		total += n
		if err != nil {
			return total, err
		}
		if n < int64(batch) {
			return total, nil
		}
	}
}
