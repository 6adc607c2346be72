package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/preboot/preboot/e2e/nslab"
	"github.com/preboot/preboot/mcast"
)

// mcLab is the multicast namespace lab (e2e/nslab) with `preboot serve`
// in its server namespace and one image captured.
type mcLab struct {
	t     *testing.T
	lab   *nslab.Lab
	bin   string
	img   nslab.Image
	data  string
	token string
	dir   string
	url   string
}

const mcImage = "room"

// TestMulticastLab runs issue 10's scenarios in the namespace lab: a
// bridge with IGMP snooping and a querier, the server's link shaped to
// 20 Mbit/s by tbf (the link, not the CPUs, is the bottleneck), eight
// receivers restoring into plain files, every output compared with the
// source. Each scenario is one multicast session.
func TestMulticastLab(t *testing.T) {
	nslab.Require(t)
	for _, tool := range []string{"mkfs.ext4", "debugfs", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s", tool)
		}
	}
	t.Parallel()
	m := newMcLab(t, 8)

	t.Run("clean", func(t *testing.T) {
		rs := m.session(t, 8, nil, nil)
		var fromGroup int64
		for _, r := range rs {
			fromGroup += r.Multicast + r.Repair
		}
		// The lab shares two CPUs with the VM tests: a starved receiver may
		// rightly leave for HTTP; the room as a whole must not.
		if fromGroup < int64(len(rs))*m.stored()*6/10 {
			t.Errorf("receivers got %d bytes from the group, under 60 %% of %d × %d", fromGroup, len(rs), m.stored())
		}
	})
	t.Run("loss3", func(t *testing.T) {
		rs := m.session(t, 8, func(i int) error { return m.lab.AddLoss(i, 30) }, nil)
		_ = rs
		s := m.lastSession(t)
		if sent := s.SentData + s.SentRepair; sent > m.stored()*3/2 {
			t.Errorf("3 %% loss: the server sent %d bytes for an image of %d", sent, m.stored())
		}
	})
	t.Run("slow-receiver", func(t *testing.T) {
		rs := m.session(t, 8, func(i int) error {
			if i == 7 {
				return m.lab.ShapeReceiverFraction(i, 0.25)
			}
			return nil
		}, nil)
		held := 0
		for _, r := range rs[:7] {
			if r.Multicast+r.Repair < m.stored()*8/10 {
				held++
			}
		}
		if held > 2 {
			t.Errorf("%d of the 7 others got under 80 %% of the image from the group: the slow one held them back?", held)
		}
	})
	t.Run("late-joiner-and-90-percent-on-disk", func(t *testing.T) {
		rs := m.session(t, 8, nil, func(i int, out string) (time.Duration, error) {
			switch i {
			case 7: // joins when the others are half way
				return 2 * time.Second, nil
			case 6: // holds 90 % of the image already: a copy with a
				// tenth of its data zeroed in the middle
				return 0, copyHoled(m.img.Path, out)
			}
			return 0, nil
		})
		if got := rs[6].Multicast + rs[6].Repair + rs[6].Unicast + rs[6].Peers; got == 0 || got >= m.stored() {
			t.Errorf("the receiver holding 90 %% of the image got %d bytes (image %d)", got, m.stored())
		}
		if rs[7].Multicast+rs[7].Repair < m.stored()/2 {
			t.Errorf("the late joiner got only %d bytes from the group: %+v", rs[7].Multicast+rs[7].Repair, rs[7])
		}
	})
	t.Run("multicast-blocked", func(t *testing.T) {
		rs := m.session(t, 8, func(i int) error { return m.lab.DropMulticast(i) }, nil)
		for i, r := range rs {
			if r.Unicast+r.Peers == 0 {
				t.Errorf("receiver %d: multicast is dropped, yet nothing came over HTTP: %+v", i, r)
			}
		}
	})
	t.Run("receiver-killed", func(t *testing.T) {
		m.sessionKill(t, 8, 3)
	})
}

