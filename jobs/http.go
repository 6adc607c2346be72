package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/preboot/preboot/bundle"
	"github.com/preboot/preboot/store"
)

// Spec is what the agent gets from GET /api/v1/agent/job. Kind is the
// bundle kind (store.Kind*); Params the bundle's parameters (package
// bundle's types); Image, Device, After and Compression repeat the ones
// imaging kinds need.
type Spec struct {
	ID          int64           `json:"id"`
	Kind        string          `json:"kind"`
	Bundle      string          `json:"bundle,omitempty"`
	Params      json.RawMessage `json:"params,omitempty"`
	Image       string          `json:"image"`
	MAC         string          `json:"mac"`
	After       string          `json:"after"`
	Compression int             `json:"compression,omitempty"`
	Device      string          `json:"device,omitempty"`
	// Hostname is the device record's name made a host label (RFC 1123),
	// for bundles that personalize the restored system ("" when unnamed).
	Hostname string `json:"hostname,omitempty"`
}

// Result is the body of POST /api/v1/agent/job/result.
type Result struct {
	OK    bool   `json:"ok"`
	Error string `json:"error"`
	Image string `json:"image"`
}

// AgentHandler serves the agent's routes under /api/v1/agent/. Every
// request carries its job's token as a bearer token.
func (s *Service) AgentHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/agent/job", s.withJob(func(w http.ResponseWriter, r *http.Request, j store.Job) {
		j, err := s.Fetched(r.Context(), j.ID)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		spec := Spec{ID: j.ID, Kind: j.Kind, Bundle: j.Bundle, Params: j.Params, Image: j.Image, MAC: j.MAC, After: j.After, Compression: j.Compression, Device: j.Device}
		if d, err := s.Store.Device(r.Context(), j.MAC); err == nil {
			spec.Hostname = bundle.ValidHostname(d.Name)
		} else if !errors.Is(err, store.ErrNotFound) {
			s.log().WarnContext(r.Context(), "job spec: device record unreadable; no hostname", "mac", j.MAC, "err", err)
		}
		writeJSON(w, http.StatusOK, spec)
	}))
	mux.HandleFunc("POST /api/v1/agent/job/progress", s.withJob(func(w http.ResponseWriter, r *http.Request, j store.Job) {
		var p Progress
		if !decode(w, r, &p) {
			return
		}
		if _, err := s.Report(r.Context(), j.ID, p); err != nil {
			s.fail(w, r, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	mux.HandleFunc("POST /api/v1/agent/job/log", s.withJob(func(w http.ResponseWriter, r *http.Request, j store.Job) {
		var body struct {
			Lines []string `json:"lines"`
		}
		if !decode(w, r, &body) {
			return
		}
		if err := s.Log(r.Context(), j.ID, body.Lines); err != nil {
			s.fail(w, r, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	mux.HandleFunc("POST /api/v1/agent/job/result", s.withJob(func(w http.ResponseWriter, r *http.Request, j store.Job) {
		var res Result
		if !decode(w, r, &res) {
			return
		}
		if res.OK && res.Image != "" && res.Image != j.Image {
			writeError(w, http.StatusUnprocessableEntity, fmt.Sprintf("result names image %q, the job's image is %q", res.Image, j.Image))
			return
		}
		if !res.OK && res.Error == "" {
			res.Error = "the agent reported a failure without a message"
		}
		if _, err := s.Finish(r.Context(), j.ID, res.OK, res.Error); err != nil {
			s.fail(w, r, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	mux.HandleFunc("POST /api/v1/agent/info", s.withJob(func(w http.ResponseWriter, r *http.Request, j store.Job) {
		var raw json.RawMessage
		if !decode(w, r, &raw) {
			return
		}
		ram, disk := infoFigures(raw)
		if err := s.Store.SetDeviceInfo(r.Context(), j.MAC, raw, ram, disk); err != nil {
			s.fail(w, r, err)
			return
		}
		s.event(r.Context(), j, fmt.Sprintf("job %d: agent reported hardware, disks and image-safe data", j.ID))
		s.secureBootEvent(r.Context(), j, raw)
		w.WriteHeader(http.StatusNoContent)
	}))
	mux.HandleFunc("/api/v1/agent/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such agent endpoint: "+r.Method+" "+r.URL.Path)
	})
	return mux
}

// infoFigures reads the memory size and the total size of fixed disks
// from an agent report (agent.Info), for rules that filter on them.
func infoFigures(raw json.RawMessage) (ram, disk int64) {
	var info struct {
		Hardware struct {
			MemoryBytes int64 `json:"memory_bytes"`
		} `json:"hardware"`
		Disks []struct {
			Size      int64 `json:"size"`
			Removable bool  `json:"removable"`
		} `json:"disks"`
	}
	if json.Unmarshal(raw, &info) != nil {
		return 0, 0
	}
	for _, d := range info.Disks {
		if !d.Removable && d.Size > 0 {
			disk += d.Size
		}
	}
	return max(info.Hardware.MemoryBytes, 0), disk
}

// BearerToken returns the token of an "Authorization: Bearer" header.
func BearerToken(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if t, ok := strings.CutPrefix(h, "Bearer "); ok {
		return strings.TrimSpace(t)
	}
	return ""
}

func (s *Service) withJob(next func(http.ResponseWriter, *http.Request, store.Job)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		j, err := s.Authenticate(r.Context(), BearerToken(r), r.RemoteAddr)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		next(w, r, j)
	}
}

func (s *Service) fail(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, ErrUnauthorized):
		writeError(w, http.StatusUnauthorized, err.Error())
	case errors.Is(err, ErrJobOver):
		writeError(w, http.StatusConflict, err.Error())
	case errors.Is(err, ErrWrongClient):
		writeError(w, http.StatusForbidden, err.Error())
	case errors.Is(err, ErrInvalid):
		writeError(w, http.StatusUnprocessableEntity, err.Error())
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, err.Error())
	default:
		s.log().ErrorContext(r.Context(), "agent request failed", "path", r.URL.Path, "err", err)
		writeError(w, http.StatusInternalServerError, "internal error: "+err.Error())
	}
}

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4<<20))
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "bad JSON body: "+err.Error())
		return false
	}
	return true
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

// secureBootEvent records the Secure Boot state the imaging environment
// read (agent.Info's hardware.secure_boot): it settles secure_boot auto
// for the device.
func (s *Service) secureBootEvent(ctx context.Context, j store.Job, raw json.RawMessage) {
	var info struct {
		Hardware struct {
			SecureBoot *struct {
				Enabled  bool   `json:"enabled"`
				Lockdown string `json:"lockdown"`
			} `json:"secure_boot"`
		} `json:"hardware"`
	}
	if json.Unmarshal(raw, &info) != nil || info.Hardware.SecureBoot == nil {
		return
	}
	sb := info.Hardware.SecureBoot
	msg := store.SecureBootStateOff + " (imaging environment: the firmware's SecureBoot variable is 0)"
	if sb.Enabled {
		msg = store.SecureBootStateOn + " (imaging environment: the firmware's SecureBoot variable is 1, kernel lockdown " + lockdownWord(sb.Lockdown) + ")"
	}
	if _, err := s.Store.AddEvent(ctx, store.Event{MAC: j.MAC, Job: j.ID, Kind: store.EventSecureBoot, Message: msg}); err != nil {
		s.log().ErrorContext(ctx, "record Secure Boot event", "job", j.ID, "err", err)
	}
}

// lockdownWord keeps the agent's text out of the event unless it is a
// lockdown mode.
func lockdownWord(s string) string {
	switch s {
	case "none", "integrity", "confidentiality":
		return s
	}
	return "unknown"
}
