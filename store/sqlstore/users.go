package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/preboot/preboot/store"
)

const userCols = `id, name, password_hash, created_at, password_changed_at, last_login`

func scanUser(r scanner) (store.User, error) {
	var u store.User
	var created, changed, login int64
	if err := r.Scan(&u.ID, &u.Name, &u.PasswordHash, &created, &changed, &login); err != nil {
		return store.User{}, err
	}
	u.CreatedAt, u.PasswordChangedAt, u.LastLogin = fromMicros(created), fromMicros(changed), optTime(login)
	return u, nil
}

// CreateUser implements store.Store.
func (s *Store) CreateUser(ctx context.Context, u store.User) (store.User, error) {
	if u.Name == "" || u.PasswordHash == "" {
		return store.User{}, fmt.Errorf("create user: a name and a password hash are required: %w", store.ErrInvalid)
	}
	u.CreatedAt = normTime(u.CreatedAt)
	u.PasswordChangedAt = u.CreatedAt
	u.LastLogin = time.Time{}
	err := s.r().queryRow(ctx, `INSERT INTO users (name, password_hash, created_at, password_changed_at, last_login)
		VALUES (?, ?, ?, ?, 0) ON CONFLICT (name) DO NOTHING RETURNING id`,
		u.Name, u.PasswordHash, micros(u.CreatedAt), micros(u.PasswordChangedAt)).Scan(&u.ID)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return store.User{}, fmt.Errorf("create user: user name %q is taken: %w", u.Name, store.ErrConflict)
	case err != nil:
		return store.User{}, fmt.Errorf("create user %q: %w", u.Name, s.dbErr(err))
	}
	return u, nil
}

