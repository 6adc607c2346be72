package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/preboot/preboot/store"
)

const ruleSelect = `SELECT r.id, r.name, r.pos, r.enabled, r.match_expr, COALESCE(b.name, ''), COALESCE(g.name, ''), r.created_at, r.updated_at
	FROM rules r LEFT JOIN bundles b ON b.id = r.bundle_id LEFT JOIN device_groups g ON g.id = r.group_id`

func scanRule(r scanner) (store.Rule, error) {
	var v store.Rule
	var created, updated int64
	if err := r.Scan(&v.ID, &v.Name, &v.Position, &v.Enabled, &v.Match, &v.Bundle, &v.Group, &created, &updated); err != nil {
		return store.Rule{}, err
	}
	v.CreatedAt, v.UpdatedAt = fromMicros(created), fromMicros(updated)
	return v, nil
}

func (r runner) rule(ctx context.Context, name string) (store.Rule, error) {
	v, err := scanRule(r.queryRow(ctx, ruleSelect+` WHERE r.name = ?`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Rule{}, fmt.Errorf("rule %q: %w", name, store.ErrNotFound)
	}
	return v, err
}

// ruleRefs checks a rule's name and resolves its bundle and group names
// to ids (nil when unset).
func (r runner) ruleRefs(ctx context.Context, v store.Rule, id int64) (bundle, group any, err error) {
	if v.Name == "" {
		return nil, nil, fmt.Errorf("rule name: required: %w", store.ErrInvalid)
	}
	if v.Position < 0 {
		return nil, nil, fmt.Errorf("rule position %d: want 1.. (or 0 for the last): %w", v.Position, store.ErrInvalid)
	}
	var one int
	switch err := r.queryRow(ctx, `SELECT 1 FROM rules WHERE name = ? AND id <> ?`, v.Name, id).Scan(&one); {
	case err == nil:
		return nil, nil, fmt.Errorf("rule name %q is taken: %w", v.Name, store.ErrConflict)
	case !errors.Is(err, sql.ErrNoRows):
		return nil, nil, err
	}
	if v.Bundle != "" {
		var bid int64
		err := r.queryRow(ctx, `SELECT id FROM bundles WHERE name = ?`, v.Bundle).Scan(&bid)
		if errors.Is(err, sql.ErrNoRows) {
			return nil, nil, fmt.Errorf("bundle %q: %w", v.Bundle, store.ErrNotFound)
		} else if err != nil {
			return nil, nil, err
		}
		bundle = bid
	}
	if v.Group != "" {
		gid, err := r.groupID(ctx, v.Group)
		if err != nil {
			return nil, nil, err
		}
		group = gid
	}
	return bundle, group, nil
}

func (r runner) ruleCount(ctx context.Context) (int, error) {
	var n int
	err := r.queryRow(ctx, `SELECT count(*) FROM rules`).Scan(&n)
	return n, err
}

// CreateRule implements store.Store: Position 0 (or past the end) appends
// the rule; otherwise it is inserted there and later rules move down.
func (s *Store) CreateRule(ctx context.Context, v store.Rule) (store.Rule, error) {
	var created store.Rule
	err := s.inTx(ctx, func(r runner) error {
		if err := r.bumpFor(ctx, store.PolicyChangeRules, ""); err != nil {
			return err
		}
		bundle, group, err := r.ruleRefs(ctx, v, 0)
		if err != nil {
			return err
		}
		n, err := r.ruleCount(ctx)
		if err != nil {
			return err
		}
		pos := v.Position
		if pos == 0 || pos > n {
			pos = n + 1
		} else if _, err := r.exec(ctx, `UPDATE rules SET pos = pos + 1 WHERE pos >= ?`, pos); err != nil {
			return err
		}
		t := micros(now())
		var id int64
		err = r.queryRow(ctx, `INSERT INTO rules (name, pos, enabled, match_expr, bundle_id, group_id, created_at, updated_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`, v.Name, pos, v.Enabled, v.Match, bundle, group, t, t).Scan(&id)
		if err != nil {
			return s.dbErr(err)
		}
		created, err = r.rule(ctx, v.Name)
		return err
	})
	if err != nil {
		return store.Rule{}, fmt.Errorf("create rule %q: %w", v.Name, err)
	}
	return created, nil
}

// Rule implements store.Store.
func (s *Store) Rule(ctx context.Context, name string) (store.Rule, error) {
	return s.r().rule(ctx, name)
}

// Rules implements store.Store.
func (s *Store) Rules(ctx context.Context) ([]store.Rule, error) {
	rows, err := s.r().query(ctx, ruleSelect+` ORDER BY r.pos, r.id`)
	if err != nil {
		return nil, fmt.Errorf("list rules: %w", err)
	}
	defer rows.Close()
	out := []store.Rule{}
	for rows.Next() {
		v, err := scanRule(rows)
		if err != nil {
			return nil, fmt.Errorf("list rules: %w", err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list rules: %w", err)
	}
	return out, nil
}

// UpdateRule implements store.Store: fn may change Name, Match, Bundle,
// Group, Enabled and Position (0 or past the end = last).
func (s *Store) UpdateRule(ctx context.Context, name string, fn func(*store.Rule) error) (store.Rule, error) {
	var updated store.Rule
	err := s.inTx(ctx, func(r runner) error {
		if err := r.bumpFor(ctx, store.PolicyChangeRules, ""); err != nil {
			return err
		}
		old, err := r.rule(ctx, name)
		if err != nil {
			return err
		}
		v := old
		if err := fn(&v); err != nil {
			return err
		}
		bundle, group, err := r.ruleRefs(ctx, v, old.ID)
		if err != nil {
			return err
		}
		n, err := r.ruleCount(ctx)
		if err != nil {
			return err
		}
		pos := v.Position
		if pos == 0 || pos > n {
			pos = n
		}
		switch {
		case pos < old.Position:
			_, err = r.exec(ctx, `UPDATE rules SET pos = pos + 1 WHERE pos >= ? AND pos < ?`, pos, old.Position)
		case pos > old.Position:
			_, err = r.exec(ctx, `UPDATE rules SET pos = pos - 1 WHERE pos > ? AND pos <= ?`, old.Position, pos)
		}
		if err != nil {
			return err
		}
		_, err = r.exec(ctx, `UPDATE rules SET name = ?, pos = ?, enabled = ?, match_expr = ?, bundle_id = ?, group_id = ?, updated_at = ? WHERE id = ?`,
			v.Name, pos, v.Enabled, v.Match, bundle, group, micros(now()), old.ID)
		if err != nil {
			return s.dbErr(err)
		}
		updated, err = r.rule(ctx, v.Name)
		return err
	})
	if err != nil {
		return store.Rule{}, fmt.Errorf("update rule %q: %w", name, err)
	}
	return updated, nil
}

// DeleteRule implements store.Store; later rules move up.
func (s *Store) DeleteRule(ctx context.Context, name string) error {
	err := s.inTx(ctx, func(r runner) error {
		if err := r.bumpFor(ctx, store.PolicyChangeRules, ""); err != nil {
			return err
		}
		var id int64
		var pos int
		err := r.queryRow(ctx, `SELECT id, pos FROM rules WHERE name = ?`, name).Scan(&id, &pos)
		if errors.Is(err, sql.ErrNoRows) {
			return store.ErrNotFound
		}
		if err != nil {
			return err
		}
		if _, err := r.exec(ctx, `DELETE FROM rules WHERE id = ?`, id); err != nil {
			return err
		}
		_, err = r.exec(ctx, `UPDATE rules SET pos = pos - 1 WHERE pos > ?`, pos)
		return err
	})
	if err != nil {
		return fmt.Errorf("delete rule %q: %w", name, err)
	}
	return nil
}
