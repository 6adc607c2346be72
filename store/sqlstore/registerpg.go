package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/preboot/preboot/store"
)

// registerPostgres is register on PostgreSQL in two statements (round
// trips), with the request's held events: the policy version and its log
// entry, a free name, the device, its membership, whether it has an open
// job and the IDs of the assignment and the job to create in one; the
// once assignment, the job and all the events in the other.
func (r runner) registerPostgres(ctx context.Context, reg store.Registration, held []*store.Event) (store.Registered, error) {
	job, err := registrationJob(reg)
	if err != nil {
		return store.Registered{}, err
	}
	bump := reg.Group != "" || reg.BundleID != 0
	var q strings.Builder
	var args []any
	var ctes []string
	if bump {
		ctes = append(ctes, `v AS (UPDATE policy SET version = version + 1 WHERE id = 1 RETURNING version)`,
			`l AS (INSERT INTO policy_changes (version, kind, target) SELECT version, ?, ? FROM v RETURNING version)`)
		args = append(args, store.PolicyChangeDevice, reg.MAC)
	}
	if reg.Name != "" {
		// The first of Name, Name-2 ... Name-20 no other device has.
		var vals strings.Builder
		for i := 1; i <= maxNameSuffix; i++ {
			if i > 1 {
				vals.WriteString(", ")
			}
			fmt.Fprintf(&vals, "(CAST(? AS TEXT), %d)", i)
			if i == 1 {
				args = append(args, reg.Name)
			} else {
				args = append(args, fmt.Sprintf("%s-%d", reg.Name, i))
			}
		}
		ctes = append(ctes, `c(n, i) AS (VALUES `+vals.String()+`)`,
			`free AS (SELECT n FROM c WHERE NOT EXISTS (SELECT 1 FROM devices o WHERE o.name = c.n AND o.name <> '' AND o.mac <> ?) ORDER BY i LIMIT 1)`)
		args = append(args, reg.MAC)
	}
	if reg.Group != "" {
		ctes = append(ctes, `g AS (SELECT id FROM device_groups WHERE name = ?)`,
			`ins AS (INSERT INTO group_members (group_id, mac) SELECT id, ? FROM g ON CONFLICT DO NOTHING RETURNING group_id)`,
			`upd AS (UPDATE device_groups SET members = members + 1 WHERE id IN (SELECT group_id FROM ins))`)
		args = append(args, reg.Group, reg.MAC)
	}
	name := "''"
	if reg.Name != "" {
		name = "COALESCE((SELECT n FROM free), '')"
	}
	// A name the device has stays.
	ctes = append(ctes, `d AS (UPDATE devices SET registered = TRUE, name = CASE WHEN name = '' THEN `+name+` ELSE name END
		WHERE mac = ? RETURNING `+deviceCols("")+`)`)
	args = append(args, reg.MAC)
	q.WriteString("WITH ")
	q.WriteString(strings.Join(ctes, ",\n"))
	q.WriteString("\nSELECT d.*, ")
	if bump {
		q.WriteString("(SELECT version FROM l), ")
	} else {
		q.WriteString("CAST(0 AS BIGINT), ")
	}
	if reg.Name != "" {
		q.WriteString("EXISTS (SELECT 1 FROM free), ")
	} else {
		q.WriteString("TRUE, ")
	}
	if reg.Group != "" {
		q.WriteString("(SELECT id FROM g), (SELECT count(*) FROM ins), ")
	} else {
		q.WriteString("CAST(0 AS BIGINT), CAST(0 AS BIGINT), ")
	}
	if reg.Job != nil {
		// Whether the device has an open job, and the ID of the job to
		// create (so that its events go with it in the next statement).
		q.WriteString(strings.Replace(strings.TrimPrefix(openJobCol, ", "), "devices.mac", "d.mac", 1))
		q.WriteString(", nextval(pg_get_serial_sequence('jobs', 'id'))")
	} else {
		q.WriteString("FALSE, CAST(0 AS BIGINT)")
	}
	if reg.BundleID != 0 {
		// The assignment's ID and its bundle's name and kind (NULL: no
		// such bundle).
		q.WriteString(", nextval(pg_get_serial_sequence('assignments', 'id')), b.name, b.kind FROM d LEFT JOIN bundles b ON b.id = ?")
		args = append(args, reg.BundleID)
	} else {
		q.WriteString(", CAST(0 AS BIGINT), CAST(NULL AS TEXT), CAST(NULL AS TEXT) FROM d")
	}

	var version, joined sql.NullInt64
	var group sql.NullInt64
	var free, open bool
	var jobID, assignmentID int64
	var bundleName, bundleKind sql.NullString
	dev, err := scanDevice(extraScan{r.queryRow(ctx, q.String(), args...),
		[]any{&version, &free, &group, &joined, &open, &jobID, &assignmentID, &bundleName, &bundleKind}}, false)
	switch {
	case errors.Is(err, sql.ErrNoRows), r.s.d.foreignKey(err):
		// No such device (the membership's insert may say so first).
		return store.Registered{}, fmt.Errorf("device %s: %w", reg.MAC, store.ErrNotFound)
	case r.s.d.unique(err):
		return store.Registered{}, fmt.Errorf("name %q (or a suffix of it) is taken: %w", reg.Name, store.ErrConflict)
	case err != nil:
		return store.Registered{}, r.s.dbErr(err)
	}
	if reg.Group != "" && !group.Valid {
		return store.Registered{}, fmt.Errorf("group %q: %w", reg.Group, store.ErrNotFound)
	}
	if !free && dev.Name == "" {
		return store.Registered{}, fmt.Errorf("names %s..%s-%d are all taken: %w", reg.Name, reg.Name, maxNameSuffix, store.ErrConflict)
	}
	if version.Int64 != 0 && version.Int64%1000 == 0 {
		if _, err := r.exec(ctx, `DELETE FROM policy_changes WHERE version <= ?`, version.Int64-changeLogKeep); err != nil {
			return store.Registered{}, fmt.Errorf("policy change log: %w", err)
		}
	}
	out := store.Registered{Device: dev, Name: dev.Name, Version: version.Int64, Joined: joined.Int64 > 0}
	if reg.BundleID != 0 {
		if !bundleName.Valid {
			return store.Registered{}, fmt.Errorf("bundle #%d: %w", reg.BundleID, store.ErrNotFound)
		}
		out.Assignment = &store.Assignment{ID: assignmentID, BundleID: reg.BundleID, Bundle: bundleName.String, BundleKind: bundleKind.String,
			MAC: reg.MAC, Once: true, CreatedAt: fromMicros(micros(now()))}
	}
	if reg.Job != nil && !open {
		job.ID = jobID
		if out.Assignment != nil {
			job.AssignmentID = out.Assignment.ID
		}
		out.Job = &job
	}
	out, err = registrationEvent(reg, out)
	if err != nil {
		return store.Registered{}, err
	}
	// The assignment, the job and the events in one statement.
	es := append([]*store.Event(nil), held...)
	if reg.Event != nil {
		es = append(es, &out.Event)
	}
	if out.Job != nil {
		jes, err := jobEvents(reg, *out.Job)
		if err != nil {
			return store.Registered{}, err
		}
		es = append(es, eventPtrs(jes)...)
	}
	if err := r.writeRegistrationPostgres(ctx, out, es); err != nil {
		return store.Registered{}, err
	}
	return out, nil
}

