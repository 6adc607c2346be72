package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/preboot/preboot/store"
)

const jobCols = `id, mac, kind, bundle_id, bundle, bundle_version, assignment_id, params, image, device, after, compression,
	state, phase, bytes_done, bytes_total, rate, message, error, token_hash, created_at, started_at, updated_at, finished_at,
	client_ip, boots, token_issued_at, timing`

func scanJob(r scanner) (store.Job, error) {
	var j store.Job
	var params, timing string
	var created, started, updated, finished, issued int64
	if err := r.Scan(&j.ID, &j.MAC, &j.Kind, &j.BundleID, &j.Bundle, &j.BundleVersion, &j.AssignmentID, &params, &j.Image, &j.Device,
		&j.After, &j.Compression, &j.State, &j.Phase, &j.BytesDone, &j.BytesTotal, &j.Rate, &j.Message, &j.Error, &j.TokenHash,
		&created, &started, &updated, &finished, &j.ClientIP, &j.Boots, &issued, &timing); err != nil {
		return store.Job{}, err
	}
	if params != "" {
		j.Params = json.RawMessage(params)
	}
	if timing != "" {
		j.Timing = json.RawMessage(timing)
	}
	j.CreatedAt, j.UpdatedAt = fromMicros(created), fromMicros(updated)
	j.StartedAt, j.FinishedAt = optTime(started), optTime(finished)
	j.TokenIssuedAt = optTime(issued)
	return j, nil
}

// CreateJob implements store.Store: a token hash is required; State
// defaults to pending, CreatedAt to now.
func (s *Store) CreateJob(ctx context.Context, j store.Job) (store.Job, error) {
	j, err := prepJob(j)
	if err != nil {
		return store.Job{}, err
	}
	if err := s.r().insertJob(ctx, &j); err != nil {
		return store.Job{}, err
	}
	return j, nil
}

// prepJob checks a job to create and fills in its defaults.
func prepJob(j store.Job) (store.Job, error) {
	mac, err := normMAC(j.MAC)
	if err != nil {
		return store.Job{}, fmt.Errorf("create job: %w", err)
	}
	j.MAC = mac
	if j.TokenHash == "" {
		return store.Job{}, fmt.Errorf("create job for %s: a token hash is required: %w", mac, store.ErrInvalid)
	}
	if len(j.Params) > 0 && !json.Valid(j.Params) {
		return store.Job{}, fmt.Errorf("create job for %s: params are not valid JSON: %w", mac, store.ErrInvalid)
	}
	if len(j.Timing) > 0 && !json.Valid(j.Timing) {
		return store.Job{}, fmt.Errorf("create job for %s: timing is not valid JSON: %w", mac, store.ErrInvalid)
	}
	j.CreatedAt = normTime(j.CreatedAt)
	j.UpdatedAt = j.CreatedAt
	if j.State == "" {
		j.State = store.JobPending
	}
	if !j.StartedAt.IsZero() {
		j.StartedAt = normTime(j.StartedAt)
	}
	if !j.FinishedAt.IsZero() {
		j.FinishedAt = normTime(j.FinishedAt)
	}
	if !j.TokenIssuedAt.IsZero() {
		j.TokenIssuedAt = normTime(j.TokenIssuedAt)
	}
	return j, nil
}

// insertJob inserts a job checked by prepJob and sets its ID.
func (r runner) insertJob(ctx context.Context, j *store.Job) error {
	err := r.queryRow(ctx, `INSERT INTO jobs (`+jobInsertCols+`)
		VALUES (`+placeholders(len(jobInsertTypes))+`) RETURNING id`, jobArgs(j)...).Scan(&j.ID)
	if err != nil {
		return fmt.Errorf("create job for %s: %w", j.MAC, r.s.dbErr(err))
	}
	return nil
}

// jobInsertCols are the columns a new job is inserted with (jobArgs its
// values), jobInsertTypes their SQL types.
const jobInsertCols = `mac, kind, bundle_id, bundle, bundle_version, assignment_id, params, image, device, after,
		compression, state, phase, bytes_done, bytes_total, rate, message, error, token_hash, created_at, started_at, updated_at, finished_at,
		client_ip, boots, token_issued_at, timing`

