package agent

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/preboot/preboot/bundle"
	"github.com/preboot/preboot/failover"
	"github.com/preboot/preboot/image"
	"github.com/preboot/preboot/image/httpstore"
	"github.com/preboot/preboot/mcast"
	"github.com/preboot/preboot/peers"
	"github.com/preboot/preboot/tlspin"
)

// Env is what the imaging environment's kernel command line tells the
// agent: preboot.server=URL[,URL…] preboot.token=TOKEN preboot.job=ID
// [preboot.tls=sha256:HEX] [preboot.debug=1].
type Env struct {
	Server string
	// Servers, when it names more than one, are every server sharing the
	// job's database and image store, Server first: when the current one
	// stops answering, requests go to the next (package failover).
	Servers []string
	Token   string
	Job     int64
	Debug   bool
	// TLS pins the server's certificate (sha256:HEX): with an https
	// server, exactly that certificate is accepted.
	TLS string
	// Images, when set (preboot.images=URL), is the site server a
	// restore reads its image data from, the job's servers being the
	// fallback; ImagesTLS (preboot.images.tls=) pins its certificate.
	Images    string
	ImagesTLS string
}

// ParseCmdline reads the preboot.* keys of a kernel command line.
func ParseCmdline(cmdline string) (Env, error) {
	var e Env
	for _, f := range strings.Fields(cmdline) {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "preboot.server":
			e.Servers = failover.Split(v)
			e.Server = ""
			if len(e.Servers) > 0 {
				e.Server = e.Servers[0]
			}
		case "preboot.token":
			e.Token = v
		case "preboot.tls":
			if _, err := tlspin.Parse(v); err != nil {
				return e, fmt.Errorf("preboot.tls: %w", err)
			}
			e.TLS = v
		case "preboot.images":
			e.Images = v
		case "preboot.images.tls":
			if _, err := tlspin.Parse(v); err != nil {
				return e, fmt.Errorf("preboot.images.tls: %w", err)
			}
			e.ImagesTLS = v
		case "preboot.job":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return e, fmt.Errorf("preboot.job=%q: %w", v, err)
			}
			e.Job = n
		case "preboot.debug":
			e.Debug = v == "" || v == "1" || v == "true" || v == "yes"
		}
	}
	if e.Server == "" {
		return e, errors.New("no preboot.server= on the kernel command line")
	}
	return e, nil
}

// AutoOptions tune Auto.
type AutoOptions struct {
	// Device overrides the job's device (and the default disk); for a
	// wipe it replaces the bundle's list of disks.
	Device string
	// HTTP is used for the job API and the image repository (nil: defaults).
	HTTP *http.Client
	// Logger receives the agent's log; every line is also sent to the
	// server's job log.
	Logger *slog.Logger
	// Progress, when set, also receives the progress (console display).
	Progress func(image.Progress)
	// ReportInterval is how often progress and log lines go to the server
	// (1 s when 0).
	ReportInterval time.Duration
	// Attempts and Backoff tune the job API retries (see JobClient).
	Attempts int
	Backoff  time.Duration
}

// Outcome is what Auto did; After tells the caller (the imaging
// environment's init) whether to reboot or power off.
type Outcome struct {
	Job   *Job
	After string
}

