package jobs

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/preboot/preboot/store"
	"github.com/preboot/preboot/store/sqlite"
)

func newService(t *testing.T) *Service {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "j.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return &Service{Store: st}
}

const mac = "52:54:00:00:00:07"

func TestJobLifecycleClearsWorkOnlyOnSuccess(t *testing.T) {
	ctx := context.Background()
	s := newService(t)
	w := store.Work{MAC: mac, Kind: store.WorkRestore, Image: "win11", After: store.AfterReboot}
	if err := s.Store.SetWork(ctx, w); err != nil {
		t.Fatal(err)
	}
	j1, tok1, err := s.Start(ctx, w)
	if err != nil {
		t.Fatal(err)
	}
	if j1.State != store.JobPending || !strings.HasPrefix(tok1, "pbj_") || j1.TokenHash == tok1 {
		t.Fatalf("new job: %+v token %q", j1, tok1)
	}
	// The device boots again before the job ends: the first job is interrupted.
	j2, tok2, err := s.Start(ctx, w)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Store.Job(ctx, j1.ID); got.State != store.JobFailed || !strings.Contains(got.Error, "interrupted") {
		t.Fatalf("first job after a second boot: %+v", got)
	}
	if _, err := s.Authenticate(ctx, tok1); !errors.Is(err, ErrJobOver) {
		t.Fatalf("token of an ended job: %v", err)
	}
	if _, err := s.Authenticate(ctx, "pbj_nope"); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("unknown token: %v", err)
	}
	if j, err := s.Authenticate(ctx, tok2); err != nil || j.ID != j2.ID {
		t.Fatalf("token 2: %+v %v", j, err)
	}
	if _, err := s.Report(ctx, j2.ID, Progress{BytesDone: 10, BytesTotal: 5}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("progress beyond total: %v", err)
	}
	j, err := s.Report(ctx, j2.ID, Progress{Phase: "restore", BytesDone: 50, BytesTotal: 100, Rate: 1000})
	if err != nil || j.State != store.JobRunning || j.StartedAt.IsZero() {
		t.Fatalf("progress: %+v %v", j, err)
	}
	// A failure keeps the work for the next boot.
	if _, err := s.Finish(ctx, j2.ID, false, "disk too small"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Store.Work(ctx, mac); err != nil {
		t.Fatalf("work cleared after a failure: %v", err)
	}
	if _, err := s.Finish(ctx, j2.ID, true, ""); !errors.Is(err, ErrJobOver) {
		t.Fatalf("finishing twice: %v", err)
	}
	// Success clears it.
	j3, _, err := s.Start(ctx, w)
	if err != nil {
		t.Fatal(err)
	}
	if j, err := s.Finish(ctx, j3.ID, true, ""); err != nil || j.State != store.JobSucceeded {
		t.Fatalf("finish: %+v %v", j, err)
	}
	if _, err := s.Store.Work(ctx, mac); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("work after success: %v", err)
	}
	evs, _ := s.Store.Events(ctx, store.EventFilter{MAC: mac, Kind: EventJob})
	if len(evs) < 5 {
		t.Fatalf("job events: %+v", evs)
	}
}

func TestAgentHTTP(t *testing.T) {
	ctx := context.Background()
	s := newService(t)
	w := store.Work{MAC: mac, Kind: store.WorkCapture, Image: "lab-base", After: store.AfterPoweroff, Compression: 5}
	if err := s.Store.SetWork(ctx, w); err != nil {
		t.Fatal(err)
	}
	j, tok, err := s.Start(ctx, w)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.AgentHandler())
	defer srv.Close()
	call := func(method, path, token, body string) (int, string) {
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b strings.Builder
		buf := make([]byte, 4096)
		for {
			n, err := resp.Body.Read(buf)
			b.Write(buf[:n])
			if err != nil {
				break
			}
		}
		return resp.StatusCode, b.String()
	}
	if code, _ := call("GET", "/api/v1/agent/job", "", ""); code != 401 {
		t.Fatalf("no token: %d", code)
	}
	code, body := call("GET", "/api/v1/agent/job", tok, "")
	if code != 200 || !strings.Contains(body, `"kind":"capture"`) || !strings.Contains(body, `"image":"lab-base"`) || !strings.Contains(body, `"after":"poweroff"`) {
		t.Fatalf("job: %d %s", code, body)
	}
	if got, _ := s.Store.Job(ctx, j.ID); got.State != store.JobBooting {
		t.Fatalf("after fetch: %s", got.State)
	}
	for _, c := range []struct {
		path, body string
		code       int
	}{
		{"/api/v1/agent/job/progress", `{"phase":"capture","bytes_done":1,"bytes_total":10,"rate":5}`, 204},
		{"/api/v1/agent/job/progress", `{"bytes_done":-1}`, 422},
		{"/api/v1/agent/job/progress", `{`, 400},
		{"/api/v1/agent/job/log", `{"lines":["reading /dev/sda","done"]}`, 204},
		{"/api/v1/agent/info", `{"hostname":"lab1","disks":[]}`, 204},
		{"/api/v1/agent/job/result", `{"ok":true,"image":"other"}`, 422},
		{"/api/v1/agent/job/result", `{"ok":true,"image":"lab-base"}`, 204},
		{"/api/v1/agent/job/log", `{"lines":["late"]}`, 409},
	} {
		if code, body := call("POST", c.path, tok, c.body); code != c.code {
			t.Errorf("POST %s %s: %d %s, want %d", c.path, c.body, code, body, c.code)
		}
	}
	lines, _ := s.Store.JobLog(ctx, j.ID, 0)
	if len(lines) != 2 || lines[1].Line != "done" {
		t.Fatalf("log: %+v", lines)
	}
	d, _ := s.Store.Device(ctx, mac)
	if !strings.Contains(string(d.Info), "lab1") {
		t.Fatalf("device info: %s", d.Info)
	}
	if got, _ := s.Store.Job(ctx, j.ID); got.State != store.JobSucceeded {
		t.Fatalf("final: %+v", got)
	}
}
