package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/preboot/preboot/bundle"
	"github.com/preboot/preboot/store"
)

// BundleRequest is the body of POST /bundles and PATCH /bundles/{name}.
type BundleRequest struct {
	Name        *string         `json:"name,omitempty"`
	Kind        string          `json:"kind,omitempty"`
	Description *string         `json:"description,omitempty"`
	Params      json.RawMessage `json:"params,omitempty"`
}

// checkBundle validates a bundle's parameters and the image it reads.
func (h *Handler) checkBundle(b *store.Bundle) error {
	if err := bundle.ValidName("bundle", b.Name); err != nil {
		return invalid("%v", err)
	}
	params, err := bundle.Normalize(b.Kind, b.Params)
	if err != nil {
		return invalid("%v", err)
	}
	b.Params = params
	if img, reads := bundle.Image(b.Kind, params); reads && h.ImageExists != nil && !h.ImageExists(img) {
		return invalid("image: %q does not exist in the image repository (capture it first, or see `preboot image list`)", img)
	}
	if len(b.Description) > 4096 {
		return invalid("description: at most 4096 characters")
	}
	return nil
}

func (h *Handler) listBundles(w http.ResponseWriter, r *http.Request) {
	p, ok := page(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	bs, err := h.Store.Bundles(r.Context(), store.BundleFilter{Kind: q.Get("kind"), Image: q.Get("image"), Page: p})
	if err != nil {
		h.fail(w, r, err)
		return
	}
	for i := range bs {
		bs[i] = redacted(bs[i])
	}
	writeJSON(w, http.StatusOK, nonNil(bs))
}

func (h *Handler) createBundle(w http.ResponseWriter, r *http.Request) {
	var req BundleRequest
	if !decode(w, r, &req) {
		return
	}
	if req.Name == nil {
		h.fail(w, r, invalid("name: required"))
		return
	}
	if req.Kind == "" {
		h.fail(w, r, invalid("kind: required, one of %s", strings.Join(store.BundleKinds, ", ")))
		return
	}
	b := store.Bundle{Name: *req.Name, Kind: req.Kind, Params: req.Params}
	if req.Description != nil {
		b.Description = *req.Description
	}
	if err := h.checkBundle(&b); err != nil {
		h.fail(w, r, err)
		return
	}
	b, err := h.Store.CreateBundle(r.Context(), b)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.audit(r, "", fmt.Sprintf("bundle %s created (%s)", b.Name, b.Kind))
	writeJSON(w, http.StatusCreated, redacted(b))
}

func (h *Handler) getBundle(w http.ResponseWriter, r *http.Request) {
	b, err := h.Store.Bundle(r.Context(), r.PathValue("name"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, redacted(b))
}

func (h *Handler) patchBundle(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var req BundleRequest
	if !decode(w, r, &req) {
		return
	}
	b, err := h.Store.UpdateBundle(r.Context(), name, func(b *store.Bundle) error {
		if req.Kind != "" && req.Kind != b.Kind {
			return invalid("kind: a bundle's kind cannot change (%s); create a new bundle", b.Kind)
		}
		if req.Name != nil {
			b.Name = *req.Name
		}
		if req.Description != nil {
			b.Description = *req.Description
		}
		if !isNull(req.Params) {
			// Secrets sent back as the marker (or left out) keep
			// their stored values.
			params, err := bundle.KeepSecrets(b.Kind, req.Params, b.Params)
			if err != nil {
				return invalid("%v", err)
			}
			b.Params = params
		}
		return h.checkBundle(b)
	})
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.audit(r, "", fmt.Sprintf("bundle %s edited (version %d)", name, b.Version))
	writeJSON(w, http.StatusOK, redacted(b))
}

// redacted is a bundle as the API shows it: secrets of os-install
// bundles replaced by bundle.SecretMarker (package bundle).
func redacted(b store.Bundle) store.Bundle {
	b.Params = bundle.Redact(b.Kind, b.Params)
	return b
}

func (h *Handler) deleteBundle(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if set, err := h.Policy.Settings(r.Context()); err == nil && set.Unregistered.Action == store.UnregisteredBundle && set.Unregistered.Bundle == name {
		h.fail(w, r, fmt.Errorf("bundle %s is the unregistered default (see settings): %w", name, store.ErrConflict))
		return
	}
	if err := h.Store.DeleteBundle(r.Context(), name); err != nil {
		h.fail(w, r, err)
		return
	}
	h.audit(r, "", "bundle "+name+" deleted")
	w.WriteHeader(http.StatusNoContent)
}
