package api

import (
	"errors"
	"net/http"
	"strings"

	"github.com/preboot/preboot/store"
)

// ErrScope: a token used outside its scope.
var ErrScope = errors.New("this token's scope does not allow this request")

// IntrospectPath is where a site server asks what a job token of this
// server may do.
const IntrospectPath = "/api/v1/tokens/introspect"

// scopeAllows reports whether a token of scope may make request r. A
// replication token (a site server's) reads images, manifests and chunks,
// lists images and versions, and introspects job tokens: nothing that
// writes, and nothing about devices, jobs, users or settings.
func scopeAllows(scope string, r *http.Request) bool {
	switch scope {
	case store.ScopeAdmin:
		return true
	case store.ScopeReplication:
		p := r.URL.Path
		if r.Method == http.MethodPost {
			return p == IntrospectPath
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			return false
		}
		return p == "/api/v1/images" || strings.HasPrefix(p, "/api/v1/images/") || strings.HasPrefix(p, "/api/v1/chunks/")
	}
	return false
}

// ValidScope checks a scope's name.
func ValidScope(scope string) bool {
	return scope == store.ScopeAdmin || scope == store.ScopeReplication
}
