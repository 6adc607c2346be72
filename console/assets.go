package console

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net/http"
	"path"
	"time"
)

// assets are the embedded static files, each with a content hash: pages
// link them as /console/static/NAME?v=HASH, and a request carrying the
// current hash may be cached for good (a new binary changes the hash).
type assets struct {
	files map[string]asset
}

type asset struct {
	data  []byte
	hash  string
	ctype string
}

// contentTypes are the types the console serves, set explicitly so that
// they do not depend on the host's MIME tables.
var contentTypes = map[string]string{
	".css":  "text/css; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".svg":  "image/svg+xml",
	".png":  "image/png",
	".ico":  "image/x-icon",
	".txt":  "text/plain; charset=utf-8",
	".json": "application/json",
}

func loadAssets(fsys fs.FS, dir string) (*assets, error) {
	a := &assets{files: map[string]asset{}}
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, fmt.Errorf("console: assets: %w", err)
	}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		ct, ok := contentTypes[path.Ext(e.Name())]
		if !ok {
			return nil, fmt.Errorf("console: asset %s: no content type for its extension", e.Name())
		}
		data, err := fs.ReadFile(fsys, dir+"/"+e.Name())
		if err != nil {
			return nil, fmt.Errorf("console: asset %s: %w", e.Name(), err)
		}
		sum := sha256.Sum256(data)
		a.files[e.Name()] = asset{data: data, hash: hex.EncodeToString(sum[:6]), ctype: ct}
	}
	return a, nil
}

// url is the versioned URL of an asset (template function "asset"). An
// unknown name is a template error, caught when the page renders.
func (a *assets) url(name string) (string, error) {
	f, ok := a.files[name]
	if !ok {
		return "", fmt.Errorf("no asset %q", name)
	}
	return "/console/static/" + name + "?v=" + f.hash, nil
}

// ServeHTTP serves GET /console/static/{file}.
func (a *assets) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f, ok := a.files[r.PathValue("file")]
	if !ok {
		http.NotFound(w, r)
		return
	}
	hd := w.Header()
	hd.Set("Content-Type", f.ctype)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("ETag", `"`+f.hash+`"`)
	if r.URL.Query().Get("v") == f.hash {
		hd.Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		// An unversioned or outdated link: usable, but revalidated.
		hd.Set("Cache-Control", "no-cache")
	}
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(f.data))
}
