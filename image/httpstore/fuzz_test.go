package httpstore_test

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/preboot/preboot/image"
	"github.com/preboot/preboot/image/httpstore"
)

// FuzzHandler feeds arbitrary bodies to the routes that parse client input
// (Missing, chunk upload, manifest upload, import): no panic, no 5xx, and
// nothing published that does not verify.
func FuzzHandler(f *testing.F) {
	f.Add(0, []byte(`{"hashes":["00"]}`))
	f.Add(1, []byte(`{"version":1,"name":"x","chunk_size":65536,"disk":{"size":1,"sector_size":512},"partitions":[],"sizes":{"logical":1}}`))
	f.Add(2, []byte("\x28\xb5\x2f\xfd\x00\x58\x01\x00\x00"))
	f.Add(3, []byte("manifest.json\x00"))
	repo, err := image.OpenRepo(f.TempDir(), image.RepoOptions{})
	if err != nil {
		f.Fatal(err)
	}
	h := &httpstore.Handler{Repo: repo, MaxChunkBytes: 1 << 20, MaxImportBytes: 1 << 20}
	zero := image.Sum(nil).String()
	f.Fuzz(func(t *testing.T, route int, body []byte) {
		var req *http.Request
		switch route & 3 {
		case 0:
			req = httptest.NewRequest(http.MethodPost, "/api/v1/chunks/missing", bytes.NewReader(body))
		case 1:
			req = httptest.NewRequest(http.MethodPut, "/api/v1/images/x", bytes.NewReader(body))
		case 2:
			req = httptest.NewRequest(http.MethodPut, "/api/v1/chunks/"+zero, bytes.NewReader(body))
		case 3:
			req = httptest.NewRequest(http.MethodPost, "/api/v1/images/import", bytes.NewReader(body))
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code >= 500 {
			t.Fatalf("route %d: %d %s", route&3, w.Code, w.Body.String())
		}
		// Only a valid manifest whose chunks are all present (none of
		// them here: there are no chunks of a known content) publishes.
		names, err := repo.List()
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range names {
			if w.Code != http.StatusCreated {
				t.Fatalf("image %s published with answer %d", n, w.Code)
			}
			if err := repo.Verify(t.Context(), n, 1); err != nil {
				t.Fatalf("published image does not verify: %v", err)
			}
			if err := repo.Remove(t.Context(), n); err != nil {
				t.Fatal(err)
			}
		}
	})
}
