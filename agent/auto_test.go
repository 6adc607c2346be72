package agent

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/preboot/preboot/image"
	"github.com/preboot/preboot/image/httpstore"
)

// jobServer serves the agent job API of the contract next to the real
// image repository handler, and records what the agent reports.
type jobServer struct {
	mu        sync.Mutex
	job       *Job
	token     string
	failFirst int // answer GET job with 503 this many times
	progress  []JobProgress
	logs      []string
	results   []JobResult
	infos     []Info
}

func (s *jobServer) handler(repo *image.Repo) http.Handler {
	mux := http.NewServeMux()
	h := &httpstore.Handler{Repo: repo}
	for _, p := range h.Prefixes() {
		mux.Handle(p, h)
	}
	auth := func(next http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Authorization") != "Bearer "+s.token {
				http.Error(w, `{"error":"bad token"}`, http.StatusUnauthorized)
				return
			}
			next(w, r)
		}
	}
	decode := func(r *http.Request, v any) bool { return json.NewDecoder(r.Body).Decode(v) == nil }
	mux.HandleFunc("GET /api/v1/agent/job", auth(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.failFirst > 0 {
			s.failFirst--
			http.Error(w, `{"error":"busy"}`, http.StatusServiceUnavailable)
			return
		}
		if s.job == nil {
			http.Error(w, `{"error":"no job"}`, http.StatusNotFound)
			return
		}
		_ = json.NewEncoder(w).Encode(s.job)
	}))
	mux.HandleFunc("POST /api/v1/agent/job/progress", auth(func(w http.ResponseWriter, r *http.Request) {
		var p JobProgress
		if !decode(r, &p) {
			http.Error(w, `{"error":"bad json"}`, http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		s.progress = append(s.progress, p)
		s.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	mux.HandleFunc("POST /api/v1/agent/job/log", auth(func(w http.ResponseWriter, r *http.Request) {
		var l struct{ Lines []string }
		if !decode(r, &l) {
			http.Error(w, `{"error":"bad json"}`, http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		s.logs = append(s.logs, l.Lines...)
		s.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	mux.HandleFunc("POST /api/v1/agent/job/result", auth(func(w http.ResponseWriter, r *http.Request) {
		var res JobResult
		if !decode(r, &res) {
			http.Error(w, `{"error":"bad json"}`, http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		s.results = append(s.results, res)
		s.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	mux.HandleFunc("POST /api/v1/agent/info", auth(func(w http.ResponseWriter, r *http.Request) {
		var in Info
		if !decode(r, &in) {
			http.Error(w, `{"error":"bad json"}`, http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		s.infos = append(s.infos, in)
		s.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	return mux
}

func TestAuto(t *testing.T) {
	dir := t.TempDir()
	d := buildDisk(t, dir, "mbr", 64*MiB)
	repo, _ := newRepo(t)
	js := &jobServer{token: "tok-1", failFirst: 2,
		job: &Job{ID: 41, Kind: "image-capture", Image: "auto-img", MAC: "52:54:00:12:34:56", After: "reboot"}}
	srv := httptest.NewServer(js.handler(repo))
	defer srv.Close()
	ctx := context.Background()
	env, err := ParseCmdline("console=ttyS0 preboot.server=" + srv.URL + " preboot.token=tok-1 preboot.job=41 quiet")
	if err != nil {
		t.Fatal(err)
	}
	o := AutoOptions{Device: d.path, ReportInterval: 50 * time.Millisecond, Backoff: 10 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	out, err := Auto(ctx, env, o)
	if err != nil {
		t.Fatal(err)
	}
	if out.After != "reboot" || out.Job.ID != 41 {
		t.Errorf("outcome %+v", out)
	}
	if err := repo.Verify(ctx, "auto-img", 0); err != nil {
		t.Fatal(err)
	}
	js.mu.Lock()
	if len(js.results) != 1 || !js.results[0].OK || js.results[0].Image != "auto-img" {
		t.Errorf("results %+v", js.results)
	}
	if last := js.progress[len(js.progress)-1]; last.State != "succeeded" || last.BytesDone != last.BytesTotal || last.BytesTotal == 0 {
		t.Errorf("last progress %+v", last)
	}
	if !strings.Contains(strings.Join(js.logs, "\n"), "capture published") {
		t.Errorf("log lines lack the capture: %q", js.logs)
	}
	if len(js.infos) != 1 {
		t.Errorf("%d info posts", len(js.infos))
	}
	js.mu.Unlock()

	// Restore the image onto a blank file through the same flow.
	dst := filepath.Join(t.TempDir(), "dst.img")
	makeFile(t, dst, 80*MiB)
	js.mu.Lock()
	js.job = &Job{ID: 42, Kind: "image-restore", Image: "auto-img", MAC: "52:54:00:ab:cd:ef", After: "poweroff"}
	js.results = nil
	js.mu.Unlock()
	o.Device = dst
	if _, err := Auto(ctx, env, o); err != nil {
		t.Fatal(err)
	}
	checkDisk(t, d, dst)
	rec, err := ReadImageSafe(dst)
	if err != nil {
		t.Fatal(err)
	}
	if rec.DeviceID != "52:54:00:ab:cd:ef" || rec.Server != srv.URL || rec.LastImage != "auto-img" {
		t.Errorf("image-safe after auto restore: %+v", rec)
	}

	// A restore that fails (no such image) is reported as failed.
	js.mu.Lock()
	js.job = &Job{ID: 43, Kind: "image-restore", Image: "nope", After: "reboot"}
	js.results = nil
	js.mu.Unlock()
	before := fileSum(t, dst)
	if _, err := Auto(ctx, env, o); err == nil {
		t.Fatal("restore of a missing image succeeded")
	}
	js.mu.Lock()
	if len(js.results) != 1 || js.results[0].OK || !strings.Contains(js.results[0].Error, "nope") {
		t.Errorf("results %+v", js.results)
	}
	js.mu.Unlock()
	if fileSum(t, dst) != before {
		t.Error("failed restore changed the disk")
	}

	// No job, wrong token.
	js.mu.Lock()
	js.job = nil
	js.mu.Unlock()
	if _, err := Auto(ctx, env, o); !errors.Is(err, ErrNoJob) {
		t.Errorf("no job: %v", err)
	}
	env.Token = "wrong"
	var ae *APIError
	if _, err := Auto(ctx, env, o); !errors.As(err, &ae) || ae.Status != http.StatusUnauthorized {
		t.Errorf("wrong token: %v", err)
	}
}

func TestParseCmdline(t *testing.T) {
	e, err := ParseCmdline("BOOT_IMAGE=x console=ttyS0 preboot.server=http://10.0.0.1:8080 preboot.token=abc preboot.job=7 preboot.debug=1\n")
	if err != nil || e.Server != "http://10.0.0.1:8080" || e.Token != "abc" || e.Job != 7 || !e.Debug {
		t.Fatalf("%+v %v", e, err)
	}
	if _, err := ParseCmdline("console=ttyS0"); err == nil {
		t.Error("no server accepted")
	}
	if _, err := ParseCmdline("preboot.server=x preboot.job=abc"); err == nil {
		t.Error("bad job id accepted")
	}
}
