package agent

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/preboot/preboot/image"
)

// kindLab is a job server with a real image repository and an agent
// configured to talk to it.
type kindLab struct {
	js   *jobServer
	repo *image.Repo
	srv  *httptest.Server
	env  Env
	o    AutoOptions
}

func newKindLab(t *testing.T) *kindLab {
	t.Helper()
	repo, _ := newRepo(t)
	js := &jobServer{token: "tok-k"}
	srv := httptest.NewServer(js.handler(repo))
	t.Cleanup(srv.Close)
	return &kindLab{js: js, repo: repo, srv: srv,
		env: Env{Server: srv.URL, Token: "tok-k"},
		o: AutoOptions{ReportInterval: 20 * time.Millisecond, Backoff: 10 * time.Millisecond,
			Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}}
}

// run gives the agent job (params as JSON) and runs Auto on device.
func (l *kindLab) run(t *testing.T, job Job, params string, device string) (Outcome, error) {
	t.Helper()
	if params != "" {
		job.Params = json.RawMessage(params)
	}
	l.js.mu.Lock()
	l.js.job = &job
	l.js.results, l.js.logs, l.js.progress, l.js.infos = nil, nil, nil, nil
	l.js.mu.Unlock()
	o := l.o
	o.Device = device
	return Auto(context.Background(), l.env, o)
}

// reports returns what the server got for the last job.
func (l *kindLab) reports() (results []JobResult, logs []string, progress []JobProgress, infos []Info) {
	l.js.mu.Lock()
	defer l.js.mu.Unlock()
	return append([]JobResult(nil), l.js.results...), append([]string(nil), l.js.logs...),
		append([]JobProgress(nil), l.js.progress...), append([]Info(nil), l.js.infos...)
}

// TestAutoImagingParams: image-capture, image-restore with partitions and
// multicast, driven by the bundle's params alone (the spec's top-level
// image, device and after left empty).
func TestAutoImagingParams(t *testing.T) {
	l := newKindLab(t)
	dir := t.TempDir()
	d := buildDisk(t, dir, "gpt", 64*MiB)

	out, err := l.run(t, Job{ID: 1, Kind: "image-capture", Bundle: "cap", MAC: "52:54:00:00:00:01"},
		`{"image":"kinds-img","compression":5,"after":"poweroff"}`, d.path)
	if err != nil {
		t.Fatal(err)
	}
	if out.After != "poweroff" {
		t.Errorf("after %q, want the bundle's poweroff", out.After)
	}
	if err := l.repo.Verify(context.Background(), "kinds-img", 0); err != nil {
		t.Fatal(err)
	}
	if res, _, _, infos := l.reports(); len(res) != 1 || !res[0].OK || len(infos) != 1 {
		t.Errorf("capture: results %+v, %d info posts", res, len(infos))
	}

	// image-restore of partition 2 onto a disk partitioned like the source.
	dst := filepath.Join(t.TempDir(), "dst.img")
	likeSource(t, dst, "gpt", 64*MiB, "")
	p1 := readAt(t, dst, d.fat[0], int(d.fat[1]))
	out, err = l.run(t, Job{ID: 2, Kind: "image-restore", MAC: "52:54:00:00:00:02"}, `{"image":"kinds-img","partitions":[2]}`, dst)
	if err != nil {
		t.Fatal(err)
	}
	if out.After != "reboot" {
		t.Errorf("after %q, want the default reboot", out.After)
	}
	checkExtPart(t, d, dst)
	if string(readAt(t, dst, d.fat[0], int(d.fat[1]))) != string(p1) {
		t.Error("a restore of partition 2 changed partition 1")
	}
	_, logs, progress, _ := l.reports()
	if !strings.Contains(strings.Join(logs, "\n"), "partition restore done") {
		t.Errorf("log lacks the partition restore: %q", logs)
	}
	// The progress carries where the time went, naming the disk.
	if last := progress[len(progress)-1]; last.Timing == nil || last.Timing.Disk != dst || len(last.Timing.Stages) == 0 || last.Timing.ElapsedUS <= 0 {
		t.Errorf("the restore's last progress has no time breakdown of %s: %+v", dst, last.Timing)
	}

	// multicast, against a server without multicast sessions (this test
	// server answers the join with 404), restores the whole image by
	// unicast, and says so.
	dst2 := filepath.Join(t.TempDir(), "dst2.img")
	makeFile(t, dst2, 64*MiB)
	if _, err := l.run(t, Job{ID: 3, Kind: "multicast", MAC: "52:54:00:00:00:03"}, `{"image":"kinds-img","min_clients":5}`, dst2); err != nil {
		t.Fatal(err)
	}
	checkDisk(t, d, dst2)
	res, logs, _, infos := l.reports()
	if len(res) != 1 || !res[0].OK || len(infos) != 1 {
		t.Errorf("multicast: results %+v, %d info posts", res, len(infos))
	}
	if !strings.Contains(strings.Join(logs, "\n"), "no multicast session: restoring over unicast") {
		t.Errorf("log does not say the multicast ran as unicast: %q", logs)
	}

	// A partition restore onto a mismatching disk fails before writing.
	dst3 := filepath.Join(t.TempDir(), "dst3.img")
	likeSource(t, dst3, "gpt", 64*MiB, "label: gpt\nstart=2048, size=40000\nstart=43008\n")
	before := fileSum(t, dst3)
	if _, err := l.run(t, Job{ID: 4, Kind: "image-restore"}, `{"image":"kinds-img","partitions":[2]}`, dst3); err == nil {
		t.Fatal("restore onto a mismatching table succeeded")
	}
	res, _, _, _ = l.reports()
	if len(res) != 1 || res[0].OK || !strings.Contains(res[0].Error, "does not match") || !strings.Contains(res[0].Error, "nothing was written") {
		t.Errorf("results %+v", res)
	}
	if fileSum(t, dst3) != before {
		t.Error("the refused restore changed the disk")
	}
}

