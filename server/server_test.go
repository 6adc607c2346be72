package server

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/preboot/preboot/config"
	"github.com/preboot/preboot/image"
	"github.com/preboot/preboot/jobs"
	"github.com/preboot/preboot/policy"
	"github.com/preboot/preboot/store"
	"github.com/preboot/preboot/store/sqlite"
)

func newHandler(t *testing.T) (http.Handler, *jobs.Service, config.Config) {
	t.Helper()
	ctx := context.Background()
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	if err := cfg.Finish(); err != nil {
		t.Fatal(err)
	}
	st, err := sqlite.Open(ctx, cfg.Store.Path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	repo, err := image.OpenRepo(cfg.Imaging.Repo, image.RepoOptions{})
	if err != nil {
		t.Fatal(err)
	}
	js := &jobs.Service{Store: st}
	pol := &policy.Engine{Store: st, Boot: cfg.Boot, DefaultSettings: policy.SettingsFromConfig(cfg.Menu), Jobs: js, Imaging: cfg.Imaging, TFTPRoot: cfg.TFTP.Root}
	if err := os.MkdirAll(cfg.TFTP.Root, 0o755); err != nil {
		t.Fatal(err)
	}
	return Handler(st, pol, js, repo, cfg, prometheus.NewRegistry(), nil, slog.New(slog.DiscardHandler)), js, cfg
}

func call(h http.Handler, method, path, remote, token, body string) (int, string) {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.RemoteAddr = remote
	req.Host = "10.0.0.1:8080" // an address of the server (any other name gets 421: TestHostNames)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	b, _ := io.ReadAll(rec.Body)
	return rec.Code, string(b)
}

const remote = "10.9.9.9:5555"

func TestImageRepositoryAccess(t *testing.T) {
	ctx := context.Background()
	h, js, _ := newHandler(t)
	if code, _ := call(h, "GET", "/api/v1/images", remote, "", ""); code != http.StatusUnauthorized {
		t.Fatalf("remote without token: %d", code)
	}
	if code, _ := call(h, "GET", "/api/v1/images", "127.0.0.1:1", "", ""); code != http.StatusUnauthorized {
		t.Fatalf("loopback without token: %d (loopback is not trusted by default)", code)
	}
	if code, _ := call(h, "GET", "/api/v1/images", remote, "pbj_forged", ""); code != http.StatusUnauthorized {
		t.Fatalf("forged token: %d", code)
	}
	capture := jobs.StartRequest{MAC: "02:00:00:00:00:01", Bundle: store.Bundle{Name: "cap", Kind: store.KindImageCapture, Params: json.RawMessage(`{"image":"mine"}`)}}
	restore := jobs.StartRequest{MAC: "02:00:00:00:00:02", Bundle: store.Bundle{Name: "res", Kind: store.KindImageRestore, Params: json.RawMessage(`{"image":"mine"}`)}}
	inventory := jobs.StartRequest{MAC: "02:00:00:00:00:03", Bundle: store.Bundle{Name: "inv", Kind: store.KindInventory}}
	_, itok, err := js.Start(ctx, inventory)
	if err != nil {
		t.Fatal(err)
	}
	if code, _ := call(h, "GET", "/api/v1/images/mine", remote, itok, ""); code != http.StatusForbidden {
		t.Fatalf("inventory token reading an image: %d", code)
	}
	_, ctok, err := js.Start(ctx, capture)
	if err != nil {
		t.Fatal(err)
	}
	rj, rtok, err := js.Start(ctx, restore)
	if err != nil {
		t.Fatal(err)
	}
	// A restore job cannot write, nor read another image.
	if code, body := call(h, "DELETE", "/api/v1/images/mine", remote, rtok, ""); code != http.StatusForbidden {
		t.Fatalf("restore token deleting: %d %s", code, body)
	}
	if code, _ := call(h, "GET", "/api/v1/images/other", remote, rtok, ""); code != http.StatusForbidden {
		t.Fatalf("restore token reading another image: %d", code)
	}
	// A capture job cannot touch another image.
	if code, _ := call(h, "PUT", "/api/v1/images/other", remote, ctok, "{}"); code != http.StatusForbidden {
		t.Fatalf("capture token publishing another image: %d", code)
	}
	if code, body := call(h, "POST", "/api/v1/chunks/missing?image=mine", remote, ctok, `{"hashes":[]}`); code != http.StatusOK {
		t.Fatalf("capture token asking for missing chunks: %d %s", code, body)
	}
	// Once the job is over its token opens nothing.
	if _, err := js.Finish(ctx, rj.ID, false, "test"); err != nil {
		t.Fatal(err)
	}
	if code, _ := call(h, "GET", "/api/v1/images/mine", remote, rtok, ""); code != http.StatusForbidden {
		t.Fatalf("token of an ended job: %d", code)
	}
	// Job tokens never reach the admin API.
	if code, _ := call(h, "GET", "/api/v1/devices", remote, ctok, ""); code != http.StatusForbidden {
		t.Fatalf("job token on the admin API: %d", code)
	}
	if code, _ := call(h, "GET", "/api/v1/devices", remote, "", ""); code != http.StatusUnauthorized {
		t.Fatalf("remote admin without a token: %d", code)
	}
	// An admin token opens the admin API and the repository from anywhere.
	code, body := callLocal(h, "POST", "/api/v1/tokens", `{"name":"ops"}`) // root on the admin socket
	if code != http.StatusCreated {
		t.Fatalf("token create: %d %s", code, body)
	}
	var tok struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal([]byte(body), &tok); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/api/v1/devices", "/api/v1/images"} {
		if code, body := call(h, "GET", p, remote, tok.Token, ""); code != http.StatusOK {
			t.Fatalf("admin token on %s: %d %s", p, code, body)
		}
	}
	// An image a restore bundle uses cannot be deleted.
	if _, err := js.Store.CreateBundle(ctx, store.Bundle{Name: "r", Kind: store.KindImageRestore, Params: json.RawMessage(`{"image":"mine"}`)}); err != nil {
		t.Fatal(err)
	}
	if code, body := call(h, "DELETE", "/api/v1/images/mine", remote, tok.Token, ""); code != http.StatusConflict || !strings.Contains(body, "bundle r") {
		t.Fatalf("deleting an image a bundle restores: %d %s", code, body)
	}
}

