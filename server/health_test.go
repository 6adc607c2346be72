package server

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
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
	"github.com/preboot/preboot/store/pgtest"
	"github.com/preboot/preboot/store/sqlite"
	"github.com/preboot/preboot/store/sqlstore"
)

// readyHandler builds the HTTP side around st, with TFTP and proxyDHCP
// off unless up lists them (then they are marked listening).
func readyHandler(t *testing.T, st store.Store, cfg config.Config, reg *prometheus.Registry, up ...string) (http.Handler, *serverStatus) {
	t.Helper()
	repo, err := image.OpenRepo(cfg.Imaging.Repo, image.RepoOptions{})
	if err != nil {
		t.Fatal(err)
	}
	js := &jobs.Service{Store: st}
	pol := &policy.Engine{Store: st, Boot: cfg.Boot, DefaultSettings: policy.SettingsFromConfig(cfg.Menu), Jobs: js, Imaging: cfg.Imaging, TFTPRoot: cfg.TFTP.Root}
	if err := os.MkdirAll(cfg.TFTP.Root, 0o755); err != nil {
		t.Fatal(err)
	}
	status := newStatus(cfg, st, repo)
	for _, s := range up {
		status.up(s, "127.0.0.1:0")
	}
	return handler(st, pol, js, repo, cfg, reg, nil, status, nil, slog.New(slog.DiscardHandler)), status
}

func readyConfig(t *testing.T) config.Config {
	t.Helper()
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.TFTP.Enabled = false
	cfg.ProxyDHCP.Enabled = false
	if err := cfg.Finish(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func getReady(t *testing.T, h http.Handler) (int, Readiness) {
	t.Helper()
	code, body := call(h, "GET", "/readyz", remote, "", "")
	var rd Readiness
	if err := json.Unmarshal([]byte(body), &rd); err != nil {
		t.Fatalf("readyz: %d %q: %v", code, body, err)
	}
	return code, rd
}

func failed(rd Readiness, name string) bool {
	for _, c := range rd.Checks {
		if c.Name == name {
			return !c.OK
		}
	}
	return false
}

func TestReadyzSQLite(t *testing.T) {
	ctx := context.Background()
	cfg := readyConfig(t)
	st, err := sqlite.Open(ctx, cfg.Store.Path)
	if err != nil {
		t.Fatal(err)
	}
	h, _ := readyHandler(t, st, cfg, prometheus.NewRegistry())
	if code, rd := getReady(t, h); code != http.StatusOK || !rd.Ready || len(rd.Checks) != 3 {
		t.Fatalf("ready server: %d %+v", code, rd)
	}
	// Liveness stays up whatever happens to the store.
	st.Close()
	code, rd := getReady(t, h)
	if code != http.StatusServiceUnavailable || rd.Ready || !failed(rd, "store") || !strings.HasPrefix(rd.Reason, "store:") {
		t.Fatalf("closed store: %d %+v", code, rd)
	}
	if code, body := call(h, "GET", "/healthz", remote, "", ""); code != http.StatusOK || !strings.Contains(body, "ok") {
		t.Fatalf("healthz with the store closed: %d %q", code, body)
	}
}

func TestReadyzDataDirAndListeners(t *testing.T) {
	ctx := context.Background()
	cfg := readyConfig(t)
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "db.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })

	// TFTP enabled but not (yet) listening: not ready.
	cfg.TFTP.Enabled = true
	h, status := readyHandler(t, st, cfg, prometheus.NewRegistry())
	code, rd := getReady(t, h)
	if code != http.StatusServiceUnavailable || !failed(rd, "listeners") || !strings.Contains(rd.Reason, "tftp") {
		t.Fatalf("tftp not listening: %d %+v", code, rd)
	}
	status.up(serviceTFTP, "127.0.0.1:69")
	if code, rd := getReady(t, h); code != http.StatusOK {
		t.Fatalf("tftp listening: %d %+v", code, rd)
	}
	status.down(serviceTFTP)
	if code, _ := getReady(t, h); code != http.StatusServiceUnavailable {
		t.Fatalf("tftp stopped: %d", code)
	}
	status.up(serviceTFTP, "127.0.0.1:69")

	// The data directory gone (a lost mount): not ready.
	if err := os.RemoveAll(cfg.DataDir); err != nil {
		t.Fatal(err)
	}
	code, rd = getReady(t, h)
	if code != http.StatusServiceUnavailable || !failed(rd, "data_dir") || failed(rd, "store") {
		t.Fatalf("data dir removed: %d %+v", code, rd)
	}
	entries, _ := os.ReadDir(filepath.Dir(cfg.DataDir))
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".readyz-") {
			t.Fatalf("readyz left %s behind", e.Name())
		}
	}
}

func TestReadyzPostgresStopped(t *testing.T) {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "preboot-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	pg, err := pgtest.Start(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			pg.Stop()
		}
	})
	dsn, err := pg.CreateDatabase(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st, err := sqlstore.Open(ctx, "postgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cfg := readyConfig(t)
	cfg.Store.Driver = "postgres"
	reg := prometheus.NewRegistry()
	h, _ := readyHandler(t, st, cfg, reg)
	if code, rd := getReady(t, h); code != http.StatusOK {
		t.Fatalf("postgres up: %d %+v", code, rd)
	}
	if v := gaugeValue(t, reg, "preboot_store_up"); v != 1 {
		t.Fatalf("preboot_store_up with postgres up: %v", v)
	}

	if err := pg.Stop(); err != nil {
		t.Fatal(err)
	}
	stopped = true
	code, rd := getReady(t, h)
	if code != http.StatusServiceUnavailable || !failed(rd, "store") || !strings.Contains(rd.Reason, "postgres") {
		t.Fatalf("postgres stopped: %d %+v", code, rd)
	}
	if v := gaugeValue(t, reg, "preboot_store_up"); v != 0 {
		t.Fatalf("preboot_store_up with postgres stopped: %v", v)
	}
}

func gaugeValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("%s not gathered", name)
	return 0
}

func TestBootRequestMetrics(t *testing.T) {
	ctx := context.Background()
	cfg := readyConfig(t)
	st, err := sqlite.Open(ctx, cfg.Store.Path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	reg := prometheus.NewRegistry()
	h, _ := readyHandler(t, st, cfg, reg)
	for i := range 3 {
		mac := []string{"52:54:00:00:00:01", "52:54:00:00:00:02", "52:54:00:00:00:03"}[i]
		if code, body := call(h, "GET", "/boot.ipxe?mac="+mac+"&platform=efi", remote, "", ""); code != http.StatusOK {
			t.Fatalf("boot.ipxe: %d %s", code, body)
		}
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var ok, observed float64
	for _, mf := range mfs {
		switch mf.GetName() {
		case "preboot_boot_requests_total":
			for _, m := range mf.GetMetric() {
				if m.GetLabel()[0].GetValue() == "200" {
					ok = m.GetCounter().GetValue()
				}
			}
		case "preboot_boot_request_duration_seconds":
			observed = float64(mf.GetMetric()[0].GetHistogram().GetSampleCount())
		}
	}
	if ok != 3 || observed != 3 {
		t.Fatalf("boot requests counted %v, observed %v; want 3", ok, observed)
	}
	if v := gaugeValue(t, reg, "preboot_devices"); v != 3 {
		t.Fatalf("preboot_devices: %v", v)
	}
}
