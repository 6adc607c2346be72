package api

import (
	"errors"
	"net/http"

	"github.com/preboot/preboot/image"
)

// ScrubRequest is the body of POST /api/v1/replicas/verify.
type ScrubRequest struct {
	// Image limits the scrub to one image (empty: every image).
	Image string `json:"image,omitempty"`
	// Repair replaces corrupt or missing chunks with verified copies
	// from the upstream.
	Repair bool `json:"repair,omitempty"`
}

func (h *Handler) replicationOff(w http.ResponseWriter) bool {
	if h.Replication == nil {
		writeError(w, http.StatusServiceUnavailable, "this server replicates no upstream (preboot serve --upstream URL: docs/scale-out.md)")
		return true
	}
	return false
}

// replicas: GET /api/v1/replicas.
func (h *Handler) replicas(w http.ResponseWriter, r *http.Request) {
	if h.replicationOff(w) {
		return
	}
	writeJSON(w, http.StatusOK, h.Replication.Status())
}

// syncReplicas: POST /api/v1/replicas/sync runs a replication round now
// and answers the status after it (errors are in it).
func (h *Handler) syncReplicas(w http.ResponseWriter, r *http.Request) {
	if h.replicationOff(w) {
		return
	}
	_ = h.Replication.Sync(r.Context())
	h.audit(r, "", "replication round run by hand")
	writeJSON(w, http.StatusOK, h.Replication.Status())
}

// verifyReplicas: POST /api/v1/replicas/verify re-hashes the chunks at
// rest (of one image or all) and, with repair, re-fetches bad ones.
func (h *Handler) verifyReplicas(w http.ResponseWriter, r *http.Request) {
	if h.replicationOff(w) {
		return
	}
	var req ScrubRequest
	if r.ContentLength != 0 && !decode(w, r, &req) {
		return
	}
	res, err := h.Replication.Scrub(r.Context(), req.Image, req.Repair)
	if errors.Is(err, image.ErrNotFound) {
		writeError(w, http.StatusNotFound, err.Error())
		return
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if req.Repair {
		h.audit(r, "", "replica scrub with repair")
	}
	writeJSON(w, http.StatusOK, res)
}
