package api

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/preboot/preboot/bundle"
	"github.com/preboot/preboot/rules"
	"github.com/preboot/preboot/store"
)

// GroupRequest is the body of POST /groups and PATCH /groups/{name}.
type GroupRequest struct {
	Name        *string `json:"name,omitempty"`
	Description *string `json:"description,omitempty"`
	Priority    *int    `json:"priority,omitempty"`
	Match       *string `json:"match,omitempty"`
}

func (req GroupRequest) apply(g *store.Group) error {
	if req.Name != nil {
		if err := bundle.ValidName("group", *req.Name); err != nil {
			return invalid("%v", err)
		}
		g.Name = *req.Name
	}
	if req.Description != nil {
		g.Description = *req.Description
	}
	if req.Priority != nil {
		if *req.Priority < 0 || *req.Priority > 1_000_000 {
			return invalid("priority %d: want 1..1000000 (lower wins), or 0 for after the last group", *req.Priority)
		}
		g.Priority = *req.Priority
	}
	if req.Match != nil {
		m := strings.TrimSpace(*req.Match)
		if err := checkExpr(m); err != nil {
			return invalid("match: %v", err)
		}
		g.Match = m
	}
	return nil
}

// checkExpr validates a rule expression ("" is allowed: no expression).
func checkExpr(s string) error {
	if s == "" {
		return nil
	}
	_, err := rules.Parse(s)
	return err
}

// GroupDetail is a group with its assignment.
type GroupDetail struct {
	store.Group
	Assignment *store.Assignment `json:"assignment"`
}

func (h *Handler) listGroups(w http.ResponseWriter, r *http.Request) {
	p, ok := page(w, r)
	if !ok {
		return
	}
	gs, err := h.Store.Groups(r.Context(), p)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, nonNil(gs))
}

func (h *Handler) createGroup(w http.ResponseWriter, r *http.Request) {
	var req GroupRequest
	if !decode(w, r, &req) {
		return
	}
	if req.Name == nil {
		h.fail(w, r, invalid("name: required"))
		return
	}
	var g store.Group
	if err := req.apply(&g); err != nil {
		h.fail(w, r, err)
		return
	}
	g, err := h.Store.CreateGroup(r.Context(), g)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.audit(r, "", fmt.Sprintf("group %s created (priority %d)", g.Name, g.Priority))
	writeJSON(w, http.StatusCreated, g)
}

func (h *Handler) getGroup(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	g, err := h.Store.Group(r.Context(), name)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := GroupDetail{Group: g}
	as, err := h.Store.Assignments(r.Context(), store.AssignmentFilter{Group: name})
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if len(as) > 0 {
		out.Assignment = &as[0]
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *Handler) patchGroup(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var req GroupRequest
	if !decode(w, r, &req) {
		return
	}
	g, err := h.Store.UpdateGroup(r.Context(), name, req.apply)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.audit(r, "", fmt.Sprintf("group %s edited", name))
	writeJSON(w, http.StatusOK, g)
}

func (h *Handler) deleteGroup(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := h.Store.DeleteGroup(r.Context(), name); err != nil {
		h.fail(w, r, err)
		return
	}
	h.audit(r, "", "group "+name+" deleted")
	w.WriteHeader(http.StatusNoContent)
}

func (h *Handler) listMembers(w http.ResponseWriter, r *http.Request) {
	p, ok := page(w, r)
	if !ok {
		return
	}
	ds, err := h.Store.Members(r.Context(), r.PathValue("name"), p)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, nonNil(ds))
}

func (h *Handler) addMember(w http.ResponseWriter, r *http.Request) {
	mac, ok := pathMAC(w, r)
	if !ok {
		return
	}
	name := r.PathValue("name")
	if err := h.Store.AddMember(r.Context(), name, mac); err != nil {
		h.fail(w, r, err)
		return
	}
	h.audit(r, mac, "added to group "+name)
	w.WriteHeader(http.StatusNoContent)
}

func (h *Handler) removeMember(w http.ResponseWriter, r *http.Request) {
	mac, ok := pathMAC(w, r)
	if !ok {
		return
	}
	name := r.PathValue("name")
	if err := h.Store.RemoveMember(r.Context(), name, mac); err != nil {
		h.fail(w, r, err)
		return
	}
	h.audit(r, mac, "removed from group "+name)
	w.WriteHeader(http.StatusNoContent)
}
