// Package sqlite is the embedded default Store: one SQLite file in WAL mode,
// schema managed by embedded goose migrations.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"time"

	"github.com/pressly/goose/v3"
	_ "modernc.org/sqlite" // database/sql driver "sqlite"

	"github.com/preboot/preboot/store"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Store is a store.Store backed by SQLite.
type Store struct {
	db *sql.DB
}

var _ store.Store = (*Store)(nil)

// Open opens (creating if needed) the database at path and migrates it to
// the current schema.
func Open(ctx context.Context, path string) (*Store, error) {
	dsn := "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=busy_timeout(5000)&_pragma=foreign_keys(1)&_pragma=synchronous(NORMAL)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	// SQLite allows one writer; a single connection avoids SQLITE_BUSY
	// storms and keeps writes ordered.
	db.SetMaxOpenConns(1)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	if err := migrate(ctx, db); err != nil {
		db.Close()
		return nil, fmt.Errorf("migrate sqlite %s: %w", path, err)
	}
	return &Store{db: db}, nil
}

func migrate(ctx context.Context, db *sql.DB) error {
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return err
	}
	p, err := goose.NewProvider(goose.DialectSQLite3, db, sub, goose.WithLogger(goose.NopLogger()))
	if err != nil {
		return err
	}
	_, err = p.Up(ctx)
	return err
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

func unix(t time.Time) int64 { return t.UnixMicro() }

func fromUnix(v int64) time.Time { return time.UnixMicro(v).UTC() }

const deviceCols = `d.id, d.mac, d.name, d.uuid, d.serial, d.manufacturer, d.product, d.arch, d.platform, d.ip, d.first_seen, d.last_seen, d.info`

type scanner interface{ Scan(...any) error }

func scanDevice(r scanner) (store.Device, error) {
	var d store.Device
	var first, last int64
	var info string
	err := r.Scan(&d.ID, &d.MAC, &d.Name, &d.UUID, &d.Serial, &d.Manufacturer, &d.Product, &d.Arch, &d.Platform, &d.IP, &first, &last, &info)
	d.FirstSeen, d.LastSeen = fromUnix(first), fromUnix(last)
	if info != "" {
		d.Info = json.RawMessage(info)
	}
	return d, err
}

