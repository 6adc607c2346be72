package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/preboot/preboot/bundle"
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

// setup creates a bundle and a device-level assignment of it.
func setup(t *testing.T, s *Service, name, kind, params string, once bool) StartRequest {
	t.Helper()
	ctx := context.Background()
	p, err := bundle.Normalize(kind, json.RawMessage(params))
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Store.CreateBundle(ctx, store.Bundle{Name: name, Kind: kind, Params: p})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Store.Device(ctx, mac); errors.Is(err, store.ErrNotFound) {
		if _, err := s.Store.CreateDevice(ctx, store.Device{MAC: mac, Registered: true}); err != nil {
			t.Fatal(err)
		}
	}
	a, err := s.Store.CreateAssignment(ctx, store.Assignment{BundleID: b.ID, MAC: mac, Once: once})
	if err != nil {
		t.Fatal(err)
	}
	return StartRequest{MAC: mac, Bundle: b, Assignment: &a, ClientIP: "127.0.0.1"}
}

func assignments(t *testing.T, s *Service) int {
	as, err := s.Store.Assignments(context.Background(), store.AssignmentFilter{MAC: mac})
	if err != nil {
		t.Fatal(err)
	}
	return len(as)
}

func TestJobLifecycleClearsOnceAssignmentOnlyOnSuccess(t *testing.T) {
	ctx := context.Background()
	s := newService(t)
	w := setup(t, s, "win", store.KindImageRestore, `{"image":"win11"}`, true)
	j1, tok1, err := s.Start(ctx, w)
	if err != nil {
		t.Fatal(err)
	}
	if j1.State != store.JobPending || !strings.HasPrefix(tok1, "pbj_") || j1.TokenHash == tok1 || j1.Image != "win11" || j1.Bundle != "win" || j1.AssignmentID != w.Assignment.ID {
		t.Fatalf("new job: %+v token %q", j1, tok1)
	}
	// The device boots again from the same address before its agent
	// started: the same job, a fresh token; the first one stops working.
	j2, tok2, err := s.Start(ctx, w)
	if err != nil {
		t.Fatal(err)
	}
	if j2.ID != j1.ID || tok2 == tok1 || j2.Boots != 2 {
		t.Fatalf("second boot of a pending job: %+v (token changed: %v)", j2, tok2 != tok1)
	}
	if _, err := s.Authenticate(ctx, tok1, "127.0.0.1:4000"); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("replaced token: %v", err)
	}
	if _, err := s.Authenticate(ctx, "pbj_nope", ""); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("unknown token: %v", err)
	}
	if j, err := s.Authenticate(ctx, tok2, "127.0.0.1:4000"); err != nil || j.ID != j2.ID {
		t.Fatalf("token 2: %+v %v", j, err)
	}
	if _, err := s.Authenticate(ctx, tok2, "[::ffff:127.0.0.1]:4000"); err != nil {
		t.Fatalf("token 2 from the v4-mapped address: %v", err)
	}
	if _, err := s.Authenticate(ctx, tok2, "10.9.9.9:4000"); !errors.Is(err, ErrWrongClient) {
		t.Fatalf("token 2 from another address: %v", err)
	}
	if _, err := s.Report(ctx, j2.ID, Progress{BytesDone: 10, BytesTotal: 5}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("progress beyond total: %v", err)
	}
	j, err := s.Report(ctx, j2.ID, Progress{Phase: "restore", BytesDone: 50, BytesTotal: 100, Rate: 1000})
	if err != nil || j.State != store.JobRunning || j.StartedAt.IsZero() {
		t.Fatalf("progress: %+v %v", j, err)
	}
	// A failure keeps the assignment for the next boot.
	if _, err := s.Finish(ctx, j2.ID, false, "disk too small"); err != nil {
		t.Fatal(err)
	}
	if n := assignments(t, s); n != 1 {
		t.Fatalf("assignment cleared after a failure: %d left", n)
	}
	if _, err := s.Finish(ctx, j2.ID, true, ""); !errors.Is(err, ErrJobOver) {
		t.Fatalf("finishing twice: %v", err)
	}
	if _, err := s.Authenticate(ctx, tok2, "127.0.0.1:4000"); !errors.Is(err, ErrJobOver) {
		t.Fatalf("token of an ended job: %v", err)
	}
	// Success clears it.
	j3, _, err := s.Start(ctx, w)
	if err != nil {
		t.Fatal(err)
	}
	if j, err := s.Finish(ctx, j3.ID, true, ""); err != nil || j.State != store.JobSucceeded {
		t.Fatalf("finish: %+v %v", j, err)
	}
	if n := assignments(t, s); n != 0 {
		t.Fatalf("once assignment after success: %d left", n)
	}
	d, _ := s.Store.Device(ctx, mac)
	if d.Applied == nil || d.Applied.Job != j3.ID || d.Applied.Bundle != "win" || d.Applied.BundleVersion != 1 {
		t.Fatalf("applied: %+v", d.Applied)
	}
	evs, _ := s.Store.Events(ctx, store.EventFilter{MAC: mac, Kind: store.EventJob})
	if len(evs) < 5 {
		t.Fatalf("job events: %+v", evs)
	}
}

