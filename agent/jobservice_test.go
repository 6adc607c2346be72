package agent

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/preboot/preboot/bundle"
	"github.com/preboot/preboot/jobs"
	"github.com/preboot/preboot/store"
	"github.com/preboot/preboot/store/sqlite"
)

// TestAutoJobService runs the non-imaging kinds against the server's real
// job service (package jobs over SQLite): the spec it hands out, the log
// lines, progress, hardware info and result it accepts.
func TestAutoJobService(t *testing.T) {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "jobs.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	svc := &jobs.Service{Store: st}
	srv := httptest.NewServer(svc.AgentHandler())
	t.Cleanup(srv.Close)
	const mac = "52:54:00:00:00:99"
	if _, err := st.CreateDevice(ctx, store.Device{MAC: mac, Registered: true}); err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(t.TempDir(), "disk.img")
	o := AutoOptions{Device: disk, ReportInterval: 20 * time.Millisecond, Backoff: 10 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}

	// start creates a bundle and the job of it, as the boot policy does.
	start := func(name, kind, params string) (store.Job, Env) {
		t.Helper()
		p, err := bundle.Normalize(kind, json.RawMessage(params))
		if err != nil {
			t.Fatal(err)
		}
		b, err := st.CreateBundle(ctx, store.Bundle{Name: name, Kind: kind, Params: p})
		if err != nil {
			t.Fatal(err)
		}
		j, tok, err := svc.Start(ctx, jobs.StartRequest{MAC: mac, Bundle: b, Why: "test"})
		if err != nil {
			t.Fatal(err)
		}
		return j, Env{Server: srv.URL, Token: tok, Job: j.ID}
	}
	logOf := func(id int64) string {
		lines, err := st.JobLog(ctx, id, 1000)
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		for _, l := range lines {
			b.WriteString(l.Line + "\n")
		}
		return b.String()
	}

	// script: its output lines, in order, in the job log.
	makeFile(t, disk, 2*MiB)
	j, env := start("hello", store.KindScript, `{"script":"echo \"job=$PREBOOT_JOB mac=$PREBOOT_MAC\"\necho second >&2\n","after":"poweroff"}`)
	out, err := Auto(ctx, env, o)
	if err != nil {
		t.Fatal(err)
	}
	got, err := st.Job(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != store.JobSucceeded || out.After != "poweroff" || out.Job.Bundle != "hello" {
		t.Errorf("script job %+v, after %q", got, out.After)
	}
	if l := logOf(j.ID); !strings.Contains(l, "job="+strconv.FormatInt(j.ID, 10)+" mac="+mac+"\nsecond\n") {
		t.Errorf("job log:\n%s", l)
	}
	if d, err := st.Device(ctx, mac); err != nil || len(d.Info) == 0 {
		t.Errorf("device info not stored: %v", err)
	}

	// A failing script: the job fails with the status and output.
	j, env = start("fails", store.KindScript, `{"script":"echo oops\nexit 4\n"}`)
	if _, err := Auto(ctx, env, o); err == nil {
		t.Error("a failing script succeeded")
	}
	if got, _ := st.Job(ctx, j.ID); got.State != store.JobFailed || !strings.Contains(got.Error, "status 4") || !strings.Contains(got.Error, "oops") {
		t.Errorf("failed script job %+v", got)
	}

	// wipe and inventory.
	dataFile(t, disk, 2*MiB, 1)
	j, env = start("wipe-it", store.KindWipe, `{"mode":"zero","confirm":true}`)
	if _, err := Auto(ctx, env, o); err != nil {
		t.Fatal(err)
	}
	checkZero(t, disk, 2*MiB)
	if got, _ := st.Job(ctx, j.ID); got.State != store.JobSucceeded || got.BytesDone != 2*MiB {
		t.Errorf("wipe job %+v", got)
	}
	j, env = start("inv", store.KindInventory, `{}`)
	if _, err := Auto(ctx, env, o); err != nil {
		t.Fatal(err)
	}
	if got, _ := st.Job(ctx, j.ID); got.State != store.JobSucceeded {
		t.Errorf("inventory job %+v", got)
	}
	// The finished job's token no longer reaches the job API.
	if _, err := Auto(ctx, env, o); err == nil {
		t.Error("a finished job ran again")
	}
}