func TestAutoScript(t *testing.T) {
	l := newKindLab(t)
	disk := filepath.Join(t.TempDir(), "disk.img")
	makeFile(t, disk, 4*MiB)
	script := `echo "server=$PREBOOT_SERVER job=$PREBOOT_JOB mac=$PREBOOT_MAC disk=$PREBOOT_DISK"
echo "to stderr" >&2
for i in 1 2 3; do echo "line $i"; done
`
	params, _ := json.Marshal(map[string]any{"script": script, "timeout": "30s", "after": "poweroff"})
	out, err := l.run(t, Job{ID: 7, Kind: "script", Bundle: "hello", MAC: "52:54:00:aa:bb:cc"}, string(params), disk)
	if err != nil {
		t.Fatal(err)
	}
	if out.After != "poweroff" {
		t.Errorf("after %q", out.After)
	}
	res, logs, progress, infos := l.reports()
	if len(res) != 1 || !res[0].OK || len(infos) != 1 {
		t.Fatalf("results %+v, %d info posts", res, len(infos))
	}
	all := strings.Join(logs, "\n")
	want := "server=" + l.srv.URL + " job=7 mac=52:54:00:aa:bb:cc disk=" + disk + "\nto stderr\nline 1\nline 2\nline 3\n"
	if !strings.Contains(all, want) {
		t.Errorf("job log lacks the script's output lines in order:\n%s", all)
	}
	if last := progress[len(progress)-1]; last.State != "succeeded" {
		t.Errorf("last progress %+v", last)
	}

	// A failing script fails the job with its status and last lines.
	params, _ = json.Marshal(map[string]any{"script": "echo preparing\necho 'disk not found' >&2\nexit 3\n"})
	if _, err := l.run(t, Job{ID: 8, Kind: "script"}, string(params), disk); err == nil {
		t.Fatal("a failing script succeeded")
	}
	res, logs, _, _ = l.reports()
	if len(res) != 1 || res[0].OK || !strings.Contains(res[0].Error, "script exited with status 3") ||
		!strings.Contains(res[0].Error, "preparing\ndisk not found") {
		t.Errorf("results %+v", res)
	}
	if !strings.Contains(strings.Join(logs, "\n"), "disk not found") {
		t.Errorf("log %q", logs)
	}

	// The timeout.
	params, _ = json.Marshal(map[string]any{"script": "echo waiting\nsleep 600\n", "timeout": "1s"})
	start := time.Now()
	if _, err := l.run(t, Job{ID: 9, Kind: "script"}, string(params), disk); err == nil {
		t.Fatal("a script past its timeout succeeded")
	}
	res, _, _, _ = l.reports()
	if len(res) != 1 || res[0].OK || !strings.Contains(res[0].Error, "timed out after 1s") || !strings.Contains(res[0].Error, "waiting") {
		t.Errorf("results %+v", res)
	}
	if time.Since(start) > 5*time.Minute {
		t.Error("the timeout did not stop the script")
	}
}

