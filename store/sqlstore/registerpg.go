package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/preboot/preboot/store"
)

// registerPostgres is register on PostgreSQL in two statements (round
// trips) but for the events: the policy version and its log entry, a free
// name, the device, its membership and whether it has an open job in one;
// the once assignment and the job (from it) in the other.
func (r runner) registerPostgres(ctx context.Context, reg store.Registration) (store.Registered, error) {
	var job store.Job
	if reg.Job != nil {
		job = *reg.Job
		job.MAC = reg.MAC
		var err error
		if job, err = prepJob(job); err != nil {
			return store.Registered{}, err
		}
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
		q.WriteString(strings.Replace(strings.TrimPrefix(openJobCol, ", "), "devices.mac", "d.mac", 1))
	} else {
		q.WriteString("FALSE")
	}
	q.WriteString(" FROM d")

	var version, joined sql.NullInt64
	var group sql.NullInt64
	var free, open bool
	dev, err := scanDevice(extraScan{r.queryRow(ctx, q.String(), args...), []any{&version, &free, &group, &joined, &open}}, false)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return store.Registered{}, fmt.Errorf("device %s: %w", reg.MAC, store.ErrNotFound)
	case r.s.d.unique(err):
		return store.Registered{}, fmt.Errorf("name %q (or a suffix of it) is taken: %w", reg.Name, store.ErrConflict)
	case err != nil:
		return store.Registered{}, err
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
	withJob := reg.Job != nil && !open
	if reg.BundleID != 0 {
		a, id, err := r.assignOncePostgres(ctx, reg.BundleID, reg.MAC, job, withJob)
		if err != nil {
			return store.Registered{}, err
		}
		out.Assignment = &a
		if withJob {
			job.ID, job.AssignmentID = id, a.ID
			out.Job = &job
		}
	} else if withJob {
		if err := r.insertJob(ctx, &job); err != nil {
			return store.Registered{}, err
		}
		out.Job = &job
	}
	return registrationEvent(reg, out)
}

// assignOncePostgres gives mac a once assignment of bundle and, withJob,
// creates job from it, in one statement: the assignment (with its
// bundle's name and kind) and the job's ID.
func (r runner) assignOncePostgres(ctx context.Context, bundle int64, mac string, job store.Job, withJob bool) (store.Assignment, int64, error) {
	q := `WITH a AS (` + insertOnce + ` RETURNING *)`
	args := []any{bundle, mac, micros(now())}
	jobCol := "CAST(0 AS BIGINT)"
	if withJob {
		cols := make([]string, len(jobInsertTypes))
		for i, t := range jobInsertTypes {
			cols[i] = "CAST(? AS " + t + ")"
		}
		cols[jobAssignmentArg] = "a.id"
		ja := jobArgs(&job)
		ja = append(ja[:jobAssignmentArg:jobAssignmentArg], ja[jobAssignmentArg+1:]...)
		q += `, j AS (INSERT INTO jobs (` + jobInsertCols + `) SELECT ` + strings.Join(cols, ", ") + ` FROM a RETURNING id)`
		args = append(args, ja...)
		jobCol = "(SELECT id FROM j)"
	}
	q += ` SELECT a.id, a.bundle_id, b.name, b.kind, COALESCE(a.mac, ''), '', a.once, a.force, a.created_at, a.not_before, a.wake, a.woken_at, ` + jobCol + `
	FROM a JOIN bundles b ON b.id = a.bundle_id`
	var id int64
	a, err := scanAssignment(extraScan{r.queryRow(ctx, q, args...), []any{&id}})
	switch {
	case r.s.d.unique(err) && withJob && strings.Contains(err.Error(), "token_hash"):
		return store.Assignment{}, 0, fmt.Errorf("create job for %s: %w", mac, r.s.dbErr(err))
	case r.s.d.unique(err):
		return store.Assignment{}, 0, fmt.Errorf("device %s already has an assignment: %w", mac, store.ErrConflict)
	case r.s.d.foreignKey(err):
		return store.Assignment{}, 0, fmt.Errorf("bundle #%d: %w", bundle, store.ErrNotFound)
	case err != nil:
		return store.Assignment{}, 0, err
	}
	return a, id, nil
}
