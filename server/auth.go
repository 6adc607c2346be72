package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/preboot/preboot/api"
	"github.com/preboot/preboot/bundle"
	"github.com/preboot/preboot/image"
	"github.com/preboot/preboot/image/httpstore"
	"github.com/preboot/preboot/jobs"
	"github.com/preboot/preboot/siteauth"
	"github.com/preboot/preboot/store"
)

type jobKey struct{}

// imageAuth lets the image repository answer administrators (an admin
// token, or loopback when trusted) and agents with the token of an open
// job; imageAccess then confines each job to its image.
//
// On a site server (upstream set), a job token it does not know is one of
// its upstream's: the upstream says what it may do (siteauth), and only a
// restore's reads of its pinned image, from the address the job was
// handed to, pass.
func imageAuth(next http.Handler, js *jobs.Service, auth *api.Auth, st store.Store, repo *image.Repo, upstream *siteauth.Checker) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if tok := jobs.BearerToken(r); strings.HasPrefix(tok, api.JobTokenPrefix) {
			var j store.Job
			var ok bool
			if upstream != nil {
				j, ok = authenticateJobOrUpstream(w, r, js, upstream, tok)
			} else {
				j, ok = authenticateJob(w, r, js, tok)
			}
			if !ok {
				return
			}
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), jobKey{}, j)))
			return
		}
		ctx, ok := auth.Admin(w, r)
		if !ok {
			return
		}
		if ref, found := strings.CutPrefix(r.URL.Path, "/api/v1/images/"); found && r.Method == http.MethodDelete && !strings.Contains(ref, "/") {
			// An image (or version) a bundle restores stays until the
			// bundle is changed.
			if b, err := restoredBy(ctx, st, repo, ref); err != nil {
				writeJSONError(w, http.StatusInternalServerError, err.Error())
				return
			} else if b != "" {
				writeJSONError(w, http.StatusConflict, fmt.Sprintf("image %s is restored by bundle %s: change or delete the bundle first", ref, b))
				return
			}
		}
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// restoredBy names a restore or multicast bundle that removing image ref
// (NAME: every version; NAME@N: one version) would break: one naming NAME
// or any of its versions for NAME; for NAME@N one naming NAME@N, or NAME
// when N is its current version.
func restoredBy(ctx context.Context, st store.Store, repo *image.Repo, ref string) (string, error) {
	name, v, err := image.ParseRef(ref)
	if err != nil {
		return "", nil // the handler answers 400
	}
	current := 0
	if v != 0 {
		if _, cur, err := repo.Resolve(name); err == nil {
			current = cur
		}
	}
	for _, kind := range []string{store.KindImageRestore, store.KindMulticast} {
		for off := 0; ; off += 500 {
			bs, err := st.Bundles(ctx, store.BundleFilter{Kind: kind, Page: store.Page{Limit: 500, Offset: off}})
			if err != nil {
				return "", err
			}
			for _, b := range bs {
				img, reads := bundle.Image(b.Kind, b.Params)
				if !reads || image.RefName(img) != name {
					continue
				}
				_, bv, _ := image.ParseRef(img)
				if v == 0 || bv == v || (bv == 0 && v == current) {
					return b.Name, nil
				}
			}
			if len(bs) < 500 {
				break
			}
		}
	}
	return "", nil
}

// imageAccess tells the image repository who asks: an administrator
// (anything that passed api.Auth), or a job confined to its own image: a
// capture job uploads chunks and publishes new versions of its image, a
// restore or multicast job reads the version pinned when it started, other
// jobs nothing. Chunks are addressed by their BLAKE3 hash, so reading one
// needs its manifest.
func imageAccess(r *http.Request) httpstore.Access {
	j, ok := r.Context().Value(jobKey{}).(store.Job)
	if !ok {
		return httpstore.Access{Admin: true}
	}
	return httpstore.Access{
		Job:     j.ID,
		Image:   j.Image,
		Capture: j.Kind == store.KindImageCapture,
		Read:    j.Kind == store.KindImageRestore || j.Kind == store.KindMulticast,
	}
}

func writeJSONError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

// authenticateJob checks a job token (from the address its boot was handed
// to, while its job lives) and answers 401/403/500 itself when it fails.
func authenticateJob(w http.ResponseWriter, r *http.Request, js *jobs.Service, tok string) (store.Job, bool) {
	j, err := js.Authenticate(r.Context(), tok, r.RemoteAddr)
	if err != nil {
		jobAuthFailed(w, err)
		return store.Job{}, false
	}
	return j, true
}

// jobAuthFailed answers a failed job token check: 401, 403 or 500.
func jobAuthFailed(w http.ResponseWriter, err error) {
	code := http.StatusUnauthorized
	if errors.Is(err, jobs.ErrJobOver) || errors.Is(err, jobs.ErrWrongClient) {
		code = http.StatusForbidden
	} else if !errors.Is(err, jobs.ErrUnauthorized) {
		code = http.StatusInternalServerError
	}
	writeJSONError(w, code, err.Error())
}
