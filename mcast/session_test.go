package mcast_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/preboot/preboot/agent"
	"github.com/preboot/preboot/image"
	"github.com/preboot/preboot/image/httpstore"
	"github.com/preboot/preboot/mcast"
	"github.com/preboot/preboot/peers"
)

// inNetns runs the calling test again inside a new network namespace whose
// loopback does multicast (traffic never leaves it), and reports whether
// the caller is that inner run.
func inNetns(t *testing.T) bool {
	t.Helper()
	if os.Getenv("PREBOOT_MCAST_NETNS") == "1" {
		return true
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root for a network namespace")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs ip (iproute2)")
	}
	n, _ := rand.Int(rand.Reader, big.NewInt(1<<30))
	ns := fmt.Sprintf("preboot-mcu-%d", n)
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Skipf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "delete", ns).Run() })
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		{"link", "set", "lo", "multicast", "on"},
		{"route", "add", "224.0.0.0/4", "dev", "lo"},
	} {
		if out, err := exec.Command("ip", append([]string{"-n", ns}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	// Bounded, and killed (by its PID, through the context) if it hangs.
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns, os.Args[0], "-test.run", "^"+t.Name()+"$", "-test.v", "-test.count=1",
		"-test.timeout=3m")
	cmd.WaitDelay = 5 * time.Second
	cmd.Env = append(os.Environ(), "PREBOOT_MCAST_NETNS=1")
	out, err := cmd.CombinedOutput()
	t.Logf("inside %s:\n%s", ns, out)
	if err != nil {
		t.Fatalf("in namespace: %v", err)
	}
	if !strings.Contains(string(out), "--- PASS") {
		t.Fatal("the test did not pass inside the namespace")
	}
	return false
}

type lab struct {
	repo   *image.Repo
	mgr    *mcast.Manager
	srv    *httptest.Server
	src    []byte
	dir    string
	cancel context.CancelFunc
}

// newLab captures a 24 MiB disk image with 1 MiB windows (incompressible,
// compressible and zero parts) and serves it with a session manager
// sending on lo.
func newLab(t *testing.T, rate int64) *lab { return newLabTracker(t, rate, nil) }

func newLabTracker(t *testing.T, rate int64, tracker mcast.Tracker) *lab {
	t.Helper()
	dir := t.TempDir()
	src := make([]byte, 24<<20)
	_, _ = rand.Read(src[:12<<20])
	for i := 14 << 20; i < 24<<20; i++ { // 12-14 MiB stay zero
		src[i] = byte(i / 4096)
	}
	srcPath := filepath.Join(dir, "source.img")
	if err := os.WriteFile(srcPath, src, 0o600); err != nil {
		t.Fatal(err)
	}
	repo, err := image.OpenRepo(filepath.Join(dir, "repo"), image.RepoOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if _, err := agent.Capture(ctx, agent.Options{Device: srcPath, Image: "lab", Store: agent.LocalRepo(repo), ChunkSize: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	mgr, err := mcast.NewManager(mcast.Config{Interface: "lo", Rate: rate, Loopback: true, ReportEvery: 100 * time.Millisecond,
		ReceiverTimeout: 3 * time.Second}, repo, tracker, log.With("side", "server"))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := mgr.Run(ctx); err != nil {
			t.Errorf("manager: %v", err)
		}
	})
	t.Cleanup(func() { cancel(); wg.Wait() })
	mux := http.NewServeMux()
	mux.Handle(mcast.PathPrefix, mgr.Handler(func(w http.ResponseWriter, r *http.Request) (mcast.Caller, bool) {
		return mcast.Caller{Admin: true, Addr: r.RemoteAddr}, true
	}))
	h := &httpstore.Handler{Repo: repo}
	for _, p := range h.Prefixes() {
		// A chunk takes 250 ms, like 4 MiB at 130 Mbit/s (a server
		// link shared by several receivers): peers' reports then keep
		// up as they would on a real network.
		mux.Handle(p, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.Contains(r.URL.Path, "/chunks/") && r.Method == http.MethodGet {
				time.Sleep(250 * time.Millisecond)
			}
			h.ServeHTTP(w, r)
		}))
	}
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &lab{repo: repo, mgr: mgr, srv: srv, src: src, dir: dir, cancel: cancel}
}

type outcome struct {
	res mcast.Result
	err error
	out []byte
}

