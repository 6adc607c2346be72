package cli_test

import (
	"encoding/json"
	"io"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// countChunks counts the chunk files of a repository.
func countChunks(t *testing.T, repo string) int {
	t.Helper()
	n := 0
	_ = filepath.WalkDir(filepath.Join(repo, "chunks"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() && !strings.HasPrefix(d.Name(), ".") {
			n++
		}
		return nil
	})
	return n
}

// A kill -9 of the server in the middle of a capture, then a restart:
// no half image is published, the job fails cleanly (it expires: its
// agent went silent) with its token, and the next GC reclaims the
// chunks the capture left behind.
func TestServerKilledMidCapture(t *testing.T) {
	const mac = "52:54:00:cc:00:01"
	c := newCLI(t)
	dir := t.TempDir()
	repo := filepath.Join(dir, "images")

	// A disk of incompressible data, large enough to be cut in the middle.
	disk := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(disk)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewChaCha8([32]byte{9}))
	buf := make([]byte, 1<<20)
	for range 384 {
		for i := 0; i < len(buf); i += 8 {
			v := r.Uint64()
			for k := range 8 {
				buf[i+k] = byte(v >> (8 * k))
			}
		}
		if _, err := f.Write(buf); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	// The imaging environment's files only need to exist: the agent runs
	// here, from the test.
	for _, f := range []string{"kernel", "initrd"} {
		if err := os.MkdirAll(filepath.Join(dir, "tftp", "boot"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "tftp", "boot", f), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	p := startServe(t, c, dir, "--job-stale-after", "2s")
	u := p.httpURL(t)
	p.httpsURL(t)
	c.ok(t, "--data-dir", dir, "device", "capture", mac, "--image", "crash")

	// The device boots: its script carries the job's token and where the
	// agent reaches the server.
	req, _ := http.NewRequest("GET", u+"/boot.ipxe?mac=52-54-00-cc-00-01&action=default", nil)
	req.Header.Set("User-Agent", "iPXE/1.21.1+")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	script, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := regexp.MustCompile(`(?m)^kernel \S+ (.*preboot\.token=.*?) \|\|`).FindSubmatch(script)
	if m == nil {
		t.Fatalf("boot script without a job:\n%s", script)
	}
	cmdline := filepath.Join(t.TempDir(), "cmdline")
	if err := os.WriteFile(cmdline, m[1], 0o600); err != nil {
		t.Fatal(err)
	}
	agent := exec.Command(bin, "agent", "auto", "--cmdline", cmdline, "--device", disk)
	agent.Env = c.env
	var agentOut strings.Builder
	agent.Stdout, agent.Stderr = &agentOut, &agentOut
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	agentDone := make(chan error, 1)
	go func() { agentDone <- agent.Wait() }()
	t.Cleanup(func() {
		if agent.ProcessState == nil {
			agent.Process.Kill()
			<-agentDone
		}
	})

	// Once chunks arrive, the server dies (and the machine with it).
	deadline := time.Now().Add(2 * time.Minute)
	for countChunks(t, repo) < 2 {
		select {
		case err := <-agentDone:
			t.Fatalf("the capture ended before the server could be killed (%v):\n%s", err, agentOut.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no chunk uploaded within 2 minutes:\n%s\n%s", agentOut.String(), p.output())
		}
	}
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-p.done
	p.cmd.Wait()
	agent.Process.Kill()
	<-agentDone
	orphans := countChunks(t, repo)
	if orphans == 0 {
		t.Fatal("no chunk on disk after the kill")
	}

	// Restart: the job expires as failed, nothing was published.
	p2 := startServe(t, c, dir, "--job-stale-after", "2s")
	p2.httpURL(t)
	var jobs []struct {
		ID    int64  `json:"id"`
		State string `json:"state"`
		Error string `json:"error"`
	}
	deadline = time.Now().Add(time.Minute)
	for {
		out := c.ok(t, "--data-dir", dir, "job", "list", "--device", mac, "-o", "json")
		jobs = nil
		if err := json.Unmarshal([]byte(out), &jobs); err != nil {
			t.Fatalf("job list: %v\n%s", err, out)
		}
		if len(jobs) == 1 && jobs[0].State == "failed" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the job did not fail within a minute of the restart: %+v", jobs)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !strings.Contains(jobs[0].Error, "expired") {
		t.Fatalf("job error: %q", jobs[0].Error)
	}
	if r := c.run(t, "--data-dir", dir, "image", "show", "crash"); r.code == 0 {
		t.Fatalf("a half capture was published: %s", r)
	}
	// The next GC reclaims what the capture left behind.
	out := c.ok(t, "--data-dir", dir, "image", "gc")
	if !strings.Contains(out, "removed") {
		t.Fatalf("gc: %s", out)
	}
	if n := countChunks(t, repo); n != 0 {
		t.Fatalf("%d of %d orphan chunks left after gc: %s", n, orphans, out)
	}
}
