package api

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/preboot/preboot/bundle"
	"github.com/preboot/preboot/rules"
	"github.com/preboot/preboot/store"
)

// RuleRequest is the body of POST /rules and PATCH /rules/{name}.
type RuleRequest struct {
	Name     *string `json:"name,omitempty"`
	Match    *string `json:"match,omitempty"`
	Bundle   *string `json:"bundle,omitempty"`
	Group    *string `json:"group,omitempty"`
	Enabled  *bool   `json:"enabled,omitempty"`
	Position *int    `json:"position,omitempty"`
}

func (h *Handler) applyRule(r *http.Request, req RuleRequest, ru *store.Rule) error {
	var errs []error
	if req.Name != nil {
		if err := bundle.ValidName("rule", *req.Name); err != nil {
			errs = append(errs, err)
		}
		ru.Name = *req.Name
	}
	if req.Match != nil {
		ru.Match = strings.TrimSpace(*req.Match)
	}
	if ru.Match == "" {
		errs = append(errs, errors.New("match: required (a rule expression; `true` matches every device)"))
	} else if err := checkExpr(ru.Match); err != nil {
		errs = append(errs, fmt.Errorf("match: %w", err))
	}
	if req.Bundle != nil {
		ru.Bundle = *req.Bundle
	}
	if req.Group != nil {
		ru.Group = *req.Group
	}
	if ru.Bundle == "" && ru.Group == "" {
		errs = append(errs, errors.New("bundle, group: a rule needs a bundle to run, a group to add the device to, or both"))
	}
	if ru.Bundle != "" {
		if _, err := h.Store.Bundle(r.Context(), ru.Bundle); errors.Is(err, store.ErrNotFound) {
			errs = append(errs, fmt.Errorf("bundle: %q does not exist", ru.Bundle))
		} else if err != nil {
			return err
		}
	}
	if ru.Group != "" {
		if _, err := h.Store.Group(r.Context(), ru.Group); errors.Is(err, store.ErrNotFound) {
			errs = append(errs, fmt.Errorf("group: %q does not exist", ru.Group))
		} else if err != nil {
			return err
		}
	}
	if req.Enabled != nil {
		ru.Enabled = *req.Enabled
	}
	if req.Position != nil {
		if *req.Position < 0 {
			errs = append(errs, errors.New("position: want 1 for the first rule, or 0 for the last"))
		}
		ru.Position = *req.Position
	}
	if err := errors.Join(errs...); err != nil {
		return invalid("%v", err)
	}
	return nil
}

func (h *Handler) listRules(w http.ResponseWriter, r *http.Request) {
	rs, err := h.Store.Rules(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, nonNil(rs))
}

func (h *Handler) createRule(w http.ResponseWriter, r *http.Request) {
	var req RuleRequest
	if !decode(w, r, &req) {
		return
	}
	if req.Name == nil {
		h.fail(w, r, invalid("name: required"))
		return
	}
	ru := store.Rule{Enabled: true}
	if err := h.applyRule(r, req, &ru); err != nil {
		h.fail(w, r, err)
		return
	}
	ru, err := h.Store.CreateRule(r.Context(), ru)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.audit(r, "", fmt.Sprintf("rule %s created at position %d: %s", ru.Name, ru.Position, ru.Match))
	writeJSON(w, http.StatusCreated, ru)
}

func (h *Handler) getRule(w http.ResponseWriter, r *http.Request) {
	ru, err := h.Store.Rule(r.Context(), r.PathValue("name"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, ru)
}

func (h *Handler) patchRule(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var req RuleRequest
	if !decode(w, r, &req) {
		return
	}
	// Validate outside the store's transaction (the checks read the
	// store), then apply the checked values inside it.
	cur, err := h.Store.Rule(r.Context(), name)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if err := h.applyRule(r, req, &cur); err != nil {
		h.fail(w, r, err)
		return
	}
	ru, err := h.Store.UpdateRule(r.Context(), name, func(ru *store.Rule) error {
		ru.Name, ru.Match, ru.Bundle, ru.Group, ru.Enabled = cur.Name, cur.Match, cur.Bundle, cur.Group, cur.Enabled
		if req.Position != nil {
			ru.Position = cur.Position
		}
		return nil
	})
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.audit(r, "", fmt.Sprintf("rule %s edited (position %d, enabled %t): %s", ru.Name, ru.Position, ru.Enabled, ru.Match))
	writeJSON(w, http.StatusOK, ru)
}

func (h *Handler) deleteRule(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := h.Store.DeleteRule(r.Context(), name); err != nil {
		h.fail(w, r, err)
		return
	}
	h.audit(r, "", "rule "+name+" deleted")
	w.WriteHeader(http.StatusNoContent)
}

// RuleTestRequest is the body of POST /rules/test.
type RuleTestRequest struct {
	Match  string `json:"match,omitempty"`
	Device string `json:"device"`
}

// RuleTestResult says which rule (or the given expression) matches a
// device.
type RuleTestResult struct {
	Rule    string      `json:"rule"`
	Matched bool        `json:"matched"`
	Facts   rules.Facts `json:"facts"`
}

func (h *Handler) testRule(w http.ResponseWriter, r *http.Request) {
	var req RuleTestRequest
	if !decode(w, r, &req) {
		return
	}
	mac, err := store.NormalizeMAC(req.Device)
	if err != nil {
		h.fail(w, r, invalid("device: %v", err))
		return
	}
	d, err := h.Store.Device(r.Context(), mac)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	facts := rules.FactsOf(d)
	out := RuleTestResult{Facts: facts}
	if req.Match != "" {
		x, err := rules.Parse(req.Match)
		if err != nil {
			h.fail(w, r, invalid("match: %v", err))
			return
		}
		out.Matched = x.Match(facts)
		writeJSON(w, http.StatusOK, out)
		return
	}
	rs, err := h.Store.Rules(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	for _, ru := range rs {
		if !ru.Enabled {
			continue
		}
		if x, err := rules.Parse(ru.Match); err == nil && x.Match(facts) {
			out.Rule, out.Matched = ru.Name, true
			break
		}
	}
	writeJSON(w, http.StatusOK, out)
}