func TestAutoInventoryAndWipe(t *testing.T) {
	l := newKindLab(t)
	out, err := l.run(t, Job{ID: 20, Kind: "inventory", MAC: "52:54:00:00:00:20"}, "", "")
	if err != nil {
		t.Fatal(err)
	}
	res, logs, _, infos := l.reports()
	if len(res) != 1 || !res[0].OK || len(infos) != 1 || out.After != "reboot" {
		t.Errorf("inventory: results %+v, %d info posts, after %q", res, len(infos), out.After)
	}
	if infos[0].Hardware.CPUs == 0 || !strings.Contains(strings.Join(logs, "\n"), "inventory reported") {
		t.Errorf("inventory info %+v, logs %q", infos[0].Hardware, logs)
	}

	// Wipe, zero and discard, on a disk-image file.
	disk := filepath.Join(t.TempDir(), "disk.img")
	for i, mode := range []string{"zero", "discard"} {
		dataFile(t, disk, 6*MiB, uint64(i))
		if _, err := l.run(t, Job{ID: int64(21 + i), Kind: "wipe"}, `{"mode":"`+mode+`","confirm":true}`, disk); err != nil {
			t.Fatal(err)
		}
		checkZero(t, disk, 6*MiB)
		res, _, progress, infos := l.reports()
		last := progress[len(progress)-1]
		if len(res) != 1 || !res[0].OK || len(infos) != 1 || last.BytesDone != 6*MiB || last.BytesTotal != 6*MiB {
			t.Errorf("wipe %s: results %+v, %d info posts, last progress %+v", mode, res, len(infos), last)
		}
	}
	// Not confirmed: refused, the disk keeps its data.
	dataFile(t, disk, 6*MiB, 5)
	before := fileSum(t, disk)
	if _, err := l.run(t, Job{ID: 23, Kind: "wipe"}, `{"mode":"zero"}`, disk); err == nil {
		t.Fatal("an unconfirmed wipe succeeded")
	}
	if res, _, _, _ := l.reports(); len(res) != 1 || res[0].OK || !strings.Contains(res[0].Error, "not confirmed") {
		t.Errorf("results %+v", res)
	}
	if fileSum(t, disk) != before {
		t.Error("an unconfirmed wipe changed the disk")
	}

	// Kinds that never run in the imaging environment, unknown kinds and
	// bad params fail the job with a message saying so.
	for _, c := range []struct{ kind, params, want string }{
		{"os-install", `{"kernel":"k"}`, "do not run in the imaging environment"},
		{"local-boot", "", "do not run in the imaging environment"},
		{"reformat", "", `kind "reformat"`},
		{"script", `{"script":"true","bogus":1}`, "unknown field"},
	} {
		if _, err := l.run(t, Job{ID: 30, Kind: c.kind}, c.params, disk); err == nil {
			t.Errorf("%s: no error", c.kind)
		}
		if res, _, _, _ := l.reports(); len(res) != 1 || res[0].OK || !strings.Contains(res[0].Error, c.want) {
			t.Errorf("%s: results %+v, want %q", c.kind, res, c.want)
		}
	}
}