// Auto runs the assigned job: it fetches it, reports the machine's info,
// does the work of the job's bundle kind (image-capture, image-restore,
// multicast session receiver, script, wipe, inventory) while
// reporting progress and log lines, and reports the result. It returns
// ErrNoJob when there is nothing to do. A failed job is reported as failed
// (the server runs it again at the next boot) and returned as the error.
func Auto(ctx context.Context, env Env, o AutoOptions) (Outcome, error) {
	base := o.Logger
	if base == nil {
		base = slog.New(slog.DiscardHandler)
	}
	jobHTTP := o.HTTP
	if o.HTTP == nil && len(env.Servers) > 1 {
		// Several servers: both clients go through one failover
		// transport, the job API's with its usual 30 s bound per call.
		hc, err := failoverClient(env, base)
		if err != nil {
			return Outcome{}, err
		}
		o.HTTP, jobHTTP = hc, &http.Client{Transport: hc.Transport, Timeout: 30 * time.Second}
	}
	jc := &JobClient{BaseURL: env.Server, Token: env.Token, HTTP: jobHTTP, TLSFingerprint: env.TLS, Attempts: o.Attempts, Backoff: o.Backoff, Logger: base}
	job, err := jc.Job(ctx)
	if err != nil {
		return Outcome{}, fmt.Errorf("get job: %w", err)
	}
	out := Outcome{Job: job, After: jobAfter(job)}
	if env.Job != 0 && job.ID != env.Job {
		base.WarnContext(ctx, "the server's job differs from the one on the command line", "cmdline", env.Job, "server", job.ID)
	}
	interval := o.ReportInterval
	if interval <= 0 {
		interval = time.Second
	}

	// Log lines go to the console and to the job log.
	ship := newLogShipper()
	log := slog.New(slog.NewMultiHandler(base.Handler(),
		slog.NewTextHandler(ship, &slog.HandlerOptions{Level: slog.LevelInfo}))).With("job", job.ID)
	var prog progressState
	rctx, stopReports := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Go(func() { reportLoop(rctx, jc, ship, &prog, interval, base) })

	r := &jobRun{env: env, o: o, job: job, jc: jc, log: log, base: base, ship: ship, prog: &prog}
	runErr := r.run(ctx)

	stopReports()
	wg.Wait()
	// Final reports use a fresh context: a cancelled job is still reported.
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	final := prog.get()
	final.State, final.Message = "succeeded", ""
	res := JobResult{OK: true, Image: job.Image}
	if runErr != nil {
		final.State, final.Message = "failed", runErr.Error()
		res = JobResult{OK: false, Error: runErr.Error(), Image: job.Image}
		log.ErrorContext(fctx, "job failed", "err", runErr)
	} else {
		log.InfoContext(fctx, "job succeeded", "kind", job.Kind, "image", job.Image)
	}
	flushLog(fctx, jc, ship, base)
	if err := jc.Progress(fctx, final); err != nil {
		base.WarnContext(fctx, "progress report failed", "err", err)
	}
	if err := jc.Result(fctx, res); err != nil {
		if runErr == nil {
			return out, fmt.Errorf("job %d done but its result could not be reported: %w", job.ID, err)
		}
		base.WarnContext(fctx, "result report failed", "err", err)
	}
	if runErr != nil {
		return out, fmt.Errorf("job %d (%s %s): %w", job.ID, job.Kind, job.Image, runErr)
	}
	return out, nil
}

// jobRun is one job being run by Auto.
type jobRun struct {
	env  Env
	o    AutoOptions
	job  *Job
	jc   *JobClient
	log  *slog.Logger // console + job log
	base *slog.Logger // console only
	ship *logShipper  // the job log
	prog *progressState
	// rule is the bundle's disk rule; personalize its personalize.
	rule        *bundle.DiskRule
	personalize bool
	resize      bundle.Resize // grow_partition, boot_entry
}

// jobAfter is what the machine does after the job: the job's After, else
// its bundle's, else reboot.
func jobAfter(job *Job) string {
	var p struct {
		After string `json:"after"`
	}
	_ = json.Unmarshal(job.Params, &p) // every kind's params may say "after"
	return cmp.Or(job.After, p.After, "reboot")
}

