// Package api is Preboot's admin REST API under /api/v1: devices, their
// events and the work assigned to them. The CLI is its first client.
package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/preboot/preboot/store"
)

// Handler serves the API. Until the API has authentication (a later
// milestone), only loopback clients are let in unless AllowRemote is set.
type Handler struct {
	Store       store.Store
	Logger      *slog.Logger
	AllowRemote bool
	// ImageExists, when set, lets restore work be refused for an image
	// that does not exist.
	ImageExists func(name string) bool
	mux         *http.ServeMux
}

// New returns a ready Handler.
func New(st store.Store, log *slog.Logger, allowRemote bool) *Handler {
	h := &Handler{Store: st, Logger: log, AllowRemote: allowRemote, mux: http.NewServeMux()}
	h.mux.HandleFunc("GET /api/v1/devices", h.listDevices)
	h.mux.HandleFunc("GET /api/v1/devices/{mac}", h.getDevice)
	h.mux.HandleFunc("GET /api/v1/devices/{mac}/work", h.getWork)
	h.mux.HandleFunc("PUT /api/v1/devices/{mac}/work", h.putWork)
	h.mux.HandleFunc("DELETE /api/v1/devices/{mac}/work", h.deleteWork)
	h.mux.HandleFunc("GET /api/v1/events", h.listEvents)
	h.mux.HandleFunc("GET /api/v1/jobs", h.listJobs)
	h.mux.HandleFunc("GET /api/v1/jobs/{id}", h.getJob)
	h.mux.HandleFunc("POST /api/v1/jobs/{id}/cancel", h.cancelJob)
	h.mux.HandleFunc("/api/v1/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such API endpoint: "+r.Method+" "+r.URL.Path)
	})
	return h
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !h.AllowRemote && !isLoopback(r.RemoteAddr) {
		writeError(w, http.StatusForbidden, "the admin API only answers loopback clients (set http.admin_from_anywhere to change this)")
		return
	}
	h.mux.ServeHTTP(w, r)
}

func isLoopback(remote string) bool {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Error is the JSON body of every non-2xx answer.
type Error struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, Error{Error: msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// storeError maps store errors to HTTP answers.
func (h *Handler) storeError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, err.Error())
		return
	}
	h.Logger.ErrorContext(r.Context(), "api request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	writeError(w, http.StatusInternalServerError, "internal error: "+err.Error())
}

func pathMAC(w http.ResponseWriter, r *http.Request) (string, bool) {
	mac, err := store.NormalizeMAC(r.PathValue("mac"))
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return "", false
	}
	return mac, true
}

func (h *Handler) listDevices(w http.ResponseWriter, r *http.Request) {
	devs, err := h.Store.Devices(r.Context())
	if err != nil {
		h.storeError(w, r, err)
		return
	}
	if devs == nil {
		devs = []store.Device{}
	}
	writeJSON(w, http.StatusOK, devs)
}

// DeviceDetail is a device with its recent events and its work.
type DeviceDetail struct {
	store.Device
	Work   *store.Work   `json:"work,omitempty"`
	Events []store.Event `json:"events"`
}

