package session

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"unicode/utf8"

	"golang.org/x/crypto/bcrypt"

	"github.com/preboot/preboot/bundle"
	"github.com/preboot/preboot/store"
)

// Passwords.
const (
	// Cost is the bcrypt cost of stored passwords.
	Cost = 12
	// MinPasswordLen is the least number of characters of a password set
	// by hand.
	MinPasswordLen = 10
	// maxPasswordBytes is what bcrypt reads.
	maxPasswordBytes = 72
	// FirstAdmin is the user created at the first start of a server
	// that has no console user.
	FirstAdmin = "admin"
)

// ValidatePassword checks a password chosen by hand: at least
// MinPasswordLen characters, at most 72 bytes (what bcrypt reads).
func ValidatePassword(pw string) error {
	if n := utf8.RuneCountInString(pw); n < MinPasswordLen {
		return fmt.Errorf("password too short: %d characters, want at least %d", n, MinPasswordLen)
	}
	if len(pw) > maxPasswordBytes {
		return fmt.Errorf("password too long: %d bytes, want at most %d", len(pw), maxPasswordBytes)
	}
	return nil
}

// HashPassword returns the bcrypt hash (cost Cost) of a password.
func HashPassword(pw string) (string, error) {
	h, err := bcrypt.GenerateFromPassword([]byte(pw), Cost)
	if err != nil {
		return "", fmt.Errorf("hash password: %w", err)
	}
	return string(h), nil
}

// GeneratePassword returns a random password (26 characters of base32,
// 128 bits).
func GeneratePassword() string {
	return rand.Text()
}

// ValidUserName checks a console user name: 1-64 letters, digits, '.',
// '_' or '-', starting with a letter or digit.
func ValidUserName(name string) error {
	return bundle.ValidName("user", name)
}

// CreateUser adds a console user with a password (checked with
// ValidatePassword); store.ErrConflict if the name is taken.
func CreateUser(ctx context.Context, st store.Store, name, password string) (store.User, error) {
	if err := ValidUserName(name); err != nil {
		return store.User{}, fmt.Errorf("%w: %w", store.ErrInvalid, err)
	}
	if err := ValidatePassword(password); err != nil {
		return store.User{}, fmt.Errorf("%w: %w", store.ErrInvalid, err)
	}
	h, err := HashPassword(password)
	if err != nil {
		return store.User{}, err
	}
	return st.CreateUser(ctx, store.User{Name: name, PasswordHash: h})
}

// SetPassword gives a user a new password (checked with
// ValidatePassword) and ends the user's sessions.
func SetPassword(ctx context.Context, st store.Store, name, password string) error {
	if err := ValidatePassword(password); err != nil {
		return fmt.Errorf("%w: %w", store.ErrInvalid, err)
	}
	if _, err := st.User(ctx, name); err != nil {
		return err
	}
	h, err := HashPassword(password)
	if err != nil {
		return err
	}
	return st.SetUserPassword(ctx, name, h)
}

// EnsureFirstAdmin creates the user "admin" with a random password when
// the store has no console user, and returns that password (once: the
// store keeps only its hash); "" when there already is a user (also when
// another server sharing the database created one meanwhile).
func EnsureFirstAdmin(ctx context.Context, st store.Store) (password string, err error) {
	users, err := st.Users(ctx)
	if err != nil {
		return "", err
	}
	if len(users) > 0 {
		return "", nil
	}
	pw := GeneratePassword()
	h, err := HashPassword(pw)
	if err != nil {
		return "", err
	}
	if _, err := st.CreateUser(ctx, store.User{Name: FirstAdmin, PasswordHash: h}); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return "", nil
		}
		return "", fmt.Errorf("create the first console user: %w", err)
	}
	return pw, nil
}
