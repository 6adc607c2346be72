package server

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"

	"github.com/preboot/preboot/jobs"
	"github.com/preboot/preboot/store"
)

type jobKey struct{}

// imageAuth lets the image repository answer administrators (loopback, or
// anyone with admin_from_anywhere until the API has tokens) and agents with
// the token of an open job; allowImage then confines each job to its image.
func imageAuth(next http.Handler, js *jobs.Service, adminFromAnywhere bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if tok := jobs.BearerToken(r); tok != "" {
			j, err := js.Authenticate(r.Context(), tok)
			if err != nil {
				code := http.StatusUnauthorized
				if errors.Is(err, jobs.ErrJobOver) {
					code = http.StatusForbidden
				} else if !errors.Is(err, jobs.ErrUnauthorized) {
					code = http.StatusInternalServerError
				}
				writeJSONError(w, code, err.Error())
				return
			}
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), jobKey{}, j)))
			return
		}
		if adminFromAnywhere || isLoopback(r.RemoteAddr) {
			next.ServeHTTP(w, r)
			return
		}
		writeJSONError(w, http.StatusUnauthorized, "the image repository needs a job token (Authorization: Bearer) or a loopback client")
	})
}

// allowImage confines a job to its own image: a capture job may upload
// chunks and publish its image, a restore job may read its image. Chunks
// are addressed by their BLAKE3 hash, so reading one needs its manifest.
func allowImage(r *http.Request, name string, write bool) bool {
	j, ok := r.Context().Value(jobKey{}).(store.Job)
	if !ok {
		return true // administrator
	}
	if name != "" && name != j.Image {
		return false
	}
	if write {
		return j.Kind == store.WorkCapture
	}
	return true
}

func isLoopback(remote string) bool {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func writeJSONError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}
