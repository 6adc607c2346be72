package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/preboot/preboot/image"
	"github.com/preboot/preboot/image/httpstore"
)

// Env is what the imaging environment's kernel command line tells the
// agent: preboot.server=URL preboot.token=TOKEN preboot.job=ID [preboot.debug=1].
type Env struct {
	Server string
	Token  string
	Job    int64
	Debug  bool
}

// ParseCmdline reads the preboot.* keys of a kernel command line.
func ParseCmdline(cmdline string) (Env, error) {
	var e Env
	for _, f := range strings.Fields(cmdline) {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "preboot.server":
			e.Server = v
		case "preboot.token":
			e.Token = v
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
	// Device overrides the job's device (and the default disk).
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
// captures or restores while reporting progress and log lines, and reports
// the result. It returns ErrNoJob when there is nothing to do. A failed job
// is reported as failed (the server runs it again at the next boot) and
// returned as the error.
func Auto(ctx context.Context, env Env, o AutoOptions) (Outcome, error) {
	base := o.Logger
	if base == nil {
		base = slog.New(slog.DiscardHandler)
	}
	jc := &JobClient{BaseURL: env.Server, Token: env.Token, HTTP: o.HTTP, Attempts: o.Attempts, Backoff: o.Backoff, Logger: base}
	job, err := jc.Job(ctx)
	if err != nil {
		return Outcome{}, fmt.Errorf("get job: %w", err)
	}
	out := Outcome{Job: job, After: job.After}
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

	runErr := runJob(ctx, env, o, job, jc, log, &prog)

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

func runJob(ctx context.Context, env Env, o AutoOptions, job *Job, jc *JobClient, log *slog.Logger, prog *progressState) error {
	dev := o.Device
	if dev == "" {
		dev = job.Device
	}
	if dev == "" {
		d, err := DefaultDisk()
		if err != nil {
			return err
		}
		dev = d
	}
	log.InfoContext(ctx, "job start", "kind", job.Kind, "image", job.Image, "device", dev)
	prog.set(JobProgress{State: "running", Phase: "info"})
	if in, err := GetInfo(ctx, ""); err != nil {
		log.WarnContext(ctx, "hardware inventory incomplete", "err", err)
	} else if err := jc.Info(ctx, in); err != nil {
		log.WarnContext(ctx, "info report failed", "err", err)
	}

	st := &httpstore.Client{BaseURL: env.Server, Token: env.Token, HTTP: o.HTTP, Image: job.Image,
		Replace: true, Logger: log}
	onProgress := func(p image.Progress) {
		prog.set(JobProgress{State: "running", Phase: p.Phase, BytesDone: p.Done, BytesTotal: p.Total, Rate: int64(p.Rate)})
		if o.Progress != nil {
			o.Progress(p)
		}
	}
	opts := Options{Device: dev, Image: job.Image, Store: st, Compression: job.Compression,
		Progress: onProgress, Logger: log}
	switch job.Kind {
	case "capture":
		opts.Source = map[string]string{"device": dev}
		if job.MAC != "" {
			opts.Source["mac"] = job.MAC
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
		_, err := Capture(ctx, opts)
		return err
	case "restore":
		rec, err := ReadImageSafe(dev)
		if err != nil {
			if !errors.Is(err, ErrNoImageSafe) {
				log.WarnContext(ctx, "image-safe data unreadable; starting a new record", "err", err)
			}
			rec = &ImageSafe{}
		}
		rec.Server = env.Server
		if rec.DeviceID == "" {
			rec.DeviceID = job.MAC
		}
		opts.ImageSafe = rec
		_, err = Restore(ctx, opts)
		return err
	}
	return fmt.Errorf("unknown job kind %q", job.Kind)
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

// reportLoop sends progress and log lines every interval. Failed reports
// are logged and dropped (the next one carries the newer state); they
// never stop the job.
func reportLoop(ctx context.Context, jc *JobClient, ship *logShipper, prog *progressState, interval time.Duration, log *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if p, ok := prog.take(); ok {
			if err := jc.Progress(ctx, p); err != nil && ctx.Err() == nil {
				log.WarnContext(ctx, "progress report failed", "err", err)
			}
		}
		flushLog(ctx, jc, ship, log)
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
