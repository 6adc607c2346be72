package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"

	"github.com/preboot/preboot/store"
)

var _ store.Registrar = (*Store)(nil)

// maxNameSuffix is the last suffix a registration tries on a taken name
// (Name-2 ... Name-20).
const maxNameSuffix = 20

// Register implements store.Registrar: one transaction (in a batch with
// other requests' writes when several arrive at once, see groupCommit).
func (s *Store) Register(ctx context.Context, reg store.Registration) (store.Registered, error) {
	m, err := normMAC(reg.MAC)
	if err != nil {
		return store.Registered{}, fmt.Errorf("register: %w", err)
	}
	reg.MAC = m
	// The request's buffered events (its first contact...) go first, in
	// the same transaction.
	buf := store.BufferOf(ctx)
	held := buf.Take()
	var out store.Registered
	err = s.batch.do(ctx, func(ctx context.Context, r runner) error {
		var err error
		if s.d.name == DriverPostgres {
			// With the events, in two statements.
			out, err = r.registerPostgres(ctx, reg, eventPtrs(held))
			return err
		}
		if out, err = r.register(ctx, reg); err != nil {
			return err
		}
		// The held events, then the registration's, in one statement.
		es := eventPtrs(held)
		if reg.Event != nil {
			es = append(es, &out.Event)
		}
		if out.Job != nil {
			jes, err := jobEvents(reg, *out.Job)
			if err != nil {
				return err
			}
			es = append(es, eventPtrs(jes)...)
		}
		if err := insertEvents(ctx, r, es); err != nil {
			return fmt.Errorf("registration events: %w", err)
		}
		return nil
	})
	if err != nil {
		buf.Restore(held)
		return store.Registered{}, fmt.Errorf("register %s: %w", m, err)
	}
	return out, nil
}

// register is one registration on SQLite inside the transaction r, but
// for its events (out.Event, which the caller inserts): a statement or two
// per step in the same connection (PostgreSQL: registerPostgres, two
// statements with the events).
func (r runner) register(ctx context.Context, reg store.Registration) (store.Registered, error) {
	s := r.s
	var version int64
	if reg.Group != "" || reg.BundleID != 0 {
		// Memberships and assignments are policy: one logged change of
		// this device (and the lock that serialises policy changes).
		var err error
		if version, err = r.bumpVersion(ctx, store.PolicyChangeDevice, reg.MAC); err != nil {
			return store.Registered{}, err
		}
	}
	name := ""
	if reg.Name != "" {
		var err error
		if name, err = r.freeName(ctx, reg.Name, reg.MAC); err != nil {
			return store.Registered{}, err
		}
	}
	job, err := registrationJob(reg)
	if err != nil {
		return store.Registered{}, err
	}
	// A name the device has stays. With a job to create, the same
	// statement says whether the device has an open job.
	q := `UPDATE devices SET registered = TRUE, name = CASE WHEN name = '' THEN ? ELSE name END
		WHERE mac = ? RETURNING ` + deviceCols("")
	var open bool
	var sc scanner
	if reg.Job != nil {
		sc = extraScan{r.queryRow(ctx, q+openJobCol, name, reg.MAC), []any{&open}}
	} else {
		sc = r.queryRow(ctx, q, name, reg.MAC)
	}
	dev, err := scanDevice(sc, false)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return store.Registered{}, fmt.Errorf("device %s: %w", reg.MAC, store.ErrNotFound)
	case s.d.unique(err):
		return store.Registered{}, fmt.Errorf("name %q is taken: %w", name, store.ErrConflict)
	case err != nil:
		return store.Registered{}, err
	}
	out := store.Registered{Device: dev, Name: dev.Name, Version: version}
	if reg.Group != "" {
		if out.Joined, err = r.join(ctx, reg.Group, reg.MAC); err != nil {
			return store.Registered{}, err
		}
	}
	if reg.BundleID != 0 {
		a, err := r.assignOnce(ctx, reg.BundleID, reg.MAC)
		if err != nil {
			return store.Registered{}, err
		}
		out.Assignment = &a
	}
	if reg.Job != nil && !open {
		if out.Assignment != nil {
			job.AssignmentID = out.Assignment.ID
		}
		if err := r.insertJob(ctx, &job); err != nil {
			return store.Registered{}, err
		}
		out.Job = &job
	}
	return registrationEvent(reg, out)
}

// registrationEvent sets out.Event (which the caller inserts, after the
// request's held events).
func registrationEvent(reg store.Registration, out store.Registered) (store.Registered, error) {
	if reg.Event != nil {
		e := reg.Event(out)
		e.MAC = reg.MAC
		if e.Kind == "" {
			return store.Registered{}, fmt.Errorf("registration event: a kind is required: %w", store.ErrInvalid)
		}
		e.Time = normTime(e.Time)
		out.Event = e
	}
	return out, nil
}

// openJobCol is a column of the device's UPDATE ... RETURNING: whether the
// device has an open job.
var openJobCol = fmt.Sprintf(`, EXISTS (SELECT 1 FROM jobs WHERE jobs.mac = devices.mac AND jobs.state NOT IN ('%s', '%s', '%s'))`,
	store.JobSucceeded, store.JobFailed, store.JobCancelled)

