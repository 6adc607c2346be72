package api

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/preboot/preboot/bundle"
	"github.com/preboot/preboot/policy"
	"github.com/preboot/preboot/store"
)

func (h *Handler) listDevices(w http.ResponseWriter, r *http.Request) {
	p, ok := page(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	f := store.DeviceFilter{Search: q.Get("q"), Group: q.Get("group"), Page: p}
	switch q.Get("registered") {
	case "":
	case "true":
		f.Registered = ptr(true)
	case "false":
		f.Registered = ptr(false)
	default:
		writeError(w, http.StatusBadRequest, "registered: want true or false")
		return
	}
	devs, err := h.Store.Devices(r.Context(), f)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	n, err := h.Store.CountDevices(r.Context(), f)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	w.Header().Set("X-Total-Count", strconv.Itoa(n))
	writeJSON(w, http.StatusOK, nonNil(devs))
}

func ptr[T any](v T) *T { return &v }

// DeviceRequest is the body of POST /devices and PATCH /devices/{mac}.
type DeviceRequest struct {
	MAC        string  `json:"mac,omitempty"`
	Name       *string `json:"name,omitempty"`
	AssetTag   *string `json:"asset_tag,omitempty"`
	Notes      *string `json:"notes,omitempty"`
	Registered *bool   `json:"registered,omitempty"`
}

func (req DeviceRequest) apply(d *store.Device) error {
	var errs []error
	if req.Name != nil {
		n := strings.TrimSpace(*req.Name)
		if n != "" {
			if err := bundle.ValidName("device", n); err != nil {
				errs = append(errs, err)
			}
		}
		d.Name = n
	}
	if req.AssetTag != nil {
		if len(*req.AssetTag) > 128 {
			errs = append(errs, errors.New("asset_tag: at most 128 characters"))
		}
		d.AssetTag = strings.TrimSpace(*req.AssetTag)
	}
	if req.Notes != nil {
		if len(*req.Notes) > 4096 {
			errs = append(errs, errors.New("notes: at most 4096 characters"))
		}
		d.Notes = *req.Notes
	}
	if req.Registered != nil {
		d.Registered = *req.Registered
	}
	if err := errors.Join(errs...); err != nil {
		return invalid("%v", err)
	}
	return nil
}

func (h *Handler) createDevice(w http.ResponseWriter, r *http.Request) {
	var req DeviceRequest
	if !decode(w, r, &req) {
		return
	}
	mac, err := store.NormalizeMAC(req.MAC)
	if err != nil {
		h.fail(w, r, invalid("mac: %v", err))
		return
	}
	d := store.Device{MAC: mac, Registered: true}
	if err := req.apply(&d); err != nil {
		h.fail(w, r, err)
		return
	}
	d, err = h.Store.CreateDevice(r.Context(), d)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.audit(r, mac, "device registered by hand"+nameNote(d.Name))
	writeJSON(w, http.StatusCreated, d)
}

func nameNote(name string) string {
	if name == "" {
		return ""
	}
	return " as " + name
}

// DeviceDetail is a device with what the console shows about it.
type DeviceDetail struct {
	store.Device
	Groups     []store.Group     `json:"groups"`
	Assignment *store.Assignment `json:"assignment"`
	Decision   *policy.Decision  `json:"decision,omitempty"`
	Events     []store.Event     `json:"events"`
	Jobs       []store.Job       `json:"jobs"`
}

func (h *Handler) getDevice(w http.ResponseWriter, r *http.Request) {
	mac, ok := pathMAC(w, r)
	if !ok {
		return
	}
	ctx := r.Context()
	d, err := h.Store.Device(ctx, mac)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := DeviceDetail{Device: d}
	if out.Groups, err = h.Store.DeviceGroups(ctx, mac); err != nil {
		h.fail(w, r, err)
		return
	}
	out.Groups = nonNil(out.Groups)
	as, err := h.Store.Assignments(ctx, store.AssignmentFilter{MAC: mac})
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if len(as) > 0 {
		out.Assignment = &as[0]
	}
	if h.Policy != nil {
		dec, err := h.Policy.Decide(ctx, d)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		if dec.Bundle != nil {
			rb := redacted(*dec.Bundle)
			dec.Bundle = &rb
		}
		if dec.BootPath, err = h.Policy.BootPathFor(ctx, d, dec); err != nil {
			h.fail(w, r, err)
			return
		}
		out.Decision = &dec
	}
	limit, _ := strconv.Atoi(r.URL.Query().Get("events"))
	if limit <= 0 || limit > 1000 {
		limit = 50
	}
	if out.Events, err = h.Store.Events(ctx, store.EventFilter{MAC: mac, Limit: limit}); err != nil {
		h.fail(w, r, err)
		return
	}
	out.Events = nonNil(out.Events)
	if out.Jobs, err = h.Store.Jobs(ctx, store.JobFilter{MAC: mac, Limit: 10}); err != nil {
		h.fail(w, r, err)
		return
	}
	out.Jobs = nonNil(out.Jobs)
	writeJSON(w, http.StatusOK, out)
}

func (h *Handler) patchDevice(w http.ResponseWriter, r *http.Request) {
	mac, ok := pathMAC(w, r)
	if !ok {
		return
	}
	var req DeviceRequest
	if !decode(w, r, &req) {
		return
	}
	if req.MAC != "" {
		h.fail(w, r, invalid("mac: a device's MAC cannot change (register the new MAC as a device)"))
		return
	}
	d, err := h.Store.UpdateDevice(r.Context(), mac, req.apply)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.audit(r, mac, "device edited"+changes(req))
	writeJSON(w, http.StatusOK, d)
}

func changes(req DeviceRequest) string {
	var c []string
	if req.Name != nil {
		c = append(c, fmt.Sprintf("name %q", *req.Name))
	}
	if req.AssetTag != nil {
		c = append(c, fmt.Sprintf("asset tag %q", *req.AssetTag))
	}
	if req.Notes != nil {
		c = append(c, "notes")
	}
	if req.Registered != nil {
		c = append(c, fmt.Sprintf("registered %t", *req.Registered))
	}
	if len(c) == 0 {
		return ""
	}
	return ": " + strings.Join(c, ", ")
}

func (h *Handler) deleteDevice(w http.ResponseWriter, r *http.Request) {
	mac, ok := pathMAC(w, r)
	if !ok {
		return
	}
	if err := h.Store.DeleteDevice(r.Context(), mac); err != nil {
		h.fail(w, r, err)
		return
	}
	h.audit(r, mac, "device deleted (its jobs and events are kept)")
	w.WriteHeader(http.StatusNoContent)
}

func (h *Handler) deviceDecision(w http.ResponseWriter, r *http.Request) {
	mac, ok := pathMAC(w, r)
	if !ok {
		return
	}
	d, err := h.Store.Device(r.Context(), mac)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	dec, err := h.Policy.Decide(r.Context(), d)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if dec.Bundle != nil {
		rb := redacted(*dec.Bundle)
		dec.Bundle = &rb
	}
	if dec.BootPath, err = h.Policy.BootPathFor(r.Context(), d, dec); err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, dec)
}
