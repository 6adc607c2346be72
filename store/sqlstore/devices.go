package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/preboot/preboot/store"
)

// deviceFields are the device columns, in scanDevice's order.
var deviceFields = []string{"id", "mac", "name", "uuid", "serial", "manufacturer", "product", "arch", "platform", "ip",
	"first_seen", "last_seen", "info", "asset_tag", "notes", "registered", "ram_bytes", "disk_bytes",
	"applied_bundle_id", "applied_bundle", "applied_version", "applied_job", "applied_at", "applied_assignment_id", "iface"}

// deviceCols lists the device columns, qualified by alias unless it is
// empty (RETURNING clauses take bare names).
func deviceCols(alias string) string {
	if alias == "" {
		return strings.Join(deviceFields, ", ")
	}
	return alias + "." + strings.Join(deviceFields, ", "+alias+".")
}

// withLastEvent selects devices (alias d) with their latest event; from
// is "devices d" or a subquery aliased d.
func withLastEvent(from string) string {
	return `SELECT ` + deviceCols("d") + `, e.id, e.time, e.kind, e.message, e.job, e.actor
	FROM ` + from + ` LEFT JOIN events e ON e.id = (SELECT id FROM events WHERE mac = d.mac ORDER BY id DESC LIMIT 1)`
}

var deviceWithLastEvent = withLastEvent("devices d") + ` WHERE d.mac = ?`

func scanDevice(r scanner, lastEvent bool) (store.Device, error) {
	var d store.Device
	var first, last, appliedAt int64
	var info string
	var ap store.Applied
	dest := []any{&d.ID, &d.MAC, &d.Name, &d.UUID, &d.Serial, &d.Manufacturer, &d.Product, &d.Arch, &d.Platform, &d.IP,
		&first, &last, &info, &d.AssetTag, &d.Notes, &d.Registered, &d.RAMBytes, &d.DiskBytes,
		&ap.BundleID, &ap.Bundle, &ap.BundleVersion, &ap.Job, &appliedAt, &ap.AssignmentID, &d.Interface}
	var eid, etime, ejob sql.NullInt64
	var ekind, emsg, eactor sql.NullString
	if lastEvent {
		dest = append(dest, &eid, &etime, &ekind, &emsg, &ejob, &eactor)
	}
	if err := r.Scan(dest...); err != nil {
		return store.Device{}, err
	}
	d.FirstSeen, d.LastSeen = fromMicros(first), fromMicros(last)
	if info != "" {
		d.Info = json.RawMessage(info)
	}
	if ap.BundleID != 0 || ap.Bundle != "" || appliedAt != 0 {
		ap.Time = optTime(appliedAt)
		d.Applied = &ap
	}
	if eid.Valid {
		d.LastEvent = &store.Event{ID: eid.Int64, MAC: d.MAC, Time: fromMicros(etime.Int64), Kind: ekind.String,
			Message: emsg.String, Job: ejob.Int64, Actor: eactor.String}
	}
	return d, nil
}

// lastSeenGrain is how stale last_seen may be: a sighting with nothing
// new within it is not written.
const lastSeenGrain = 30 * time.Second

// seeDevice are the upserts of SeeDevice: [0] a full sighting (empty
// values keep what is known), [1] FillOnly (only empty values are set).
// revisits stays 0 when the upsert inserts the row, which is how
// SeeDevice tells a new device from a known one in one statement.
var seeDevice = func() [2]string {
	var out [2]string
	changed := []string{"(excluded.%[1]s <> '' AND excluded.%[1]s <> d.%[1]s)", "(d.%[1]s = '' AND excluded.%[1]s <> '')"}
	for i, format := range []string{"CASE WHEN excluded.%[1]s = '' THEN d.%[1]s ELSE excluded.%[1]s END",
		"CASE WHEN d.%[1]s = '' THEN excluded.%[1]s ELSE d.%[1]s END"} {
		var set, diff []string
		for _, c := range []string{"uuid", "serial", "manufacturer", "product", "asset_tag", "arch", "platform", "ip"} {
			set = append(set, c+" = "+fmt.Sprintf(format, c))
			diff = append(diff, fmt.Sprintf(changed[i], c))
		}
		// The interface is where the device was seen last, even at
		// the DHCP stage: a sighting that names one replaces it.
		set = append(set, "iface = "+fmt.Sprintf("CASE WHEN excluded.%[1]s = '' THEN d.%[1]s ELSE excluded.%[1]s END", "iface"))
		diff = append(diff, fmt.Sprintf(changed[0], "iface"))
		// Nothing new and seen less than lastSeenGrain ago: no write
		// (one boot sights a device three or four times in seconds:
		// PXE DHCP, iPXE DHCP, the policy request); RETURNING then
		// gives no row and SeeDevice reads the device instead.
		out[i] = `INSERT INTO devices AS d (mac, uuid, serial, manufacturer, product, asset_tag, arch, platform, ip, iface, first_seen, last_seen, revisits)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0)
			ON CONFLICT (mac) DO UPDATE SET ` + strings.Join(set, ", ") + `,
			last_seen = CASE WHEN excluded.last_seen > d.last_seen THEN excluded.last_seen ELSE d.last_seen END,
			revisits = d.revisits + 1
			WHERE excluded.last_seen >= d.last_seen + ` + strconv.FormatInt(lastSeenGrain.Microseconds(), 10) + ` OR ` + strings.Join(diff, " OR ") + `
			RETURNING ` + deviceCols("") + `, revisits`
	}
	return out
}()

