package console

import (
	"net/http"

	"github.com/preboot/preboot/session"
)

// This file is the console's only contact with package session: who is
// signed in, the session's CSRF token, and where the login page sends
// the browser afterwards.

// sessionInfo returns the signed-in user and the session's CSRF token
// that session.Require put in the request context.
func sessionInfo(r *http.Request) (user, csrf string, ok bool) {
	i, ok := session.FromContext(r.Context())
	if !ok || i.User == "" {
		return "", "", false
	}
	return i.User, i.CSRF, true
}

// safeNext keeps a post-login target inside the console.
func safeNext(next string) string { return session.SafeNext(next) }

// loginURL is the login page that comes back to next.
func loginURL(next string) string { return session.LoginURL(next, false) }