// run does the job's work. Every kind first reports the machine's
// hardware, disks and image-safe data; for inventory that is the work.
func (r *jobRun) run(ctx context.Context) error {
	job, log := r.job, r.log
	params, err := bundle.Decode(job.Kind, job.Params)
	if err != nil {
		return fmt.Errorf("job %d: %w", job.ID, err)
	}
	log.InfoContext(ctx, "job start", "kind", job.Kind, "bundle", job.Bundle)
	r.prog.set(JobProgress{State: "running", Phase: "info"})
	in, infoErr := GetInfo(ctx, "")
	if sb := in.Hardware.SecureBoot; sb != nil {
		log.InfoContext(ctx, "firmware Secure Boot", "enabled", sb.Enabled, "lockdown", sb.Lockdown)
	}
	if infoErr != nil {
		infoErr = fmt.Errorf("hardware inventory: %w", infoErr)
	} else if err := r.jc.Info(ctx, in); err != nil {
		infoErr = fmt.Errorf("report hardware inventory: %w", err)
	}

	switch p := params.(type) {
	case *bundle.Inventory:
		if infoErr != nil {
			return infoErr
		}
		log.InfoContext(ctx, "inventory reported", "vendor", in.Hardware.Vendor, "product", in.Hardware.Product,
			"serial", in.Hardware.Serial, "disks", len(in.Disks), "nics", len(in.Hardware.NICs))
		return nil
	case *bundle.Capture:
		r.warnInfo(ctx, infoErr)
		r.rule = p.Disk
		return r.capture(ctx, cmp.Or(p.Image, job.Image), cmp.Or(p.Device, job.Device), cmp.Or(p.Compression, job.Compression), p.Force)
	case *bundle.Restore:
		r.warnInfo(ctx, infoErr)
		r.rule, r.personalize, r.resize = p.Disk, p.Personalize, p.Resize
		return r.restore(ctx, cmp.Or(p.Image, job.Image), cmp.Or(p.Device, job.Device), p.Partitions, false)
	case *bundle.Multicast:
		r.warnInfo(ctx, infoErr)
		r.rule, r.personalize, r.resize = p.Disk, p.Personalize, p.Resize
		return r.restore(ctx, cmp.Or(job.Image, p.Image), cmp.Or(p.Device, job.Device), p.Partitions, true)
	case *bundle.Script:
		r.warnInfo(ctx, infoErr)
		return r.script(ctx, p)
	case *bundle.Wipe:
		r.warnInfo(ctx, infoErr)
		return r.wipe(ctx, p)
	}
	return fmt.Errorf("job %d: %s bundles do not run in the imaging environment (the boot policy handles them)", job.ID, job.Kind)
}

func (r *jobRun) warnInfo(ctx context.Context, err error) {
	if err != nil {
		r.log.WarnContext(ctx, "hardware inventory not reported", "err", err)
	}
}

// disk is the disk a job works on: the agent's override, the job's
// device, else the one disk the bundle's disk rule selects (SelectDisk;
// without a rule the first fixed disk, with a warning when there are
// several). No single match fails the job before any disk is touched.
func (r *jobRun) disk(ctx context.Context, jobDevice string) (string, error) {
	if r.o.Device != "" {
		return r.o.Device, nil
	}
	if jobDevice != "" {
		return jobDevice, nil
	}
	d, warn, err := SelectDisk(r.rule)
	if err != nil {
		return "", err
	}
	if warn != "" {
		r.log.WarnContext(ctx, warn)
	}
	if !r.rule.IsZero() {
		r.log.InfoContext(ctx, "disk selected", "rule", r.rule.String(), "device", d.Path, "disk", describeChoice(d))
	}
	return d.Path, nil
}

func (r *jobRun) imagingOptions(img, dev string, compression int) Options {
	st := &httpstore.Client{BaseURL: r.env.Server, Token: r.env.Token, HTTP: r.o.HTTP, TLSFingerprint: r.env.TLS, Image: img,
		Replace: true, Logger: r.log}
	onProgress := func(p image.Progress) {
		if p.Timing != nil {
			p.Timing.Disk = dev
		}
		r.prog.set(JobProgress{State: "running", Phase: p.Phase, BytesDone: p.Done, BytesTotal: p.Total, Rate: int64(p.Rate), Timing: p.Timing})
		if r.o.Progress != nil {
			r.o.Progress(p)
		}
	}
	return Options{Device: dev, Image: img, Store: st, Compression: compression, Progress: onProgress, Logger: r.log}
}

func (r *jobRun) capture(ctx context.Context, img, device string, compression int, force bool) error {
	dev, err := r.disk(ctx, device)
	if err != nil {
		return err
	}
	r.log.InfoContext(ctx, "capture", "image", img, "device", dev)
	opts := r.imagingOptions(img, dev, compression)
	opts.Force = force
	opts.Source = map[string]string{"device": dev}
	if r.job.MAC != "" {
		opts.Source["mac"] = r.job.MAC
	}
	if h, err := os.Hostname(); err == nil {
		opts.Source["hostname"] = h
	}
	if rec, err := ReadImageSafe(dev); err == nil {
		if rec.DeviceID != "" {
			opts.Source["device_id"] = rec.DeviceID
		}
		if rec.Hostname != "" {
			opts.Source["hostname"] = rec.Hostname
		}
	}
	_, err = Capture(ctx, opts)
	return err
}

