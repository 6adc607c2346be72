// Package sqlstore is the one SQL implementation of store.Store, shared by
// SQLite (the embedded default) and PostgreSQL (several servers sharing a
// database). Queries are written once with `?` placeholders and rebound to
// $1, $2... for PostgreSQL; the few differences between the two databases
// (error codes, row locks, migrations) live in a dialect value.
//
// Concurrency: every change to the policy model (bundles, groups, members,
// assignments, rules, menus, settings) starts its transaction by bumping
// the policy version row, which serialises those transactions across
// servers on PostgreSQL (the row lock) and makes checks such as "the next
// free priority" or "the last rule position" race-free.
package sqlstore

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
	"modernc.org/sqlite" // database/sql driver "sqlite"

	"github.com/preboot/preboot/store"
)

//go:embed migrations/sqlite/*.sql migrations/postgres/*.sql
var migrations embed.FS

// Driver names accepted by Open.
const (
	DriverSQLite   = "sqlite"
	DriverPostgres = "postgres"
)

// dialect holds what differs between the databases.
type dialect struct {
	name       string
	goose      goose.Dialect
	dollar     bool   // placeholders are $1, $2...
	forUpdate  string // row lock suffix of a SELECT inside a transaction
	cacheStmts bool   // keep prepared statements (pgx caches them itself)
	unique     func(error) bool
	foreignKey func(error) bool
	retry      func(error) bool // the transaction may succeed if run again
}

var sqliteDialect = dialect{
	name:       DriverSQLite,
	goose:      goose.DialectSQLite3,
	cacheStmts: true,
	unique: func(err error) bool {
		var e *sqlite.Error
		// SQLITE_CONSTRAINT_UNIQUE, SQLITE_CONSTRAINT_PRIMARYKEY
		return errors.As(err, &e) && (e.Code() == 2067 || e.Code() == 1555)
	},
	foreignKey: func(err error) bool {
		var e *sqlite.Error
		return errors.As(err, &e) && e.Code() == 787 // SQLITE_CONSTRAINT_FOREIGNKEY
	},
	retry: func(error) bool { return false },
}

var postgresDialect = dialect{
	name:      DriverPostgres,
	goose:     goose.DialectPostgres,
	dollar:    true,
	forUpdate: " FOR UPDATE",
	unique:    func(err error) bool { return pgCode(err) == "23505" },
	foreignKey: func(err error) bool {
		return pgCode(err) == "23503"
	},
	retry: func(err error) bool {
		c := pgCode(err)
		return c == "40001" || c == "40P01" // serialization_failure, deadlock_detected
	},
}

