package server

import (
	"bytes"
	"context"
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/preboot/preboot/config"
	"github.com/preboot/preboot/image"
	"github.com/preboot/preboot/image/httpstore"
	"github.com/preboot/preboot/replica"
)

// adminToken creates an admin token through the server's admin socket.
func adminToken(t *testing.T, r *running, name string) string {
	t.Helper()
	code, body := do(t, socketClient(r.sock), "POST", "http://localhost/api/v1/tokens", `{"name":"`+name+`"}`,
		map[string]string{"Content-Type": "application/json"})
	if code != http.StatusCreated {
		t.Fatalf("create token: %d %s", code, body)
	}
	var tok struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal([]byte(body), &tok); err != nil || tok.Token == "" {
		t.Fatalf("token answer %s: %v", body, err)
	}
	return tok.Token
}

func replicaStatus(t *testing.T, r *running) replica.Status {
	t.Helper()
	code, body := do(t, socketClient(r.sock), "GET", "http://localhost/api/v1/replicas", "", nil)
	if code != http.StatusOK {
		t.Fatalf("replicas: %d %s", code, body)
	}
	var st replica.Status
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// TestSiteServer: two real servers on loopback with their own data
// directories and TLS certificates. An image captured at the central
// server (the real capture code, over HTTPS with a pinned certificate)
// appears at the site; a chunk corrupted at the site is found and fetched
// again; with the central server stopped, a restore from the site returns
// the captured bytes.
func TestSiteServer(t *testing.T) {
	needRoot(t) // the admin sockets
	ctx := context.Background()
	central := startRun(t, t.TempDir(), nil)
	ctok := adminToken(t, central, "site-a")

	// Capture at the centre.
	rng := rand.New(rand.NewPCG(14, 3))
	data := make([]byte, 24*image.MinChunkSize)
	for i := range data {
		if (i/1024)%3 != 0 {
			data[i] = byte(rng.Uint32())
		}
	}
	up := &httpstore.Client{BaseURL: central.https, Token: ctok, TLSFingerprint: central.fingerprint}
	l := image.Layout{DiskSize: int64(len(data)), Partitions: []image.Area{{Index: 1, Start: 0, Size: int64(len(data)), FSType: "raw"}}}
	m, err := image.Capture(ctx, bytes.NewReader(data), l, up, image.CaptureOptions{Name: "lab-base", ChunkSize: image.MinChunkSize, Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	if err := up.Publish(ctx, m); err != nil {
		t.Fatal(err)
	}

	// The site replicates it.
	siteDir := t.TempDir()
	tokFile := filepath.Join(siteDir, "upstream.token")
	if err := os.WriteFile(tokFile, []byte(ctok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	site := startRun(t, siteDir, func(c *config.Config) {
		c.Upstream = config.Upstream{URL: central.https, TokenFile: tokFile, Pin: central.fingerprint, Interval: time.Hour, ScrubInterval: -1}
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		st := replicaStatus(t, site)
		if len(st.Images) == 1 && st.Images[0].State == replica.StateInSync {
			if st.Images[0].Version != 1 || st.Images[0].ChunksDone != len(m.ChunkHashes()) {
				t.Fatalf("replica: %+v", st.Images[0])
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the image did not reach the site: %+v\n%s", st, site.logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}

	// The CLI on the site: replicas, and verify --repair after a chunk
	// is corrupted at rest.
	bin := prebootBinary(t)
	out, err := exec.Command(bin, "image", "replicas", "--data-dir", siteDir).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "lab-base") || !strings.Contains(string(out), "in-sync") {
		t.Fatalf("image replicas: %v\n%s", err, out)
	}
	h := m.ChunkHashes()[5].String()
	p := filepath.Join(site.cfg.DataDir, "images", "chunks", h[:2], h)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/3] ^= 0x40
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = exec.Command(bin, "image", "verify", "--scrub", "lab-base", "--data-dir", siteDir).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "1 corrupt") {
		t.Fatalf("verify --scrub of a corrupt replica: %v\n%s", err, out)
	}
	out, err = exec.Command(bin, "image", "verify", "--repair", "--data-dir", siteDir).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "1 corrupt, 0 missing, 1 repaired") {
		t.Fatalf("verify --repair: %v\n%s", err, out)
	}

	// Metrics of the site: two scrubs found the chunk, one repaired it.
	code, metrics := do(t, http.DefaultClient, "GET", site.http+"/metrics", "", nil)
	if code != http.StatusOK || !strings.Contains(metrics, `preboot_replication_corrupt_chunks_total{where="local"} 2`) ||
		!strings.Contains(metrics, `preboot_replication_lag_seconds{image="lab-base"} 0`) ||
		!strings.Contains(metrics, "preboot_replication_repaired_chunks_total 1") {
		t.Fatalf("site metrics:\n%s", metrics)
	}

	// The centre goes away; a restore served by the site still works and
	// gives the captured bytes.
	central.stop()
	stok := adminToken(t, site, "restore")
	sc := &httpstore.Client{BaseURL: site.https, Token: stok, TLSFingerprint: site.fingerprint, Attempts: 1}
	sm, err := sc.Manifest(ctx, "lab-base")
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.CreateTemp(t.TempDir(), "target")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(sm.Disk.Size); err != nil {
		t.Fatal(err)
	}
	if err := image.Restore(ctx, f, sm, sc, image.RestoreOptions{TargetSize: sm.Disk.Size}); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("the restore from the site differs from the captured disk")
	}
	// A round with the centre gone fails and says so; the replica stays.
	code, body := do(t, socketClient(site.sock), "POST", "http://localhost/api/v1/replicas/sync", "", nil)
	if code != http.StatusOK || !strings.Contains(body, "round_error") {
		t.Fatalf("round without the centre: %d %s", code, body)
	}
	if _, err := sc.Manifest(ctx, "lab-base"); err != nil {
		t.Fatalf("replica gone after a failed round: %v", err)
	}
}
