package api

import (
	"fmt"
	"net/http"

	"github.com/preboot/preboot/bundle"
	"github.com/preboot/preboot/store"
)

// NewTokenResponse is the answer to POST /api/v1/tokens: the only time the
// token itself is shown.
type NewTokenResponse struct {
	Secret string `json:"token"`
	store.Token
}

func (h *Handler) listTokens(w http.ResponseWriter, r *http.Request) {
	ts, err := h.Store.Tokens(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, nonNil(ts))
}

func (h *Handler) createToken(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name  string `json:"name"`
		Scope string `json:"scope"`
	}
	if !decode(w, r, &req) {
		return
	}
	if err := bundle.ValidName("token", req.Name); err != nil {
		h.fail(w, r, invalid("%v", err))
		return
	}
	if !ValidScope(req.Scope) {
		h.fail(w, r, invalid("scope %q: want \"\" (admin) or %q", req.Scope, store.ScopeReplication))
		return
	}
	tok, hash, err := NewToken()
	if err != nil {
		h.fail(w, r, err)
		return
	}
	t, err := h.Store.CreateToken(r.Context(), store.Token{Name: req.Name, Hash: hash, Prefix: tok[:len(AdminTokenPrefix)+6], Scope: req.Scope})
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.audit(r, "", fmt.Sprintf("token %s created (id %d%s)", t.Name, t.ID, scopeNote(t.Scope)))
	writeJSON(w, http.StatusCreated, NewTokenResponse{Secret: tok, Token: t})
}

func (h *Handler) deleteToken(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	if err := h.Store.DeleteToken(r.Context(), id); err != nil {
		h.fail(w, r, err)
		return
	}
	h.audit(r, "", fmt.Sprintf("token %d revoked", id))
	w.WriteHeader(http.StatusNoContent)
}

func scopeNote(scope string) string {
	if scope == "" {
		return ""
	}
	return ", scope " + scope
}