// restore runs one receiver into a new file (pre-filled with prefill
// bytes of the source when prefill > 0).
func (l *lab) restore(ctx context.Context, t *testing.T, name string, prefill int, o mcast.ReceiveOptions) outcome {
	p := filepath.Join(l.dir, name)
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return outcome{err: err}
	}
	defer f.Close()
	if err := f.Truncate(int64(len(l.src))); err != nil {
		return outcome{err: err}
	}
	if prefill > 0 {
		if _, err := f.WriteAt(l.src[:prefill], 0); err != nil {
			return outcome{err: err}
		}
	}
	cl := &httpstore.Client{BaseURL: l.srv.URL, Image: "lab"}
	m, err := cl.Manifest(ctx, "lab")
	if err != nil {
		return outcome{err: err}
	}
	o.Client, o.Image, o.Name, o.Interface = cl, "lab", name, "lo"
	o.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})).With("receiver", name)
	res, err := mcast.Restore(ctx, f, m, cl, image.RestoreOptions{TargetSize: int64(len(l.src)), Current: f}, o)
	if err != nil {
		return outcome{res: res, err: err}
	}
	out, err := os.ReadFile(p)
	return outcome{res: res, err: err, out: out}
}

func TestSessionOverLoopback(t *testing.T) {
	if !inNetns(t) {
		return
	}
	l := newLab(t, 100_000_000)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// Four receivers start together (min_clients 4); a fifth joins late
	// with 90 % of the image already on its disk.
	const n = 4
	outs := make([]outcome, n+1)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			outs[i] = l.restore(ctx, t, fmt.Sprintf("r%d", i), 0, mcast.ReceiveOptions{MinClients: n, MaxWait: 20 * time.Second})
		})
	}
	wg.Go(func() {
		time.Sleep(300 * time.Millisecond)
		outs[n] = l.restore(ctx, t, "late", len(l.src)*9/10, mcast.ReceiveOptions{})
	})
	// Forged packets on the group: wrong session, garbage, and a symbol
	// of the right session that lies about its chunk's shape.
	wg.Go(func() { forge(ctx, t, l) })
	wg.Wait()
	var imageBytes int64
	viaGroup := 0
	for i, o := range outs {
		if o.err != nil {
			t.Fatalf("receiver %d: %v", i, o.err)
		}
		if !bytes.Equal(o.out, l.src) {
			t.Fatalf("receiver %d: output differs from the source", i)
		}
		t.Logf("receiver %d: %+v fallback=%q", i, o.res.Bytes, o.res.Fallback)
		if i < n && o.res.Bytes.Multicast > 0 {
			viaGroup++
		}
	}
	// A receiver starved of CPU (tests run in parallel, with -race) may
	// rightly leave for HTTP; the group must still have served the others.
	if viaGroup < n/2 {
		t.Errorf("only %d of %d receivers got bytes by multicast", viaGroup, n)
	}
	ss := l.mgr.List()
	if len(ss) != 1 {
		t.Fatalf("%d sessions, want 1", len(ss))
	}
	s := ss[0]
	imageBytes = s.ImageBytes
	t.Logf("session: sent %d packets, data %d repair %d bytes; image %d bytes", s.SentPackets, s.SentData, s.SentRepair, imageBytes)
	if len(s.Receivers) != n+1 {
		t.Fatalf("%d receivers, want %d", len(s.Receivers), n+1)
	}
	for _, r := range s.Receivers {
		if r.State != mcast.RecvDone {
			t.Errorf("receiver %s: state %s (%s)", r.Name, r.State, r.Reason)
		}
	}
	if sent := s.SentData + s.SentRepair; sent > imageBytes*3/2 {
		t.Errorf("sent %d bytes for a %d byte image: more than 1.5×", sent, imageBytes)
	}
}

// forge sends packets that must be dropped.
func forge(ctx context.Context, t *testing.T, l *lab) {
	var group string
	for ctx.Err() == nil && group == "" {
		for _, s := range l.mgr.List() {
			group = s.Group
		}
		time.Sleep(50 * time.Millisecond)
	}
	c, err := net.Dial("udp4", group)
	if err != nil {
		t.Errorf("forge: %v", err)
		return
	}
	defer c.Close()
	payload := make([]byte, mcast.SymbolSize)
	for i := range 200 {
		p := mcast.Packet{Session: uint64(i), Seq: uint32(i), Chunk: 0, Symbol: 0, K: 1, P: 2, Length: 10, Payload: payload}
		_, _ = c.Write(mcast.AppendPacket(nil, &p))
		_, _ = c.Write([]byte("garbage"))
	}
}

