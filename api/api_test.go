package api

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/preboot/preboot/store"
	"github.com/preboot/preboot/store/sqlite"
)

func newHandler(t *testing.T, remote bool) *Handler {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "a.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return New(st, slog.New(slog.DiscardHandler), remote)
}

func do(h http.Handler, method, url, remote, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, url, strings.NewReader(body))
	req.RemoteAddr = remote
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func TestLoopbackOnlyUntilAuth(t *testing.T) {
	h := newHandler(t, false)
	if rec := do(h, "GET", "/api/v1/devices", "10.1.2.3:5000", ""); rec.Code != http.StatusForbidden || !strings.Contains(rec.Body.String(), "loopback") {
		t.Fatalf("remote client: %d %s", rec.Code, rec.Body)
	}
	for _, lo := range []string{"127.0.0.1:5000", "[::1]:5000"} {
		if rec := do(h, "GET", "/api/v1/devices", lo, ""); rec.Code != http.StatusOK || strings.TrimSpace(rec.Body.String()) != "[]" {
			t.Fatalf("%s: %d %s", lo, rec.Code, rec.Body)
		}
	}
	h = newHandler(t, true)
	if rec := do(h, "GET", "/api/v1/devices", "10.1.2.3:5000", ""); rec.Code != http.StatusOK {
		t.Fatalf("remote allowed: %d", rec.Code)
	}
}

func TestWorkEndpoints(t *testing.T) {
	h := newHandler(t, false)
	lo := "127.0.0.1:1"
	cases := []struct {
		method, url, body string
		code              int
		want              string
	}{
		{"GET", "/api/v1/devices/52:54:00:00:00:01", "", 404, "not found"},
		{"GET", "/api/v1/devices/garbage", "", 400, "invalid MAC"},
		{"PUT", "/api/v1/devices/52:54:00:00:00:01/work", `{"kernel":`, 400, "bad JSON"},
		{"PUT", "/api/v1/devices/52:54:00:00:00:01/work", `{"kernel":"k","initrd":"notalist"}`, 400, "bad JSON"},
		{"PUT", "/api/v1/devices/52:54:00:00:00:01/work", `{"kernel":""}`, 422, "kernel: required"},
		{"PUT", "/api/v1/devices/52:54:00:00:00:01/work", `{"kernel":"k","cmdline":"a\nb"}`, 422, "one line"},
		{"PUT", "/api/v1/devices/52:54:00:00:00:01/work", `{"kernel":"boot/k","initrd":["boot/i"],"once":true}`, 200, `"loader": "ipxe"`},
		{"GET", "/api/v1/devices/52-54-00-00-00-01/work", "", 200, `"boot/k"`},
		{"GET", "/api/v1/devices/52:54:00:00:00:01", "", 200, `"work"`},
		{"DELETE", "/api/v1/devices/52:54:00:00:00:01/work", "", 204, ""},
		{"GET", "/api/v1/devices/52:54:00:00:00:01/work", "", 404, "not found"},
		{"GET", "/api/v1/events?limit=0", "", 400, "limit"},
		{"GET", "/api/v1/events?since=yesterday", "", 400, "since"},
		{"GET", "/api/v1/events?mac=52:54:00:00:00:01&kind=admin", "", 200, "work cleared"},
		{"GET", "/api/v1/nothing", "", 404, "no such API endpoint"},
	}
	for _, c := range cases {
		rec := do(h, c.method, c.url, lo, c.body)
		if rec.Code != c.code || !strings.Contains(rec.Body.String(), c.want) {
			t.Errorf("%s %s %s: %d %s; want %d and %q", c.method, c.url, c.body, rec.Code, rec.Body, c.code, c.want)
		}
		if rec.Code >= 400 {
			var e Error
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error == "" {
				t.Errorf("%s %s: error body is not JSON {error}: %s", c.method, c.url, rec.Body)
			}
		}
	}
	evs, err := h.Store.Events(context.Background(), store.EventFilter{Kind: store.EventAdmin})
	if err != nil || len(evs) != 2 {
		t.Fatalf("admin actions recorded: %d %v", len(evs), err)
	}
}
