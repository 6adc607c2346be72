package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/preboot/preboot/e2e/nslab"
)

const (
	imageName   = "bench"
	prebootPort = "8080"
	filePort    = "8000"
	udpcastPort = "9000"
	udpcastData = "239.255.90.1" // inside 239.0.0.0/8, where nslab's loss rule applies
)

// bench is one run of the benchmark: the lab, the image, the servers.
type bench struct {
	cfg     config
	lab     *nslab.Lab
	self    string // this program, for `fileserve`
	work    string
	img     nslab.Image
	payload string // the zstd-compressed image file udpcast and unicast send
	paySize int64  // its size
	linkBPS int64  // server link, bits/s

	// Preboot; prebootSkip says why its columns are skipped ("" = run).
	prebootSkip  string
	peersSkip    string
	serveMcast   bool // serve has --multicast-interface
	dataDir      string
	token        string
	prebootSize  int64 // the image's bytes in the repository (compressed chunks)
	prebootProc  *nslab.Proc
	prebootLog   string
	filePID      int                      // the unicast baseline's file server
	cleanSlowest map[string]time.Duration // tool → slowest receiver of clean-8, this round
}

func run(ctx context.Context, c config) error {
	if err := checkTools(); err != nil {
		return err
	}
	b := &bench{cfg: c, cleanSlowest: map[string]time.Duration{}}
	var err error
	if b.self, err = os.Executable(); err != nil {
		return fmt.Errorf("find this program: %w", err)
	}
	if b.linkBPS, err = nslab.ParseRate(c.rate); err != nil {
		return err
	}
	if err := b.makeWork(); err != nil {
		return err
	}
	defer func() {
		if !c.keep {
			os.RemoveAll(b.work)
		} else {
			logf("files kept in %s", b.work)
		}
	}()
	if err := b.makeImage(ctx); err != nil {
		return err
	}
	sel := b.selected()
	maxN := 1
	for _, s := range sel {
		maxN = max(maxN, s.N)
	}
	logf("building the lab: %d receivers, server link %s", maxN, c.rate)
	lab, err := nslab.Build(ctx, nslab.Options{Receivers: maxN, Rate: c.rate, Prefix: "preboot-bench-mc", Logf: func(string, ...any) {}})
	if lab != nil {
		defer func() {
			if err := lab.Close(); err != nil {
				logf("cleanup: %v", err)
			}
		}()
	}
	if err != nil {
		return err
	}
	b.lab = lab
	logf("lab %s ready: namespaces %s-{sw,srv,r0..r%d}", lab.ID, "preboot-bench-mc-"+lab.ID, maxN-1)
	fsrv, err := lab.StartIn(ctx, lab.ServerNS, "fileserve", filepath.Join(b.work, "fileserve.log"),
		b.self, "fileserve", "-dir", filepath.Dir(b.payload), "-listen", lab.ServerIP+":"+filePort)
	if err != nil {
		return err
	}
	b.filePID = fsrv.PID()
	if err := b.setupPreboot(ctx); err != nil {
		return err
	}
	var results []result
	for round := 1; round <= c.rounds; round++ {
		for _, s := range sel {
			tools := b.toolsFor(s)
			// Rotate the order so no tool always runs first.
			k := (round - 1) % max(1, len(tools))
			tools = append(tools[k:], tools[:k]...)
			for _, t := range tools {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				r := b.runOne(ctx, s, t, round)
				logf("%s", r.summary())
				if s.Name == "clean-8" && r.Skipped == "" {
					b.cleanSlowest[t] = r.slowest()
				}
				results = append(results, r)
			}
		}
	}
	md := b.report(results)
	fmt.Print(md)
	if c.mdOut != "" {
		if err := os.WriteFile(c.mdOut, []byte(md), 0o644); err != nil {
			return fmt.Errorf("write report: %w", err)
		}
	}
	return nil
}

func (b *bench) selected() []scenario {
	var out []scenario
	for _, s := range scenarios() {
		if len(b.cfg.scenarios) == 0 || slices.Contains(b.cfg.scenarios, s.Name) {
			out = append(out, s)
		}
	}
	return out
}

func (b *bench) toolsFor(s scenario) []string {
	var out []string
	for _, t := range s.Tools {
		if len(b.cfg.tools) == 0 || slices.Contains(b.cfg.tools, t) {
			out = append(out, t)
		}
	}
	return out
}