// SeeDevice implements store.Store.
func (s *Store) SeeDevice(ctx context.Context, in store.Sighting) (store.Device, bool, error) {
	mac, err := store.NormalizeMAC(in.MAC)
	if err != nil {
		return store.Device{}, false, err
	}
	if in.Time.IsZero() {
		in.Time = time.Now()
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return store.Device{}, false, fmt.Errorf("see device %s: %w", mac, err)
	}
	defer tx.Rollback()
	var exists int
	err = tx.QueryRowContext(ctx, `SELECT count(*) FROM devices WHERE mac = ?`, mac).Scan(&exists)
	if err != nil {
		return store.Device{}, false, fmt.Errorf("see device %s: %w", mac, err)
	}
	t := unix(in.Time)
	if exists == 0 {
		_, err = tx.ExecContext(ctx, `INSERT INTO devices (mac, uuid, serial, manufacturer, product, arch, platform, ip, first_seen, last_seen)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			mac, in.UUID, in.Serial, in.Manufacturer, in.Product, in.Arch, in.Platform, in.IP, t, t)
	} else {
		// Empty values keep what is known: a DHCP packet knows less than
		// the iPXE policy request, and must not erase its hardware data.
		set := "CASE WHEN ? = '' THEN %[1]s ELSE ? END"
		if in.FillOnly {
			set = "CASE WHEN ? = '' OR %[1]s <> '' THEN %[1]s ELSE ? END"
		}
		var cols []string
		var args []any
		for _, c := range []struct{ name, v string }{{"uuid", in.UUID}, {"serial", in.Serial}, {"manufacturer", in.Manufacturer},
			{"product", in.Product}, {"arch", in.Arch}, {"platform", in.Platform}, {"ip", in.IP}} {
			cols = append(cols, c.name+" = "+fmt.Sprintf(set, c.name))
			args = append(args, c.v, c.v)
		}
		args = append(args, t, mac)
		_, err = tx.ExecContext(ctx, `UPDATE devices SET `+strings.Join(cols, ", ")+`, last_seen = max(last_seen, ?) WHERE mac = ?`, args...)
	}
	if err != nil {
		return store.Device{}, false, fmt.Errorf("see device %s: %w", mac, err)
	}
	d, err := scanDevice(tx.QueryRowContext(ctx, `SELECT `+deviceCols+` FROM devices d WHERE d.mac = ?`, mac))
	if err != nil {
		return store.Device{}, false, fmt.Errorf("see device %s: %w", mac, err)
	}
	if err := tx.Commit(); err != nil {
		return store.Device{}, false, fmt.Errorf("see device %s: %w", mac, err)
	}
	return d, exists == 0, nil
}

// Device implements store.Store.
func (s *Store) Device(ctx context.Context, mac string) (store.Device, error) {
	m, err := store.NormalizeMAC(mac)
	if err != nil {
		return store.Device{}, err
	}
	d, err := scanDevice(s.db.QueryRowContext(ctx, `SELECT `+deviceCols+` FROM devices d WHERE d.mac = ?`, m))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Device{}, fmt.Errorf("device %s: %w", m, store.ErrNotFound)
	}
	if err != nil {
		return store.Device{}, fmt.Errorf("device %s: %w", m, err)
	}
	if ev, err := s.Events(ctx, store.EventFilter{MAC: m, Limit: 1}); err == nil && len(ev) == 1 {
		d.LastEvent = &ev[0]
	}
	return d, nil
}

// Devices implements store.Store; each device carries its latest event.
func (s *Store) Devices(ctx context.Context) ([]store.Device, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+deviceCols+`, e.id, e.time, e.kind, e.message
		FROM devices d LEFT JOIN events e ON e.id = (SELECT id FROM events WHERE mac = d.mac ORDER BY time DESC, id DESC LIMIT 1)
		ORDER BY d.last_seen DESC, d.mac`)
	if err != nil {
		return nil, fmt.Errorf("list devices: %w", err)
	}
	defer rows.Close()
	var out []store.Device
	for rows.Next() {
		var d store.Device
		var first, last int64
		var info string
		var eid, etime sql.NullInt64
		var ekind, emsg sql.NullString
		if err := rows.Scan(&d.ID, &d.MAC, &d.Name, &d.UUID, &d.Serial, &d.Manufacturer, &d.Product, &d.Arch, &d.Platform, &d.IP, &first, &last,
			&info, &eid, &etime, &ekind, &emsg); err != nil {
			return nil, fmt.Errorf("list devices: %w", err)
		}
		d.FirstSeen, d.LastSeen = fromUnix(first), fromUnix(last)
		if info != "" {
			d.Info = json.RawMessage(info)
		}
		if eid.Valid {
			d.LastEvent = &store.Event{ID: eid.Int64, MAC: d.MAC, Time: fromUnix(etime.Int64), Kind: ekind.String, Message: emsg.String}
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list devices: %w", err)
	}
	return out, nil
}

// SetDeviceInfo implements store.Store.
func (s *Store) SetDeviceInfo(ctx context.Context, mac string, info json.RawMessage) error {
	m, err := store.NormalizeMAC(mac)
	if err != nil {
		return err
	}
	res, err := s.db.ExecContext(ctx, `UPDATE devices SET info = ? WHERE mac = ?`, string(info), m)
	if err != nil {
		return fmt.Errorf("device %s info: %w", m, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("device %s: %w", m, store.ErrNotFound)
	}
	return nil
}

// AddEvent implements store.Store.
func (s *Store) AddEvent(ctx context.Context, e store.Event) error {
	mac, err := store.NormalizeMAC(e.MAC)
	if err != nil {
		return err
	}
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	if _, err := s.db.ExecContext(ctx, `INSERT INTO events (mac, time, kind, message) VALUES (?, ?, ?, ?)`,
		mac, unix(e.Time), e.Kind, e.Message); err != nil {
		return fmt.Errorf("add %s event for %s: %w", e.Kind, mac, err)
	}
	return nil
}

// Events implements store.Store; newest first.
func (s *Store) Events(ctx context.Context, f store.EventFilter) ([]store.Event, error) {
	q := `SELECT id, mac, time, kind, message FROM events WHERE 1=1`
	var args []any
	if f.MAC != "" {
		mac, err := store.NormalizeMAC(f.MAC)
		if err != nil {
			return nil, err
		}
		q += ` AND mac = ?`
		args = append(args, mac)
	}
	if f.Kind != "" {
		q += ` AND kind = ?`
		args = append(args, f.Kind)
	}
	if !f.Since.IsZero() {
		q += ` AND time >= ?`
		args = append(args, unix(f.Since))
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	q += ` ORDER BY time DESC, id DESC LIMIT ?`
	args = append(args, limit)
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list events: %w", err)
	}
	defer rows.Close()
	var out []store.Event
	for rows.Next() {
		var e store.Event
		var t int64
		if err := rows.Scan(&e.ID, &e.MAC, &t, &e.Kind, &e.Message); err != nil {
			return nil, fmt.Errorf("list events: %w", err)
		}
		e.Time = fromUnix(t)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list events: %w", err)
	}
	return out, nil
}

// SetWork implements store.Store.
func (s *Store) SetWork(ctx context.Context, w store.Work) error {
	mac, err := store.NormalizeMAC(w.MAC)
	if err != nil {
		return err
	}
	if w.CreatedAt.IsZero() {
		w.CreatedAt = time.Now()
	}
	if w.Loader == "" {
		w.Loader = store.LoaderIPXE
	}
	if w.Kind == "" {
		w.Kind = store.WorkBoot
	}
	if w.After == "" {
		w.After = store.AfterReboot
	}
	initrd, err := json.Marshal(w.Initrd)
	if err != nil {
		return fmt.Errorf("set work for %s: %w", mac, err)
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("set work for %s: %w", mac, err)
	}
	defer tx.Rollback()
	t := unix(w.CreatedAt)
	if _, err := tx.ExecContext(ctx, `INSERT INTO devices (mac, first_seen, last_seen) VALUES (?, ?, ?) ON CONFLICT (mac) DO NOTHING`, mac, t, t); err != nil {
		return fmt.Errorf("set work for %s: %w", mac, err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO work (mac, kind, image, after, compression, device, kernel, initrd, cmdline, loader, once, created_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (mac) DO UPDATE SET kind = excluded.kind, image = excluded.image, after = excluded.after,
		compression = excluded.compression, device = excluded.device, kernel = excluded.kernel, initrd = excluded.initrd,
		cmdline = excluded.cmdline, loader = excluded.loader, once = excluded.once, created_at = excluded.created_at`,
		mac, w.Kind, w.Image, w.After, w.Compression, w.Device, w.Kernel, string(initrd), w.Cmdline, w.Loader, w.Once, t); err != nil {
		return fmt.Errorf("set work for %s: %w", mac, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("set work for %s: %w", mac, err)
	}
	return nil
}

// Work implements store.Store.
func (s *Store) Work(ctx context.Context, mac string) (store.Work, error) {
	m, err := store.NormalizeMAC(mac)
	if err != nil {
		return store.Work{}, err
	}
	var w store.Work
	var initrd string
	var created int64
	err = s.db.QueryRowContext(ctx, `SELECT mac, kind, image, after, compression, device, kernel, initrd, cmdline, loader, once, created_at FROM work WHERE mac = ?`, m).
		Scan(&w.MAC, &w.Kind, &w.Image, &w.After, &w.Compression, &w.Device, &w.Kernel, &initrd, &w.Cmdline, &w.Loader, &w.Once, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return store.Work{}, fmt.Errorf("work for %s: %w", m, store.ErrNotFound)
	}
	if err != nil {
		return store.Work{}, fmt.Errorf("work for %s: %w", m, err)
	}
	if err := json.Unmarshal([]byte(initrd), &w.Initrd); err != nil {
		return store.Work{}, fmt.Errorf("work for %s: bad initrd list: %w", m, err)
	}
	w.CreatedAt = fromUnix(created)
	return w, nil
}

// ClearWork implements store.Store.
func (s *Store) ClearWork(ctx context.Context, mac string) error {
	m, err := store.NormalizeMAC(mac)
	if err != nil {
		return err
	}
	if _, err := s.db.ExecContext(ctx, `DELETE FROM work WHERE mac = ?`, m); err != nil {
		return fmt.Errorf("clear work for %s: %w", m, err)
	}
	return nil
}
