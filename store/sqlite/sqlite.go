// Package sqlite is the embedded default store: one SQLite file in WAL
// mode. The implementation is package sqlstore, shared with PostgreSQL.
package sqlite

import (
	"context"

	"github.com/preboot/preboot/store/sqlstore"
)

// Store is a store.Store backed by SQLite.
type Store = sqlstore.Store

// Open opens (creating if needed) the database at path and migrates it to
// the current schema.
func Open(ctx context.Context, path string) (*Store, error) {
	return sqlstore.OpenSQLite(ctx, path)
}
