package server

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/bcrypt"

	"github.com/preboot/preboot/api"
	"github.com/preboot/preboot/config"
	"github.com/preboot/preboot/disk"
	"github.com/preboot/preboot/image"
	"github.com/preboot/preboot/jobs"
	"github.com/preboot/preboot/policy"
	"github.com/preboot/preboot/session"
	"github.com/preboot/preboot/store"
	"github.com/preboot/preboot/store/sqlite"
)

type statusEnv struct {
	cfg  config.Config
	st   store.Store
	repo *image.Repo
	url  string
}

func newStatusEnv(t *testing.T, trustLoopback bool) *statusEnv {
	t.Helper()
	return newStatusEnvWith(t, func(c *config.Config) { c.HTTP.TrustLoopback = trustLoopback })
}

// newStatusEnvWith is newStatusEnv with a configuration change.
func newStatusEnvWith(t *testing.T, mutate func(*config.Config)) *statusEnv {
	t.Helper()
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.ProxyDHCP.DHCPListen = ""
	mutate(&cfg)
	if err := cfg.Finish(); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(cfg.TFTP.Root, 0o755); err != nil {
		t.Fatal(err)
	}
	st, err := sqlite.Open(context.Background(), cfg.Store.Path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	repo, err := image.OpenRepo(cfg.Imaging.Repo, image.RepoOptions{GCGrace: -1})
	if err != nil {
		t.Fatal(err)
	}
	js := &jobs.Service{Store: st}
	pol := &policy.Engine{Store: st, Boot: cfg.Boot, DefaultSettings: policy.SettingsFromConfig(cfg.Menu), Jobs: js, Imaging: cfg.Imaging, TFTPRoot: cfg.TFTP.Root}
	srv := httptest.NewServer(Handler(st, pol, js, repo, cfg, prometheus.NewRegistry(), nil, slog.New(slog.DiscardHandler)))
	t.Cleanup(srv.Close)
	return &statusEnv{cfg: cfg, st: st, repo: repo, url: srv.URL}
}

// addImage publishes an image of 1 MiB of random data in 4 MiB of zeros.
func (e *statusEnv) addImage(t *testing.T, name string) {
	t.Helper()
	const size = 4 << 20
	b := make([]byte, size)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := 1 << 20; i < 2<<20; i++ {
		b[i] = byte(rng.Uint32())
	}
	parts := []image.Area{{Index: 1, Start: 1 << 20, Size: 3 << 20, FSType: "ext4", Used: []disk.Extent{{Offset: 0, Length: 1 << 20}}}}
	m, err := image.Capture(t.Context(), bytes.NewReader(b), image.Layout{DiskSize: size, Partitions: parts, Regions: image.Gaps(size, parts)},
		e.repo, image.CaptureOptions{Name: name, ChunkSize: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.repo.Publish(t.Context(), m); err != nil {
		t.Fatal(err)
	}
}

func getStatus(t *testing.T, u string, client *http.Client) (api.StatusInfo, map[string]any) {
	t.Helper()
	resp, err := client.Get(u + "/api/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var raw bytes.Buffer
	raw.ReadFrom(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status: %d %s", resp.StatusCode, raw.String())
	}
	var s api.StatusInfo
	dec := json.NewDecoder(bytes.NewReader(raw.Bytes()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		t.Fatalf("status: %v\n%s", err, raw.String())
	}
	var tree map[string]any
	if err := json.Unmarshal(raw.Bytes(), &tree); err != nil {
		t.Fatal(err)
	}
	return s, tree
}

// keys lists an object's keys, sorted.
func keys(v any) []string {
	m, _ := v.(map[string]any)
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// tokenClient is an HTTP client that sends a fresh admin token of st.
func tokenClient(t *testing.T, st store.Store) *http.Client {
	t.Helper()
	secret, hash, err := api.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateToken(context.Background(), store.Token{Name: "test", Hash: hash, Prefix: secret[:10]}); err != nil {
		t.Fatal(err)
	}
	return &http.Client{Timeout: time.Minute, Transport: bearer(secret)}
}

type bearer string

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+string(b))
	return http.DefaultTransport.RoundTrip(r)
}

func TestStatus(t *testing.T) {
	ctx := context.Background()
	e := newStatusEnv(t, false)
	now := time.Now()
	for i, seen := range []time.Time{now.Add(-10 * time.Minute), now.Add(-2 * time.Hour), now.Add(-30 * time.Second)} {
		if _, _, err := e.st.SeeDevice(ctx, store.Sighting{MAC: "02:00:00:00:aa:0" + string(rune('1'+i)), Time: seen}); err != nil {
			t.Fatal(err)
		}
	}
	job := func(state string, finished time.Time) {
		j, err := e.st.CreateJob(ctx, store.Job{MAC: "02:00:00:00:aa:01", Kind: store.KindInventory, State: state, TokenHash: "t-" + state + finished.String()})
		if err != nil {
			t.Fatal(err)
		}
		if !finished.IsZero() {
			if _, err := e.st.UpdateJob(ctx, j.ID, func(j *store.Job) error { j.FinishedAt = finished; return nil }); err != nil {
				t.Fatal(err)
			}
		}
	}
	job(store.JobRunning, time.Time{})
	job(store.JobPending, time.Time{})
	job(store.JobFailed, now.Add(-time.Hour))
	job(store.JobFailed, now.Add(-48*time.Hour))
	job(store.JobSucceeded, now.Add(-time.Hour))
	e.addImage(t, "golden")

	s, tree := getStatus(t, e.url, tokenClient(t, e.st))

	// The contract's shape, key by key.
	for path, want := range map[string][]string{
		"":                 {"config", "counts", "image_repo", "services", "started_at", "uptime_seconds", "version"},
		"image_repo":       {"free_bytes", "path", "total_bytes", "used_by_images_bytes"},
		"config":           {"http", "proxydhcp", "store", "tftp"},
		"config/proxydhcp": {"dhcp_listen", "enabled", "interface", "pxe_listen"},
		"config/tftp":      {"enabled", "listen", "max_blksize", "max_windowsize", "root"},
		"config/http":      {"admin_socket", "listen", "tls_fingerprint", "tls_listen", "trust_loopback"},
		"config/store":     {"driver"},
		"counts":           {"devices", "devices_seen_last_hour", "jobs_failed_last_day", "jobs_running"},
	} {
		var v any = tree
		if path != "" {
			for _, p := range strings.Split(path, "/") {
				v = v.(map[string]any)[p]
			}
		}
		if got := keys(v); !reflect.DeepEqual(got, want) {
			t.Errorf("status %s: keys %v, want %v", path, got, want)
		}
	}
	for _, sv := range tree["services"].([]any) {
		if got := keys(sv); !reflect.DeepEqual(got, []string{"enabled", "listen", "name", "up"}) {
			t.Errorf("service keys %v", got)
		}
	}

	if s.Version != Version || s.StartedAt.After(time.Now()) || s.UptimeSeconds < 0 {
		t.Errorf("version/start: %+v", s)
	}
	want := []api.ServiceStatus{
		{Name: "http", Enabled: true, Listen: []string{":8080"}, Up: true},
		{Name: "tftp", Enabled: true, Listen: []string{":69"}},
		{Name: "proxydhcp", Enabled: true, Listen: []string{":4011"}},
	}
	if !reflect.DeepEqual(s.Services, want) {
		t.Errorf("services (a Handler without Run: configured addresses) = %+v, want %+v", s.Services, want)
	}
	if s.ImageRepo.Path != e.cfg.Imaging.Repo || s.ImageRepo.TotalBytes <= 0 || s.ImageRepo.FreeBytes <= 0 || s.ImageRepo.FreeBytes > s.ImageRepo.TotalBytes {
		t.Errorf("image repository: %+v", s.ImageRepo)
	}
	u, err := e.repo.Usage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s.ImageRepo.UsedByImagesBytes != u.StoredBytes-u.GarbageBytes || s.ImageRepo.UsedByImagesBytes < 1<<20/2 {
		t.Errorf("used by images = %d, repository usage %+v", s.ImageRepo.UsedByImagesBytes, u)
	}
	wantCfg := api.ConfigSummary{
		ProxyDHCP: api.ProxyDHCPConfig{Enabled: true, DHCPListen: "", PXEListen: ":4011"},
		TFTP:      api.TFTPConfig{Enabled: true, Listen: ":69", Root: e.cfg.TFTP.Root, MaxBlksize: 65464, MaxWindowsize: 64},
		HTTP: api.HTTPConfig{Listen: ":8080", TrustLoopback: false, TLSListen: ":8443",
			AdminSocket: filepath.Join(e.cfg.DataDir, "admin.sock")}, // a Handler without Run: no certificate loaded
		Store: api.StoreConfig{Driver: "sqlite"},
	}
	if !reflect.DeepEqual(s.Config, wantCfg) {
		t.Errorf("config = %+v, want %+v", s.Config, wantCfg)
	}
	if want := (api.StatusCounts{Devices: 3, DevicesSeenLastHour: 2, JobsRunning: 2, JobsFailedLastDay: 1}); s.Counts != want {
		t.Errorf("counts = %+v, want %+v", s.Counts, want)
	}
}

// TestConsoleLoginMounted: the server mounts the login and logout
// handlers, and the API accepts the session (when loopback is not
// trusted, the cookie is the only way in).
func TestConsoleLoginMounted(t *testing.T) {
	ctx := context.Background()
	e := newStatusEnv(t, false)
	h, err := bcrypt.GenerateFromPassword([]byte("correct horse battery"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.CreateUser(ctx, store.User{Name: "ann", PasswordHash: string(h)}); err != nil {
		t.Fatal(err)
	}
	jar, _ := cookiejar.New(nil)
	client := &http.Client{Jar: jar, Timeout: time.Minute, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	if resp, err := client.Get(e.url + "/api/v1/status"); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("status without a session: %v %v", resp, err)
	}
	resp, err := client.PostForm(e.url+"/console/login", url.Values{"user": {"ann"}, "password": {"correct horse battery"}, "next": {"/console/devices"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/console/devices" {
		t.Fatalf("login: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	getStatus(t, e.url, client)
	u, _ := url.Parse(e.url)
	var csrf string
	for _, c := range jar.Cookies(u) {
		if c.Name == session.CookieName {
			s, err := e.st.SessionByHash(ctx, session.HashID(c.Value))
			if err != nil {
				t.Fatal(err)
			}
			csrf = s.CSRF
		}
	}
	resp, err = client.PostForm(e.url+"/console/logout", url.Values{"csrf": {csrf}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/console/login" {
		t.Fatalf("logout: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp, err := client.Get(e.url + "/api/v1/status"); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("status after logout: %v %v", resp, err)
	}
}

// The first console password goes to DATA_DIR/initial-admin-password
// (mode 0600), never to stderr or the log, which only say where it is.
func TestFirstAdmin(t *testing.T) {
	ctx := context.Background()
	e := newStatusEnv(t, false)
	var out bytes.Buffer
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	if err := firstAdmin(ctx, e.st, e.cfg, &out, log); err != nil {
		t.Fatal(err)
	}
	users, err := e.st.Users(ctx)
	if err != nil || len(users) != 1 || users[0].Name != "admin" {
		t.Fatalf("users: %+v %v", users, err)
	}
	file := filepath.Join(e.cfg.DataDir, InitialPasswordFile)
	fi, err := os.Stat(file)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("password file: %v %v", fi, err)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	pw := strings.TrimSpace(string(b))
	if len(pw) != 26 || bcrypt.CompareHashAndPassword([]byte(users[0].PasswordHash), []byte(pw)) != nil {
		t.Fatalf("the file does not hold the password: %q", b)
	}
	if strings.Contains(out.String(), pw) || !strings.Contains(out.String(), file) ||
		!strings.Contains(out.String(), "preboot admin passwd admin") || !strings.Contains(out.String(), "https://SERVER:8443/console/") {
		t.Fatalf("first admin message:\n%s", out.String())
	}
	if strings.Contains(logs.String(), pw) || !strings.Contains(logs.String(), file) || !strings.Contains(logs.String(), "preboot admin passwd admin") {
		t.Fatalf("log:\n%s", logs.String())
	}
	out.Reset()
	if err := firstAdmin(ctx, e.st, e.cfg, &out, log); err != nil || out.Len() != 0 {
		t.Fatalf("second start: %v %q", err, out.String())
	}
}
