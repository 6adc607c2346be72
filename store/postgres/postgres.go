// Package postgres is the store for several Preboot servers sharing one
// PostgreSQL database. The implementation is package sqlstore, shared
// with SQLite.
package postgres

import (
	"context"

	"github.com/preboot/preboot/store/sqlstore"
)

// Store is a store.Store backed by PostgreSQL.
type Store = sqlstore.Store

// Open connects to the database named by dsn (e.g. "host=/run/postgresql
// dbname=preboot" or "postgres://preboot@db.example/preboot") and
// migrates it to the current schema.
func Open(ctx context.Context, dsn string) (*Store, error) {
	return sqlstore.OpenPostgres(ctx, dsn)
}