func TestAgentHTTP(t *testing.T) {
	ctx := context.Background()
	s := newService(t)
	w := setup(t, s, "cap", store.KindImageCapture, `{"image":"lab-base","after":"poweroff","compression":5}`, false)
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
	if code != 200 || !strings.Contains(body, `"kind":"image-capture"`) || !strings.Contains(body, `"compression":5`) || !strings.Contains(body, `"image":"lab-base"`) || !strings.Contains(body, `"after":"poweroff"`) {
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
		{"/api/v1/agent/info", `{"hostname":"lab1","hardware":{"memory_bytes":2147483648,"secure_boot":{"enabled":true,"lockdown":"integrity\n"}},"disks":[{"size":1000,"removable":false},{"size":5,"removable":true}]}`, 204},
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
	if !strings.Contains(string(d.Info), "lab1") || d.RAMBytes != 2<<30 || d.DiskBytes != 1000 {
		t.Fatalf("device info: %s, ram %d, disk %d", d.Info, d.RAMBytes, d.DiskBytes)
	}
	// The Secure Boot state the imaging environment read settles
	// secure_boot auto; the agent's text is not echoed.
	if evs, _ := s.Store.Events(ctx, store.EventFilter{MAC: mac, Kind: store.EventSecureBoot}); len(evs) != 1 ||
		!strings.HasPrefix(evs[0].Message, store.SecureBootStateOn) || !strings.Contains(evs[0].Message, "lockdown unknown") {
		t.Fatalf("secureboot events: %+v", evs)
	}
	// Always (not once) assignments stay after success.
	if n := assignments(t, s); n != 1 {
		t.Fatalf("always assignment after success: %d left", n)
	}
	if got, _ := s.Store.Job(ctx, j.ID); got.State != store.JobSucceeded {
		t.Fatalf("final: %+v", got)
	}
}

func TestHandOutAndCancel(t *testing.T) {
	ctx := context.Background()
	s := newService(t)
	w := setup(t, s, "inst", store.KindOSInstall, `{"kernel":"boot/k"}`, true)
	j, err := s.HandOut(ctx, w)
	if err != nil || j.State != store.JobSucceeded || j.FinishedAt.IsZero() {
		t.Fatalf("hand-out: %+v %v", j, err)
	}
	if n := assignments(t, s); n != 0 {
		t.Fatalf("once os-install assignment after hand-out: %d", n)
	}
	w = setup(t, s, "inv", store.KindInventory, `{}`, false)
	j, _, err = s.Start(ctx, w)
	if err != nil {
		t.Fatal(err)
	}
	j, err = s.Cancel(ctx, j.ID, "token:admin")
	if err != nil || j.State != store.JobCancelled || !strings.Contains(j.Error, "token:admin") {
		t.Fatalf("cancel: %+v %v", j, err)
	}
	if n := assignments(t, s); n != 1 {
		t.Fatalf("cancel removed an always assignment: %d", n)
	}
	if _, err := s.Cancel(ctx, j.ID, "x"); !errors.Is(err, ErrJobOver) {
		t.Fatalf("cancel twice: %v", err)
	}
}