func (r *jobRun) restore(ctx context.Context, img, device string, partitions []int, multicast bool) error {
	dev, err := r.disk(ctx, device)
	if err != nil {
		return err
	}
	r.log.InfoContext(ctx, "restore", "image", img, "device", dev, "partitions", partitions)
	opts := r.imagingOptions(img, dev, 0)
	opts.Partitions = partitions
	opts.GrowPartition, opts.BootEntry = r.resize.GrowPartition, r.resize.BootEntry
	if centre, ok := opts.Store.(*httpstore.Client); ok && !multicast && r.env.Images != "" {
		// A device of a site: image data from the site server, the
		// job's servers when it lacks them.
		ss := &siteStore{centre: centre, log: r.log, site: &httpstore.Client{BaseURL: r.env.Images, Token: r.env.Token,
			TLSFingerprint: r.env.ImagesTLS, Image: img, Attempts: 2, Logger: r.log}}
		opts.Store = ss
		defer ss.report(ctx)
	}
	if opts.Manifest, err = fetchManifest(ctx, opts); err != nil {
		return fmt.Errorf("restore %s: get manifest: %w", img, err)
	}
	if err := CheckSectorSize(dev, opts.Manifest); err != nil {
		return err
	}
	rec, err := ReadImageSafe(dev)
	if err != nil {
		if !errors.Is(err, ErrNoImageSafe) {
			r.log.WarnContext(ctx, "image-safe data unreadable; starting a new record", "err", err)
		}
		rec = &ImageSafe{}
	}
	rec.Server = r.env.Server
	if rec.DeviceID == "" {
		rec.DeviceID = r.job.MAC
	}
	opts.ImageSafe = rec
	var res mcast.Result
	if multicast {
		st, _ := opts.Store.(*httpstore.Client)
		if st == nil {
			return errors.New("multicast restore: the image store is not the server")
		}
		name := r.job.MAC
		if h, err := os.Hostname(); err == nil && h != "" && h != "localhost" {
			name = h + " (" + r.job.MAC + ")"
		}
		// The receiver serves what it has verified to the session's
		// other receivers and fetches from them when multicast fails.
		pf := peers.NewFactory(peers.FactoryConfig{BaseURL: st.BaseURL, Token: st.Token, HTTP: st.HTTPClient(),
			TLSFingerprint: st.TLSFingerprint, Logger: r.log.With("component", "peers")})
		defer pf.Close()
		// Once done it serves the others for up to two minutes while they
		// still work: the first to finish hold what others wait for.
		opts.Multicast = &mcast.ReceiveOptions{Client: st, Image: img, Name: name, Logger: r.log, Peers: pf, SeedFor: 2 * time.Minute}
		opts.MulticastResult = &res
	}
	_, err = Restore(ctx, opts)
	if err == nil && r.personalize && len(partitions) == 0 {
		Personalize(ctx, PersonalizeOptions{Device: dev, Hostname: r.job.Hostname, Logger: r.log})
	}
	if multicast {
		b := res.Bytes
		r.log.InfoContext(ctx, "multicast restore", "session", res.Session, "multicast", b.Multicast, "repair", b.Repair,
			"peers", b.Peers, "unicast", b.Unicast, "fallback", res.Fallback)
	}
	return err
}

// script runs a script bundle: its output goes to the job log line by
// line (and to the console).
func (r *jobRun) script(ctx context.Context, p *bundle.Script) error {
	disk, err := r.disk(ctx, "")
	if err != nil {
		r.log.WarnContext(ctx, "no disk for PREBOOT_DISK", "err", err)
		disk = ""
	}
	timeout := time.Duration(p.Timeout)
	if timeout <= 0 {
		timeout = time.Hour
	}
	r.prog.set(JobProgress{State: "running", Phase: "script"})
	r.log.InfoContext(ctx, "script start", "bytes", len(p.Script), "timeout", timeout, "disk", disk)
	err = RunScript(ctx, ScriptOptions{
		Script:  p.Script,
		Timeout: timeout,
		Env: []string{"PREBOOT_SERVER=" + r.env.Server, fmt.Sprintf("PREBOOT_JOB=%d", r.job.ID),
			"PREBOOT_MAC=" + r.job.MAC, "PREBOOT_DISK=" + disk, "PREBOOT_TLS_FINGERPRINT=" + r.env.TLS},
		Output: func(line string) {
			_, _ = r.ship.Write([]byte(line + "\n"))
			r.base.InfoContext(ctx, "script", "out", line)
		},
	})
	if err != nil {
		return err
	}
	r.log.InfoContext(ctx, "script exited with status 0")
	return nil
}

