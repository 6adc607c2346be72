package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/preboot/preboot/store"
)

const groupCols = `g.id, g.name, g.description, g.priority, g.match_expr, g.members, g.created_at, g.updated_at`

// priorityStep is the gap CreateGroup leaves after the last priority.
const priorityStep = 10

func scanGroup(r scanner) (store.Group, error) {
	var g store.Group
	var created, updated int64
	if err := r.Scan(&g.ID, &g.Name, &g.Description, &g.Priority, &g.Match, &g.Members, &created, &updated); err != nil {
		return store.Group{}, err
	}
	g.CreatedAt, g.UpdatedAt = fromMicros(created), fromMicros(updated)
	return g, nil
}

func scanGroups(rows *rows, err error) ([]store.Group, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []store.Group{}
	for rows.Next() {
		g, err := scanGroup(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, g)
	}
	return out, rows.Err()
}

func (r runner) group(ctx context.Context, name string) (store.Group, error) {
	g, err := scanGroup(r.queryRow(ctx, `SELECT `+groupCols+` FROM device_groups g WHERE g.name = ?`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Group{}, fmt.Errorf("group %q: %w", name, store.ErrNotFound)
	}
	return g, err
}

func (r runner) groupID(ctx context.Context, name string) (int64, error) {
	var id int64
	err := r.queryRow(ctx, `SELECT id FROM device_groups WHERE name = ?`, name).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("group %q: %w", name, store.ErrNotFound)
	}
	return id, err
}

// checkGroup verifies that name and priority are free for group id (0 =
// a new group); a priority of 0 is replaced by the next free one.
func (r runner) checkGroup(ctx context.Context, id int64, g *store.Group) error {
	if g.Name == "" {
		return fmt.Errorf("group name: required: %w", store.ErrInvalid)
	}
	if g.Priority < 0 {
		return fmt.Errorf("group priority %d: want a positive number (or 0 for after the last): %w", g.Priority, store.ErrInvalid)
	}
	var other string
	err := r.queryRow(ctx, `SELECT name FROM device_groups WHERE name = ? AND id <> ?`, g.Name, id).Scan(&other)
	if err == nil {
		return fmt.Errorf("group name %q is taken: %w", g.Name, store.ErrConflict)
	} else if !errors.Is(err, sql.ErrNoRows) {
		return err
	}
	if g.Priority == 0 {
		return r.queryRow(ctx, `SELECT COALESCE(max(priority), 0) + ? FROM device_groups WHERE id <> ?`, priorityStep, id).Scan(&g.Priority)
	}
	err = r.queryRow(ctx, `SELECT name FROM device_groups WHERE priority = ? AND id <> ?`, g.Priority, id).Scan(&other)
	if err == nil {
		return fmt.Errorf("priority %d is used by group %q: %w", g.Priority, other, store.ErrConflict)
	} else if !errors.Is(err, sql.ErrNoRows) {
		return err
	}
	return nil
}

// CreateGroup implements store.Store: Priority 0 places the group after
// the last one (highest priority number + 10).
func (s *Store) CreateGroup(ctx context.Context, g store.Group) (store.Group, error) {
	g.ID, g.Members = 0, 0
	g.CreatedAt = now()
	g.UpdatedAt = g.CreatedAt
	err := s.inTx(ctx, func(r runner) error {
		if err := r.bump(ctx); err != nil {
			return err
		}
		if err := r.checkGroup(ctx, 0, &g); err != nil {
			return err
		}
		err := r.queryRow(ctx, `INSERT INTO device_groups (name, description, priority, match_expr, members, created_at, updated_at)
			VALUES (?, ?, ?, ?, 0, ?, ?) RETURNING id`,
			g.Name, g.Description, g.Priority, g.Match, micros(g.CreatedAt), micros(g.UpdatedAt)).Scan(&g.ID)
		if err != nil {
			return s.dbErr(err)
		}
		return r.retag(ctx, store.PolicyChangeGroup, g.Name)
	})
	if err != nil {
		return store.Group{}, fmt.Errorf("create group %q: %w", g.Name, err)
	}
	return g, nil
}

// Group implements store.Store.
func (s *Store) Group(ctx context.Context, name string) (store.Group, error) {
	return s.r().group(ctx, name)
}

// Groups implements store.Store, by priority.
func (s *Store) Groups(ctx context.Context, p store.Page) ([]store.Group, error) {
	limit, offset := page(p)
	out, err := scanGroups(s.r().query(ctx, `SELECT `+groupCols+` FROM device_groups g ORDER BY g.priority LIMIT ? OFFSET ?`, limit, offset))
	if err != nil {
		return nil, fmt.Errorf("list groups: %w", err)
	}
	return out, nil
}

// UpdateGroup implements store.Store: fn may change Name, Description,
// Priority (0 = after the last group) and Match.
func (s *Store) UpdateGroup(ctx context.Context, name string, fn func(*store.Group) error) (store.Group, error) {
	var g store.Group
	err := s.inTx(ctx, func(r runner) error {
		if err := r.bump(ctx); err != nil {
			return err
		}
		old, err := r.group(ctx, name)
		if err != nil {
			return err
		}
		g = old
		if err := fn(&g); err != nil {
			return err
		}
		g.ID, g.Members, g.CreatedAt, g.UpdatedAt = old.ID, old.Members, old.CreatedAt, now()
		if err := r.checkGroup(ctx, g.ID, &g); err != nil {
			return err
		}
		_, err = r.exec(ctx, `UPDATE device_groups SET name = ?, description = ?, priority = ?, match_expr = ?, updated_at = ? WHERE id = ?`,
			g.Name, g.Description, g.Priority, g.Match, micros(g.UpdatedAt), g.ID)
		if err != nil {
			return s.dbErr(err)
		}
		if g.Name != old.Name {
			// Renamed: memberships, menus and assignments cached by the
			// old name; logged as a change of anything.
			_, err = r.exec(ctx, `UPDATE menus SET target = ? WHERE scope = ? AND target = ?`, g.Name, store.ScopeGroup, old.Name)
			return err
		}
		return r.retag(ctx, store.PolicyChangeGroup, g.Name)
	})
	if err != nil {
		return store.Group{}, fmt.Errorf("update group %q: %w", name, err)
	}
	return g, nil
}

