package server

import (
	"net/http"
	"net/url"
	"strings"
)

// firmwareSlashes serves the firmware's paths (/boot.ipxe, /files/…)
// written with empty segments, such as /files//ipxe.efi or //boot.ipxe, as
// their clean form. Without it, http.ServeMux answers them with a 301 to
// the clean path, and UEFI HTTP boot does not follow redirects: EDK2 stops
// at the 301 (tinkerbell/smee#229, a boot file URL joined as
// "/ipxe//ipxe.efi"). Only runs of "/" are collapsed; "." and ".." are
// left to the mux and the file server, and paths that do not become a
// firmware path are passed on unchanged.
func firmwareSlashes(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.Contains(r.URL.Path, "//") {
			next.ServeHTTP(w, r)
			return
		}
		p := collapseSlashes(r.URL.Path)
		if p != "/boot.ipxe" && !strings.HasPrefix(p, "/files/") {
			next.ServeHTTP(w, r)
			return
		}
		r2 := new(http.Request)
		*r2 = *r
		r2.URL = new(url.URL)
		*r2.URL = *r.URL
		r2.URL.Path = p
		r2.URL.RawPath = collapseSlashes(r.URL.RawPath)
		next.ServeHTTP(w, r2)
	})
}

// collapseSlashes replaces every run of "/" in p with one "/".
func collapseSlashes(p string) string {
	if !strings.Contains(p, "//") {
		return p
	}
	var b strings.Builder
	b.Grow(len(p))
	for i := 0; i < len(p); i++ {
		if p[i] == '/' && i > 0 && p[i-1] == '/' {
			continue
		}
		b.WriteByte(p[i])
	}
	return b.String()
}