// User implements store.Store.
func (s *Store) User(ctx context.Context, name string) (store.User, error) {
	u, err := scanUser(s.r().queryRow(ctx, `SELECT `+userCols+` FROM users WHERE name = ?`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return store.User{}, fmt.Errorf("user %q: %w", name, store.ErrNotFound)
	}
	if err != nil {
		return store.User{}, fmt.Errorf("user %q: %w", name, err)
	}
	return u, nil
}

// Users implements store.Store.
func (s *Store) Users(ctx context.Context) ([]store.User, error) {
	rows, err := s.r().query(ctx, `SELECT `+userCols+` FROM users ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	defer rows.Close()
	out := []store.User{}
	for rows.Next() {
		u, err := scanUser(rows)
		if err != nil {
			return nil, fmt.Errorf("list users: %w", err)
		}
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	return out, nil
}

// SetUserPassword implements store.Store.
func (s *Store) SetUserPassword(ctx context.Context, name, hash string) error {
	if hash == "" {
		return fmt.Errorf("set password of %q: empty hash: %w", name, store.ErrInvalid)
	}
	err := s.inTx(ctx, func(r runner) error {
		var id int64
		err := r.queryRow(ctx, `UPDATE users SET password_hash = ?, password_changed_at = ? WHERE name = ? RETURNING id`,
			hash, micros(now()), name).Scan(&id)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("user %q: %w", name, store.ErrNotFound)
		}
		if err != nil {
			return err
		}
		_, err = r.exec(ctx, `DELETE FROM sessions WHERE user_id = ?`, id)
		return err
	})
	if err != nil {
		return fmt.Errorf("set password of %q: %w", name, err)
	}
	return nil
}

// DeleteUser implements store.Store (its sessions go with it: ON DELETE
// CASCADE).
func (s *Store) DeleteUser(ctx context.Context, name string) error {
	n, err := s.r().affected(ctx, `DELETE FROM users WHERE name = ?`, name)
	if err != nil {
		return fmt.Errorf("delete user %q: %w", name, err)
	}
	if n == 0 {
		return fmt.Errorf("delete user %q: %w", name, store.ErrNotFound)
	}
	return nil
}

const sessionCols = `s.id, s.hash, s.user_id, u.name, s.csrf, s.created_at, s.last_seen, s.expires_at`

func scanSession(r scanner) (store.Session, error) {
	var ss store.Session
	var created, seen, expires int64
	if err := r.Scan(&ss.ID, &ss.Hash, &ss.UserID, &ss.User, &ss.CSRF, &created, &seen, &expires); err != nil {
		return store.Session{}, err
	}
	ss.CreatedAt, ss.LastSeen, ss.Expires = fromMicros(created), fromMicros(seen), fromMicros(expires)
	return ss, nil
}

// CreateSession implements store.Store.
func (s *Store) CreateSession(ctx context.Context, ss store.Session) (store.Session, error) {
	if ss.Hash == "" || ss.CSRF == "" || ss.Expires.IsZero() {
		return store.Session{}, fmt.Errorf("create session: a hash, a CSRF token and an expiry are required: %w", store.ErrInvalid)
	}
	ss.CreatedAt = normTime(ss.CreatedAt)
	if ss.LastSeen.IsZero() {
		ss.LastSeen = ss.CreatedAt
	}
	ss.LastSeen, ss.Expires = normTime(ss.LastSeen), normTime(ss.Expires)
	err := s.inTx(ctx, func(r runner) error {
		err := r.queryRow(ctx, `UPDATE users SET last_login = ? WHERE id = ? RETURNING name`, micros(ss.CreatedAt), ss.UserID).Scan(&ss.User)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("user %d: %w", ss.UserID, store.ErrNotFound)
		}
		if err != nil {
			return err
		}
		return s.dbErr(r.queryRow(ctx, `INSERT INTO sessions (hash, user_id, csrf, created_at, last_seen, expires_at)
			VALUES (?, ?, ?, ?, ?, ?) RETURNING id`,
			ss.Hash, ss.UserID, ss.CSRF, micros(ss.CreatedAt), micros(ss.LastSeen), micros(ss.Expires)).Scan(&ss.ID))
	})
	if err != nil {
		return store.Session{}, fmt.Errorf("create session: %w", err)
	}
	return ss, nil
}

// SessionByHash implements store.Store.
func (s *Store) SessionByHash(ctx context.Context, hash string) (store.Session, error) {
	ss, err := scanSession(s.r().queryRow(ctx, `SELECT `+sessionCols+` FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.hash = ?`, hash))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Session{}, fmt.Errorf("session: %w", store.ErrNotFound)
	}
	if err != nil {
		return store.Session{}, fmt.Errorf("session: %w", err)
	}
	return ss, nil
}

// TouchSession implements store.Store.
func (s *Store) TouchSession(ctx context.Context, hash string, lastSeen, expires time.Time) error {
	n, err := s.r().affected(ctx, `UPDATE sessions SET last_seen = ?, expires_at = ? WHERE hash = ?`,
		micros(normTime(lastSeen)), micros(normTime(expires)), hash)
	if err != nil {
		return fmt.Errorf("touch session: %w", err)
	}
	if n == 0 {
		return fmt.Errorf("touch session: %w", store.ErrNotFound)
	}
	return nil
}

// DeleteSession implements store.Store.
func (s *Store) DeleteSession(ctx context.Context, hash string) error {
	n, err := s.r().affected(ctx, `DELETE FROM sessions WHERE hash = ?`, hash)
	if err != nil {
		return fmt.Errorf("delete session: %w", err)
	}
	if n == 0 {
		return fmt.Errorf("delete session: %w", store.ErrNotFound)
	}
	return nil
}

// DeleteExpiredSessions implements store.Store.
func (s *Store) DeleteExpiredSessions(ctx context.Context, at time.Time) (int, error) {
	n, err := s.r().affected(ctx, `DELETE FROM sessions WHERE expires_at <= ?`, micros(normTime(at)))
	if err != nil {
		return 0, fmt.Errorf("delete expired sessions: %w", err)
	}
	return int(n), nil
}
