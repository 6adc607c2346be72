package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/preboot/preboot/store"
)

const assignmentSelect = `SELECT a.id, a.bundle_id, b.name, b.kind, COALESCE(a.mac, ''), COALESCE(g.name, ''), a.once, a.force, a.created_at, a.not_before, a.wake, a.woken_at
	FROM assignments a JOIN bundles b ON b.id = a.bundle_id LEFT JOIN device_groups g ON g.id = a.group_id`

func scanAssignment(r scanner) (store.Assignment, error) {
	var a store.Assignment
	var created, at, woken int64
	if err := r.Scan(&a.ID, &a.BundleID, &a.Bundle, &a.BundleKind, &a.MAC, &a.Group, &a.Once, &a.Force, &created, &at, &a.Wake, &woken); err != nil {
		return store.Assignment{}, err
	}
	a.CreatedAt, a.At, a.WokenAt = fromMicros(created), optTime(at), optTime(woken)
	return a, nil
}

func (r runner) assignment(ctx context.Context, id int64) (store.Assignment, error) {
	a, err := scanAssignment(r.queryRow(ctx, assignmentSelect+` WHERE a.id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Assignment{}, fmt.Errorf("assignment %d: %w", id, store.ErrNotFound)
	}
	return a, err
}

// CreateAssignment implements store.Store. The bundle is a.BundleID or,
// when that is 0, the bundle named a.Bundle.
func (s *Store) CreateAssignment(ctx context.Context, a store.Assignment) (store.Assignment, error) {
	return s.createAssignment(ctx, a, false)
}

// ReplaceAssignment is CreateAssignment that first removes the target's
// current assignment, if any, in the same transaction (the API's
// "replace": true).
func (s *Store) ReplaceAssignment(ctx context.Context, a store.Assignment) (store.Assignment, error) {
	return s.createAssignment(ctx, a, true)
}

func (s *Store) createAssignment(ctx context.Context, a store.Assignment, replace bool) (store.Assignment, error) {
	target := "group " + fmt.Sprintf("%q", a.Group)
	switch {
	case a.MAC != "" && a.Group != "":
		return store.Assignment{}, fmt.Errorf("create assignment: give a device or a group, not both: %w", store.ErrInvalid)
	case a.MAC == "" && a.Group == "":
		return store.Assignment{}, fmt.Errorf("create assignment: a device or a group is required: %w", store.ErrInvalid)
	case a.MAC != "":
		m, err := normMAC(a.MAC)
		if err != nil {
			return store.Assignment{}, fmt.Errorf("create assignment: %w", err)
		}
		a.MAC, target = m, "device "+m
	}
	if a.BundleID == 0 && a.Bundle == "" {
		return store.Assignment{}, fmt.Errorf("assign to %s: a bundle is required: %w", target, store.ErrInvalid)
	}
	if a.Wake && a.At.IsZero() {
		return store.Assignment{}, fmt.Errorf("assign to %s: wake needs a time (at): %w", target, store.ErrInvalid)
	}
	kind, target := store.PolicyChangeGroupAssignment, a.Group
	if a.MAC != "" {
		kind, target = store.PolicyChangeDevice, a.MAC
	}
	var created store.Assignment
	err := s.inTx(ctx, func(r runner) error {
		if err := r.bumpFor(ctx, kind, target); err != nil {
			return err
		}
		var b store.Bundle
		var err error
		if a.BundleID != 0 {
			b, err = r.bundleWhere(ctx, fmt.Sprintf("#%d", a.BundleID), `b.id = ?`, a.BundleID)
		} else {
			b, err = r.bundleWhere(ctx, fmt.Sprintf("%q", a.Bundle), `b.name = ?`, a.Bundle)
		}
		if err != nil {
			return err
		}
		var mac, group any // NULL unless set
		var existing string
		var existingArgs []any
		if a.MAC != "" {
			if err := r.deviceExists(ctx, a.MAC); err != nil {
				return err
			}
			mac = a.MAC
			existing, existingArgs = `SELECT a.id, b.name FROM assignments a JOIN bundles b ON b.id = a.bundle_id WHERE a.mac = ?`, []any{a.MAC}
		} else {
			gid, err := r.groupID(ctx, a.Group)
			if err != nil {
				return err
			}
			group = gid
			existing, existingArgs = `SELECT a.id, b.name FROM assignments a JOIN bundles b ON b.id = a.bundle_id WHERE a.group_id = ?`, []any{gid}
		}
		var oldID int64
		var oldBundle string
		switch err := r.queryRow(ctx, existing, existingArgs...).Scan(&oldID, &oldBundle); {
		case err == nil && replace:
			if _, err := r.exec(ctx, `DELETE FROM assignments WHERE id = ?`, oldID); err != nil {
				return err
			}
		case err == nil:
			return fmt.Errorf("%s already has assignment %d (bundle %q): %w", target, oldID, oldBundle, store.ErrConflict)
		case !errors.Is(err, sql.ErrNoRows):
			return err
		}
		var id int64
		err = r.queryRow(ctx, `INSERT INTO assignments (bundle_id, mac, group_id, once, force, created_at, not_before, wake) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`,
			b.ID, mac, group, a.Once, a.Force, micros(now()), optMicros(a.At), a.Wake).Scan(&id)
		if s.d.unique(err) {
			return fmt.Errorf("%s already has an assignment: %w", target, store.ErrConflict)
		}
		if err != nil {
			return s.dbErr(err)
		}
		created, err = r.assignment(ctx, id)
		return err
	})
	if err != nil {
		return store.Assignment{}, fmt.Errorf("assign to %s: %w", target, err)
	}
	return created, nil
}

// Assignment implements store.Store.
func (s *Store) Assignment(ctx context.Context, id int64) (store.Assignment, error) {
	return s.r().assignment(ctx, id)
}

// Assignments implements store.Store, oldest first.
func (s *Store) Assignments(ctx context.Context, f store.AssignmentFilter) ([]store.Assignment, error) {
	q := assignmentSelect + ` WHERE 1 = 1`
	var args []any
	if f.MAC != "" {
		m, err := normMAC(f.MAC)
		if err != nil {
			return nil, fmt.Errorf("list assignments: %w", err)
		}
		q += ` AND a.mac = ?`
		args = append(args, m)
	}
	if f.Group != "" {
		q += ` AND g.name = ?`
		args = append(args, f.Group)
	}
	if f.Bundle != "" {
		q += ` AND b.name = ?`
		args = append(args, f.Bundle)
	}
	if f.Scheduled {
		q += ` AND a.not_before <> 0`
	}
	limit, offset := page(f.Page)
	rows, err := s.r().query(ctx, q+` ORDER BY a.id LIMIT ? OFFSET ?`, append(args, limit, offset)...)
	if err != nil {
		return nil, fmt.Errorf("list assignments: %w", err)
	}
	defer rows.Close()
	out := []store.Assignment{}
	for rows.Next() {
		a, err := scanAssignment(rows)
		if err != nil {
			return nil, fmt.Errorf("list assignments: %w", err)
		}
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list assignments: %w", err)
	}
	return out, nil
}

// DeleteAssignment implements store.Store.
func (s *Store) DeleteAssignment(ctx context.Context, id int64) error {
	err := s.inTx(ctx, func(r runner) error {
		// A device's assignment changes only that device's policy. The
		// target of an assignment never changes.
		var mac, group string
		err := r.queryRow(ctx, `SELECT COALESCE(a.mac, ''), COALESCE(g.name, '') FROM assignments a LEFT JOIN device_groups g ON g.id = a.group_id WHERE a.id = ?`, id).Scan(&mac, &group)
		if errors.Is(err, sql.ErrNoRows) {
			return store.ErrNotFound
		}
		if err != nil {
			return err
		}
		kind, target := store.PolicyChangeGroupAssignment, group
		if mac != "" {
			kind, target = store.PolicyChangeDevice, mac
		}
		if err := r.bumpFor(ctx, kind, target); err != nil {
			return err
		}
		n, err := r.affected(ctx, `DELETE FROM assignments WHERE id = ?`, id)
		if err == nil && n == 0 {
			return store.ErrNotFound
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("delete assignment %d: %w", id, err)
	}
	return nil
}

// ClaimDueWakes implements store.Store in one UPDATE: on PostgreSQL a
// concurrent claim of the same row waits for the first one's commit and
// then no longer matches woken_at = 0, so each row is claimed once.
func (s *Store) ClaimDueWakes(ctx context.Context, at time.Time) ([]store.Assignment, error) {
	t := micros(normTime(at))
	var ids []int64
	err := s.inTx(ctx, func(r runner) error {
		ids = ids[:0]
		rows, err := r.query(ctx, `UPDATE assignments SET woken_at = ? WHERE wake AND woken_at = 0 AND not_before <> 0 AND not_before <= ? RETURNING id`, t, t)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var id int64
			if err := rows.Scan(&id); err != nil {
				return err
			}
			ids = append(ids, id)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("claim due wakes: %w", err)
	}
	slices.Sort(ids)
	out := make([]store.Assignment, 0, len(ids))
	for _, id := range ids {
		a, err := s.r().assignment(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			continue // deleted since
		}
		if err != nil {
			return nil, fmt.Errorf("claim due wakes: %w", err)
		}
		out = append(out, a)
	}
	return out, nil
}