func (b *bench) makeWork() error {
	if b.cfg.work != "" {
		b.work = b.cfg.work
		return os.MkdirAll(b.work, 0o755)
	}
	base := "/dev/shm"
	if st, err := os.Stat(base); err != nil || !st.IsDir() {
		base = os.TempDir()
	}
	d, err := os.MkdirTemp(base, "preboot-bench-mc.")
	if err != nil {
		return fmt.Errorf("work directory: %w", err)
	}
	b.work = d
	return os.Chmod(d, 0o755)
}

// makeImage writes the synthetic disk image and its zstd-compressed copy
// (the udpcast/unicast payload, as FOG stores images compressed).
func (b *bench) makeImage(ctx context.Context) error {
	logf("writing the synthetic image: %d bytes of files (seed %d)", b.cfg.dataBytes, b.cfg.seed)
	img, err := nslab.WriteDiskImage(ctx, filepath.Join(b.work, "disk.img"), nslab.ImageSpec{DataBytes: b.cfg.dataBytes, Seed: b.cfg.seed})
	if err != nil {
		return err
	}
	b.img = img
	srv := filepath.Join(b.work, "srv")
	if err := os.MkdirAll(srv, 0o755); err != nil {
		return fmt.Errorf("work directory: %w", err)
	}
	b.payload = filepath.Join(srv, "image.zst")
	cmd := exec.CommandContext(ctx, "zstd", "-q", "-f", "-"+strconv.Itoa(b.cfg.compression), "-o", b.payload, img.Path)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("zstd: %w: %s", err, strings.TrimSpace(string(out)))
	}
	st, err := os.Stat(b.payload)
	if err != nil {
		return fmt.Errorf("payload: %w", err)
	}
	b.paySize = st.Size()
	logf("image: %d bytes (sha256 %s…), zstd -%d payload %d bytes", img.DiskBytes, img.SHA256[:12], b.cfg.compression, b.paySize)
	return nil
}

// --- Preboot ----------------------------------------------------------------------------------

// setupPreboot checks what the binary can do, captures the image into a
// fresh data directory and makes an admin token.
func (b *bench) setupPreboot(ctx context.Context) error {
	want := false
	for _, s := range b.selected() {
		for _, t := range b.toolsFor(s) {
			want = want || strings.HasPrefix(t, "preboot")
		}
	}
	if !want {
		return nil
	}
	if b.cfg.prebootBin == "" {
		b.prebootSkip = "no -preboot binary given"
		b.peersSkip = b.prebootSkip
		return nil
	}
	help, err := exec.CommandContext(ctx, b.cfg.prebootBin, "agent", "restore", "--help").CombinedOutput()
	if err != nil {
		return fmt.Errorf("preboot agent restore --help: %w: %s", err, help)
	}
	serveHelp, err := exec.CommandContext(ctx, b.cfg.prebootBin, "serve", "--help").CombinedOutput()
	if err != nil {
		return fmt.Errorf("preboot serve --help: %w: %s", err, serveHelp)
	}
	b.serveMcast = strings.Contains(string(serveHelp), "--multicast-interface")
	if !strings.Contains(string(help), "--multicast") || !b.serveMcast {
		b.prebootSkip = "this preboot has no `agent restore --multicast` / `serve --multicast-interface` yet"
	}
	if !strings.Contains(string(help), "--peers") {
		b.peersSkip = "this preboot has no `agent restore --peers` yet"
	}
	b.dataDir = filepath.Join(b.work, "preboot")
	b.prebootLog = filepath.Join(b.work, "preboot-serve.log")
	if err := b.startPreboot(ctx); err != nil {
		return err
	}
	defer b.stopPreboot()
	out, err := exec.CommandContext(ctx, b.cfg.prebootBin, "token", "create", "bench", "--local", "--data-dir", b.dataDir).Output()
	if err != nil {
		return fmt.Errorf("preboot token create: %w", err)
	}
	b.token = strings.TrimSpace(string(out))
	before := dirBytes(filepath.Join(b.dataDir, "images"))
	cmd := b.lab.Command(ctx, b.lab.ServerNS, b.cfg.prebootBin, "agent", "capture", "--server", b.serverURL(),
		"--device", b.img.Path, "--image", imageName, "-q")
	cmd.Env = append(os.Environ(), "PREBOOT_TOKEN="+b.token)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err = cmd.Output()
	if err != nil {
		return fmt.Errorf("preboot agent capture: %w: %s", err, tail2(stderr.String(), 5))
	}
	logf("preboot: %s", strings.TrimSpace(string(out)))
	b.prebootSize = dirBytes(filepath.Join(b.dataDir, "images")) - before
	logf("preboot: image %q stored in %d bytes", imageName, b.prebootSize)
	return nil
}

