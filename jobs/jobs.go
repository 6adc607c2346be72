// Package jobs runs jobs from the server's side: a job is one run of a
// bundle on a device, created when the device boots into it. Jobs the
// imaging agent carries out get a per-job token the agent presents; they
// move pending → booting → running → succeeded / failed / cancelled. Only
// success clears an apply-once assignment, so a failed or interrupted job
// runs again at the next boot.
package jobs

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/preboot/preboot/bundle"
	"github.com/preboot/preboot/store"
)

// Service manages jobs over a store.
type Service struct {
	Store  store.Store
	Logger *slog.Logger
}

func (s *Service) log() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

// newToken returns a fresh job token (pbj_ and 48 hex digits).
func newToken() (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return "pbj_" + hex.EncodeToString(b), nil
}

// HashToken is how tokens are kept: only their SHA-256.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// StartRequest is one run of a bundle on a device. Assignment is the
// assignment it comes from (nil: picked at the device's menu).
type StartRequest struct {
	MAC        string
	Bundle     store.Bundle
	Assignment *store.Assignment
	Why        string
}

func (r StartRequest) job() (store.Job, error) {
	j := store.Job{MAC: r.MAC, Kind: r.Bundle.Kind, BundleID: r.Bundle.ID, Bundle: r.Bundle.Name,
		BundleVersion: r.Bundle.Version, Params: r.Bundle.Params, State: store.JobPending}
	if r.Assignment != nil {
		j.AssignmentID = r.Assignment.ID
	}
	p, err := bundle.Decode(r.Bundle.Kind, r.Bundle.Params)
	if err != nil {
		return j, fmt.Errorf("bundle %s: %w", r.Bundle.Name, err)
	}
	switch v := p.(type) {
	case *bundle.Restore:
		j.Image, j.Device, j.After = v.Image, v.Device, v.After
	case *bundle.Multicast:
		j.Image, j.Device, j.After = v.Image, v.Device, v.After
	case *bundle.Capture:
		j.Image, j.Device, j.After, j.Compression = v.Image, v.Device, v.After, v.Compression
	case *bundle.Script:
		j.After = v.After
	case *bundle.Wipe:
		j.After = v.After
	case *bundle.Inventory:
		j.After = v.After
	}
	if j.After == "" {
		j.After = store.AfterReboot
	}
	return j, nil
}

// Start creates the job of a bundle the imaging agent runs and returns it
// with its token (shown once, never stored). Jobs of the device still
// open are failed first: the device booted again, so they were
// interrupted.
func (s *Service) Start(ctx context.Context, r StartRequest) (store.Job, string, error) {
	if err := s.interrupt(ctx, r.MAC); err != nil {
		return store.Job{}, "", err
	}
	j, err := r.job()
	if err != nil {
		return store.Job{}, "", err
	}
	token, err := newToken()
	if err != nil {
		return store.Job{}, "", err
	}
	j.TokenHash = HashToken(token)
	if j, err = s.Store.CreateJob(ctx, j); err != nil {
		return store.Job{}, "", err
	}
	s.event(ctx, j, fmt.Sprintf("job %d created: bundle %s (%s%s) — %s", j.ID, j.Bundle, j.Kind, imageNote(j), r.Why))
	return j, token, nil
}

func imageNote(j store.Job) string {
	if j.Image == "" {
		return ""
	}
	return ", image " + j.Image
}

// HandOut records a bundle that leaves the server and never reports back
// (os-install): its job is created and succeeds at once.
func (s *Service) HandOut(ctx context.Context, r StartRequest) (store.Job, error) {
	if err := s.interrupt(ctx, r.MAC); err != nil {
		return store.Job{}, err
	}
	j, err := r.job()
	if err != nil {
		return store.Job{}, err
	}
	token, err := newToken()
	if err != nil {
		return store.Job{}, err
	}
	j.TokenHash = HashToken(token) // never handed to anyone
	now := time.Now()
	j.StartedAt = now
	if j, err = s.Store.CreateJob(ctx, j); err != nil {
		return store.Job{}, err
	}
	s.event(ctx, j, fmt.Sprintf("job %d created: bundle %s (%s) — %s", j.ID, j.Bundle, j.Kind, r.Why))
	return s.finish(ctx, j.ID, store.JobSucceeded, "handed out to the device (the installer does not report back)")
}

