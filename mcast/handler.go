package mcast

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
)

// More errors of the control plane.
var (
	ErrBadRequest = errors.New("bad request")
	ErrForbidden  = errors.New("forbidden")
	ErrNoImage    = errors.New("no such image")
	ErrBusy       = errors.New("too busy")
)

// Handler serves the receivers' control plane (PathJoin, PathPrefix +
// "{session}/report" and "/locate"). authorize identifies the caller (a
// job's token or an administrator) or answers the request itself and
// returns false.
func (m *Manager) Handler(authorize func(w http.ResponseWriter, r *http.Request) (Caller, bool)) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+PathJoin, func(w http.ResponseWriter, r *http.Request) {
		who, ok := authorize(w, r)
		if !ok {
			return
		}
		var req JoinRequest
		if !readJSON(w, r, &req) {
			return
		}
		resp, err := m.Join(r.Context(), who, req)
		reply(w, resp, err)
	})
	mux.HandleFunc("POST "+PathPrefix+"{session}/report", func(w http.ResponseWriter, r *http.Request) {
		who, ok := authorize(w, r)
		if !ok {
			return
		}
		var req ReportRequest
		if !readJSON(w, r, &req) {
			return
		}
		resp, err := m.Report(r.Context(), who, r.PathValue("session"), req)
		reply(w, resp, err)
	})
	mux.HandleFunc("POST "+PathPrefix+"{session}/locate", func(w http.ResponseWriter, r *http.Request) {
		who, ok := authorize(w, r)
		if !ok {
			return
		}
		var req LocateRequest
		if !readJSON(w, r, &req) {
			return
		}
		resp, err := m.Locate(r.Context(), who, r.PathValue("session"), req)
		reply(w, resp, err)
	})
	return mux
}

const maxControlBody = 1 << 20

func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	data, err := io.ReadAll(io.LimitReader(r.Body, maxControlBody+1))
	if err == nil && len(data) > maxControlBody {
		err = fmt.Errorf("body over %d bytes", maxControlBody)
	}
	if err == nil {
		err = json.Unmarshal(data, v)
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad request body: "+err.Error())
		return false
	}
	return true
}

func reply(w http.ResponseWriter, v any, err error) {
	if err != nil {
		code := http.StatusInternalServerError
		switch {
		case errors.Is(err, ErrBadRequest):
			code = http.StatusBadRequest
		case errors.Is(err, ErrForbidden):
			code = http.StatusForbidden
		case errors.Is(err, ErrNotFound), errors.Is(err, ErrNoImage):
			code = http.StatusNotFound
		case errors.Is(err, ErrBusy):
			code = http.StatusServiceUnavailable
		}
		writeError(w, code, err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}