// extraScan scans the columns of a row past what its scanner's caller
// asks for into extra.
type extraScan struct {
	scanner
	extra []any
}

func (e extraScan) Scan(dest ...any) error {
	return e.scanner.Scan(append(dest, e.extra...)...)
}

// jobEvents returns the events of a job created with a registration.
func jobEvents(reg store.Registration, j store.Job) ([]store.Event, error) {
	if reg.JobEvents == nil {
		return nil, nil
	}
	es := reg.JobEvents(j)
	for i := range es {
		es[i].MAC, es[i].Job, es[i].Time = j.MAC, j.ID, normTime(es[i].Time)
		if es[i].Kind == "" {
			return nil, fmt.Errorf("job event: a kind is required: %w", store.ErrInvalid)
		}
	}
	return es, nil
}

// joinPostgres adds a device to a group and counts it, in one statement:
// the group's ID (NULL: no such group) and whether the device joined.
const joinPostgres = `WITH g AS (SELECT id FROM device_groups WHERE name = ?),
	ins AS (INSERT INTO group_members (group_id, mac) SELECT id, ? FROM g ON CONFLICT DO NOTHING RETURNING group_id),
	upd AS (UPDATE device_groups SET members = members + 1 WHERE id IN (SELECT group_id FROM ins))
	SELECT (SELECT id FROM g), (SELECT count(*) FROM ins)`

// join makes mac a static member of group; joined is false when it was
// one already.
func (r runner) join(ctx context.Context, group, mac string) (joined bool, err error) {
	if r.s.d.name == DriverPostgres {
		var id sql.NullInt64
		var n int64
		if err := r.queryRow(ctx, joinPostgres, group, mac).Scan(&id, &n); err != nil {
			return false, r.s.dbErr(err)
		}
		if !id.Valid {
			return false, fmt.Errorf("group %q: %w", group, store.ErrNotFound)
		}
		return n > 0, nil
	}
	id, err := r.groupID(ctx, group)
	if err != nil {
		return false, err
	}
	n, err := r.affected(ctx, `INSERT INTO group_members (group_id, mac) VALUES (?, ?) ON CONFLICT DO NOTHING`, id, mac)
	if err != nil || n == 0 {
		return false, r.s.dbErr(err)
	}
	_, err = r.exec(ctx, `UPDATE device_groups SET members = members + 1 WHERE id = ?`, id)
	return err == nil, err
}

const insertOnce = `INSERT INTO assignments (bundle_id, mac, group_id, once, force, created_at, not_before, wake)
	VALUES (?, ?, NULL, TRUE, FALSE, ?, 0, FALSE)`

// assignOncePostgres inserts the assignment and reads it back (with its
// bundle's name and kind) in one statement.
const assignOncePostgres = `WITH a AS (` + insertOnce + ` RETURNING *)
	SELECT a.id, a.bundle_id, b.name, b.kind, COALESCE(a.mac, ''), '', a.once, a.force, a.created_at, a.not_before, a.wake, a.woken_at
	FROM a JOIN bundles b ON b.id = a.bundle_id`

// assignOnce gives mac a once assignment of bundle id.
func (r runner) assignOnce(ctx context.Context, bundle int64, mac string) (store.Assignment, error) {
	var a store.Assignment
	var err error
	if r.s.d.name == DriverPostgres {
		a, err = scanAssignment(r.queryRow(ctx, assignOncePostgres, bundle, mac, micros(now())))
	} else {
		var id int64
		if err = r.queryRow(ctx, insertOnce+` RETURNING id`, bundle, mac, micros(now())).Scan(&id); err == nil {
			a, err = r.assignment(ctx, id)
		}
	}
	switch {
	case r.s.d.unique(err):
		return store.Assignment{}, fmt.Errorf("device %s already has an assignment: %w", mac, store.ErrConflict)
	case r.s.d.foreignKey(err):
		return store.Assignment{}, fmt.Errorf("bundle #%d: %w", bundle, store.ErrNotFound)
	case err != nil:
		return store.Assignment{}, err
	}
	return a, nil
}

// freeName returns base, or the first of base-2 ... base-20 that no other
// device than mac has, in one query (asking for non-empty names lets it use the
// partial unique index on names instead of reading every device).
func (r runner) freeName(ctx context.Context, base, mac string) (string, error) {
	cands := make([]any, 0, maxNameSuffix+1)
	cands = append(cands, base)
	for i := 2; i <= maxNameSuffix; i++ {
		cands = append(cands, fmt.Sprintf("%s-%d", base, i))
	}
	taken, err := r.strings(ctx, `SELECT name FROM devices WHERE name <> '' AND name IN (`+placeholders(len(cands))+`) AND mac <> ?`, append(cands, mac)...)
	if err != nil {
		return "", err
	}
	for _, c := range cands {
		if !slices.Contains(taken, c.(string)) {
			return c.(string), nil
		}
	}
	return "", fmt.Errorf("names %s..%s-%d are all taken: %w", base, base, maxNameSuffix, store.ErrConflict)
}

// registrationJob is the job reg creates, ready to insert (the zero Job
// when it creates none).
func registrationJob(reg store.Registration) (store.Job, error) {
	if reg.Job == nil {
		return store.Job{}, nil
	}
	job := *reg.Job
	job.MAC = reg.MAC
	return prepJob(job)
}
