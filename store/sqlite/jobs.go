package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/preboot/preboot/store"
)

const jobCols = `id, mac, kind, image, device, after, compression, state, phase, bytes_done, bytes_total, rate, message, error,
	token_hash, created_at, started_at, updated_at, finished_at`

func scanJob(r scanner) (store.Job, error) {
	var j store.Job
	var created, started, updated, finished int64
	err := r.Scan(&j.ID, &j.MAC, &j.Kind, &j.Image, &j.Device, &j.After, &j.Compression, &j.State, &j.Phase, &j.BytesDone,
		&j.BytesTotal, &j.Rate, &j.Message, &j.Error, &j.TokenHash, &created, &started, &updated, &finished)
	j.CreatedAt, j.UpdatedAt = fromUnix(created), fromUnix(updated)
	if started != 0 {
		j.StartedAt = fromUnix(started)
	}
	if finished != 0 {
		j.FinishedAt = fromUnix(finished)
	}
	return j, err
}

func optUnix(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return unix(t)
}

// CreateJob implements store.Store.
func (s *Store) CreateJob(ctx context.Context, j store.Job) (store.Job, error) {
	mac, err := store.NormalizeMAC(j.MAC)
	if err != nil {
		return store.Job{}, err
	}
	j.MAC = mac
	now := time.Now()
	if j.CreatedAt.IsZero() {
		j.CreatedAt = now
	}
	j.UpdatedAt = j.CreatedAt
	if j.State == "" {
		j.State = store.JobPending
	}
	if j.TokenHash == "" {
		return store.Job{}, errors.New("create job: a token hash is required")
	}
	res, err := s.db.ExecContext(ctx, `INSERT INTO jobs (mac, kind, image, device, after, compression, state, phase, message, token_hash, created_at, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		j.MAC, j.Kind, j.Image, j.Device, j.After, j.Compression, j.State, j.Phase, j.Message, j.TokenHash, unix(j.CreatedAt), unix(j.UpdatedAt))
	if err != nil {
		return store.Job{}, fmt.Errorf("create job for %s: %w", mac, err)
	}
	if j.ID, err = res.LastInsertId(); err != nil {
		return store.Job{}, fmt.Errorf("create job for %s: %w", mac, err)
	}
	return j, nil
}

func (s *Store) jobWhere(ctx context.Context, q scannerQuery, where string, arg any) (store.Job, error) {
	j, err := scanJob(q.QueryRowContext(ctx, `SELECT `+jobCols+` FROM jobs WHERE `+where, arg))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Job{}, fmt.Errorf("job: %w", store.ErrNotFound)
	}
	if err != nil {
		return store.Job{}, fmt.Errorf("job: %w", err)
	}
	return j, nil
}

type scannerQuery interface {
	QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row
}

// Job implements store.Store.
func (s *Store) Job(ctx context.Context, id int64) (store.Job, error) {
	return s.jobWhere(ctx, s.db, "id = ?", id)
}

// JobByToken implements store.Store.
func (s *Store) JobByToken(ctx context.Context, tokenHash string) (store.Job, error) {
	if tokenHash == "" {
		return store.Job{}, fmt.Errorf("job: %w", store.ErrNotFound)
	}
	return s.jobWhere(ctx, s.db, "token_hash = ?", tokenHash)
}

// Jobs implements store.Store; newest first.
func (s *Store) Jobs(ctx context.Context, f store.JobFilter) ([]store.Job, error) {
	q := `SELECT ` + jobCols + ` FROM jobs WHERE 1=1`
	var args []any
	if f.MAC != "" {
		mac, err := store.NormalizeMAC(f.MAC)
		if err != nil {
			return nil, err
		}
		q += ` AND mac = ?`
		args = append(args, mac)
	}
	if f.State != "" {
		q += ` AND state = ?`
		args = append(args, f.State)
	}
	if f.Open {
		q += ` AND state NOT IN ('succeeded', 'failed', 'cancelled')`
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	q += ` ORDER BY id DESC LIMIT ?`
	args = append(args, limit)
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	defer rows.Close()
	var out []store.Job
	for rows.Next() {
		j, err := scanJob(rows)
		if err != nil {
			return nil, fmt.Errorf("list jobs: %w", err)
		}
		out = append(out, j)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	return out, nil
}

// UpdateJob implements store.Store.
func (s *Store) UpdateJob(ctx context.Context, id int64, fn func(*store.Job) error) (store.Job, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return store.Job{}, fmt.Errorf("update job %d: %w", id, err)
	}
	defer tx.Rollback()
	j, err := s.jobWhere(ctx, tx, "id = ?", id)
	if err != nil {
		return store.Job{}, err
	}
	if err := fn(&j); err != nil {
		return store.Job{}, err
	}
	j.UpdatedAt = time.Now()
	if _, err := tx.ExecContext(ctx, `UPDATE jobs SET state = ?, phase = ?, bytes_done = ?, bytes_total = ?, rate = ?, message = ?, error = ?,
		started_at = ?, updated_at = ?, finished_at = ? WHERE id = ?`,
		j.State, j.Phase, j.BytesDone, j.BytesTotal, j.Rate, j.Message, j.Error,
		optUnix(j.StartedAt), unix(j.UpdatedAt), optUnix(j.FinishedAt), id); err != nil {
		return store.Job{}, fmt.Errorf("update job %d: %w", id, err)
	}
	if err := tx.Commit(); err != nil {
		return store.Job{}, fmt.Errorf("update job %d: %w", id, err)
	}
	return j, nil
}

// AddJobLog implements store.Store.
func (s *Store) AddJobLog(ctx context.Context, id int64, lines []string) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("job %d log: %w", id, err)
	}
	defer tx.Rollback()
	now := unix(time.Now())
	for _, l := range lines {
		if _, err := tx.ExecContext(ctx, `INSERT INTO job_log (job_id, time, line) VALUES (?, ?, ?)`, id, now, l); err != nil {
			return fmt.Errorf("job %d log: %w", id, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("job %d log: %w", id, err)
	}
	return nil
}

// JobLog implements store.Store: the last limit lines, oldest first.
func (s *Store) JobLog(ctx context.Context, id int64, limit int) ([]store.JobLine, error) {
	if limit <= 0 {
		limit = 1000
	}
	rows, err := s.db.QueryContext(ctx, `SELECT time, line FROM (SELECT id, time, line FROM job_log WHERE job_id = ? ORDER BY id DESC LIMIT ?) ORDER BY id`, id, limit)
	if err != nil {
		return nil, fmt.Errorf("job %d log: %w", id, err)
	}
	defer rows.Close()
	var out []store.JobLine
	for rows.Next() {
		var t int64
		var l store.JobLine
		if err := rows.Scan(&t, &l.Line); err != nil {
			return nil, fmt.Errorf("job %d log: %w", id, err)
		}
		l.Time = fromUnix(t)
		out = append(out, l)
	}
	return out, rows.Err()
}
