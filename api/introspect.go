package api

import (
	"fmt"
	"net/http"
	"strings"
)

// IntrospectRequest is the body of POST /api/v1/tokens/introspect.
type IntrospectRequest struct {
	Token string `json:"token"`
}

// introspectToken tells a site server (a replication or admin token)
// what a job token of this server may do: jobs.TokenScope, {"active":
// false} for an unknown, ended or expired one.
func (h *Handler) introspectToken(w http.ResponseWriter, r *http.Request) {
	if h.Jobs == nil {
		writeError(w, http.StatusServiceUnavailable, "this server runs no job service")
		return
	}
	var req IntrospectRequest
	if !decode(w, r, &req) {
		return
	}
	if !strings.HasPrefix(req.Token, JobTokenPrefix) {
		h.fail(w, r, invalid("token: only job tokens (%s…) are introspected", JobTokenPrefix))
		return
	}
	ts, err := h.Jobs.Introspect(r.Context(), req.Token)
	if err != nil {
		h.fail(w, r, fmt.Errorf("introspect: %w", err))
		return
	}
	writeJSON(w, http.StatusOK, ts)
}
