package sqlstore

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"github.com/preboot/preboot/store"
)

const bundleCols = `b.id, b.name, b.kind, b.description, b.params, b.version, b.created_at, b.updated_at`

func scanBundle(r scanner) (store.Bundle, error) {
	var b store.Bundle
	var params string
	var created, updated int64
	if err := r.Scan(&b.ID, &b.Name, &b.Kind, &b.Description, &params, &b.Version, &created, &updated); err != nil {
		return store.Bundle{}, err
	}
	b.Params = json.RawMessage(params)
	b.CreatedAt, b.UpdatedAt = fromMicros(created), fromMicros(updated)
	return b, nil
}

func (r runner) bundleWhere(ctx context.Context, what, where string, arg any) (store.Bundle, error) {
	b, err := scanBundle(r.queryRow(ctx, `SELECT `+bundleCols+` FROM bundles b WHERE `+where, arg))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Bundle{}, fmt.Errorf("bundle %s: %w", what, store.ErrNotFound)
	}
	return b, err
}

// checkBundle validates what the store relies on (package bundle checks
// the parameters of each kind) and returns the image the params name.
func checkBundle(b *store.Bundle) (image string, err error) {
	if b.Name == "" {
		return "", fmt.Errorf("bundle name: required: %w", store.ErrInvalid)
	}
	if !slices.Contains(store.BundleKinds, b.Kind) {
		return "", fmt.Errorf("bundle kind %q: want one of %v: %w", b.Kind, store.BundleKinds, store.ErrInvalid)
	}
	if len(bytes.TrimSpace(b.Params)) == 0 || string(bytes.TrimSpace(b.Params)) == "null" {
		b.Params = json.RawMessage("{}")
	}
	var p struct {
		Image string `json:"image"`
	}
	if err := json.Unmarshal(b.Params, &p); err != nil {
		return "", fmt.Errorf("bundle params: want a JSON object: %v: %w", err, store.ErrInvalid)
	}
	return p.Image, nil
}

func (r runner) bundleNameFree(ctx context.Context, name string, id int64) error {
	var one int
	err := r.queryRow(ctx, `SELECT 1 FROM bundles WHERE name = ? AND id <> ?`, name, id).Scan(&one)
	switch {
	case err == nil:
		return fmt.Errorf("bundle name %q is taken: %w", name, store.ErrConflict)
	case errors.Is(err, sql.ErrNoRows):
		return nil
	}
	return err
}

// CreateBundle implements store.Store: Version starts at 1.
func (s *Store) CreateBundle(ctx context.Context, b store.Bundle) (store.Bundle, error) {
	image, err := checkBundle(&b)
	if err != nil {
		return store.Bundle{}, fmt.Errorf("create bundle %q: %w", b.Name, err)
	}
	b.ID, b.Version = 0, 1
	b.CreatedAt = now()
	b.UpdatedAt = b.CreatedAt
	err = s.inTx(ctx, func(r runner) error {
		if err := r.bump(ctx); err != nil {
			return err
		}
		if err := r.bundleNameFree(ctx, b.Name, 0); err != nil {
			return err
		}
		if err := s.dbErr(r.queryRow(ctx, `INSERT INTO bundles (name, kind, description, params, image, version, created_at, updated_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`,
			b.Name, b.Kind, b.Description, string(b.Params), image, b.Version, micros(b.CreatedAt), micros(b.UpdatedAt)).Scan(&b.ID)); err != nil {
			return err
		}
		return r.retag(ctx, store.PolicyChangeBundle, strconv.FormatInt(b.ID, 10))
	})
	if err != nil {
		return store.Bundle{}, fmt.Errorf("create bundle %q: %w", b.Name, err)
	}
	return b, nil
}

// Bundle implements store.Store.
func (s *Store) Bundle(ctx context.Context, name string) (store.Bundle, error) {
	return s.r().bundleWhere(ctx, fmt.Sprintf("%q", name), `b.name = ?`, name)
}