func newMcLab(t *testing.T, n int) *mcLab {
	t.Helper()
	bin, err := prebootBinary()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	lab := nslab.New(t, nslab.Options{Receivers: n, Rate: "20mbit", Prefix: "preboot-e2emc", Logf: t.Logf})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	img, err := nslab.WriteDiskImage(ctx, filepath.Join(dir, "disk.img"), nslab.ImageSpec{DataBytes: 8 << 20, Seed: 10})
	if err != nil {
		t.Fatal(err)
	}
	m := &mcLab{t: t, lab: lab, bin: bin, img: img, data: filepath.Join(dir, "preboot"), dir: dir,
		url: "http://" + lab.ServerIP + ":8080"}
	if err := os.MkdirAll(m.data, 0o700); err != nil {
		t.Fatal(err)
	}
	p, err := lab.StartIn(context.Background(), lab.ServerNS, "preboot serve", filepath.Join(dir, "serve.log"), bin, "serve",
		"--data-dir", m.data, "--proxydhcp=false", "--tftp=false", "--copy-debian-files=false",
		"--http-listen", lab.ServerIP+":8080", "--tls-listen", "", "--log-format", "json",
		"--multicast-interface", nslab.Iface, "--multicast-rate", "18M")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = p.Stop(5 * time.Second)
		if t.Failed() {
			t.Logf("preboot serve log (tail):\n%s", tailFile(filepath.Join(dir, "serve.log"), 40))
		}
	})
	for deadline := time.Now().Add(30 * time.Second); ; {
		hctx, hcancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := lab.Run(hctx, lab.ServerNS, "curl", "-sf", "-o", "/dev/null", m.url+"/healthz")
		hcancel()
		if err == nil {
			break
		}
		if p.Exited() || time.Now().After(deadline) {
			t.Fatalf("preboot serve did not come up: %v\n%s", err, tailFile(filepath.Join(dir, "serve.log"), 20))
		}
		time.Sleep(100 * time.Millisecond)
	}
	out, err := exec.CommandContext(ctx, bin, "token", "create", "e2e", "--local", "--data-dir", m.data).Output()
	if err != nil {
		t.Fatalf("token create: %v", err)
	}
	m.token = strings.TrimSpace(string(out))
	cmd := lab.Command(ctx, lab.ServerNS, bin, "agent", "capture", "--server", m.url, "--device", img.Path, "--image", mcImage, "-q")
	cmd.Env = append(os.Environ(), "PREBOOT_TOKEN="+m.token)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("capture: %v: %s", err, out)
	}
	return m
}

// stored is the image's compressed size: what one copy costs the link.
func (m *mcLab) stored() int64 {
	var n int64
	_ = filepath.Walk(filepath.Join(m.data, "images", "chunks"), func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
		return nil
	})
	return n
}

type recvBytes struct{ Multicast, Repair, Peers, Unicast int64 }

var summaryRE = regexp.MustCompile(`multicast=(\d+) repair=(\d+) peers=(\d+) unicast=(\d+)$`)

// session runs n receivers in one session, impaired by impair(i) first;
// prep(i, out) may fill a receiver's target and delay its start. It
// checks every output against the source and the server's egress, and
// returns what each receiver says it got.
func (m *mcLab) session(t *testing.T, n int, impair func(int) error, prep func(int, string) (time.Duration, error)) []recvBytes {
	t.Helper()
	procs, outs, logs := m.start(t, n, impair, prep)
	rs := make([]recvBytes, n)
	for i, p := range procs {
		if err := p.WaitTimeout(3 * time.Minute); err != nil {
			t.Fatalf("receiver %d: %v\n%s", i, err, tailFile(logs[i]+".err", 20))
		}
		if err := p.Wait(); err != nil {
			t.Fatalf("receiver %d failed: %v\n%s", i, err, tailFile(logs[i]+".err", 20))
		}
		if err := nslab.CompareFiles(m.img.Path, outs[i], nslab.ImageSafeBlock); err != nil {
			t.Fatalf("receiver %d: %v", i, err)
		}
		mm := summaryRE.FindStringSubmatch(strings.TrimSpace(tailFile(logs[i]+".out", 1)))
		if mm == nil {
			t.Fatalf("receiver %d: no summary line:\n%s", i, tailFile(logs[i]+".out", 3))
		}
		v := make([]int64, 4)
		for k := range v {
			v[k], _ = strconv.ParseInt(mm[k+1], 10, 64)
		}
		rs[i] = recvBytes{v[0], v[1], v[2], v[3]}
		t.Logf("receiver %d: %.1fs, %+v", i, p.Elapsed().Seconds(), rs[i])
		if os.Getenv("PREBOOT_E2E_MCDEBUG") != "" && (i == 0 || i == n-1) {
			t.Logf("receiver %d log:\n%s", i, tailFile(logs[i]+".err", 60))
		}
	}
	m.logSession(t)
	return rs
}