// DeleteGroup implements store.Store.
func (s *Store) DeleteGroup(ctx context.Context, name string) error {
	err := s.inTx(ctx, func(r runner) error {
		if err := r.bump(ctx); err != nil {
			return err
		}
		id, err := r.groupID(ctx, name)
		if err != nil {
			return err
		}
		rules, err := r.strings(ctx, `SELECT name FROM rules WHERE group_id = ? ORDER BY pos`, id)
		if err != nil {
			return err
		}
		if len(rules) > 0 {
			for i := range rules {
				rules[i] = fmt.Sprintf("rule %q", rules[i])
			}
			return fmt.Errorf("still used by %s: %w", uses(rules), store.ErrConflict)
		}
		for _, q := range []struct {
			sql  string
			args []any
		}{
			{`DELETE FROM assignments WHERE group_id = ?`, []any{id}},
			{`DELETE FROM menus WHERE scope = ? AND target = ?`, []any{store.ScopeGroup, name}},
			{`DELETE FROM group_members WHERE group_id = ?`, []any{id}},
			{`DELETE FROM device_groups WHERE id = ?`, []any{id}},
		} {
			if _, err := r.exec(ctx, q.sql, q.args...); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete group %q: %w", name, err)
	}
	return nil
}

// AddMember implements store.Store.
func (s *Store) AddMember(ctx context.Context, group, mac string) error {
	m, err := normMAC(mac)
	if err != nil {
		return fmt.Errorf("add member to group %q: %w", group, err)
	}
	err = s.inTx(ctx, func(r runner) error {
		if err := r.bumpFor(ctx, store.PolicyChangeDevice, m); err != nil {
			return err
		}
		id, err := r.groupID(ctx, group)
		if err != nil {
			return err
		}
		if err := r.deviceExists(ctx, m); err != nil {
			return err
		}
		n, err := r.affected(ctx, `INSERT INTO group_members (group_id, mac) VALUES (?, ?) ON CONFLICT DO NOTHING`, id, m)
		if err != nil {
			return s.dbErr(err)
		}
		if n == 0 {
			return errNoChange
		}
		_, err = r.exec(ctx, `UPDATE device_groups SET members = members + 1 WHERE id = ?`, id)
		return err
	})
	if err != nil {
		return fmt.Errorf("add %s to group %q: %w", m, group, err)
	}
	return nil
}

// RemoveMember implements store.Store; removing a device that is not a
// member is not an error.
func (s *Store) RemoveMember(ctx context.Context, group, mac string) error {
	m, err := normMAC(mac)
	if err != nil {
		return fmt.Errorf("remove member from group %q: %w", group, err)
	}
	err = s.inTx(ctx, func(r runner) error {
		if err := r.bumpFor(ctx, store.PolicyChangeDevice, m); err != nil {
			return err
		}
		id, err := r.groupID(ctx, group)
		if err != nil {
			return err
		}
		n, err := r.affected(ctx, `DELETE FROM group_members WHERE group_id = ? AND mac = ?`, id, m)
		if err != nil {
			return err
		}
		if n == 0 {
			return errNoChange
		}
		_, err = r.exec(ctx, `UPDATE device_groups SET members = members - 1 WHERE id = ?`, id)
		return err
	})
	if err != nil {
		return fmt.Errorf("remove %s from group %q: %w", m, group, err)
	}
	return nil
}

// Members implements store.Store: the static members, most recently seen
// first.
func (s *Store) Members(ctx context.Context, group string, p store.Page) ([]store.Device, error) {
	if _, err := s.r().groupID(ctx, group); err != nil {
		return nil, fmt.Errorf("members: %w", err)
	}
	out, err := s.Devices(ctx, store.DeviceFilter{Group: group, Page: p})
	if err != nil {
		return nil, fmt.Errorf("members of group %q: %w", group, err)
	}
	return out, nil
}

// DeviceGroups implements store.Store (an unknown device is in no group).
func (s *Store) DeviceGroups(ctx context.Context, mac string) ([]store.Group, error) {
	m, err := normMAC(mac)
	if err != nil {
		return nil, fmt.Errorf("device groups: %w", err)
	}
	out, err := scanGroups(s.r().query(ctx, `SELECT `+groupCols+` FROM group_members m JOIN device_groups g ON g.id = m.group_id
		WHERE m.mac = ? ORDER BY g.priority`, m))
	if err != nil {
		return nil, fmt.Errorf("groups of %s: %w", m, err)
	}
	return out, nil
}

func (r runner) deviceExists(ctx context.Context, mac string) error {
	var one int
	err := r.queryRow(ctx, `SELECT 1 FROM devices WHERE mac = ?`, mac).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("device %s: %w", mac, store.ErrNotFound)
	}
	return err
}

// strings runs a query returning one text column.
func (r runner) strings(ctx context.Context, q string, args ...any) ([]string, error) {
	rows, err := r.query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}