var jobInsertTypes = []string{"TEXT", "TEXT", "BIGINT", "TEXT", "BIGINT", "BIGINT", "TEXT", "TEXT", "TEXT", "TEXT",
	"BIGINT", "TEXT", "TEXT", "BIGINT", "BIGINT", "BIGINT", "TEXT", "TEXT", "TEXT", "BIGINT", "BIGINT", "BIGINT", "BIGINT",
	"TEXT", "BIGINT", "BIGINT", "TEXT"}

// jobAssignmentArg is the index of assignment_id in jobInsertCols.
const jobAssignmentArg = 5

func jobArgs(j *store.Job) []any {
	return []any{j.MAC, j.Kind, j.BundleID, j.Bundle, j.BundleVersion, j.AssignmentID, string(j.Params), j.Image, j.Device, j.After,
		j.Compression, j.State, j.Phase, j.BytesDone, j.BytesTotal, j.Rate, j.Message, j.Error, j.TokenHash,
		micros(j.CreatedAt), optMicros(j.StartedAt), micros(j.UpdatedAt), optMicros(j.FinishedAt),
		j.ClientIP, j.Boots, optMicros(j.TokenIssuedAt), string(j.Timing)}
}

func (r runner) jobWhere(ctx context.Context, where string, arg any) (store.Job, error) {
	j, err := scanJob(r.queryRow(ctx, `SELECT `+jobCols+` FROM jobs WHERE `+where, arg))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Job{}, store.ErrNotFound
	}
	return j, err
}

// Job implements store.Store.
func (s *Store) Job(ctx context.Context, id int64) (store.Job, error) {
	j, err := s.r().jobWhere(ctx, "id = ?", id)
	if err != nil {
		return store.Job{}, fmt.Errorf("job %d: %w", id, err)
	}
	return j, nil
}

// JobByToken implements store.Store.
func (s *Store) JobByToken(ctx context.Context, tokenHash string) (store.Job, error) {
	if tokenHash == "" {
		return store.Job{}, fmt.Errorf("job by token: %w", store.ErrNotFound)
	}
	j, err := s.r().jobWhere(ctx, "token_hash = ?", tokenHash)
	if err != nil {
		return store.Job{}, fmt.Errorf("job by token: %w", err)
	}
	return j, nil
}

// jobFilter returns the conditions of f (after "WHERE 1 = 1") and their
// arguments.
func jobFilter(f store.JobFilter) (string, []any, error) {
	var q string
	var args []any
	if f.MAC != "" {
		m, err := normMAC(f.MAC)
		if err != nil {
			return "", nil, err
		}
		q += ` AND mac = ?`
		args = append(args, m)
	}
	if f.State != "" {
		q += ` AND state = ?`
		args = append(args, f.State)
	}
	if f.Bundle != "" {
		q += ` AND bundle = ?`
		args = append(args, f.Bundle)
	}
	if f.Open {
		q += ` AND state NOT IN (?, ?, ?)`
		args = append(args, store.JobSucceeded, store.JobFailed, store.JobCancelled)
	}
	if f.BeforeID != 0 {
		q += ` AND id < ?`
		args = append(args, f.BeforeID)
	}
	if !f.FinishedSince.IsZero() {
		q += ` AND finished_at >= ? AND finished_at <> 0`
		args = append(args, micros(f.FinishedSince))
	}
	return q, args, nil
}

