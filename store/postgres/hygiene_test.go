package postgres

import (
	"context"
	"database/sql"
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/preboot/preboot/store/sqlstore"
)

// A database migrated by a newer Preboot is refused, naming both versions.
func TestRefusesNewerSchema(t *testing.T) {
	ctx := context.Background()
	dsn := pg.Database(t)
	st, err := Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var known int64
	if err := db.QueryRow(`SELECT max(version_id) FROM goose_db_version`).Scan(&known); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO goose_db_version (version_id, is_applied) VALUES (99999, true)`); err != nil {
		t.Fatal(err)
	}
	_, err = Open(ctx, dsn)
	if !errors.Is(err, sqlstore.ErrSchemaTooNew) {
		t.Fatalf("opening a newer schema: %v", err)
	}
	for _, w := range []string{"99999", " " + strconv.FormatInt(known, 10) + ":"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not name %q", err, w)
		}
	}
}