// writeRegistrationPostgres inserts a registration's once assignment, its
// job and the events es (their IDs set) in one statement.
func (r runner) writeRegistrationPostgres(ctx context.Context, out store.Registered, es []*store.Event) error {
	var ctes []string
	var args []any
	if a := out.Assignment; a != nil {
		ctes = append(ctes, `a AS (INSERT INTO assignments (id, bundle_id, mac, group_id, once, force, created_at, not_before, wake)
			VALUES (?, ?, ?, NULL, TRUE, FALSE, ?, 0, FALSE))`)
		args = append(args, a.ID, a.BundleID, a.MAC, micros(a.CreatedAt))
	}
	if j := out.Job; j != nil {
		ctes = append(ctes, `j AS (INSERT INTO jobs (id, `+jobInsertCols+`) VALUES (?, `+placeholders(len(jobInsertTypes))+`))`)
		args = append(args, j.ID)
		args = append(args, jobArgs(j)...)
	}
	if len(es) == 0 && len(ctes) == 0 {
		return nil
	}
	var q strings.Builder
	if len(ctes) > 0 {
		q.WriteString("WITH " + strings.Join(ctes, ",\n") + "\n")
	}
	if len(es) == 0 {
		q.WriteString("SELECT CAST(0 AS BIGINT) WHERE FALSE")
	} else {
		args = writeInsertEvents(&q, args, es)
	}
	rows, err := r.query(ctx, q.String(), args...)
	if err != nil {
		return r.registrationErr(out, err)
	}
	defer rows.Close()
	ids := make([]int64, 0, len(es))
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return r.registrationErr(out, err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return r.registrationErr(out, err)
	}
	if len(ids) != len(es) {
		return fmt.Errorf("registration events: %d inserted, %d returned", len(es), len(ids))
	}
	slices.Sort(ids) // RETURNING's order is not promised; the IDs' is
	for i, e := range es {
		e.ID = ids[i]
	}
	return nil
}

// registrationErr says which part of a registration's statement failed.
func (r runner) registrationErr(out store.Registered, err error) error {
	var pe *pgconn.PgError
	switch {
	case errors.As(err, &pe) && pe.Code == "23505" && strings.HasPrefix(pe.ConstraintName, "assignments"):
		return fmt.Errorf("device %s already has an assignment: %w", out.Device.MAC, store.ErrConflict)
	case r.s.d.foreignKey(err) && out.Assignment != nil:
		return fmt.Errorf("bundle #%d: %w", out.Assignment.BundleID, store.ErrNotFound)
	case out.Job != nil && r.s.d.unique(err):
		return fmt.Errorf("create job for %s: %w", out.Device.MAC, r.s.dbErr(err))
	}
	return fmt.Errorf("register: %w", r.s.dbErr(err))
}