// start prepares the targets and starts n receivers.
func (m *mcLab) start(t *testing.T, n int, impair func(int) error, prep func(int, string) (time.Duration, error)) ([]*nslab.Proc, []string, []string) {
	t.Helper()
	if err := m.lab.ResetAll(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.lab.ResetAll() })
	// Each scenario is a session of its own: the last one must have ended.
	for deadline := time.Now().Add(15 * time.Second); m.anySessions() && time.Now().Before(deadline); {
		if s := m.lastSession(t); s.State != mcast.StateRunning && s.State != mcast.StateWaiting {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	dir := filepath.Join(m.dir, strings.ReplaceAll(t.Name(), "/", "_"))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	procs := make([]*nslab.Proc, n)
	outs := make([]string, n)
	logs := make([]string, n)
	delays := make([]time.Duration, n)
	for i := range n {
		if impair != nil {
			if err := impair(i); err != nil {
				t.Fatal(err)
			}
		}
		outs[i] = filepath.Join(dir, fmt.Sprintf("r%d.img", i))
		logs[i] = filepath.Join(dir, fmt.Sprintf("r%d", i))
		f, err := os.Create(outs[i])
		if err == nil {
			err = f.Truncate(m.img.DiskBytes)
			f.Close()
		}
		if err != nil {
			t.Fatal(err)
		}
		if prep != nil {
			if delays[i], err = prep(i, outs[i]); err != nil {
				t.Fatal(err)
			}
		}
	}
	start := time.Now()
	for i := range n {
		time.Sleep(time.Until(start.Add(delays[i])))
		cmd := m.lab.Command(context.Background(), m.lab.Receivers[i].NS, m.bin, "agent", "restore", "--server", m.url,
			"--device", outs[i], "--image", mcImage, "--multicast", "--min-clients", strconv.Itoa(n), "--max-wait", "20s", "-q", "--log-level", logLevel())
		cmd.Env = append(os.Environ(), "PREBOOT_TOKEN="+m.token)
		stdout, err := os.Create(logs[i] + ".out")
		if err != nil {
			t.Fatal(err)
		}
		defer stdout.Close()
		stderr, err := os.Create(logs[i] + ".err")
		if err != nil {
			t.Fatal(err)
		}
		defer stderr.Close()
		cmd.Stdout, cmd.Stderr = stdout, stderr
		if procs[i], err = m.lab.Start(fmt.Sprintf("receiver %d", i), cmd); err != nil {
			t.Fatal(err)
		}
	}
	return procs, outs, logs
}

// sessionKill starts n receivers and kills receiver k with SIGKILL once
// data flows: the others finish, correct, and the session marks it lost.
func (m *mcLab) sessionKill(t *testing.T, n, k int) {
	t.Helper()
	procs, outs, logs := m.start(t, n, nil, nil)
	time.Sleep(3 * time.Second)
	if err := procs[k].Kill(); err != nil {
		t.Fatal(err)
	}
	for i, p := range procs {
		if i == k {
			continue
		}
		if err := p.WaitTimeout(3 * time.Minute); err != nil {
			t.Fatalf("receiver %d: %v", i, err)
		}
		if err := p.Wait(); err != nil {
			t.Fatalf("receiver %d failed: %v\n%s", i, err, tailFile(logs[i]+".err", 20))
		}
		if err := nslab.CompareFiles(m.img.Path, outs[i], nslab.ImageSafeBlock); err != nil {
			t.Fatalf("receiver %d: %v", i, err)
		}
	}
	// The killed receiver is marked lost (10 s without a report).
	deadline := time.Now().Add(20 * time.Second)
	for {
		s := m.lastSession(t)
		lost := false
		for _, r := range s.Receivers {
			lost = lost || r.State == mcast.RecvLost
		}
		if lost {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the killed receiver is not marked lost: %+v", s.Receivers)
		}
		time.Sleep(time.Second)
	}
	m.logSession(t)
}

// anySessions reports whether the server has had a session yet.
func (m *mcLab) anySessions() bool {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := m.lab.Command(ctx, m.lab.ServerNS, m.bin, "session", "list", "-o", "json", "--server", m.url)
	cmd.Env = append(os.Environ(), "PREBOOT_TOKEN="+m.token)
	out, err := cmd.Output()
	var ss []mcast.SessionInfo
	return err == nil && json.Unmarshal(out, &ss) == nil && len(ss) > 0
}

func (m *mcLab) lastSession(t *testing.T) mcast.SessionInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := m.lab.Command(ctx, m.lab.ServerNS, m.bin, "session", "list", "-o", "json", "--server", m.url)
	cmd.Env = append(os.Environ(), "PREBOOT_TOKEN="+m.token)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("session list: %v", err)
	}
	var ss []mcast.SessionInfo
	if err := json.Unmarshal(out, &ss); err != nil || len(ss) == 0 {
		t.Fatalf("session list: %v: %s", err, out)
	}
	return ss[0]
}

func (m *mcLab) logSession(t *testing.T) {
	s := m.lastSession(t)
	t.Logf("session %s (%s): sent %d data + %d repair bytes in %d packets; image %d bytes stored", s.ID, s.State, s.SentData, s.SentRepair,
		s.SentPackets, m.stored())
	for _, r := range s.Receivers {
		t.Logf("  %s %s: %s %s loss %.1f%% dropped %d", r.Name, r.Addr, r.State, r.Reason, r.Loss*100, r.Dropped)
	}
}

// copyHoled copies src over dst with a tenth of its data zeroed: the
// bytes from the middle of what lies between the partition's start and
// its last non-zero byte.
func copyHoled(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	last := len(b) - 1
	for last > nslab.PartitionStart && b[last] == 0 {
		last--
	}
	span := last - nslab.PartitionStart
	off := nslab.PartitionStart + span/2
	clear(b[off : off+span/10])
	f, err := os.OpenFile(dst, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteAt(b, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func logLevel() string {
	if os.Getenv("PREBOOT_E2E_MCDEBUG") != "" {
		return "debug"
	}
	return "info"
}