// Jobs implements store.Store: newest first; Limit 100 by default, at
// most 10000.
func (s *Store) Jobs(ctx context.Context, f store.JobFilter) ([]store.Job, error) {
	where, args, err := jobFilter(f)
	if err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	q := `SELECT ` + jobCols + ` FROM jobs WHERE 1 = 1` + where + ` ORDER BY id DESC LIMIT ?`
	args = append(args, clampLimit(f.Limit, 100))
	rows, err := s.r().query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	defer rows.Close()
	out := []store.Job{}
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

// CountJobs implements store.Store.
func (s *Store) CountJobs(ctx context.Context, f store.JobFilter) (int, error) {
	where, args, err := jobFilter(f)
	if err != nil {
		return 0, fmt.Errorf("count jobs: %w", err)
	}
	var n int
	if err := s.r().queryRow(ctx, `SELECT count(*) FROM jobs WHERE 1 = 1`+where, args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("count jobs: %w", err)
	}
	return n, nil
}

// UpdateJob implements store.Store: fn may change the state, phase,
// progress, message, error, the start and finish times and the token
// (hash, client address, boots, issue time); UpdatedAt becomes now. The
// job row is locked while fn runs.
func (s *Store) UpdateJob(ctx context.Context, id int64, fn func(*store.Job) error) (store.Job, error) {
	var j store.Job
	err := s.inTx(ctx, func(r runner) error {
		var err error
		j, err = r.jobWhere(ctx, "id = ?"+s.d.forUpdate, id)
		if err != nil {
			return err
		}
		if err := fn(&j); err != nil {
			return err
		}
		j.UpdatedAt = now()
		if !j.StartedAt.IsZero() {
			j.StartedAt = normTime(j.StartedAt)
		}
		if !j.FinishedAt.IsZero() {
			j.FinishedAt = normTime(j.FinishedAt)
		}
		if !j.TokenIssuedAt.IsZero() {
			j.TokenIssuedAt = normTime(j.TokenIssuedAt)
		}
		if j.TokenHash == "" {
			return fmt.Errorf("a job keeps a token hash: %w", store.ErrInvalid)
		}
		if len(j.Timing) > 0 && !json.Valid(j.Timing) {
			return fmt.Errorf("timing is not valid JSON: %w", store.ErrInvalid)
		}
		_, err = r.exec(ctx, `UPDATE jobs SET state = ?, phase = ?, bytes_done = ?, bytes_total = ?, rate = ?, message = ?, error = ?,
			started_at = ?, updated_at = ?, finished_at = ?, token_hash = ?, client_ip = ?, boots = ?, token_issued_at = ?, timing = ? WHERE id = ?`,
			j.State, j.Phase, j.BytesDone, j.BytesTotal, j.Rate, j.Message, j.Error,
			optMicros(j.StartedAt), micros(j.UpdatedAt), optMicros(j.FinishedAt), j.TokenHash, j.ClientIP, j.Boots, optMicros(j.TokenIssuedAt),
			string(j.Timing), id)
		return err
	})
	if err != nil {
		return store.Job{}, fmt.Errorf("update job %d: %w", id, err)
	}
	return j, nil
}

// logBatch is how many lines one INSERT of AddJobLog carries.
const logBatch = 200

// AddJobLog implements store.Store (ErrNotFound for an unknown job).
func (s *Store) AddJobLog(ctx context.Context, id int64, lines []string) error {
	if len(lines) == 0 {
		return nil
	}
	t := micros(time.Now())
	err := s.inTx(ctx, func(r runner) error {
		for start := 0; start < len(lines); start += logBatch {
			batch := lines[start:min(start+logBatch, len(lines))]
			vals := strings.TrimSuffix(strings.Repeat("(?, ?, ?), ", len(batch)), ", ")
			args := make([]any, 0, 3*len(batch))
			for _, l := range batch {
				args = append(args, id, t, l)
			}
			if _, err := r.exec(ctx, `INSERT INTO job_log (job_id, time, line) VALUES `+vals, args...); err != nil {
				return s.dbErr(err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("job %d log: %w", id, err)
	}
	return nil
}

// JobLog implements store.Store: the last limit lines (1000 by default),
// oldest first.
func (s *Store) JobLog(ctx context.Context, id int64, limit int) ([]store.JobLine, error) {
	rows, err := s.r().query(ctx, `SELECT l.time, l.line FROM (SELECT id, time, line FROM job_log WHERE job_id = ? ORDER BY id DESC LIMIT ?) l
		ORDER BY l.id`, id, clampLimit(limit, 1000))
	if err != nil {
		return nil, fmt.Errorf("job %d log: %w", id, err)
	}
	defer rows.Close()
	out := []store.JobLine{}
	for rows.Next() {
		var t int64
		var l store.JobLine
		if err := rows.Scan(&t, &l.Line); err != nil {
			return nil, fmt.Errorf("job %d log: %w", id, err)
		}
		l.Time = fromMicros(t)
		out = append(out, l)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("job %d log: %w", id, err)
	}
	return out, nil
}