func (h *Handler) getDevice(w http.ResponseWriter, r *http.Request) {
	mac, ok := pathMAC(w, r)
	if !ok {
		return
	}
	d, err := h.Store.Device(r.Context(), mac)
	if err != nil {
		h.storeError(w, r, err)
		return
	}
	out := DeviceDetail{Device: d}
	if wk, err := h.Store.Work(r.Context(), mac); err == nil {
		out.Work = &wk
	} else if !errors.Is(err, store.ErrNotFound) {
		h.storeError(w, r, err)
		return
	}
	limit, _ := strconv.Atoi(r.URL.Query().Get("events"))
	if limit <= 0 {
		limit = 50
	}
	if out.Events, err = h.Store.Events(r.Context(), store.EventFilter{MAC: mac, Limit: limit}); err != nil {
		h.storeError(w, r, err)
		return
	}
	if out.Events == nil {
		out.Events = []store.Event{}
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *Handler) getWork(w http.ResponseWriter, r *http.Request) {
	mac, ok := pathMAC(w, r)
	if !ok {
		return
	}
	wk, err := h.Store.Work(r.Context(), mac)
	if err != nil {
		h.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, wk)
}

// WorkRequest is the body of PUT /api/v1/devices/{mac}/work.
type WorkRequest struct {
	Kind        string   `json:"kind"` // boot (default), capture, restore
	Image       string   `json:"image"`
	After       string   `json:"after"`
	Compression int      `json:"compression"`
	Device      string   `json:"device"`
	Kernel      string   `json:"kernel"`
	Initrd      []string `json:"initrd"`
	Cmdline     string   `json:"cmdline"`
	Loader      string   `json:"loader"`
	Once        bool     `json:"once"`
}

// Validate says what is wrong with a request, field by field.
func (wr WorkRequest) Validate() error {
	var errs []error
	switch wr.Kind {
	case "", store.WorkBoot:
		if strings.TrimSpace(wr.Kernel) == "" {
			errs = append(errs, errors.New("kernel: required (a path under the TFTP root or an http(s) URL)"))
		}
		if wr.Image != "" {
			errs = append(errs, errors.New("image: only for capture and restore work"))
		}
	case store.WorkCapture, store.WorkRestore:
		if err := ValidImageName(wr.Image); err != nil {
			errs = append(errs, err)
		}
		if wr.Kernel != "" || len(wr.Initrd) > 0 || wr.Cmdline != "" {
			errs = append(errs, errors.New("kernel, initrd, cmdline: not for capture and restore work (they boot the imaging environment)"))
		}
		if wr.Compression < 0 || wr.Compression > 19 {
			errs = append(errs, fmt.Errorf("compression %d: want 0 (default) to 19", wr.Compression))
		}
		if wr.Device != "" && !strings.HasPrefix(wr.Device, "/dev/") {
			errs = append(errs, fmt.Errorf("device %q: want a /dev path or nothing (the first fixed disk)", wr.Device))
		}
	default:
		errs = append(errs, fmt.Errorf("kind %q: want boot, capture or restore", wr.Kind))
	}
	switch wr.After {
	case "", store.AfterReboot, store.AfterPoweroff:
	default:
		errs = append(errs, fmt.Errorf("after %q: want reboot or poweroff", wr.After))
	}
	for _, p := range append([]string{wr.Kernel}, wr.Initrd...) {
		if p == "" {
			continue
		}
		if strings.ContainsAny(p, " \t\r\n") {
			errs = append(errs, fmt.Errorf("%q: paths must not contain white space", p))
		}
		if strings.Contains(p, "..") && !strings.Contains(p, "://") {
			errs = append(errs, fmt.Errorf("%q: paths must stay inside the TFTP root", p))
		}
	}
	if strings.ContainsAny(wr.Cmdline, "\r\n") {
		errs = append(errs, errors.New("cmdline: must be one line"))
	}
	switch wr.Loader {
	case "", store.LoaderIPXE, store.LoaderPXELinux:
	default:
		errs = append(errs, fmt.Errorf("loader %q: want %q or %q", wr.Loader, store.LoaderIPXE, store.LoaderPXELinux))
	}
	return errors.Join(errs...)
}

func (h *Handler) putWork(w http.ResponseWriter, r *http.Request) {
	mac, ok := pathMAC(w, r)
	if !ok {
		return
	}
	var req WorkRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "bad JSON body: "+err.Error())
		return
	}
	if err := req.Validate(); err != nil {
		writeError(w, http.StatusUnprocessableEntity, err.Error())
		return
	}
	if req.Kind == store.WorkRestore && h.ImageExists != nil && !h.ImageExists(req.Image) {
		writeError(w, http.StatusUnprocessableEntity, fmt.Sprintf("image %q does not exist (see preboot image list)", req.Image))
		return
	}
	wk := store.Work{MAC: mac, Kind: req.Kind, Image: req.Image, After: req.After, Compression: req.Compression, Device: req.Device, Kernel: req.Kernel, Initrd: req.Initrd, Cmdline: req.Cmdline, Loader: req.Loader, Once: req.Once, CreatedAt: time.Now()}
	if err := h.Store.SetWork(r.Context(), wk); err != nil {
		h.storeError(w, r, err)
		return
	}
	if wk.Kind == store.WorkCapture || wk.Kind == store.WorkRestore {
		h.audit(r, mac, fmt.Sprintf("work assigned: %s image %s", wk.Kind, wk.Image))
	} else {
		h.audit(r, mac, fmt.Sprintf("work assigned: kernel %s, initrd %s, loader %s, once %t", wk.Kernel, strings.Join(wk.Initrd, ","), wk.Loader, wk.Once))
	}
	got, err := h.Store.Work(r.Context(), mac)
	if err != nil {
		h.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, got)
}

func (h *Handler) deleteWork(w http.ResponseWriter, r *http.Request) {
	mac, ok := pathMAC(w, r)
	if !ok {
		return
	}
	if err := h.Store.ClearWork(r.Context(), mac); err != nil {
		h.storeError(w, r, err)
		return
	}
	h.audit(r, mac, "work cleared")
	w.WriteHeader(http.StatusNoContent)
}

func (h *Handler) audit(r *http.Request, mac, msg string) {
	if err := h.Store.AddEvent(r.Context(), store.Event{MAC: mac, Kind: store.EventAdmin, Message: msg + " (from " + r.RemoteAddr + ")"}); err != nil {
		h.Logger.ErrorContext(r.Context(), "record admin event", "mac", mac, "err", err)
	}
	h.Logger.InfoContext(r.Context(), "admin action", "mac", mac, "action", msg, "remote", r.RemoteAddr)
}

func (h *Handler) listEvents(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := store.EventFilter{Kind: q.Get("kind")}
	var ok bool
	if f.MAC, f.Limit, ok = macAndLimit(w, r); !ok {
		return
	}
	if s := q.Get("since"); s != "" {
		t, err := time.Parse(time.RFC3339, s)
		if err != nil {
			writeError(w, http.StatusBadRequest, "since: want an RFC 3339 time")
			return
		}
		f.Since = t
	}
	evs, err := h.Store.Events(r.Context(), f)
	if err != nil {
		h.storeError(w, r, err)
		return
	}
	if evs == nil {
		evs = []store.Event{}
	}
	writeJSON(w, http.StatusOK, evs)
}

// macAndLimit reads the ?mac= and ?limit= filters common to list endpoints;
// on bad input it answers 400 and returns false.
func macAndLimit(w http.ResponseWriter, r *http.Request) (mac string, limit int, ok bool) {
	q := r.URL.Query()
	if m := q.Get("mac"); m != "" {
		var err error
		if mac, err = store.NormalizeMAC(m); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return "", 0, false
		}
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 10000 {
			writeError(w, http.StatusBadRequest, "limit: want 1..10000")
			return "", 0, false
		}
		limit = n
	}
	return mac, limit, true
}