// seeDeviceOrRead is seeDevice that gives the stored device when the
// upsert writes nothing, in the same statement (PostgreSQL: one round
// trip); revisits is then -1. Its last argument is the MAC again. The
// last column is the policy version (see store.WithVersionSlot).
var seeDeviceOrRead = func() [2]string {
	var out [2]string
	const version = `(SELECT version FROM policy WHERE id = 1)`
	for i, q := range seeDevice {
		out[i] = `WITH up AS (` + q + `)
			SELECT *, ` + version + ` FROM up
			UNION ALL SELECT ` + deviceCols("") + `, -1, ` + version + ` FROM devices WHERE mac = ? AND NOT EXISTS (SELECT 1 FROM up)`
	}
	return out
}()

// deviceByMAC reads a device without its last event (what SeeDevice
// returns).
var deviceByMAC = `SELECT ` + deviceCols("") + ` FROM devices WHERE mac = ?`

// SeeDevice implements store.Store in one statement (an upsert; on
// PostgreSQL with the read of an unchanged device).
func (s *Store) SeeDevice(ctx context.Context, in store.Sighting) (store.Device, bool, error) {
	mac, err := normMAC(in.MAC)
	if err != nil {
		return store.Device{}, false, fmt.Errorf("see device: %w", err)
	}
	t := micros(normTime(in.Time))
	i := 0
	if in.FillOnly {
		i = 1
	}
	q, args := seeDevice[i], []any{mac, in.UUID, in.Serial, in.Manufacturer, in.Product, in.AssetTag, in.Arch, in.Platform, in.IP, in.Interface, t, t}
	var revisits, version int64
	extra := []any{&revisits}
	if s.d.name == DriverPostgres {
		q, args, extra = seeDeviceOrRead[i], append(args, mac), append(extra, &version)
	}
	row := s.r().queryRow(ctx, q, args...)
	d, err := scanDevice(scanFunc(func(dest ...any) error { return row.Scan(append(dest, extra...)...) }), false)
	if err == nil && version > 0 {
		store.NoteVersion(ctx, version)
	}
	if errors.Is(err, sql.ErrNoRows) {
		// Known, nothing changed, seen moments ago: nothing written
		// (PostgreSQL: and added by another transaction since the
		// statement began).
		d, err = scanDevice(s.r().queryRow(ctx, deviceByMAC, mac), false)
		if err != nil {
			return store.Device{}, false, fmt.Errorf("see device %s: %w", mac, err)
		}
		return d, false, nil
	}
	if err != nil {
		return store.Device{}, false, fmt.Errorf("see device %s: %w", mac, err)
	}
	return d, revisits == 0, nil
}

// scanFunc adapts a function to scanner.
type scanFunc func(dest ...any) error

func (f scanFunc) Scan(dest ...any) error { return f(dest...) }

// Device implements store.Store: the device with its last event and the
// last bundle applied, in one query.
func (s *Store) Device(ctx context.Context, mac string) (store.Device, error) {
	m, err := normMAC(mac)
	if err != nil {
		return store.Device{}, fmt.Errorf("device: %w", err)
	}
	d, err := scanDevice(s.r().queryRow(ctx, deviceWithLastEvent, m), true)
	if errors.Is(err, sql.ErrNoRows) {
		return store.Device{}, fmt.Errorf("device %s: %w", m, store.ErrNotFound)
	}
	if err != nil {
		return store.Device{}, fmt.Errorf("device %s: %w", m, err)
	}
	return d, nil
}