func TestFilesAreConfinedToTheTFTPRoot(t *testing.T) {
	h, _, cfg := newHandler(t)
	root := cfg.TFTP.Root
	if err := os.MkdirAll(filepath.Join(root, "boot"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "boot", "kernel"), []byte("KERNEL"), 0o644); err != nil {
		t.Fatal(err)
	}
	outside := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(outside, []byte("SECRET"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}
	if code, body := call(h, "GET", "/files/boot/kernel", remote, "", ""); code != 200 || body != "KERNEL" {
		t.Fatalf("file: %d %q", code, body)
	}
	for _, p := range []string{"/files/link", "/files/../../etc/passwd", "/files/boot/", "/files/boot", "/files/%2e%2e/secret"} {
		if code, body := call(h, "GET", p, remote, "", ""); code == 200 || strings.Contains(body, "SECRET") || strings.Contains(body, "root:") {
			t.Errorf("%s: %d %q", p, code, body)
		}
	}
	if code, body := call(h, "GET", "/healthz", remote, "", ""); code != 200 || !strings.Contains(body, "ok") {
		t.Fatalf("healthz: %d", code)
	}
	if code, _ := call(h, "GET", "/metrics", remote, "", ""); code != 200 {
		t.Fatalf("metrics: %d", code)
	}
}

func TestConsoleIsMounted(t *testing.T) {
	h, _, _ := newHandler(t)
	req := httptest.NewRequest("GET", "http://10.0.0.1:8080/", nil)
	req.Header.Set("Accept", "text/html,application/xhtml+xml")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusSeeOther || rec.Header().Get("Location") != "/console/" {
		t.Fatalf("browser at /: %d %q", rec.Code, rec.Header().Get("Location"))
	}
	if code, body := call(h, "GET", "/console/login", remote, "", ""); code != http.StatusOK || !strings.Contains(body, "password") {
		t.Fatalf("login page: %d", code)
	}
	req = httptest.NewRequest("GET", "http://10.0.0.1:8080/console/devices", nil)
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusSeeOther || !strings.HasPrefix(rec.Header().Get("Location"), "/console/login") {
		t.Fatalf("page without a session: %d %q", rec.Code, rec.Header().Get("Location"))
	}
}