// interrupt fails the device's open jobs: it booted again.
func (s *Service) interrupt(ctx context.Context, mac string) error {
	open, err := s.Store.Jobs(ctx, store.JobFilter{MAC: mac, Open: true})
	if err != nil {
		return err
	}
	for _, j := range open {
		if _, err := s.finish(ctx, j.ID, store.JobFailed, "interrupted: the device booted again before the job ended"); err != nil && !errors.Is(err, ErrJobOver) {
			return err
		}
	}
	return nil
}

// Fail ends a job that could not even start (e.g. no imaging environment).
func (s *Service) Fail(ctx context.Context, id int64, msg string) error {
	_, err := s.finish(ctx, id, store.JobFailed, msg)
	return err
}

// Cancel ends an open job as cancelled. A device-level apply-once
// assignment it came from is removed too, so the work does not start
// again at the next boot; other assignments stay.
func (s *Service) Cancel(ctx context.Context, id int64, actor string) (store.Job, error) {
	return s.finish(ctx, id, store.JobCancelled, "cancelled by "+actor)
}

// Authenticate returns the open job a token belongs to.
func (s *Service) Authenticate(ctx context.Context, token string) (store.Job, error) {
	token = strings.TrimSpace(token)
	if token == "" {
		return store.Job{}, ErrUnauthorized
	}
	j, err := s.Store.JobByToken(ctx, HashToken(token))
	if errors.Is(err, store.ErrNotFound) {
		return store.Job{}, ErrUnauthorized
	}
	if err != nil {
		return store.Job{}, err
	}
	if store.JobFinished(j.State) {
		return store.Job{}, fmt.Errorf("job %d is %s: %w", j.ID, j.State, ErrJobOver)
	}
	return j, nil
}

// Errors of Authenticate.
var (
	ErrUnauthorized = errors.New("missing or unknown job token")
	ErrJobOver      = errors.New("job already ended")
)

// Fetched records that the agent asked for its job.
func (s *Service) Fetched(ctx context.Context, id int64) (store.Job, error) {
	j, err := s.Store.UpdateJob(ctx, id, func(j *store.Job) error {
		if j.State == store.JobPending {
			j.State = store.JobBooting
			j.StartedAt = time.Now()
		}
		return nil
	})
	if err == nil {
		s.event(ctx, j, fmt.Sprintf("job %d: imaging environment up, agent fetched the job", j.ID))
	}
	return j, err
}

// Progress is what the agent reports while it works.
type Progress struct {
	State      string `json:"state"`
	Phase      string `json:"phase"`
	BytesDone  int64  `json:"bytes_done"`
	BytesTotal int64  `json:"bytes_total"`
	Rate       int64  `json:"rate"`
	Message    string `json:"message"`
}

// Report records progress.
func (s *Service) Report(ctx context.Context, id int64, p Progress) (store.Job, error) {
	if p.BytesDone < 0 || p.BytesTotal < 0 || p.Rate < 0 || (p.BytesTotal > 0 && p.BytesDone > p.BytesTotal) {
		return store.Job{}, fmt.Errorf("progress: bytes_done %d, bytes_total %d, rate %d: %w", p.BytesDone, p.BytesTotal, p.Rate, ErrInvalid)
	}
	started := false
	j, err := s.Store.UpdateJob(ctx, id, func(j *store.Job) error {
		if j.State != store.JobRunning {
			started = true
			j.State = store.JobRunning
			if j.StartedAt.IsZero() {
				j.StartedAt = time.Now()
			}
		}
		j.Phase, j.BytesDone, j.BytesTotal, j.Rate, j.Message = clip(p.Phase, 64), p.BytesDone, p.BytesTotal, p.Rate, clip(p.Message, 512)
		return nil
	})
	if err == nil && started {
		s.event(ctx, j, fmt.Sprintf("job %d running: %s", j.ID, j.Phase))
	}
	return j, err
}

