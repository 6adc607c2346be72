package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/pressly/goose/v3"
)

// ErrSchemaTooNew is returned by Open for a database migrated by a newer
// Preboot: this binary does not know its schema and must not write to it.
var ErrSchemaTooNew = errors.New("database schema is newer than this Preboot")

// DBFileMode is the mode of the SQLite database and its -wal and -shm
// files: they hold password hashes and token hashes.
const DBFileMode fs.FileMode = 0o600

// secureSQLiteFiles creates the database file with DBFileMode if it does
// not exist (SQLite gives its -wal and -shm files the database file's
// mode) and removes group and world permissions from existing ones.
func secureSQLiteFiles(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, DBFileMode)
	switch {
	case err == nil:
		return f.Close()
	case !errors.Is(err, fs.ErrExist):
		return err
	}
	for _, p := range []string{path, path + "-wal", path + "-shm", path + "-journal"} {
		fi, err := os.Stat(p)
		if err != nil {
			continue
		}
		if fi.Mode().IsRegular() && fi.Mode().Perm()&^DBFileMode != 0 {
			if err := os.Chmod(p, fi.Mode().Perm()&DBFileMode); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkSchemaVersion refuses a database whose goose version is higher than
// the last migration this binary knows.
func checkSchemaVersion(ctx context.Context, p *goose.Provider) error {
	srcs := p.ListSources()
	var known int64
	for _, s := range srcs {
		known = max(known, s.Version)
	}
	have, err := p.GetDBVersion(ctx)
	if err != nil {
		return fmt.Errorf("schema version: %w", err)
	}
	if have > known {
		return fmt.Errorf("%w: the database is at schema version %d, this binary knows versions up to %d: "+
			"it was upgraded by a newer Preboot; run that version (or restore a backup taken before the upgrade)", ErrSchemaTooNew, have, known)
	}
	return nil
}