func pgCode(err error) string {
	var e *pgconn.PgError
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

// Store is a store.Store on a SQL database.
type Store struct {
	db *sql.DB
	d  *dialect

	mu    sync.Mutex
	stmts map[string]*sql.Stmt // prepared statements by query (SQLite)

	gate        *fifo         // SQLite only: its one connection, to waiters in arrival order
	checkpoints *checkpointer // SQLite only
	walSync     *groupSync    // SQLite only: fsyncs the WAL for durable lease commits
	batch       *groupCommit  // events and registrations of concurrent requests, one commit per batch
}

var _ store.Store = (*Store)(nil)

// maxStmts bounds the prepared-statement cache; queries are built from a
// finite set of filter combinations, so it is not reached in practice.
const maxStmts = 512

// Open opens a store: driver "sqlite" (dsnOrPath is a file path) or
// "postgres" (dsnOrPath is a libpq-style DSN or URL).
func Open(ctx context.Context, driver, dsnOrPath string) (*Store, error) {
	switch driver {
	case DriverSQLite, "sqlite3":
		return OpenSQLite(ctx, dsnOrPath)
	case DriverPostgres, "postgresql", "pgx":
		return OpenPostgres(ctx, dsnOrPath)
	}
	return nil, fmt.Errorf("open store: unknown driver %q (want sqlite or postgres): %w", driver, store.ErrInvalid)
}

// OpenSQLite opens (creating if needed) the SQLite database at path in WAL
// mode and migrates it to the current schema.
func OpenSQLite(ctx context.Context, path string) (*Store, error) {
	if path == "" {
		return nil, fmt.Errorf("open sqlite: empty path: %w", store.ErrInvalid)
	}
	// The connection does not checkpoint the WAL itself, except as a
	// backstop when it reaches walBackstop pages: a background
	// connection does it (see checkpointer), so that the fsyncs of
	// checkpoints stay off the boot path.
	if err := secureSQLiteFiles(path); err != nil {
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	dsn := "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=busy_timeout(5000)&_pragma=foreign_keys(1)" +
		"&_pragma=synchronous(NORMAL)&_pragma=wal_autocheckpoint(" + strconv.Itoa(walBackstop) + ")&_pragma=journal_size_limit(67108864)&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	// SQLite allows one writer; a single connection avoids SQLITE_BUSY
	// storms and keeps writes ordered. Transactions begin IMMEDIATE so
	// that another process's writer makes them wait (busy_timeout)
	// instead of failing when a read turns into a write.
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	s := &Store{db: db, d: &sqliteDialect, stmts: map[string]*sql.Stmt{}, walSync: newGroupSync(path + "-wal"), gate: newFIFO()}
	s.batch = newGroupCommit(s)
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("migrate sqlite %s: %w", path, err)
	}
	cp, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(5000)&_pragma=synchronous(NORMAL)")
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	cp.SetMaxOpenConns(1)
	s.checkpoints = startCheckpointer(cp, checkpointEvery)
	return s, nil
}

// walBackstop is the WAL size (pages) at which the store's own connection
// checkpoints, should the background checkpointer fall behind.
const walBackstop = 10000

// checkpointEvery is how often the background connection checkpoints
// the WAL into the database file.
const checkpointEvery = 100 * time.Millisecond

// checkpointer copies the WAL into the database file from its own
// connection (PRAGMA wal_checkpoint(PASSIVE): it never blocks the store's
// connection, which goes on reading and writing meanwhile).
type checkpointer struct {
	db   *sql.DB
	stop chan struct{}
	done chan struct{}
}

func startCheckpointer(db *sql.DB, every time.Duration) *checkpointer {
	c := &checkpointer{db: db, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-c.stop:
				return
			case <-t.C:
				// Errors (e.g. SQLITE_BUSY while another checkpoint runs)
				// only delay the copy to the next tick or the backstop.
				c.db.Exec(`PRAGMA wal_checkpoint(PASSIVE)`)
			}
		}
	}()
	return c
}

// close stops the checkpointer, checkpoints one last time and closes its
// connection.
func (c *checkpointer) close() error {
	close(c.stop)
	<-c.done
	_, err := c.db.Exec(`PRAGMA wal_checkpoint(PASSIVE)`)
	if cerr := c.db.Close(); err == nil {
		err = cerr
	}
	return err
}

// OpenPostgres connects to PostgreSQL (a DSN such as
// "host=/run/postgresql dbname=preboot" or "postgres://user@host/db") and
// migrates the database to the current schema. Several servers may open
// the same database: migrations take an advisory lock.
func OpenPostgres(ctx context.Context, dsn string) (*Store, error) {
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return nil, fmt.Errorf("open postgres: %w", err)
	}
	db.SetMaxOpenConns(16)
	db.SetMaxIdleConns(16)
	db.SetConnMaxIdleTime(5 * time.Minute)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open postgres: %w", err)
	}
	s := &Store{db: db, d: &postgresDialect}
	s.batch = newGroupCommit(s)
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("migrate postgres: %w", err)
	}
	return s, nil
}

// MigrationFS returns the embedded goose migrations of a driver ("sqlite"
// or "postgres"), for tools and tests that migrate step by step.
func MigrationFS(driver string) (fs.FS, error) {
	switch driver {
	case DriverSQLite:
		return fs.Sub(migrations, "migrations/sqlite")
	case DriverPostgres:
		return fs.Sub(migrations, "migrations/postgres")
	}
	return nil, fmt.Errorf("migrations: unknown driver %q: %w", driver, store.ErrInvalid)
}

func (s *Store) migrate(ctx context.Context) error {
	sub, err := MigrationFS(s.d.name)
	if err != nil {
		return err
	}
	opts := []goose.ProviderOption{goose.WithLogger(goose.NopLogger()), goose.WithDisableGlobalRegistry(true)}
	if s.d.name == DriverPostgres {
		opts = append(opts, goose.WithSessionLocker(advisoryLocker{}))
	}
	p, err := goose.NewProvider(s.d.goose, s.db, sub, opts...)
	if err != nil {
		return err
	}
	if err := checkSchemaVersion(ctx, p); err != nil {
		return err
	}
	_, err = p.Up(ctx)
	return err
}