// ErrInvalid marks a request the agent got wrong.
var ErrInvalid = errors.New("invalid")

// Log appends agent log lines (bounded).
func (s *Service) Log(ctx context.Context, id int64, lines []string) error {
	if len(lines) > 1000 {
		return fmt.Errorf("log: %d lines in one request, at most 1000: %w", len(lines), ErrInvalid)
	}
	for i, l := range lines {
		lines[i] = clip(l, 4096)
	}
	return s.Store.AddJobLog(ctx, id, lines)
}

// Finish records the result. On success the bundle becomes the device's
// last applied bundle and a device-level apply-once assignment is
// cleared; on failure the assignment stays and runs again at the next
// boot.
func (s *Service) Finish(ctx context.Context, id int64, ok bool, msg string) (store.Job, error) {
	if ok {
		return s.finish(ctx, id, store.JobSucceeded, msg)
	}
	return s.finish(ctx, id, store.JobFailed, msg)
}

func (s *Service) finish(ctx context.Context, id int64, state, msg string) (store.Job, error) {
	j, err := s.Store.UpdateJob(ctx, id, func(j *store.Job) error {
		if store.JobFinished(j.State) {
			return fmt.Errorf("job %d is already %s: %w", j.ID, j.State, ErrJobOver)
		}
		j.FinishedAt = time.Now()
		j.State = state
		switch state {
		case store.JobSucceeded:
			// The agent's last progress message ("95% restored") would
			// read wrong on a finished job.
			j.Error, j.Message = "", clip(msg, 512)
			if j.BytesTotal > 0 {
				j.BytesDone = j.BytesTotal
			}
		default:
			j.Error = clip(msg, 2048)
		}
		return nil
	})
	if err != nil {
		return store.Job{}, err
	}
	switch state {
	case store.JobSucceeded:
		if err := s.Store.SetApplied(ctx, j.MAC, store.Applied{BundleID: j.BundleID, Bundle: j.Bundle, BundleVersion: j.BundleVersion,
			AssignmentID: j.AssignmentID, Job: j.ID, Time: j.FinishedAt}); err != nil && !errors.Is(err, store.ErrNotFound) {
			return j, err
		}
		cleared, err := s.clearOnce(ctx, j)
		if err != nil {
			return j, err
		}
		note := ""
		if cleared {
			note = " (apply-once assignment cleared)"
		}
		s.event(ctx, j, fmt.Sprintf("job %d succeeded: bundle %s (%s%s)%s", j.ID, j.Bundle, j.Kind, imageNote(j), note))
	case store.JobCancelled:
		cleared, err := s.clearOnce(ctx, j)
		if err != nil {
			return j, err
		}
		note := " (the assignment stays: the bundle runs again at the next boot unless it is removed)"
		if cleared {
			note = " (its apply-once assignment was removed)"
		}
		s.event(ctx, j, fmt.Sprintf("job %d %s%s", j.ID, j.Error, note))
	default:
		s.event(ctx, j, fmt.Sprintf("job %d failed: %s (the assignment stays and runs again at the next boot)", j.ID, j.Error))
	}
	s.log().InfoContext(ctx, "job finished", "job", j.ID, "mac", j.MAC, "bundle", j.Bundle, "kind", j.Kind, "state", j.State, "error", j.Error)
	return j, nil
}

// clearOnce removes the device-level apply-once assignment the job came
// from, if it is still there.
func (s *Service) clearOnce(ctx context.Context, j store.Job) (bool, error) {
	if j.AssignmentID == 0 {
		return false, nil
	}
	a, err := s.Store.Assignment(ctx, j.AssignmentID)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if !a.Once || a.MAC == "" {
		return false, nil
	}
	if err := s.Store.DeleteAssignment(ctx, a.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
		return false, err
	}
	return true, nil
}

func (s *Service) event(ctx context.Context, j store.Job, msg string) {
	if _, err := s.Store.AddEvent(ctx, store.Event{MAC: j.MAC, Job: j.ID, Kind: store.EventJob, Message: msg}); err != nil {
		s.log().ErrorContext(ctx, "record job event", "job", j.ID, "err", err)
	}
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
