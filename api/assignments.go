package api

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/preboot/preboot/store"
)

// AssignmentRequest is the body of POST /assignments.
type AssignmentRequest struct {
	Bundle  string `json:"bundle"`
	Device  string `json:"device,omitempty"`
	Group   string `json:"group,omitempty"`
	Once    bool   `json:"once"`
	Force   bool   `json:"force"`
	Replace bool   `json:"replace"`
	// At schedules the assignment (RFC 3339; it must be in the
	// future): it is not handed out before then. Wake: at that time the
	// server wakes the target's devices (Wake-on-LAN).
	At   *time.Time `json:"at,omitempty"`
	Wake bool       `json:"wake,omitempty"`
}

func (h *Handler) listAssignments(w http.ResponseWriter, r *http.Request) {
	p, ok := page(w, r)
	if !ok {
		return
	}
	mac, ok := queryMAC(w, r, "device")
	if !ok {
		return
	}
	q := r.URL.Query()
	as, err := h.Store.Assignments(r.Context(), store.AssignmentFilter{MAC: mac, Group: q.Get("group"), Bundle: q.Get("bundle"), Scheduled: q.Get("scheduled") == "true", Page: p})
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, nonNil(as))
}

func (h *Handler) createAssignment(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	var req AssignmentRequest
	if !decode(w, r, &req) {
		return
	}
	switch {
	case req.Bundle == "":
		h.fail(w, r, invalid("bundle: required (a bundle name)"))
		return
	case (req.Device == "") == (req.Group == ""):
		h.fail(w, r, invalid("device, group: give exactly one target"))
		return
	case req.Wake && req.At == nil:
		h.fail(w, r, invalid("wake: needs a time (at); to wake devices now, POST /api/v1/wake"))
		return
	case req.At != nil && !req.At.After(time.Now()):
		h.fail(w, r, invalid("at: %s is in the past (the server's time is %s)", req.At.Format(time.RFC3339), time.Now().Format(time.RFC3339)))
		return
	}
	b, err := h.Store.Bundle(ctx, req.Bundle)
	if errors.Is(err, store.ErrNotFound) {
		h.fail(w, r, invalid("bundle: %q does not exist (see GET /api/v1/bundles)", req.Bundle))
		return
	} else if err != nil {
		h.fail(w, r, err)
		return
	}
	a := store.Assignment{BundleID: b.ID, Group: req.Group, Once: req.Once, Force: req.Force, Wake: req.Wake}
	if req.At != nil {
		a.At = *req.At
	}
	target := "group " + req.Group
	if req.Device != "" {
		if a.MAC, err = store.NormalizeMAC(req.Device); err != nil {
			h.fail(w, r, invalid("device: %v", err))
			return
		}
		target = "device " + a.MAC
		// Assigning to a MAC not seen yet registers it, as FOG and
		// ZENworks let admins prepare machines before they boot.
		if _, err := h.Store.Device(ctx, a.MAC); errors.Is(err, store.ErrNotFound) {
			if _, err := h.Store.CreateDevice(ctx, store.Device{MAC: a.MAC, Registered: true}); err != nil && !errors.Is(err, store.ErrConflict) {
				h.fail(w, r, err)
				return
			}
			h.audit(r, a.MAC, "device registered by an assignment")
		} else if err != nil {
			h.fail(w, r, err)
			return
		}
	} else if _, err := h.Store.Group(ctx, req.Group); errors.Is(err, store.ErrNotFound) {
		h.fail(w, r, invalid("group: %q does not exist", req.Group))
		return
	} else if err != nil {
		h.fail(w, r, err)
		return
	}
	if req.Replace {
		a, err = h.Store.ReplaceAssignment(ctx, a)
	} else {
		a, err = h.Store.CreateAssignment(ctx, a)
	}
	if errors.Is(err, store.ErrConflict) {
		h.fail(w, r, fmt.Errorf("%s already has an assignment (remove it, or send replace: true): %w", target, store.ErrConflict))
		return
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	msg := fmt.Sprintf("bundle %s assigned to %s (once %t, force %t)", b.Name, target, a.Once, a.Force)
	if !a.At.IsZero() {
		msg += fmt.Sprintf(", scheduled for %s (wake %t)", a.At.Format(time.RFC3339), a.Wake)
	}
	h.audit(r, a.MAC, msg)
	writeJSON(w, http.StatusCreated, a)
}

func (h *Handler) getAssignment(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	a, err := h.Store.Assignment(r.Context(), id)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, a)
}

func (h *Handler) deleteAssignment(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	a, err := h.Store.Assignment(r.Context(), id)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if err := h.Store.DeleteAssignment(r.Context(), id); err != nil {
		h.fail(w, r, err)
		return
	}
	target := "group " + a.Group
	if a.MAC != "" {
		target = "device " + a.MAC
	}
	h.audit(r, a.MAC, fmt.Sprintf("assignment %d (bundle %s to %s) removed", id, a.Bundle, target))
	w.WriteHeader(http.StatusNoContent)
}