// deviceWhere builds the WHERE clause of a device filter (alias d).
func deviceWhere(f store.DeviceFilter) (string, []any) {
	var where []string
	var args []any
	if f.Search != "" {
		pat := "%" + likeEscaper.Replace(strings.ToLower(f.Search)) + "%"
		var or []string
		for _, c := range []string{"mac", "name", "serial", "manufacturer", "product", "ip", "asset_tag"} {
			or = append(or, `lower(d.`+c+`) LIKE ? ESCAPE '\'`)
			args = append(args, pat)
		}
		where = append(where, "("+strings.Join(or, " OR ")+")")
	}
	if f.Group != "" {
		where = append(where, `d.mac IN (SELECT m.mac FROM group_members m JOIN device_groups g ON g.id = m.group_id WHERE g.name = ?)`)
		args = append(args, f.Group)
	}
	if f.Registered != nil {
		where = append(where, `d.registered = ?`)
		args = append(args, *f.Registered)
	}
	if !f.SeenSince.IsZero() {
		where = append(where, `d.last_seen >= ?`)
		args = append(args, micros(f.SeenSince))
	}
	if len(where) == 0 {
		return "", nil
	}
	return " WHERE " + strings.Join(where, " AND "), args
}

var likeEscaper = strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)

// Devices implements store.Store: most recently seen first, each with its
// latest event.
func (s *Store) Devices(ctx context.Context, f store.DeviceFilter) ([]store.Device, error) {
	where, args := deviceWhere(f)
	limit, offset := page(f.Page)
	// The page of devices first, then the last event of each.
	const order = ` ORDER BY d.last_seen DESC, d.mac`
	q := withLastEvent(`(SELECT * FROM devices d`+where+order+` LIMIT ? OFFSET ?) d`) + order
	rows, err := s.r().query(ctx, q, append(args, limit, offset)...)
	if err != nil {
		return nil, fmt.Errorf("list devices: %w", err)
	}
	defer rows.Close()
	out := []store.Device{}
	for rows.Next() {
		d, err := scanDevice(rows, true)
		if err != nil {
			return nil, fmt.Errorf("list devices: %w", err)
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list devices: %w", err)
	}
	return out, nil
}

// CountDevices implements store.Store.
func (s *Store) CountDevices(ctx context.Context, f store.DeviceFilter) (int, error) {
	where, args := deviceWhere(f)
	var n int
	if err := s.r().queryRow(ctx, `SELECT count(*) FROM devices d`+where, args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("count devices: %w", err)
	}
	return n, nil
}

// CreateDevice implements store.Store: the device is registered; its
// first and last seen times are now unless given.
func (s *Store) CreateDevice(ctx context.Context, d store.Device) (store.Device, error) {
	mac, err := normMAC(d.MAC)
	if err != nil {
		return store.Device{}, fmt.Errorf("create device: %w", err)
	}
	first, last := normTime(d.FirstSeen), normTime(d.LastSeen)
	if d.LastSeen.IsZero() {
		last = first
	}
	info := ""
	if len(d.Info) > 0 {
		info = string(d.Info)
	}
	var id int64
	err = s.r().queryRow(ctx, `INSERT INTO devices (mac, name, uuid, serial, manufacturer, product, arch, platform, ip, first_seen, last_seen,
		info, asset_tag, notes, registered, ram_bytes, disk_bytes, revisits)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, TRUE, ?, ?, 0)
		ON CONFLICT (mac) DO NOTHING RETURNING id`,
		mac, d.Name, d.UUID, d.Serial, d.Manufacturer, d.Product, d.Arch, d.Platform, d.IP, micros(first), micros(last),
		info, d.AssetTag, d.Notes, d.RAMBytes, d.DiskBytes).Scan(&id)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return store.Device{}, fmt.Errorf("create device %s: the device is already known: %w", mac, store.ErrConflict)
	case s.d.unique(err):
		return store.Device{}, fmt.Errorf("create device %s: name %q is taken: %w", mac, d.Name, store.ErrConflict)
	case err != nil:
		return store.Device{}, fmt.Errorf("create device %s: %w", mac, err)
	}
	return s.Device(ctx, mac)
}

