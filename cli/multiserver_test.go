package cli_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/preboot/preboot/agent"
	"github.com/preboot/preboot/disk"
	"github.com/preboot/preboot/image"
	"github.com/preboot/preboot/store/pgtest"
)

// Two `preboot serve` processes share one PostgreSQL database and one
// image directory, in a network namespace of the test whose loopback is
// shaped to 80 Mbit/s (so that a restore takes seconds). A device created
// through server A gets the same boot script from B. A restore job handed
// out by A runs in a real `preboot agent auto` process given both
// servers; A is killed (SIGKILL, by its PID) once it has sent part of the
// image; the agent goes on with B, the restored bytes are the image's,
// B serves less than the whole image (the restore went on where it was),
// and the job is done as B sees it.
func TestTwoServersOneDatabase(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (a network namespace)")
	}
	for _, tool := range []string{"ip", "tc"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (iproute2)", tool)
		}
	}
	ctx := t.Context()
	ns := newShapedNetns(t, "80mbit")

	// One PostgreSQL for both servers (a unix socket: reachable from the
	// namespace).
	pgdir, err := os.MkdirTemp("", "preboot-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(pgdir) })
	pg, err := pgtest.Start(ctx, pgdir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pg.Stop() })
	dsn, err := pg.CreateDatabase(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// One image directory with a 32 MiB image of random data.
	shared := t.TempDir()
	const diskSize, used = 40 << 20, 32 << 20
	src := bigImage(t, shared, "big", diskSize, used)

	dirA, dirB := t.TempDir(), t.TempDir()
	for _, d := range []string{dirA, dirB} {
		// The imaging environment, as `preboot env build` leaves it.
		for _, f := range []string{"kernel", "initrd"} {
			p := filepath.Join(d, "tftp", "boot", f)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(f), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	const (
		httpA, tlsA = "127.0.0.1:18080", "127.0.0.1:18443"
		httpB, tlsB = "127.0.0.1:28080", "127.0.0.1:28443"
	)
	c := newCLI(t, "PREBOOT_STORE_DSN="+dsn)
	common := []string{"--store-driver", "postgres", "--image-repo", shared, "--image-gc-interval", "0", "--menu-mode", "never"}
	a := startServeIn(t, c, ns, dirA, append(common, "--http-listen", httpA, "--tls-listen", tlsA, "--peer-servers", "https://"+tlsB)...)
	_, fpA := a.httpsURL(t)
	// The servers share one certificate: B gets a copy of A's.
	for _, f := range []string{"cert.pem", "key.pem"} {
		b, err := os.ReadFile(filepath.Join(dirA, "tls", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(dirB, "tls"), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dirB, "tls", f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	b := startServeIn(t, c, ns, dirB, append(common, "--http-listen", httpB, "--tls-listen", tlsB, "--peer-servers", "https://"+tlsA)...)
	if _, fpB := b.httpsURL(t); fpB != fpA {
		t.Fatalf("B's certificate %s, A's %s", fpB, fpA)
	}
	waitLog(t, b, "peer server serves the same certificate")
	cA := newCLI(t, "PREBOOT_SOCKET="+filepath.Join(dirA, "admin.sock"))
	cB := newCLI(t, "PREBOOT_SOCKET="+filepath.Join(dirB, "admin.sock"))
	web := &http.Client{Timeout: time.Minute, Transport: &http.Transport{DialContext: dialInNetns(ns)}}

	// A device first seen by B, then given work through A: B's decision
	// follows the change made through A (its policy snapshot is no
	// longer current) and is A's.
	const mac2 = "52:54:00:00:0b:02"
	q := "/boot.ipxe?mac=" + mac2 + "&platform=efi&arch=x86_64"
	if before := fetch(t, web, "http://"+httpB+q); strings.Contains(before, "boot/kernel") {
		t.Fatalf("boot script before any assignment:\n%s", before)
	}
	cA.ok(t, "device", "boot", mac2, "--kernel", "boot/kernel", "--cmdline", "console=ttyS0")
	fromA, fromB := fetch(t, web, "http://"+httpA+q), fetch(t, web, "http://"+httpB+q)
	// Each boot is a job of its own (job 1 at A, job 2 at B): the rest is
	// the same but for the server's address.
	same := func(s string) string {
		s = strings.ReplaceAll(s, httpB, httpA)
		return regexp.MustCompile(`job \d+:`).ReplaceAllString(s, "job N:")
	}
	if !strings.Contains(fromB, "boot/kernel") || same(fromB) != same(fromA) {
		t.Fatalf("boot script from A:\n%s\nfrom B:\n%s", fromA, fromB)
	}
	contains(t, cB.ok(t, "device", "show", mac2), "boot-525400000b02")

	// A restore job handed out by A lists both servers.
	const mac1 = "52:54:00:00:0b:01"
	cA.ok(t, "device", "add", mac1)
	cA.ok(t, "device", "restore", mac1, "--image", "big")
	script := fetch(t, web, "http://"+httpA+"/boot.ipxe?mac="+mac1+"&platform=efi&arch=x86_64")
	cmdline := kernelArgs(t, script)
	env, err := agent.ParseCmdline(cmdline)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(env.Servers, ",") != "https://"+tlsA+",https://"+tlsB || env.TLS != fpA {
		t.Fatalf("agent servers %q, pin %s (A's %s):\n%s", env.Servers, env.TLS, fpA, script)
	}
	cmdFile := filepath.Join(t.TempDir(), "cmdline")
	if err := os.WriteFile(cmdFile, []byte(cmdline), 0o600); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(dst, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(dst, diskSize); err != nil {
		t.Fatal(err)
	}

	// The agent, in the namespace; A is killed once it has sent 12 MiB.
	sentA0, sentB0 := wchar(t, a.cmd.Process.Pid), wchar(t, b.cmd.Process.Pid)
	var agentOut bytes.Buffer
	ag := exec.Command("ip", "netns", "exec", ns, bin, "agent", "auto", "--cmdline", cmdFile, "--device", dst, "--log-level", "info")
	ag.Env = c.env
	ag.Stdout, ag.Stderr = &agentOut, &agentOut
	if err := ag.Start(); err != nil {
		t.Fatal(err)
	}
	var agentDone atomic.Bool
	killed := make(chan int64, 1)
	go func() {
		defer close(killed)
		deadline := time.Now().Add(2 * time.Minute)
		for !agentDone.Load() && time.Now().Before(deadline) {
			if n := wcharOr(a.cmd.Process.Pid, -1); n-sentA0 >= 12<<20 {
				a.cmd.Process.Kill()
				<-a.done
				a.cmd.Wait()
				killed <- n - sentA0
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	waitErr := make(chan error, 1)
	go func() { waitErr <- ag.Wait() }()
	select {
	case err = <-waitErr:
	case <-time.After(3 * time.Minute):
		ag.Process.Kill()
		err = <-waitErr
		err = fmt.Errorf("the agent did not finish within 3 minutes (killed): %w", err)
	}
	agentDone.Store(true)
	sentA, wasKilled := <-killed
	if err != nil {
		t.Fatalf("agent: %v\n%s", err, agentOut.String())
	}
	if !wasKilled {
		t.Fatalf("server A was not killed during the restore:\n%s", agentOut.String())
	}
	sentB := wchar(t, b.cmd.Process.Pid) - sentB0
	t.Logf("server A sent %.1f MiB before it was killed, server B %.1f MiB after; image %d MiB", float64(sentA)/(1<<20), float64(sentB)/(1<<20), used>>20)
	out := agentOut.String()
	contains(t, out, "switching to the next one", "succeeded")
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "switching") || strings.Contains(l, "retry") {
			t.Log("agent: " + l)
		}
	}

	// The restored bytes are the image's.
	got, err := os.ReadFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[1<<20:], src[1<<20:]) {
		t.Fatal("the restored partition differs from the image")
	}
	// B served the rest, not the whole image again.
	if sentB < 4<<20 || sentB >= used {
		t.Fatalf("server B sent %d bytes: want the part of the %d-byte image A had not sent", sentB, used)
	}
	// The job is done, as B sees it.
	contains(t, cB.ok(t, "job", "show", strconv.FormatInt(env.Job, 10)), "succeeded")
}

// newShapedNetns creates a network namespace preboot-ms-PID with its
// loopback up and shaped to rate (tc tbf), removed at the end.
func newShapedNetns(t *testing.T, rate string) string {
	t.Helper()
	ns := fmt.Sprintf("preboot-ms-%d", os.Getpid())
	runCmd(t, "ip", "netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	runCmd(t, "ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
	runCmd(t, "ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", "lo", "root", "tbf", "rate", rate, "burst", "256kb", "latency", "100ms")
	return ns
}

func runCmd(t *testing.T, name string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// dialInNetns dials from inside the namespace: the socket is made on an
// OS thread moved into it, a thread that ends with its goroutine (never
// handed back to other goroutines).
func dialInNetns(ns string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		type res struct {
			c   net.Conn
			err error
		}
		ch := make(chan res, 1)
		go func() {
			runtime.LockOSThread() // not unlocked: the thread exits with this goroutine
			f, err := os.Open("/var/run/netns/" + ns)
			if err != nil {
				ch <- res{nil, err}
				return
			}
			defer f.Close()
			if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
				ch <- res{nil, fmt.Errorf("setns %s: %w", ns, err)}
				return
			}
			var d net.Dialer
			c, err := d.DialContext(ctx, network, addr)
			ch <- res{c, err}
		}()
		r := <-ch
		return r.c, r.err
	}
}

// startServeIn runs `preboot serve` in the namespace (ip netns exec
// execs it: the PID is the server's).
func startServeIn(t *testing.T, c *cli, ns, dataDir string, extra ...string) *serveProc {
	t.Helper()
	args := append([]string{"netns", "exec", ns, bin, "serve", "--data-dir", dataDir, "--copy-debian-files=false", "--log-format", "json",
		"--tftp-listen", "127.0.0.1:0", "--proxydhcp-dhcp-listen", "", "--proxydhcp-pxe-listen", "127.0.0.1:0"}, extra...)
	cmd := exec.Command("ip", args...)
	cmd.Env = c.env
	pipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &serveProc{cmd: cmd, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(pipe)
		for sc.Scan() {
			p.mu.Lock()
			p.stderr.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
		}
		io.Copy(io.Discard, pipe)
	}()
	t.Cleanup(func() { p.stop(t) })
	return p
}

// waitLog waits (at most 30 s) for a line of the server's log.
func waitLog(t *testing.T, p *serveProc, s string) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if strings.Contains(p.output(), s) {
			return
		}
	}
	t.Fatalf("no %q in the server's log:\n%s", s, p.output())
}

// bigImage publishes an image NAME of a disk of size bytes whose one
// partition (from 1 MiB) holds used bytes of random data; it returns the
// disk's bytes.
func bigImage(t *testing.T, dir, name string, size, used int64) []byte {
	t.Helper()
	repo, err := image.OpenRepo(dir, image.RepoOptions{GCGrace: -1})
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, size)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := int64(1 << 20); i < 1<<20+used; i += 8 {
		v := rng.Uint64()
		for j := range int64(8) {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	parts := []image.Area{{Index: 1, Start: 1 << 20, Size: size - 1<<20, FSType: "ext4", Used: []disk.Extent{{Offset: 0, Length: used}}}}
	m, err := image.Capture(t.Context(), bytes.NewReader(b), image.Layout{DiskSize: size, Partitions: parts, Regions: image.Gaps(size, parts)},
		repo, image.CaptureOptions{Name: name, ChunkSize: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.Publish(t.Context(), m); err != nil {
		t.Fatal(err)
	}
	return b
}

func fetch(t *testing.T, c *http.Client, url string) string {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s\n%s", url, resp.Status, body)
	}
	return string(body)
}

// kernelArgs returns the command line of a boot script's kernel line
// (what follows the kernel's URL).
func kernelArgs(t *testing.T, script string) string {
	t.Helper()
	for _, l := range strings.Split(script, "\n") {
		if f := strings.Fields(l); len(f) > 1 && f[0] == "kernel" {
			return strings.Join(f[2:], " ")
		}
	}
	t.Fatalf("no kernel line in:\n%s", script)
	return ""
}

// wchar is what a process has written (write, send, sendfile) so far.
func wchar(t *testing.T, pid int) int64 {
	t.Helper()
	n := wcharOr(pid, -1)
	if n < 0 {
		t.Fatalf("/proc/%d/io: no wchar", pid)
	}
	return n
}

func wcharOr(pid int, def int64) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return def
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "wchar: "); ok {
			if n, err := strconv.ParseInt(v, 10, 64); err == nil {
				return n
			}
		}
	}
	return def
}