// migrationLockID names the PostgreSQL advisory lock (per database) that
// serialises servers migrating the same database at once.
const migrationLockID = 0x70726562 // "preb"

// advisoryLocker is a goose session locker that waits on a PostgreSQL
// advisory lock (goose's own polls every few seconds).
type advisoryLocker struct{}

var _ lock.SessionLocker = advisoryLocker{}

// SessionLock implements lock.SessionLocker; it waits until the lock is
// free or ctx ends.
func (advisoryLocker) SessionLock(ctx context.Context, conn *sql.Conn) error {
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, int64(migrationLockID)); err != nil {
		return fmt.Errorf("migration lock: %w", err)
	}
	return nil
}

// SessionUnlock implements lock.SessionLocker.
func (advisoryLocker) SessionUnlock(ctx context.Context, conn *sql.Conn) error {
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_unlock($1)`, int64(migrationLockID)); err != nil {
		return fmt.Errorf("migration unlock: %w", err)
	}
	return nil
}

// Driver returns "sqlite" or "postgres".
func (s *Store) Driver() string { return s.d.name }

// Close closes the database.
func (s *Store) Close() error {
	s.batch.close()
	s.mu.Lock()
	for q, st := range s.stmts {
		st.Close()
		delete(s.stmts, q)
	}
	s.mu.Unlock()
	var cerr error
	if s.checkpoints != nil {
		cerr = s.checkpoints.close()
	}
	if err := s.db.Close(); err != nil {
		return err
	}
	return cerr
}

// rebind turns `?` placeholders into $1, $2... for PostgreSQL. Question
// marks inside single-quoted literals are left alone.
func (s *Store) rebind(q string) string {
	if !s.d.dollar || !strings.Contains(q, "?") {
		return q
	}
	var b strings.Builder
	b.Grow(len(q) + 16)
	n, quoted := 0, false
	for i := 0; i < len(q); i++ {
		c := q[i]
		switch {
		case c == '\'':
			quoted = !quoted
			b.WriteByte(c)
		case c == '?' && !quoted:
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// stmt returns a cached prepared statement for q (SQLite only), or nil.
func (s *Store) stmt(ctx context.Context, q string) *sql.Stmt {
	if !s.d.cacheStmts {
		return nil
	}
	s.mu.Lock()
	st, ok := s.stmts[q]
	full := len(s.stmts) >= maxStmts
	s.mu.Unlock()
	if ok {
		return st
	}
	if full {
		return nil
	}
	// Prepared without s.mu held: preparing waits for the connection,
	// which a transaction looking up its statements (txStmt) may hold.
	if err := s.gate.lock(ctx); err != nil {
		return nil
	}
	st, err := s.db.PrepareContext(ctx, q)
	s.gate.unlock()
	if err != nil {
		return nil // the plain query reports the error
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.stmts[q]; ok {
		st.Close() // prepared meanwhile by another caller
		return old
	}
	s.stmts[q] = st
	return st
}

// runner runs queries on the database or inside a transaction.
type runner struct {
	s  *Store
	tx *sql.Tx
	// missed collects a transaction's queries that have no cached
	// statement yet: tx1 prepares them once the transaction ended (the
	// only SQLite connection is the transaction's until then).
	missed *[]string
}

func (s *Store) r() runner { return runner{s: s} }

// txStmt returns the cached statement of q for use in the transaction
// (nil if there is none yet: it is prepared after the transaction).
func (r runner) txStmt(ctx context.Context, q string) *sql.Stmt {
	if !r.s.d.cacheStmts {
		return nil
	}
	r.s.mu.Lock()
	st, ok := r.s.stmts[q]
	r.s.mu.Unlock()
	if !ok {
		if r.missed != nil && len(*r.missed) < 32 {
			*r.missed = append(*r.missed, q)
		}
		return nil
	}
	return r.tx.StmtContext(ctx, st)
}

func (r runner) exec(ctx context.Context, q string, args ...any) (sql.Result, error) {
	q = r.s.rebind(q)
	if r.tx != nil {
		if st := r.txStmt(ctx, q); st != nil {
			return st.ExecContext(ctx, args...)
		}
		return r.tx.ExecContext(ctx, q, args...)
	}
	st := r.s.stmt(ctx, q)
	if err := r.s.gate.lock(ctx); err != nil {
		return nil, err
	}
	defer r.s.gate.unlock()
	if st != nil {
		return st.ExecContext(ctx, args...)
	}
	return r.s.db.ExecContext(ctx, q, args...)
}

func (r runner) query(ctx context.Context, q string, args ...any) (*rows, error) {
	q = r.s.rebind(q)
	if r.tx != nil {
		if st := r.txStmt(ctx, q); st != nil {
			return wrapRows(st.QueryContext(ctx, args...))
		}
		return wrapRows(r.tx.QueryContext(ctx, q, args...))
	}
	st := r.s.stmt(ctx, q)
	if err := r.s.gate.lock(ctx); err != nil {
		return nil, err
	}
	var rs *sql.Rows
	var err error
	if st != nil {
		rs, err = st.QueryContext(ctx, args...)
	} else {
		rs, err = r.s.db.QueryContext(ctx, q, args...)
	}
	if err != nil {
		r.s.gate.unlock()
		return nil, err
	}
	return &rows{Rows: rs, gate: r.s.gate}, nil
}

func (r runner) queryRow(ctx context.Context, q string, args ...any) *row {
	q = r.s.rebind(q)
	if r.tx != nil {
		if st := r.txStmt(ctx, q); st != nil {
			return &row{row: st.QueryRowContext(ctx, args...)}
		}
		return &row{row: r.tx.QueryRowContext(ctx, q, args...)}
	}
	st := r.s.stmt(ctx, q)
	if err := r.s.gate.lock(ctx); err != nil {
		return &row{err: err}
	}
	if st != nil {
		return &row{row: st.QueryRowContext(ctx, args...), gate: r.s.gate}
	}
	return &row{row: r.s.db.QueryRowContext(ctx, q, args...), gate: r.s.gate}
}

// affected runs an UPDATE/DELETE and returns how many rows it touched.
func (r runner) affected(ctx context.Context, q string, args ...any) (int64, error) {
	res, err := r.exec(ctx, q, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// errNoChange, returned by a transaction's function, rolls it back and
// makes inTx return nil (an idempotent call that changed nothing).
var errNoChange = errors.New("no change")

// inTx runs fn in a transaction, committing when it returns nil. On
// PostgreSQL a deadlock or serialization failure runs it again (a few
// times): fn must not keep state between runs.
func (s *Store) inTx(ctx context.Context, fn func(r runner) error) error {
	const attempts = 4
	var err error
	for i := 0; i < attempts; i++ {
		err = s.tx1(ctx, fn)
		if err == nil || !s.d.retry(err) || ctx.Err() != nil {
			return err
		}
		time.Sleep(time.Duration(i+1) * 5 * time.Millisecond)
	}
	return err
}

func (s *Store) tx1(ctx context.Context, fn func(r runner) error) error {
	var missed []string
	defer func() {
		for _, q := range missed {
			s.stmt(ctx, q) // the next transaction runs it prepared
		}
	}()
	if err := s.gate.lock(ctx); err != nil {
		return err
	}
	defer s.gate.unlock()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(runner{s: s, tx: tx, missed: &missed}); err != nil {
		tx.Rollback()
		if errors.Is(err, errNoChange) {
			return nil
		}
		return err
	}
	return tx.Commit()
}

// bump grows the policy version; called first in every transaction that
// changes the policy model (it also takes the lock that serialises them).
// The change is logged as one that needs a full reload.
func (r runner) bump(ctx context.Context) error {
	return r.bumpFor(ctx, store.PolicyChangeAny, "")
}

// changeLogKeep is how many versions of policy_changes are kept.
const changeLogKeep = 10000

// bumpFor is bump for a change whose kind and target are known (see
// store.PolicyChange): caches of other servers update that target only.
func (r runner) bumpFor(ctx context.Context, kind, target string) error {
	_, err := r.bumpVersion(ctx, kind, target)
	return err
}

// bumpVersion is bumpFor that returns the new version.
func (r runner) bumpVersion(ctx context.Context, kind, target string) (int64, error) {
	var v int64
	if r.s.d.name == DriverPostgres {
		// One round trip: the version and its log entry.
		if err := r.queryRow(ctx, `WITH v AS (UPDATE policy SET version = version + 1 WHERE id = 1 RETURNING version)
			INSERT INTO policy_changes (version, kind, target) SELECT version, ?, ? FROM v RETURNING version`, kind, target).Scan(&v); err != nil {
			return 0, fmt.Errorf("policy version: %w", err)
		}
	} else {
		if err := r.queryRow(ctx, `UPDATE policy SET version = version + 1 WHERE id = 1 RETURNING version`).Scan(&v); err != nil {
			return 0, fmt.Errorf("policy version: %w", err)
		}
		if _, err := r.exec(ctx, `INSERT INTO policy_changes (version, kind, target) VALUES (?, ?, ?)`, v, kind, target); err != nil {
			return 0, fmt.Errorf("policy change log: %w", err)
		}
	}
	if v%1000 == 0 {
		if _, err := r.exec(ctx, `DELETE FROM policy_changes WHERE version <= ?`, v-changeLogKeep); err != nil {
			return 0, fmt.Errorf("policy change log: %w", err)
		}
	}
	return v, nil
}

// retag says what the change logged by this transaction's bump was,
// once the transaction knows (e.g. that a bundle was not renamed).
func (r runner) retag(ctx context.Context, kind, target string) error {
	if _, err := r.exec(ctx, `UPDATE policy_changes SET kind = ?, target = ? WHERE version = (SELECT version FROM policy WHERE id = 1)`, kind, target); err != nil {
		return fmt.Errorf("policy change log: %w", err)
	}
	return nil
}

// PolicyVersion implements store.Store.
func (s *Store) PolicyVersion(ctx context.Context) (int64, error) {
	var v int64
	if err := s.r().queryRow(ctx, `SELECT version FROM policy WHERE id = 1`).Scan(&v); err != nil {
		return 0, fmt.Errorf("policy version: %w", err)
	}
	return v, nil
}

// PolicyChanges implements store.Store.
func (s *Store) PolicyChanges(ctx context.Context, after, upto int64) ([]store.PolicyChange, error) {
	if upto-after > changeLogKeep {
		return nil, nil // not all logged: the caller reloads everything
	}
	rows, err := s.r().query(ctx, `SELECT version, kind, target FROM policy_changes WHERE version > ? AND version <= ? ORDER BY version`, after, upto)
	if err != nil {
		return nil, fmt.Errorf("policy changes: %w", err)
	}
	defer rows.Close()
	var out []store.PolicyChange
	for rows.Next() {
		var c store.PolicyChange
		if err := rows.Scan(&c.Version, &c.Kind, &c.Target); err != nil {
			return nil, fmt.Errorf("policy changes: %w", err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("policy changes: %w", err)
	}
	return out, nil
}

// dbErr classifies a database error: unique violations wrap
// store.ErrConflict, foreign-key violations store.ErrNotFound.
func (s *Store) dbErr(err error) error {
	switch {
	case err == nil:
		return nil
	case s.d.unique(err):
		return fmt.Errorf("%w: %w", store.ErrConflict, err)
	case s.d.foreignKey(err):
		return fmt.Errorf("%w: %w", store.ErrNotFound, err)
	}
	return err
}

// Times are stored as microseconds since the epoch.
func micros(t time.Time) int64 { return t.UnixMicro() }

func fromMicros(v int64) time.Time { return time.UnixMicro(v).UTC() }

// optMicros stores the zero time as 0.
func optMicros(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return micros(t)
}

// optTime reads 0 as the zero time.
func optTime(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return fromMicros(v)
}

// now is the current time at the precision the store keeps, so that what
// a method returns equals what a later read returns.
func now() time.Time { return fromMicros(micros(time.Now())) }

// normTime brings a caller's time to the stored precision (now if zero).
func normTime(t time.Time) time.Time {
	if t.IsZero() {
		return now()
	}
	return fromMicros(micros(t))
}

func normMAC(s string) (string, error) {
	m, err := store.NormalizeMAC(s)
	if err != nil {
		return "", fmt.Errorf("%w: %w", store.ErrInvalid, err)
	}
	return m, nil
}

// page returns the limit and offset of a page: 100 by default, at most
// 10000.
func page(p store.Page) (limit, offset int) {
	return clampLimit(p.Limit, 100), max(p.Offset, 0)
}

func clampLimit(limit, def int) int {
	switch {
	case limit <= 0:
		return def
	case limit > 10000:
		return 10000
	}
	return limit
}

type scanner interface{ Scan(...any) error }

// placeholders returns "?, ?, ?" for n values.
func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?, ", n), ", ")
}

// uses lists what still references a record, for ErrConflict messages.
func uses(list []string) string {
	const show = 10
	if len(list) > show {
		return strings.Join(list[:show], ", ") + fmt.Sprintf(" and %d more", len(list)-show)
	}
	return strings.Join(list, ", ")
}
