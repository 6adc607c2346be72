// Package jobs runs imaging jobs from the server's side: a job is created
// when a device with imaging work boots, carries a per-job token that the
// agent in the imaging environment presents, moves pending → booting →
// running → succeeded/failed, and clears the device's work only on success
// (so a failed or interrupted job runs again at the next boot).
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

	"github.com/preboot/preboot/store"
)

// EventJob is the event kind of job transitions.
const EventJob = "job"

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

// HashToken is how tokens are kept: only their SHA-256.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// Start creates the job for a device's imaging work and returns it with
// its token (shown once, never stored). Jobs of the device still open are
// failed first: the device booted again, so they were interrupted.
func (s *Service) Start(ctx context.Context, w store.Work) (store.Job, string, error) {
	open, err := s.Store.Jobs(ctx, store.JobFilter{MAC: w.MAC, Open: true})
	if err != nil {
		return store.Job{}, "", err
	}
	for _, j := range open {
		if _, err := s.finish(ctx, j.ID, false, "interrupted: the device booted again before the job ended"); err != nil {
			return store.Job{}, "", err
		}
	}
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return store.Job{}, "", err
	}
	token := "pbj_" + hex.EncodeToString(b)
	j, err := s.Store.CreateJob(ctx, store.Job{MAC: w.MAC, Kind: w.Kind, Image: w.Image, Device: w.Device, After: w.After,
		Compression: w.Compression, State: store.JobPending, TokenHash: HashToken(token)})
	if err != nil {
		return store.Job{}, "", err
	}
	s.event(ctx, j, fmt.Sprintf("job %d created: %s %s", j.ID, j.Kind, j.Image))
	return j, token, nil
}

// Fail ends a job that could not even start (e.g. no imaging environment).
func (s *Service) Fail(ctx context.Context, id int64, msg string) error {
	_, err := s.finish(ctx, id, false, msg)
	return err
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
	return s.Store.UpdateJob(ctx, id, func(j *store.Job) error {
		if j.State != store.JobRunning {
			j.State = store.JobRunning
			if j.StartedAt.IsZero() {
				j.StartedAt = time.Now()
			}
		}
		j.Phase, j.BytesDone, j.BytesTotal, j.Rate, j.Message = clip(p.Phase, 64), p.BytesDone, p.BytesTotal, p.Rate, clip(p.Message, 512)
		return nil
	})
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

// Finish records the result. On success the device's work is cleared if
// it is still the work this job ran.
func (s *Service) Finish(ctx context.Context, id int64, ok bool, msg string) (store.Job, error) {
	return s.finish(ctx, id, ok, msg)
}

func (s *Service) finish(ctx context.Context, id int64, ok bool, msg string) (store.Job, error) {
	j, err := s.Store.UpdateJob(ctx, id, func(j *store.Job) error {
		if store.JobFinished(j.State) {
			return fmt.Errorf("job %d is already %s: %w", j.ID, j.State, ErrJobOver)
		}
		j.FinishedAt = time.Now()
		if ok {
			j.State, j.Error = store.JobSucceeded, ""
			if j.BytesTotal > 0 {
				j.BytesDone = j.BytesTotal
			}
		} else {
			j.State, j.Error = store.JobFailed, clip(msg, 2048)
		}
		return nil
	})
	if err != nil {
		return store.Job{}, err
	}
	if ok {
		w, err := s.Store.Work(ctx, j.MAC)
		if err == nil && w.Kind == j.Kind && w.Image == j.Image {
			if err := s.Store.ClearWork(ctx, j.MAC); err != nil {
				return j, err
			}
		} else if err != nil && !errors.Is(err, store.ErrNotFound) {
			return j, err
		}
		s.event(ctx, j, fmt.Sprintf("job %d succeeded: %s %s", j.ID, j.Kind, j.Image))
	} else {
		s.event(ctx, j, fmt.Sprintf("job %d failed: %s (the work stays assigned and runs again at the next boot)", j.ID, j.Error))
	}
	s.log().InfoContext(ctx, "job finished", "job", j.ID, "mac", j.MAC, "kind", j.Kind, "image", j.Image, "state", j.State, "error", j.Error)
	return j, nil
}

func (s *Service) event(ctx context.Context, j store.Job, msg string) {
	if err := s.Store.AddEvent(ctx, store.Event{MAC: j.MAC, Kind: EventJob, Message: msg}); err != nil {
		s.log().ErrorContext(ctx, "record job event", "job", j.ID, "err", err)
	}
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
