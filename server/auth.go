package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/preboot/preboot/api"
	"github.com/preboot/preboot/jobs"
	"github.com/preboot/preboot/store"
)

type jobKey struct{}

// imageAuth lets the image repository answer administrators (an admin
// token, or loopback when trusted) and agents with the token of an open
// job; allowImage then confines each job to its image.
func imageAuth(next http.Handler, js *jobs.Service, auth *api.Auth, st store.Store) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if tok := jobs.BearerToken(r); strings.HasPrefix(tok, api.JobTokenPrefix) {
			j, err := js.Authenticate(r.Context(), tok, r.RemoteAddr)
			if err != nil {
				code := http.StatusUnauthorized
				if errors.Is(err, jobs.ErrJobOver) || errors.Is(err, jobs.ErrWrongClient) {
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
		ctx, ok := auth.Admin(w, r)
		if !ok {
			return
		}
		if name, found := strings.CutPrefix(r.URL.Path, "/api/v1/images/"); found && r.Method == http.MethodDelete && !strings.Contains(name, "/") {
			// An image a bundle restores stays until the bundle is changed.
			bs, err := st.Bundles(ctx, store.BundleFilter{Image: name, Page: store.Page{Limit: 10}})
			if err != nil {
				writeJSONError(w, http.StatusInternalServerError, err.Error())
				return
			}
			for _, b := range bs {
				if b.Kind == store.KindImageRestore || b.Kind == store.KindMulticast {
					writeJSONError(w, http.StatusConflict, fmt.Sprintf("image %s is restored by bundle %s: change or delete the bundle first", name, b.Name))
					return
				}
			}
		}
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// allowImage confines a job to its own image: a capture job may upload
// chunks and publish its image, restore and multicast jobs may read their
// image, other jobs none. Chunks are addressed by their BLAKE3 hash, so
// reading one needs its manifest.
func allowImage() func(r *http.Request, name string, write bool) bool {
	return func(r *http.Request, name string, write bool) bool {
		j, ok := r.Context().Value(jobKey{}).(store.Job)
		if !ok {
			return true // administrator
		}
		if j.Image == "" || (name != "" && name != j.Image) {
			return false
		}
		if write {
			return j.Kind == store.KindImageCapture
		}
		return j.Kind == store.KindImageCapture || j.Kind == store.KindImageRestore || j.Kind == store.KindMulticast
	}
}

func writeJSONError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}
