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
	var out store.Registered
	err = s.batch.do(ctx, func(ctx context.Context, r runner) error {
		var err error
		out, err = r.register(ctx, reg)
		return err
	})
	if err != nil {
		return store.Registered{}, fmt.Errorf("register %s: %w", m, err)
	}
	return out, nil
}

// register is one registration inside the transaction r.
func (r runner) register(ctx context.Context, reg store.Registration) (store.Registered, error) {
	s := r.s
	dev, err := scanDevice(r.queryRow(ctx, `SELECT `+deviceCols("d")+` FROM devices d WHERE d.mac = ?`+s.d.forUpdate, reg.MAC), false)
	if errors.Is(err, sql.ErrNoRows) {
		return store.Registered{}, fmt.Errorf("device %s: %w", reg.MAC, store.ErrNotFound)
	}
	if err != nil {
		return store.Registered{}, err
	}
	if reg.Group != "" || reg.BundleID != 0 {
		// Memberships and assignments are policy: one logged change of
		// this device (and the lock that serialises policy changes).
		if err := r.bumpFor(ctx, store.PolicyChangeDevice, reg.MAC); err != nil {
			return store.Registered{}, err
		}
	}
	name := dev.Name
	if name == "" && reg.Name != "" {
		if name, err = r.freeName(ctx, reg.Name, reg.MAC); err != nil {
			return store.Registered{}, err
		}
	}
	if _, err := r.exec(ctx, `UPDATE devices SET name = ?, registered = TRUE WHERE mac = ?`, name, reg.MAC); err != nil {
		if s.d.unique(err) {
			return store.Registered{}, fmt.Errorf("name %q is taken: %w", name, store.ErrConflict)
		}
		return store.Registered{}, err
	}
	dev.Name, dev.Registered = name, true
	out := store.Registered{Device: dev, Name: name}
	if reg.Group != "" {
		id, err := r.groupID(ctx, reg.Group)
		if err != nil {
			return store.Registered{}, err
		}
		n, err := r.affected(ctx, `INSERT INTO group_members (group_id, mac) VALUES (?, ?) ON CONFLICT DO NOTHING`, id, reg.MAC)
		if err != nil {
			return store.Registered{}, s.dbErr(err)
		}
		if n > 0 {
			if _, err := r.exec(ctx, `UPDATE device_groups SET members = members + 1 WHERE id = ?`, id); err != nil {
				return store.Registered{}, err
			}
			out.Joined = true
		}
	}
	if reg.BundleID != 0 {
		var id int64
		err := r.queryRow(ctx, `INSERT INTO assignments (bundle_id, mac, group_id, once, force, created_at, not_before, wake)
			VALUES (?, ?, NULL, TRUE, FALSE, ?, 0, FALSE) RETURNING id`, reg.BundleID, reg.MAC, micros(now())).Scan(&id)
		switch {
		case s.d.unique(err):
			return store.Registered{}, fmt.Errorf("device %s already has an assignment: %w", reg.MAC, store.ErrConflict)
		case s.d.foreignKey(err):
			return store.Registered{}, fmt.Errorf("bundle #%d: %w", reg.BundleID, store.ErrNotFound)
		case err != nil:
			return store.Registered{}, err
		}
		a, err := r.assignment(ctx, id)
		if err != nil {
			return store.Registered{}, err
		}
		out.Assignment = &a
	}
	if reg.Event != nil {
		e := reg.Event(out)
		e.MAC = reg.MAC
		if e.Kind == "" {
			return store.Registered{}, fmt.Errorf("registration event: a kind is required: %w", store.ErrInvalid)
		}
		e.Time = normTime(e.Time)
		if err := r.queryRow(ctx, `INSERT INTO events (mac, time, kind, message, job, actor) VALUES (?, ?, ?, ?, ?, ?) RETURNING id`,
			e.MAC, micros(e.Time), e.Kind, e.Message, e.Job, e.Actor).Scan(&e.ID); err != nil {
			return store.Registered{}, fmt.Errorf("registration event: %w", err)
		}
		out.Event = e
	}
	return out, nil
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
