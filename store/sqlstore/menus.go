package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/preboot/preboot/store"
)

// menuTarget checks a menu scope and normalises its target.
func menuTarget(scope, target string) (string, error) {
	switch scope {
	case store.ScopeDevice:
		return normMAC(target)
	case store.ScopeGroup:
		if target == "" {
			return "", fmt.Errorf("group name: required: %w", store.ErrInvalid)
		}
		return target, nil
	}
	return "", fmt.Errorf("menu scope %q: want %s or %s: %w", scope, store.ScopeDevice, store.ScopeGroup, store.ErrInvalid)
}

// menuChange is the policy change kind of a menu of scope.
func menuChange(scope string) string {
	if scope == store.ScopeDevice {
		return store.PolicyChangeDevice
	}
	return store.PolicyChangeGroupMenu
}

// SetMenu implements store.Store: the device or group must exist, and so
// must the bundles the menu offers.
func (s *Store) SetMenu(ctx context.Context, scope, target string, m store.Menu) error {
	t, err := menuTarget(scope, target)
	if err != nil {
		return fmt.Errorf("set menu: %w", err)
	}
	err = s.inTx(ctx, func(r runner) error {
		if err := r.bumpFor(ctx, menuChange(scope), t); err != nil {
			return err
		}
		var err error
		if scope == store.ScopeDevice {
			err = r.deviceExists(ctx, t)
		} else {
			_, err = r.groupID(ctx, t)
		}
		if err != nil {
			return err
		}
		if err := r.bundlesExist(ctx, m.Bundles); err != nil {
			return err
		}
		return r.putMenu(ctx, scope, t, m)
	})
	if err != nil {
		return fmt.Errorf("set menu of %s %s: %w", scope, t, err)
	}
	return nil
}

func (r runner) putMenu(ctx context.Context, scope, target string, m store.Menu) error {
	v, err := json.Marshal(m)
	if err != nil {
		return err
	}
	_, err = r.exec(ctx, `INSERT INTO menus (scope, target, value) VALUES (?, ?, ?)
		ON CONFLICT (scope, target) DO UPDATE SET value = excluded.value`, scope, target, string(v))
	return err
}

// Menu implements store.Store.
func (s *Store) Menu(ctx context.Context, scope, target string) (store.Menu, error) {
	t, err := menuTarget(scope, target)
	if err != nil {
		return store.Menu{}, fmt.Errorf("menu: %w", err)
	}
	var v string
	err = s.r().queryRow(ctx, `SELECT value FROM menus WHERE scope = ? AND target = ?`, scope, t).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return store.Menu{}, fmt.Errorf("menu of %s %s: %w", scope, t, store.ErrNotFound)
	}
	if err != nil {
		return store.Menu{}, fmt.Errorf("menu of %s %s: %w", scope, t, err)
	}
	var m store.Menu
	if err := json.Unmarshal([]byte(v), &m); err != nil {
		return store.Menu{}, fmt.Errorf("menu of %s %s: stored value: %w", scope, t, err)
	}
	return m, nil
}

// DeleteMenu implements store.Store (ErrNotFound when there is none).
func (s *Store) DeleteMenu(ctx context.Context, scope, target string) error {
	t, err := menuTarget(scope, target)
	if err != nil {
		return fmt.Errorf("delete menu: %w", err)
	}
	err = s.inTx(ctx, func(r runner) error {
		if err := r.bumpFor(ctx, menuChange(scope), t); err != nil {
			return err
		}
		n, err := r.affected(ctx, `DELETE FROM menus WHERE scope = ? AND target = ?`, scope, t)
		if err == nil && n == 0 {
			return store.ErrNotFound
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("delete menu of %s %s: %w", scope, t, err)
	}
	return nil
}

type storedMenu struct {
	scope, target string
	menu          store.Menu
}

// menus returns every menu override (a handful: one per configured group
// or device).
func (r runner) menus(ctx context.Context) ([]storedMenu, error) {
	rows, err := r.query(ctx, `SELECT scope, target, value FROM menus ORDER BY scope, target`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []storedMenu
	for rows.Next() {
		var m storedMenu
		var v string
		if err := rows.Scan(&m.scope, &m.target, &v); err != nil {
			return nil, err
		}
		if err := json.Unmarshal([]byte(v), &m.menu); err != nil {
			return nil, fmt.Errorf("menu of %s %s: stored value: %w", m.scope, m.target, err)
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

func (r runner) settings(ctx context.Context) (store.Settings, bool, error) {
	var v string
	err := r.queryRow(ctx, `SELECT value FROM settings WHERE id = 1`).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return store.Settings{}, false, nil
	}
	if err != nil {
		return store.Settings{}, false, err
	}
	var set store.Settings
	if err := json.Unmarshal([]byte(v), &set); err != nil {
		return store.Settings{}, false, fmt.Errorf("stored settings: %w", err)
	}
	return set, true, nil
}

func (r runner) putSettings(ctx context.Context, set store.Settings) error {
	v, err := json.Marshal(set)
	if err != nil {
		return err
	}
	_, err = r.exec(ctx, `INSERT INTO settings (id, value) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET value = excluded.value`, string(v))
	return err
}

// Settings implements store.Store.
func (s *Store) Settings(ctx context.Context) (store.Settings, bool, error) {
	set, ok, err := s.r().settings(ctx)
	if err != nil {
		return store.Settings{}, false, fmt.Errorf("settings: %w", err)
	}
	return set, ok, nil
}

// SetSettings implements store.Store: the bundles the default menu offers
// and the unregistered default's bundle must exist.
func (s *Store) SetSettings(ctx context.Context, set store.Settings) error {
	err := s.inTx(ctx, func(r runner) error {
		if err := r.bumpFor(ctx, store.PolicyChangeSettings, ""); err != nil {
			return err
		}
		names := set.Menu.Bundles
		if set.Unregistered.Bundle != "" {
			names = append(names[:len(names):len(names)], set.Unregistered.Bundle)
		}
		if err := r.bundlesExist(ctx, names); err != nil {
			return err
		}
		return r.putSettings(ctx, set)
	})
	if err != nil {
		return fmt.Errorf("set settings: %w", err)
	}
	return nil
}