// wipe runs a wipe bundle over its disks (the agent's --device, when
// set, replaces the list).
func (r *jobRun) wipe(ctx context.Context, p *bundle.Wipe) error {
	if !p.Confirm {
		return errors.New("wipe: the bundle is not confirmed (confirm: true); nothing was wiped")
	}
	disks := p.Disks
	if r.o.Device != "" {
		disks = []string{r.o.Device}
	}
	r.prog.set(JobProgress{State: "running", Phase: "wipe"})
	return Wipe(ctx, WipeOptions{
		Disks: disks, Mode: p.Mode, Logger: r.log,
		Progress: func(w WipeProgress) {
			r.prog.set(JobProgress{State: "running", Phase: "wipe", BytesDone: w.Done, BytesTotal: w.Total, Rate: int64(w.Rate)})
		},
	})
}

type progressState struct {
	mu      sync.Mutex
	p       JobProgress
	changed bool
}

func (s *progressState) set(p JobProgress) {
	s.mu.Lock()
	s.p, s.changed = p, true
	s.mu.Unlock()
}

func (s *progressState) get() JobProgress {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.p
}

func (s *progressState) take() (JobProgress, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.changed
	s.changed = false
	return s.p, c
}

// heartbeatEvery is how often the agent reports even when its progress
// has not changed (a long filesystem check or resize): the server expires
// a job whose agent is silent for minutes (jobs.stale_after).
const heartbeatEvery = 20 * time.Second

// reportLoop sends progress and log lines every interval, and the
// unchanged progress at least every heartbeatEvery. Failed reports are
// logged and dropped (the next one carries the newer state); they never
// stop the job.
func reportLoop(ctx context.Context, jc *JobClient, ship *logShipper, prog *progressState, interval time.Duration, log *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		// A report in flight when the loop is stopped finishes: cutting it
		// short would lose its log lines (the final flush sends the rest).
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		p, changed := prog.take()
		if changed || time.Since(last) >= heartbeatEvery {
			last = time.Now()
			if err := jc.Progress(rctx, p); err != nil {
				log.WarnContext(rctx, "progress report failed", "err", err)
			}
		}
		flushLog(rctx, jc, ship, log)
		cancel()
	}
}

func flushLog(ctx context.Context, jc *JobClient, ship *logShipper, log *slog.Logger) {
	lines := ship.take()
	if len(lines) == 0 {
		return
	}
	if err := jc.Log(ctx, lines); err != nil && ctx.Err() == nil {
		log.WarnContext(ctx, "log upload failed", "lines", len(lines), "err", err)
		ship.putBack(lines)
	}
}

// logShipper collects log lines (an io.Writer for a slog.TextHandler) for
// the job log, bounded so an unreachable server cannot exhaust memory.
type logShipper struct {
	mu      sync.Mutex
	lines   []string
	dropped int
}

const maxQueuedLines = 2000

func newLogShipper() *logShipper { return &logShipper{} }

func (s *logShipper) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range bytes.Split(bytes.TrimRight(p, "\n"), []byte("\n")) {
		if len(s.lines) >= maxQueuedLines {
			s.dropped++
			continue
		}
		s.lines = append(s.lines, string(l))
	}
	return len(p), nil
}

func (s *logShipper) take() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.lines
	s.lines = nil
	if s.dropped > 0 {
		out = append(out, fmt.Sprintf("(%d log lines dropped)", s.dropped))
		s.dropped = 0
	}
	return out
}

func (s *logShipper) putBack(lines []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(lines)+len(s.lines) > maxQueuedLines {
		s.dropped += len(lines)
		return
	}
	s.lines = append(lines, s.lines...)
}