func (b *bench) serverURL() string { return "http://" + b.lab.ServerIP + ":" + prebootPort }

// startPreboot starts `preboot serve` in the server namespace (plain HTTP,
// no proxyDHCP or TFTP; multicast on eth0 when the binary has it) and
// waits for /healthz.
func (b *bench) startPreboot(ctx context.Context) error {
	args := []string{b.cfg.prebootBin, "serve", "--data-dir", b.dataDir,
		"--proxydhcp=false", "--tftp=false", "--copy-debian-files=false",
		"--http-listen", b.lab.ServerIP + ":" + prebootPort, "--tls-listen", "",
		"--log-format", "json", "--log-level", "info"}
	if b.serveMcast {
		args = append(args, "--multicast-interface", nslab.Iface, "--multicast-rate", strings.ToUpper(b.cfg.senderRate))
	}
	if err := os.MkdirAll(b.dataDir, 0o755); err != nil {
		return fmt.Errorf("preboot data dir: %w", err)
	}
	p, err := b.lab.StartIn(ctx, b.lab.ServerNS, "preboot serve", b.prebootLog, args...)
	if err != nil {
		return err
	}
	b.prebootProc = p
	deadline := time.Now().Add(30 * time.Second)
	for {
		hctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := b.lab.Run(hctx, b.lab.ServerNS, "curl", "-sf", "-o", "/dev/null", b.serverURL()+"/healthz")
		cancel()
		if err == nil {
			return nil
		}
		if p.Exited() || time.Now().After(deadline) || ctx.Err() != nil {
			b.stopPreboot()
			return fmt.Errorf("preboot serve did not come up: %w\n%s", err, tail(b.prebootLog, 20))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (b *bench) stopPreboot() {
	if b.prebootProc != nil {
		_ = b.prebootProc.Stop(5 * time.Second)
		b.prebootProc = nil
	}
}

// procCPU is the user+sys time a running process has used so far
// (/proc/PID/stat, all threads), 0 when it cannot be read.
func procCPU(pid int) time.Duration {
	if pid <= 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name may hold spaces: fields count from the last ')'.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	return time.Duration(ut+st) * time.Second / clkTck
}

// clkTck is USER_HZ, the unit of /proc/PID/stat's times (100 on Linux).
const clkTck = 100

// dirBytes is the total size of the regular files under dir.
func dirBytes(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}

// --- one run ----------------------------------------------------------------------------------

// result is one tool in one scenario in one round.
type result struct {
	Tool, Scenario string
	N, Round       int
	Skipped        string          // why it did not run ("" = it ran)
	Times          []time.Duration // per receiver, from its own start to its exit
	OK             []bool          // exited 0 and its output matched the source
	Errs           []string        // per receiver, "" = ok
	Special        int             // the slow or late receiver, -1 = none
	Tx             int64           // bytes the server's eth0 sent during the run
	ServerCPU      time.Duration   // user+sys of the server process during the run
	RecvCPU        time.Duration   // user+sys of all receivers (with their children: curl, zstd)
	Payload        int64           // what the tool's server holds: compressed image bytes
	Src            sourceBytes     // Preboot's per-source byte counts, summed over receivers
	Delay          time.Duration   // the late joiner's start delay
}

type sourceBytes struct {
	Parsed                            int // receivers whose summary line was parsed
	Multicast, Repair, Peers, Unicast int64
}

func (r result) slowest() time.Duration {
	var m time.Duration
	for i, t := range r.Times {
		if r.OK[i] {
			m = max(m, t)
		}
	}
	return m
}

func (r result) okCount() int {
	n := 0
	for _, ok := range r.OK {
		if ok {
			n++
		}
	}
	return n
}

func (r result) summary() string {
	if r.Skipped != "" {
		return fmt.Sprintf("%s %s: skipped: %s", r.Scenario, r.Tool, r.Skipped)
	}
	var errs []string
	for i, e := range r.Errs {
		if e != "" {
			errs = append(errs, fmt.Sprintf("r%d: %s", i, e))
		}
	}
	s := fmt.Sprintf("%s %s: %d/%d ok, slowest %.1fs, server tx %.2f× payload", r.Scenario, r.Tool, r.okCount(), r.N,
		r.slowest().Seconds(), float64(r.Tx)/float64(max(1, r.Payload)))
	if len(errs) > 0 {
		s += "; failures: " + strings.Join(errs[:min(len(errs), 4)], "; ")
	}
	return s
}

func (b *bench) skipReason(tool string) string {
	switch tool {
	case toolPrebootHTTP:
		if b.cfg.prebootBin == "" {
			return "no -preboot binary given"
		}
	case toolPrebootMcast:
		return b.prebootSkip
	case toolPrebootPeers:
		return b.peersSkip
	}
	return ""
}

// runTimeout bounds one run: 60 s + 3 × the time N unicast copies of the
// payload take on the link (+ the late joiner's delay).
func (b *bench) runTimeout(s scenario) time.Duration {
	if b.cfg.runTimeout > 0 {
		return b.cfg.runTimeout
	}
	unicast := time.Duration(float64(s.N) * float64(b.paySize*8) / float64(b.linkBPS) * float64(time.Second))
	return 60*time.Second + 3*unicast
}

// lateDelay is half the tool's clean-8 slowest time of this round, or
// half an estimate (payload at the sender rate + 2 s) without one.
func (b *bench) lateDelay(tool string) time.Duration {
	if t, ok := b.cleanSlowest[tool]; ok && t > 0 {
		return t / 2
	}
	bps, err := nslab.ParseRate(strings.TrimSuffix(strings.ToLower(b.cfg.senderRate), "bit") + "bit")
	if err != nil {
		bps = b.linkBPS
	}
	return (time.Duration(float64(b.paySize*8)/float64(bps)*float64(time.Second)) + 2*time.Second) / 2
}

func (b *bench) runOne(ctx context.Context, s scenario, tool string, round int) result {
	r := result{Tool: tool, Scenario: s.Name, N: s.N, Round: round, Special: -1, Payload: b.paySize,
		Times: make([]time.Duration, s.N), OK: make([]bool, s.N), Errs: make([]string, s.N)}
	if strings.HasPrefix(tool, "preboot") {
		r.Payload = b.prebootSize
	}
	if reason := b.skipReason(tool); reason != "" {
		r.Skipped = reason
		return r
	}
	fail := func(err error) result {
		for i := range r.Errs {
			if r.Errs[i] == "" && !r.OK[i] {
				r.Errs[i] = err.Error()
			}
		}
		return r
	}
	dir := filepath.Join(b.work, "runs", fmt.Sprintf("%d-%s-%s", round, s.Name, tool))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fail(err)
	}
	defer func() {
		if !b.cfg.keep {
			os.RemoveAll(dir)
		}
	}()
	if err := b.impair(s); err != nil {
		return fail(err)
	}
	if s.Slow || s.Late {
		r.Special = s.N - 1
	}
	outs := make([]string, s.N)
	for i := range outs {
		outs[i] = filepath.Join(dir, fmt.Sprintf("out%d.img", i))
		if strings.HasPrefix(tool, "preboot") {
			// A blank disk of the image's size, sparse.
			if err := os.WriteFile(outs[i], nil, 0o644); err != nil {
				return fail(err)
			}
			if err := os.Truncate(outs[i], b.img.DiskBytes); err != nil {
				return fail(err)
			}
		}
	}
	if s.Late {
		r.Delay = b.lateDelay(tool)
	}
	rctx, cancel := context.WithTimeout(ctx, b.runTimeout(s)+r.Delay)
	defer cancel()
	tx0, err := b.lab.TxBytes()
	if err != nil {
		return fail(err)
	}

	// The server side.
	var sender *nslab.Proc
	switch tool {
	case toolUDPCast:
		sender, err = b.lab.StartIn(rctx, b.lab.ServerNS, "udp-sender", filepath.Join(dir, "udp-sender.log"),
			"udp-sender", "--interface", nslab.Iface, "--file", b.payload, "--portbase", udpcastPort,
			"--min-receivers", strconv.Itoa(s.N), "--max-wait", "600", "--max-bitrate", b.cfg.senderRate,
			"--nopointopoint", "--mcast-data-address", udpcastData, "--ttl", "1", "--nokbd", "--no-progress")
		if err != nil {
			return fail(err)
		}
		time.Sleep(300 * time.Millisecond) // listening before the receivers ask
	case toolPrebootHTTP, toolPrebootMcast, toolPrebootPeers:
		if err := b.startPreboot(rctx); err != nil {
			return fail(err)
		}
		defer b.stopPreboot()
		tx0, _ = b.lab.TxBytes()
	}

	// The server process whose CPU time the run counts.
	var serverPID int
	switch {
	case sender != nil:
		serverPID = sender.PID()
	case tool == toolUnicast:
		serverPID = b.filePID
	case b.prebootProc != nil:
		serverPID = b.prebootProc.PID()
	}
	cpu0 := procCPU(serverPID)

	// The receivers.
	procs := make([]*nslab.Proc, s.N)
	startErr := make([]error, s.N)
	var wg sync.WaitGroup
	for i := range s.N {
		start := func() {
			procs[i], startErr[i] = b.startReceiver(rctx, tool, s, i, outs[i], dir)
		}
		if s.Late && i == s.N-1 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				select {
				case <-time.After(r.Delay):
					start()
				case <-rctx.Done():
					startErr[i] = rctx.Err()
				}
			}()
			continue
		}
		start()
	}
	wg.Wait()
	for i, p := range procs {
		if startErr[i] != nil {
			r.Errs[i] = startErr[i].Error()
			continue
		}
		select {
		case <-p.Done():
		case <-rctx.Done():
			_ = p.Kill()
			<-p.Done()
			r.Errs[i] = fmt.Sprintf("killed at the run's deadline (%v)", b.runTimeout(s))
		}
		r.Times[i] = p.Elapsed()
		// A Preboot receiver prints its one stdout line when the image is
		// on its disk, then may stay a while serving the session's other
		// receivers (--seed-for): its time is that line's.
		if strings.HasPrefix(tool, "preboot") {
			if st, err := os.Stat(filepath.Join(dir, fmt.Sprintf("recv%d.out", i))); err == nil && st.Size() > 0 {
				if d := st.ModTime().Sub(p.Started); d > 0 && d < r.Times[i] {
					r.Times[i] = d
				}
			}
		}
		if r.Errs[i] == "" {
			if err := p.Wait(); err != nil {
				r.Errs[i] = fmt.Sprintf("%v: %s", err, oneLine(tail(filepath.Join(dir, fmt.Sprintf("recv%d.err", i)), 3)))
			}
		}
	}
	for _, p := range procs {
		if p != nil && p.Cmd.ProcessState != nil {
			r.RecvCPU += p.Cmd.ProcessState.UserTime() + p.Cmd.ProcessState.SystemTime()
		}
	}
	if sender != nil {
		if err := sender.WaitTimeout(5 * time.Second); err != nil {
			_ = sender.Kill()
			<-sender.Done()
		}
		if ps := sender.Cmd.ProcessState; ps != nil {
			r.ServerCPU = ps.UserTime() + ps.SystemTime()
		}
	} else {
		r.ServerCPU = procCPU(serverPID) - cpu0
	}
	time.Sleep(200 * time.Millisecond) // let the last frames leave the qdisc
	if tx1, err := b.lab.TxBytes(); err == nil {
		r.Tx = tx1 - tx0
	}

	// Check every output against the source.
	var skip []nslab.Range
	if strings.HasPrefix(tool, "preboot") {
		skip = append(skip, nslab.ImageSafeBlock)
	}
	for i := range s.N {
		if r.Errs[i] != "" {
			continue
		}
		if err := nslab.CompareFiles(b.img.Path, outs[i], skip...); err != nil {
			r.Errs[i] = "MISMATCH: " + err.Error()
			continue
		}
		r.OK[i] = true
		if strings.HasPrefix(tool, "preboot") {
			if sb, ok := parseSummary(lastLine(filepath.Join(dir, fmt.Sprintf("recv%d.out", i)))); ok {
				r.Src.Parsed++
				r.Src.Multicast += sb.Multicast
				r.Src.Repair += sb.Repair
				r.Src.Peers += sb.Peers
				r.Src.Unicast += sb.Unicast
			}
		}
	}
	if err := b.lab.ResetAll(); err != nil {
		logf("reset impairments: %v", err)
	}
	return r
}

