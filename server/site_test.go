package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/preboot/preboot/agent"
	"github.com/preboot/preboot/config"
	"github.com/preboot/preboot/image"
	"github.com/preboot/preboot/image/httpstore"
	"github.com/preboot/preboot/replica"
	"github.com/preboot/preboot/tlspin"
)

// apiJSON calls a server's admin API through its admin socket and
// decodes the answer into out (nil: ignored); it fails t unless the
// status is want.
func apiJSON(t *testing.T, r *running, method, path string, in any, want int, out any) {
	t.Helper()
	body := ""
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		body = string(b)
	}
	code, ans := do(t, socketClient(r.sock), method, "http://localhost"+path, body, map[string]string{"Content-Type": "application/json"})
	if code != want {
		t.Fatalf("%s %s: %d %s (want %d)", method, path, code, ans, want)
	}
	if out != nil {
		if err := json.Unmarshal([]byte(ans), out); err != nil {
			t.Fatalf("%s %s: %v in %s", method, path, err, ans)
		}
	}
}

// chunkGets counts the chunk reads a server's access log recorded after
// byte offset from (status 200).
func chunkGets(logs string, from int) int {
	n := 0
	for _, line := range strings.Split(logs[from:], "\n") {
		var rec struct {
			Msg, Method, Path string
			Status            int
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "http request" && rec.Method == "GET" &&
			strings.HasPrefix(rec.Path, "/api/v1/chunks/") && rec.Status == http.StatusOK {
			n++
		}
	}
	return n
}

// bootCmdline asks the server for a device's iPXE script (as its
// firmware would, from 127.0.0.1) and returns the kernel's command line.
func bootCmdline(t *testing.T, r *running, mac string) string {
	t.Helper()
	code, script := do(t, http.DefaultClient, "GET", r.http+"/boot.ipxe?mac="+mac+"&platform=efi&arch=x86_64&action=default", "", nil)
	if code != http.StatusOK {
		t.Fatalf("boot script: %d %s", code, script)
	}
	for _, l := range strings.Split(script, "\n") {
		if f := strings.Fields(l); len(f) > 1 && f[0] == "kernel" {
			return strings.Join(f[2:], " ")
		}
	}
	t.Fatalf("no kernel line in:\n%s", script)
	return ""
}

// randomDisk is a disk image's worth of bytes (a third zeros).
func randomDisk(seed uint64, size int) []byte {
	rng := rand.New(rand.NewPCG(seed, 7))
	data := make([]byte, size)
	for i := range data {
		if (i/1024)%3 != 0 {
			data[i] = byte(rng.Uint32())
		}
	}
	return data
}

// TestSiteServesDevicesOfItsSite: a central server and a site server on
// loopback, the site replicating with a replication-scope token. With a
// site mapped to the loopback subnet, a restore job's boot script at the
// centre sends the agent to the site for image data; the real agent
// (agent.Auto) reads every chunk from the site and none from the centre,
// reports to the centre, and the restored bytes are the image's. The site
// refuses another job's token, a token used from another address and a
// token nobody knows (security events). An image the site does not hold
// yet is restored from the centre instead.
func TestSiteServesDevicesOfItsSite(t *testing.T) {
	needRoot(t) // the admin sockets
	ctx := context.Background()
	centralDir := t.TempDir()
	for _, f := range []string{"boot/kernel", "boot/initrd"} { // the imaging environment, as files
		p := filepath.Join(centralDir, "tftp", f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	central := startRun(t, centralDir, nil)

	// Two images at the centre, captured through the real capture code.
	admin := &httpstore.Client{BaseURL: central.https, Token: adminToken(t, central, "admin"), TLSFingerprint: central.fingerprint}
	capture := func(name string, data []byte) {
		t.Helper()
		l := image.Layout{DiskSize: int64(len(data)), Partitions: []image.Area{{Index: 1, Start: 0, Size: int64(len(data)), FSType: "raw"}}}
		m, err := image.Capture(ctx, bytes.NewReader(data), l, admin, image.CaptureOptions{Name: name, ChunkSize: image.MinChunkSize, Workers: 2})
		if err != nil {
			t.Fatal(err)
		}
		if err := admin.Publish(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	base := randomDisk(1, 16*image.MinChunkSize)
	capture("lab-base", base)

	// A replication token: images yes, anything else no.
	var rt struct {
		Token string `json:"token"`
		Scope string `json:"scope"`
	}
	apiJSON(t, central, "POST", "/api/v1/tokens", map[string]string{"name": "site-a", "scope": "replication"}, http.StatusCreated, &rt)
	if rt.Scope != "replication" {
		t.Fatalf("token scope %q", rt.Scope)
	}
	pinned := &http.Client{Timeout: time.Minute, Transport: pinnedTransport(t, central.fingerprint, nil)}
	bearer := map[string]string{"Authorization": "Bearer " + rt.Token}
	for _, c := range []struct {
		method, path string
		want         int
	}{
		{"GET", "/api/v1/images", http.StatusOK},
		{"GET", "/api/v1/images/lab-base/versions", http.StatusOK},
		{"GET", "/api/v1/devices", http.StatusForbidden},
		{"GET", "/api/v1/tokens", http.StatusForbidden},
		{"POST", "/api/v1/tokens", http.StatusForbidden},
		{"DELETE", "/api/v1/images/lab-base", http.StatusForbidden},
		{"PUT", "/api/v1/chunks/" + strings.Repeat("ab", 32), http.StatusForbidden},
		{"POST", "/api/v1/images/lab-base/rollback", http.StatusForbidden},
	} {
		if code, body := do(t, pinned, c.method, central.https+c.path, `{}`, bearer); code != c.want {
			t.Errorf("replication token: %s %s: %d %s, want %d", c.method, c.path, code, body, c.want)
		}
	}

	// The site replicates with it.
	siteDir := t.TempDir()
	tokFile := filepath.Join(siteDir, "upstream.token")
	if err := os.WriteFile(tokFile, []byte(rt.Token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	site := startRun(t, siteDir, func(c *config.Config) {
		c.Upstream = config.Upstream{URL: central.https, TokenFile: tokFile, Pin: central.fingerprint, Interval: time.Hour, ScrubInterval: -1}
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		st := replicaStatus(t, site)
		if len(st.Images) == 1 && st.Images[0].State == replica.StateInSync {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the image did not reach the site: %+v\n%s", st, site.logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	// An image captured after the round: the site lags behind on it.
	two := randomDisk(2, 12*image.MinChunkSize)
	capture("lab-two", two)

	// The loopback subnet is the site's.
	apiJSON(t, central, "POST", "/api/v1/sites", map[string]any{"name": "loop", "subnets": []string{"127.0.0.0/8", "::1/128"},
		"server_url": site.https, "pin": site.fingerprint}, http.StatusCreated, nil)
	var events []struct{ Message string }
	apiJSON(t, central, "GET", "/api/v1/events?kind=admin", nil, http.StatusOK, &events)
	if !strings.Contains(fmt.Sprint(events), "site loop added") {
		t.Fatalf("no event for the new site: %+v", events)
	}

	restoreJob := func(mac, img string) agent.Env {
		t.Helper()
		apiJSON(t, central, "POST", "/api/v1/bundles", map[string]any{"name": "restore-" + img, "kind": "image-restore", "params": map[string]any{"image": img}}, http.StatusCreated, nil)
		apiJSON(t, central, "POST", "/api/v1/devices", map[string]any{"mac": mac}, http.StatusCreated, nil)
		apiJSON(t, central, "POST", "/api/v1/assignments", map[string]any{"bundle": "restore-" + img, "device": mac, "once": true}, http.StatusCreated, nil)
		cmdline := bootCmdline(t, central, mac)
		if !strings.Contains(cmdline, " preboot.images="+site.https+" ") || !strings.Contains(cmdline, "preboot.images.tls="+site.fingerprint) ||
			!strings.Contains(cmdline, "preboot.server="+central.https) {
			t.Fatalf("the boot script of a device of the site does not send it to the site server for image data:\n%s", cmdline)
		}
		env, err := agent.ParseCmdline(cmdline)
		if err != nil {
			t.Fatal(err)
		}
		if env.Images != site.https || env.ImagesTLS != site.fingerprint {
			t.Fatalf("agent env %+v", env)
		}
		return env
	}
	runAgent := func(env agent.Env, size int) []byte {
		t.Helper()
		dst := filepath.Join(t.TempDir(), "disk.img")
		if err := os.WriteFile(dst, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(dst, int64(size)); err != nil {
			t.Fatal(err)
		}
		actx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		var log bytes.Buffer
		if _, err := agent.Auto(actx, env, agent.AutoOptions{Device: dst, ReportInterval: 50 * time.Millisecond,
			Logger: slog.New(slog.NewTextHandler(&log, nil))}); err != nil {
			t.Fatalf("agent: %v\n%s", err, log.String())
		}
		got, err := os.ReadFile(dst)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	jobDone := func(id int64) string {
		t.Helper()
		var j struct{ State string }
		apiJSON(t, central, "GET", fmt.Sprintf("/api/v1/jobs/%d", id), nil, http.StatusOK, &j)
		var lines []struct {
			Line string `json:"line"`
		}
		apiJSON(t, central, "GET", fmt.Sprintf("/api/v1/jobs/%d/log", id), nil, http.StatusOK, &lines)
		if j.State != "succeeded" {
			t.Fatalf("job %d at the centre: %s\n%+v", id, j.State, lines)
		}
		return fmt.Sprint(lines)
	}

	// 1. A device of the site restores lab-base: chunks from the site only.
	env1 := restoreJob("52:54:00:00:0e:01", "lab-base")
	env2 := restoreJob("52:54:00:00:0e:02", "lab-two") // handed out now, run below

	centre0, site0 := len(central.logs.String()), len(site.logs.String())
	if got := runAgent(env1, len(base)); !bytes.Equal(got, base) {
		t.Fatal("the restored disk differs from the image")
	}
	if n := chunkGets(central.logs.String(), centre0); n != 0 {
		t.Errorf("the centre served %d chunks to a device of the site, want 0", n)
	}
	if n := chunkGets(site.logs.String(), site0); n == 0 {
		t.Errorf("the site served no chunk")
	} else {
		t.Logf("restore at the site: %d chunks from the site, %d from the centre", n, chunkGets(central.logs.String(), centre0))
	}
	if log := jobDone(env1.Job); !strings.Contains(log, "image data from the site server") {
		t.Errorf("the job's log at the centre does not say where the data came from: %s", log)
	}

	// 2. The site refuses what the centre did not give: another job's
	// token for lab-base, a token used from another address, a token
	// nobody knows.
	siteAs := func(token, from string) *httpstore.Client {
		var local net.Addr
		if from != "" {
			local = &net.TCPAddr{IP: net.ParseIP(from)}
		}
		return &httpstore.Client{BaseURL: site.https, Token: token, Attempts: 1,
			HTTP: &http.Client{Timeout: time.Minute, Transport: pinnedTransport(t, site.fingerprint, local)}}
	}
	var se *httpstore.StatusError
	if _, err := siteAs(env2.Token, "").Manifest(ctx, "lab-base"); !errors.As(err, &se) || se.StatusCode != http.StatusForbidden {
		t.Errorf("another job's token for lab-base at the site: %v", err)
	}
	if _, err := siteAs(env2.Token, "127.0.0.2").Manifest(ctx, "lab-two"); !errors.As(err, &se) || se.StatusCode != http.StatusForbidden ||
		!strings.Contains(err.Error(), "handed to 127.0.0.1") {
		t.Errorf("a job token used from another address at the site: %v", err)
	}
	if _, err := siteAs("pbj_"+strings.Repeat("0", 48), "").Manifest(ctx, "lab-base"); !errors.As(err, &se) || se.StatusCode != http.StatusForbidden {
		t.Errorf("an unknown job token at the site: %v", err)
	}
	apiJSON(t, site, "GET", "/api/v1/events?kind=security", nil, http.StatusOK, &events)
	if s := fmt.Sprint(events); !strings.Contains(s, "used from 127.0.0.2") || !strings.Contains(s, "neither this server nor its upstream knows") {
		t.Errorf("security events at the site: %s", s)
	}

	// 3. lab-two is not at the site yet: the agent restores it from the
	// centre, and says so in the job's log.
	centre0 = len(central.logs.String())
	if got := runAgent(env2, len(two)); !bytes.Equal(got, two) {
		t.Fatal("the disk restored from the centre differs from the image")
	}
	if n := chunkGets(central.logs.String(), centre0); n == 0 {
		t.Error("a site without the image: the centre served no chunk")
	} else {
		t.Logf("image not at the site: %d chunks from the centre", n)
	}
	if log := jobDone(env2.Job); !strings.Contains(log, "image data from the central server instead") {
		t.Errorf("the fallback is not in the job's log at the centre: %s", log)
	}
}

// pinnedTransport accepts exactly the certificate with fingerprint fp,
// connecting from local when set.
func pinnedTransport(t *testing.T, fp string, local net.Addr) *http.Transport {
	t.Helper()
	tc, err := tlspin.Config(fp)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Transport{TLSClientConfig: tc, DialContext: (&net.Dialer{LocalAddr: local, Timeout: 10 * time.Second}).DialContext}
}
