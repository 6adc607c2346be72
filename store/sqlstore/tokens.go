package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/preboot/preboot/store"
)

const tokenCols = `id, name, hash, prefix, created_at, last_used, scope`

func scanToken(r scanner) (store.Token, error) {
	var t store.Token
	var created, used int64
	if err := r.Scan(&t.ID, &t.Name, &t.Hash, &t.Prefix, &created, &used, &t.Scope); err != nil {
		return store.Token{}, err
	}
	t.CreatedAt, t.LastUsed = fromMicros(created), optTime(used)
	return t, nil
}

// CreateToken implements store.Store: Name and Hash are required and
// unique; Scope is store.ScopeAdmin or store.ScopeReplication.
func (s *Store) CreateToken(ctx context.Context, t store.Token) (store.Token, error) {
	if t.Name == "" || t.Hash == "" {
		return store.Token{}, fmt.Errorf("create token: a name and a hash are required: %w", store.ErrInvalid)
	}
	if t.Scope != store.ScopeAdmin && t.Scope != store.ScopeReplication {
		return store.Token{}, fmt.Errorf("create token: unknown scope %q: %w", t.Scope, store.ErrInvalid)
	}
	t.CreatedAt = normTime(t.CreatedAt)
	t.LastUsed = time.Time{}
	err := s.inTx(ctx, func(r runner) error {
		var one int
		switch err := r.queryRow(ctx, `SELECT 1 FROM tokens WHERE name = ?`, t.Name).Scan(&one); {
		case err == nil:
			return fmt.Errorf("token name %q is taken: %w", t.Name, store.ErrConflict)
		case !errors.Is(err, sql.ErrNoRows):
			return err
		}
		return s.dbErr(r.queryRow(ctx, `INSERT INTO tokens (name, hash, prefix, created_at, last_used, scope) VALUES (?, ?, ?, ?, 0, ?) RETURNING id`,
			t.Name, t.Hash, t.Prefix, micros(t.CreatedAt), t.Scope).Scan(&t.ID))
	})
	if err != nil {
		return store.Token{}, fmt.Errorf("create token %q: %w", t.Name, err)
	}
	return t, nil
}

// TokenByHash implements store.Store.
func (s *Store) TokenByHash(ctx context.Context, hash string) (store.Token, error) {
	t, err := scanToken(s.r().queryRow(ctx, `SELECT `+tokenCols+` FROM tokens WHERE hash = ?`, hash))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Token{}, fmt.Errorf("token: %w", store.ErrNotFound)
	}
	if err != nil {
		return store.Token{}, fmt.Errorf("token: %w", err)
	}
	return t, nil
}

// Tokens implements store.Store, oldest first.
func (s *Store) Tokens(ctx context.Context) ([]store.Token, error) {
	rows, err := s.r().query(ctx, `SELECT `+tokenCols+` FROM tokens ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	defer rows.Close()
	out := []store.Token{}
	for rows.Next() {
		t, err := scanToken(rows)
		if err != nil {
			return nil, fmt.Errorf("list tokens: %w", err)
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	return out, nil
}

// DeleteToken implements store.Store.
func (s *Store) DeleteToken(ctx context.Context, id int64) error {
	n, err := s.r().affected(ctx, `DELETE FROM tokens WHERE id = ?`, id)
	if err != nil {
		return fmt.Errorf("delete token %d: %w", id, err)
	}
	if n == 0 {
		return fmt.Errorf("delete token %d: %w", id, store.ErrNotFound)
	}
	return nil
}

// TouchToken implements store.Store.
func (s *Store) TouchToken(ctx context.Context, id int64, at time.Time) error {
	n, err := s.r().affected(ctx, `UPDATE tokens SET last_used = ? WHERE id = ?`, micros(normTime(at)), id)
	if err != nil {
		return fmt.Errorf("touch token %d: %w", id, err)
	}
	if n == 0 {
		return fmt.Errorf("touch token %d: %w", id, store.ErrNotFound)
	}
	return nil
}