// BundleByID implements store.Store.
func (s *Store) BundleByID(ctx context.Context, id int64) (store.Bundle, error) {
	return s.r().bundleWhere(ctx, fmt.Sprintf("#%d", id), `b.id = ?`, id)
}

// Bundles implements store.Store, by name.
func (s *Store) Bundles(ctx context.Context, f store.BundleFilter) ([]store.Bundle, error) {
	q := `SELECT ` + bundleCols + ` FROM bundles b WHERE 1 = 1`
	var args []any
	if f.Kind != "" {
		q += ` AND b.kind = ?`
		args = append(args, f.Kind)
	}
	if f.Image != "" {
		q += ` AND b.image = ?`
		args = append(args, f.Image)
	}
	limit, offset := page(f.Page)
	rows, err := s.r().query(ctx, q+` ORDER BY b.name LIMIT ? OFFSET ?`, append(args, limit, offset)...)
	if err != nil {
		return nil, fmt.Errorf("list bundles: %w", err)
	}
	defer rows.Close()
	out := []store.Bundle{}
	for rows.Next() {
		b, err := scanBundle(rows)
		if err != nil {
			return nil, fmt.Errorf("list bundles: %w", err)
		}
		out = append(out, b)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list bundles: %w", err)
	}
	return out, nil
}

// UpdateBundle implements store.Store: fn may change Name, Description and
// Params (not Kind); Version grows by one. A new name is carried into the
// menus and settings that offer the bundle.
func (s *Store) UpdateBundle(ctx context.Context, name string, fn func(*store.Bundle) error) (store.Bundle, error) {
	var b store.Bundle
	err := s.inTx(ctx, func(r runner) error {
		if err := r.bump(ctx); err != nil {
			return err
		}
		old, err := r.bundleWhere(ctx, fmt.Sprintf("%q", name), `b.name = ?`, name)
		if err != nil {
			return err
		}
		b = old
		b.Params = slices.Clone(old.Params)
		if err := fn(&b); err != nil {
			return err
		}
		if b.Kind != old.Kind {
			return fmt.Errorf("kind: a %s bundle cannot become %s (create a new bundle): %w", old.Kind, b.Kind, store.ErrInvalid)
		}
		image, err := checkBundle(&b)
		if err != nil {
			return err
		}
		b.ID, b.CreatedAt, b.Version, b.UpdatedAt = old.ID, old.CreatedAt, old.Version+1, now()
		if b.Name != old.Name {
			if err := r.bundleNameFree(ctx, b.Name, b.ID); err != nil {
				return err
			}
		}
		_, err = r.exec(ctx, `UPDATE bundles SET name = ?, description = ?, params = ?, image = ?, version = ?, updated_at = ? WHERE id = ?`,
			b.Name, b.Description, string(b.Params), image, b.Version, micros(b.UpdatedAt), b.ID)
		if err != nil {
			return s.dbErr(err)
		}
		if b.Name != old.Name {
			return r.renameBundleRefs(ctx, old.Name, b.Name)
		}
		return r.retag(ctx, store.PolicyChangeBundle, strconv.FormatInt(b.ID, 10))
	})
	if err != nil {
		return store.Bundle{}, fmt.Errorf("update bundle %q: %w", name, err)
	}
	return b, nil
}

// DeleteBundle implements store.Store.
func (s *Store) DeleteBundle(ctx context.Context, name string) error {
	err := s.inTx(ctx, func(r runner) error {
		if err := r.bump(ctx); err != nil {
			return err
		}
		var id int64
		err := r.queryRow(ctx, `SELECT id FROM bundles WHERE name = ?`, name).Scan(&id)
		if errors.Is(err, sql.ErrNoRows) {
			return store.ErrNotFound
		}
		if err != nil {
			return err
		}
		users, err := r.bundleUsers(ctx, id, name)
		if err != nil {
			return err
		}
		if len(users) > 0 {
			return fmt.Errorf("still used by %s: %w", uses(users), store.ErrConflict)
		}
		if _, err = r.exec(ctx, `DELETE FROM bundles WHERE id = ?`, id); err != nil {
			return s.dbErr(err)
		}
		// Nothing referenced it: caches drop this bundle only.
		return r.retag(ctx, store.PolicyChangeBundle, strconv.FormatInt(id, 10))
	})
	if err != nil {
		return fmt.Errorf("delete bundle %q: %w", name, err)
	}
	return nil
}