// Peer-assisted restore: no multicast, receivers fetch from each other;
// the server sends far less than one image per receiver.
func TestPeersOverLoopback(t *testing.T) {
	if !inNetns(t) {
		return
	}
	l := newLabTracker(t, 400_000_000, peers.NewTracker(peers.TrackerConfig{}))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const n = 4
	outs := make([]outcome, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			pf := peers.NewFactory(peers.FactoryConfig{BaseURL: l.srv.URL, Listen: "127.0.0.1:0"})
			defer pf.Close()
			outs[i] = l.restore(ctx, t, fmt.Sprintf("p%d", i), 0, mcast.ReceiveOptions{PeersOnly: true, Peers: pf, MinClients: n, MaxWait: 20 * time.Second})
		})
	}
	wg.Wait()
	var fromServer, fromPeers int64
	for i, o := range outs {
		if o.err != nil {
			t.Fatalf("receiver %d: %v", i, o.err)
		}
		if !bytes.Equal(o.out, l.src) {
			t.Fatalf("receiver %d: output differs from the source", i)
		}
		if o.res.Bytes.Multicast+o.res.Bytes.Repair != 0 {
			t.Errorf("receiver %d got multicast bytes in a peers-only restore: %+v", i, o.res.Bytes)
		}
		fromServer += o.res.Bytes.Unicast
		fromPeers += o.res.Bytes.Peers
		t.Logf("receiver %d: %+v", i, o.res.Bytes)
	}
	img := l.mgr.List()[0].ImageBytes
	if img == 0 {
		for _, h := range mustManifest(t, l).ChunkHashes() {
			b, err := l.repo.Get(ctx, h, nil)
			if err != nil {
				t.Fatal(err)
			}
			img += int64(len(b))
		}
	}
	t.Logf("server sent %d bytes, peers %d, image %d", fromServer, fromPeers, img)
	if fromPeers == 0 {
		t.Error("no chunk came from a peer")
	}
	if fromServer > 3*img {
		t.Errorf("the server sent %d bytes for %d receivers of a %d byte image", fromServer, n, img)
	}
}

func mustManifest(t *testing.T, l *lab) *image.Manifest {
	m, err := l.repo.Manifest("lab")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// A cancelled session: its receivers finish over unicast, correctly.
func TestCancelFallsBack(t *testing.T) {
	if !inNetns(t) {
		return
	}
	l := newLab(t, 400_000_000)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	outs := make([]outcome, 2)
	var wg sync.WaitGroup
	for i := range outs {
		wg.Go(func() {
			outs[i] = l.restore(ctx, t, fmt.Sprintf("c%d", i), 0, mcast.ReceiveOptions{MinClients: 5, MaxWait: time.Minute})
		})
	}
	// Both wait for three more receivers; cancel instead.
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if ss := l.mgr.List(); len(ss) == 1 && len(ss[0].Receivers) == 2 {
			if err := l.mgr.Cancel(ctx, ss[0].ID); err != nil {
				t.Fatal(err)
			}
			if err := l.mgr.Cancel(ctx, ss[0].ID); !errors.Is(err, mcast.ErrEnded) {
				t.Errorf("second cancel: %v", err)
			}
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	wg.Wait()
	for i, o := range outs {
		if o.err != nil {
			t.Fatalf("receiver %d: %v", i, o.err)
		}
		if !bytes.Equal(o.out, l.src) {
			t.Fatalf("receiver %d: output differs", i)
		}
		if o.res.Bytes.Unicast == 0 || !strings.Contains(o.res.Fallback, "cancelled") {
			t.Errorf("receiver %d: %+v fallback %q", i, o.res.Bytes, o.res.Fallback)
		}
	}
}

// Loss on the way to every receiver (nftables drops 5 % of the group's
// packets): Reed–Solomon repair fills the gaps, outputs are exact, and the
// server sends well under twice the image.
func TestLossRepaired(t *testing.T) {
	if !inNetns(t) {
		return
	}
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("needs nft")
	}
	rules := "table ip preboot_loss {\n chain in {\n  type filter hook prerouting priority -300;\n  ip daddr 239.0.0.0/8 numgen random mod 1000 < 50 drop\n }\n}\n"
	cmd := exec.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Skipf("nft: %v: %s", err, out)
	}
	l := newLab(t, 200_000_000)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const n = 3
	outs := make([]outcome, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			outs[i] = l.restore(ctx, t, fmt.Sprintf("l%d", i), 0, mcast.ReceiveOptions{MinClients: n, MaxWait: 20 * time.Second})
		})
	}
	wg.Wait()
	var repaired int64
	for i, o := range outs {
		if o.err != nil {
			t.Fatalf("receiver %d: %v", i, o.err)
		}
		if !bytes.Equal(o.out, l.src) {
			t.Fatalf("receiver %d: output differs", i)
		}
		t.Logf("receiver %d: %+v fallback %q", i, o.res.Bytes, o.res.Fallback)
		repaired += o.res.Bytes.Repair
	}
	if repaired == 0 {
		t.Error("nothing repaired under 5 % loss")
	}
	s := l.mgr.List()[0]
	t.Logf("sent data %d repair %d, image %d", s.SentData, s.SentRepair, s.ImageBytes)
	if s.SentData+s.SentRepair > 2*s.ImageBytes {
		t.Errorf("sent %d bytes for a %d byte image", s.SentData+s.SentRepair, s.ImageBytes)
	}
}