// impair resets every receiver and applies the scenario's impairments.
func (b *bench) impair(s scenario) error {
	if err := b.lab.ResetAll(); err != nil {
		return err
	}
	for i := range s.N {
		if s.Loss > 0 {
			if err := b.lab.AddLoss(i, s.Loss); err != nil {
				return err
			}
		}
		if s.Block {
			if err := b.lab.DropMulticast(i); err != nil {
				return err
			}
		}
	}
	if s.Slow {
		return b.lab.ShapeReceiverFraction(s.N-1, 0.25)
	}
	return nil
}

// startReceiver starts receiver i of a run: stdout to recvI.out, stderr to
// recvI.err in dir.
func (b *bench) startReceiver(ctx context.Context, tool string, s scenario, i int, out, dir string) (*nslab.Proc, error) {
	ns := b.lab.Receivers[i].NS
	var argv []string
	var env []string
	switch tool {
	case toolUDPCast:
		// As FOG: udp-receiver's stdout piped into the decompressor.
		argv = []string{"bash", "-o", "pipefail", "-c",
			fmt.Sprintf("udp-receiver --interface %s --portbase %s --nokbd --no-progress --ttl 1 --receive-timeout 30 | zstd -dcq > %s",
				nslab.Iface, udpcastPort, shellQuote(out))}
	case toolUnicast:
		argv = []string{"bash", "-o", "pipefail", "-c",
			fmt.Sprintf("curl -sSf --max-time %d http://%s:%s/%s | zstd -dcq > %s",
				int(b.runTimeout(s).Seconds()), b.lab.ServerIP, filePort, filepath.Base(b.payload), shellQuote(out))}
	case toolPrebootHTTP, toolPrebootMcast, toolPrebootPeers:
		argv = []string{b.cfg.prebootBin, "agent", "restore", "--server", b.serverURL(), "--device", out, "--image", imageName, "-q"}
		switch tool {
		case toolPrebootMcast:
			minClients := s.N
			if s.Late {
				minClients = s.N - 1
			}
			argv = append(argv, "--multicast", "--min-clients", strconv.Itoa(minClients), "--max-wait", "30s")
		case toolPrebootPeers:
			argv = append(argv, "--peers")
		}
		env = []string{"PREBOOT_TOKEN=" + b.token}
	default:
		return nil, fmt.Errorf("unknown tool %q", tool)
	}
	cmd := b.lab.Command(ctx, ns, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	stdout, err := os.Create(filepath.Join(dir, fmt.Sprintf("recv%d.out", i)))
	if err != nil {
		return nil, err
	}
	defer stdout.Close()
	stderr, err := os.Create(filepath.Join(dir, fmt.Sprintf("recv%d.err", i)))
	if err != nil {
		return nil, err
	}
	defer stderr.Close()
	cmd.Stdout, cmd.Stderr = stdout, stderr
	return b.lab.Start(fmt.Sprintf("%s receiver %d", tool, i), cmd)
}

// summaryRE is the last stdout line of `preboot agent restore --multicast|--peers`.
var summaryRE = regexp.MustCompile(`^restored \S+ onto .*: multicast=(\d+) repair=(\d+) peers=(\d+) unicast=(\d+)\s*$`)

type summaryBytes struct{ Multicast, Repair, Peers, Unicast int64 }

func parseSummary(line string) (summaryBytes, bool) {
	m := summaryRE.FindStringSubmatch(strings.TrimSpace(line))
	if m == nil {
		return summaryBytes{}, false
	}
	var v [4]int64
	for k := range v {
		n, err := strconv.ParseInt(m[k+1], 10, 64)
		if err != nil {
			return summaryBytes{}, false
		}
		v[k] = n
	}
	return summaryBytes{v[0], v[1], v[2], v[3]}, true
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// lastLine is the last non-empty line of a file.
func lastLine(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return lines[len(lines)-1]
}

// tail is the last n lines of a file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return ""
		}
		return err.Error()
	}
	return tail2(string(b), n)
}

// tail2 is the last n lines of s.
func tail2(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