// bundleUsers describes what references a bundle: assignments, rules,
// menus, the unregistered default.
func (r runner) bundleUsers(ctx context.Context, id int64, name string) ([]string, error) {
	var out []string
	rows, err := r.query(ctx, `SELECT a.id, COALESCE(a.mac, ''), COALESCE(g.name, '') FROM assignments a
		LEFT JOIN device_groups g ON g.id = a.group_id WHERE a.bundle_id = ? ORDER BY a.id`, id)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var aid int64
		var mac, group string
		if err := rows.Scan(&aid, &mac, &group); err != nil {
			rows.Close()
			return nil, err
		}
		if mac != "" {
			out = append(out, fmt.Sprintf("assignment %d (device %s)", aid, mac))
		} else {
			out = append(out, fmt.Sprintf("assignment %d (group %q)", aid, group))
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	rules, err := r.strings(ctx, `SELECT name FROM rules WHERE bundle_id = ? ORDER BY pos`, id)
	if err != nil {
		return nil, err
	}
	for _, n := range rules {
		out = append(out, fmt.Sprintf("rule %q", n))
	}
	menus, err := r.menus(ctx)
	if err != nil {
		return nil, err
	}
	for _, m := range menus {
		if slices.Contains(m.menu.Bundles, name) {
			out = append(out, fmt.Sprintf("the menu of %s %s", m.scope, m.target))
		}
	}
	set, ok, err := r.settings(ctx)
	if err != nil {
		return nil, err
	}
	if ok && slices.Contains(set.Menu.Bundles, name) {
		out = append(out, "the default menu (settings)")
	}
	if ok && set.Unregistered.Bundle == name {
		out = append(out, "the unregistered default (settings)")
	}
	return out, nil
}

// renameBundleRefs carries a bundle's new name into menus and settings.
func (r runner) renameBundleRefs(ctx context.Context, from, to string) error {
	menus, err := r.menus(ctx)
	if err != nil {
		return err
	}
	for _, m := range menus {
		if !slices.Contains(m.menu.Bundles, from) {
			continue
		}
		m.menu.Bundles = renamed(m.menu.Bundles, from, to)
		if err := r.putMenu(ctx, m.scope, m.target, m.menu); err != nil {
			return err
		}
	}
	set, ok, err := r.settings(ctx)
	if err != nil || !ok {
		return err
	}
	if !slices.Contains(set.Menu.Bundles, from) && set.Unregistered.Bundle != from {
		return nil
	}
	set.Menu.Bundles = renamed(set.Menu.Bundles, from, to)
	if set.Unregistered.Bundle == from {
		set.Unregistered.Bundle = to
	}
	return r.putSettings(ctx, set)
}

func renamed(list []string, from, to string) []string {
	out := slices.Clone(list)
	for i, v := range out {
		if v == from {
			out[i] = to
		}
	}
	return out
}

// bundlesExist returns ErrNotFound naming the first of names that is not
// a bundle.
func (r runner) bundlesExist(ctx context.Context, names []string) error {
	want := slices.Compact(slices.Sorted(slices.Values(names)))
	if len(want) == 0 {
		return nil
	}
	args := make([]any, len(want))
	for i, n := range want {
		args[i] = n
	}
	have, err := r.strings(ctx, `SELECT name FROM bundles WHERE name IN (`+placeholders(len(want))+`)`, args...)
	if err != nil {
		return err
	}
	for _, n := range want {
		if !slices.Contains(have, n) {
			return fmt.Errorf("bundle %q: %w", n, store.ErrNotFound)
		}
	}
	return nil
}