// UpdateDevice implements store.Store: fn may change Name, AssetTag, Notes
// and Registered; other changes are ignored.
func (s *Store) UpdateDevice(ctx context.Context, mac string, fn func(*store.Device) error) (store.Device, error) {
	m, err := normMAC(mac)
	if err != nil {
		return store.Device{}, fmt.Errorf("update device: %w", err)
	}
	err = s.inTx(ctx, func(r runner) error {
		d, err := scanDevice(r.queryRow(ctx, `SELECT `+deviceCols("d")+` FROM devices d WHERE d.mac = ?`+s.d.forUpdate, m), false)
		if errors.Is(err, sql.ErrNoRows) {
			return store.ErrNotFound
		}
		if err != nil {
			return err
		}
		if err := fn(&d); err != nil {
			return err
		}
		_, err = r.exec(ctx, `UPDATE devices SET name = ?, asset_tag = ?, notes = ?, registered = ? WHERE mac = ?`,
			d.Name, d.AssetTag, d.Notes, d.Registered, m)
		if s.d.unique(err) {
			return fmt.Errorf("name %q is taken: %w", d.Name, store.ErrConflict)
		}
		return err
	})
	if err != nil {
		return store.Device{}, fmt.Errorf("update device %s: %w", m, err)
	}
	return s.Device(ctx, m)
}

// DeleteDevice implements store.Store. The policy version grows when the
// device had an assignment, memberships or a menu.
func (s *Store) DeleteDevice(ctx context.Context, mac string) error {
	m, err := normMAC(mac)
	if err != nil {
		return fmt.Errorf("delete device: %w", err)
	}
	err = s.inTx(ctx, func(r runner) error {
		var refs int64
		err := r.queryRow(ctx, `SELECT (SELECT count(*) FROM assignments WHERE mac = ?) + (SELECT count(*) FROM group_members WHERE mac = ?)
			+ (SELECT count(*) FROM menus WHERE scope = ? AND target = ?) FROM devices WHERE mac = ?`,
			m, m, store.ScopeDevice, m, m).Scan(&refs)
		if errors.Is(err, sql.ErrNoRows) {
			return store.ErrNotFound
		}
		if err != nil {
			return err
		}
		bumped := refs > 0
		if bumped {
			if err := r.bumpFor(ctx, store.PolicyChangeDevice, m); err != nil {
				return err
			}
		}
		var changed int64
		for _, q := range []struct {
			sql  string
			args []any
		}{
			{`UPDATE device_groups SET members = members - 1 WHERE id IN (SELECT group_id FROM group_members WHERE mac = ?)`, []any{m}},
			{`DELETE FROM group_members WHERE mac = ?`, []any{m}},
			{`DELETE FROM assignments WHERE mac = ?`, []any{m}},
			{`DELETE FROM menus WHERE scope = ? AND target = ?`, []any{store.ScopeDevice, m}},
		} {
			n, err := r.affected(ctx, q.sql, q.args...)
			if err != nil {
				return err
			}
			changed += n
		}
		if _, err := r.exec(ctx, `DELETE FROM devices WHERE mac = ?`, m); err != nil {
			return err
		}
		if changed > 0 && !bumped {
			return r.bumpFor(ctx, store.PolicyChangeDevice, m) // added meanwhile by another server
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete device %s: %w", m, err)
	}
	return nil
}

// SetDeviceInfo implements store.Store.
func (s *Store) SetDeviceInfo(ctx context.Context, mac string, info json.RawMessage, ramBytes, diskBytes int64) error {
	m, err := normMAC(mac)
	if err != nil {
		return fmt.Errorf("device info: %w", err)
	}
	if len(info) > 0 && !json.Valid(info) {
		return fmt.Errorf("device %s info: not valid JSON: %w", m, store.ErrInvalid)
	}
	n, err := s.r().affected(ctx, `UPDATE devices SET info = ?, ram_bytes = ?, disk_bytes = ? WHERE mac = ?`, string(info), ramBytes, diskBytes, m)
	if err != nil {
		return fmt.Errorf("device %s info: %w", m, err)
	}
	if n == 0 {
		return fmt.Errorf("device %s: %w", m, store.ErrNotFound)
	}
	return nil
}

// SetApplied implements store.Store; a zero Applied clears the record.
func (s *Store) SetApplied(ctx context.Context, mac string, a store.Applied) error {
	m, err := normMAC(mac)
	if err != nil {
		return fmt.Errorf("set applied: %w", err)
	}
	var at int64
	if a != (store.Applied{}) {
		at = micros(normTime(a.Time))
	}
	n, err := s.r().affected(ctx, `UPDATE devices SET applied_bundle_id = ?, applied_bundle = ?, applied_version = ?, applied_job = ?, applied_at = ?,
		applied_assignment_id = ? WHERE mac = ?`, a.BundleID, a.Bundle, a.BundleVersion, a.Job, at, a.AssignmentID, m)
	if err != nil {
		return fmt.Errorf("device %s applied: %w", m, err)
	}
	if n == 0 {
		return fmt.Errorf("device %s: %w", m, store.ErrNotFound)
	}
	return nil
}
