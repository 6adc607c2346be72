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
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/preboot/preboot/bundle"
	"github.com/preboot/preboot/store"
	"github.com/preboot/preboot/timing"
)

// Service manages jobs over a store.
type Service struct {
	Store  store.Store
	Logger *slog.Logger
	// PendingTTL is how long a handed-out job waits for its agent to
	// start (DefaultPendingTTL when 0); StaleAfter how long a started job
	// may go without word from its agent (DefaultStaleAfter when 0; the
	// agent reports every few seconds). Jobs past either expire as
	// failed, and their tokens with them.
	PendingTTL time.Duration
	StaleAfter time.Duration
	// MaxBoots bounds how often one pending job is handed out again to
	// the same address (DefaultMaxBoots when 0); ClaimBurst how many job
	// hand-outs one device gets within ten minutes (DefaultClaimBurst
	// when 0).
	MaxBoots   int
	ClaimBurst int
	// Now returns the current time (tests may fix it).
	Now func() time.Time
	// ResolveImage, when set, pins the image of a restore or multicast
	// job when it starts: NAME becomes NAME@N, the version current then,
	// so a capture publishing a new version meanwhile does not change
	// what the job restores.
	ResolveImage func(ref string) (string, error)

	guard guard
}

// Defaults of Service's limits.
const (
	DefaultPendingTTL = 15 * time.Minute
	DefaultStaleAfter = 3 * time.Minute
	DefaultMaxBoots   = 5
	DefaultClaimBurst = 10
	claimWindow       = 10 * time.Minute
)

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Service) maxBoots() int {
	if s.MaxBoots > 0 {
		return s.MaxBoots
	}
	return DefaultMaxBoots
}

func (s *Service) claimBurst() int {
	if s.ClaimBurst > 0 {
		return s.ClaimBurst
	}
	return DefaultClaimBurst
}

// lifetime returns when an open job's clock started and how long it may
// stay silent from then: a pending job from its token's hand-out
// (PendingTTL), a started one from its agent's last word (StaleAfter).
func (s *Service) lifetime(j store.Job) (since time.Time, ttl time.Duration) {
	if j.State == store.JobPending {
		ttl = s.PendingTTL
		if ttl <= 0 {
			ttl = DefaultPendingTTL
		}
		since = j.TokenIssuedAt
		if since.IsZero() {
			since = j.UpdatedAt
		}
		return since, ttl
	}
	ttl = s.StaleAfter
	if ttl <= 0 {
		ttl = DefaultStaleAfter
	}
	return j.UpdatedAt, ttl
}

// stale says why an open job has expired, or "" while it is alive.
func (s *Service) stale(j store.Job) string {
	if store.JobFinished(j.State) {
		return ""
	}
	since, ttl := s.lifetime(j)
	silent := s.now().Sub(since)
	switch {
	case silent <= ttl:
		return ""
	case j.State == store.JobPending:
		return fmt.Sprintf("expired: handed out %s ago, its agent never started (a pending job and its token expire after %s)",
			silent.Round(time.Second), ttl)
	default:
		return fmt.Sprintf("expired: no word from its agent for %s (a started job and its token expire after %s of silence)",
			silent.Round(time.Second), ttl)
	}
}

// ExpireStale fails every open job that went silent (see PendingTTL and
// StaleAfter): a job whose device or server died ends cleanly and its
// token stops working. The server runs it periodically (RunExpiry).
func (s *Service) ExpireStale(ctx context.Context) (int, error) {
	open, err := s.Store.Jobs(ctx, store.JobFilter{Open: true, Limit: 10000})
	if err != nil {
		return 0, fmt.Errorf("expire stale jobs: %w", err)
	}
	n := 0
	for _, j := range open {
		why := s.stale(j)
		if why == "" {
			continue
		}
		if _, err := s.finish(ctx, j.ID, store.JobFailed, why); err != nil {
			if errors.Is(err, ErrJobOver) {
				continue
			}
			return n, fmt.Errorf("expire job %d: %w", j.ID, err)
		}
		n++
	}
	return n, nil
}

// RunExpiry runs ExpireStale now and every interval until ctx ends.
func (s *Service) RunExpiry(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if n, err := s.ExpireStale(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			s.log().WarnContext(ctx, "expire stale jobs", "err", err)
		} else if n > 0 {
			s.log().InfoContext(ctx, "expired stale jobs", "count", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
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
	// ClientIP is the address the boot request came from: the job's
	// token works only from there.
	ClientIP string
}

func (r StartRequest) job() (store.Job, error) {
	j := store.Job{MAC: r.MAC, Kind: r.Bundle.Kind, BundleID: r.Bundle.ID, Bundle: r.Bundle.Name,
		BundleVersion: r.Bundle.Version, Params: bundle.Redact(r.Bundle.Kind, r.Bundle.Params), State: store.JobPending} // job records never hold secrets
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

// Start hands out the boot of a bundle the imaging agent runs to a device
// asking from r.ClientIP, and returns the job with its token (shown once,
// never stored; only its hash is). The token is bound to that address and
// expires with the job.
//
// A device's open job wins over a new claim: an anonymous boot request
// never restarts or fails a job whose agent is at work. A pending job
// (handed out, its agent not started yet) booted again from the same
// address with the same bundle gets a fresh token (the old one stops
// working); from any other address the claim is refused with ErrBusy and
// recorded as a security event. Open jobs that went silent (see
// PendingTTL and StaleAfter) are expired first. Claims are rate-limited
// per MAC (ErrRateLimited).
func (s *Service) Start(ctx context.Context, r StartRequest) (store.Job, string, error) {
	j, reuse, err := s.claim(ctx, r)
	if err != nil {
		return store.Job{}, "", err
	}
	token, err := newToken()
	if err != nil {
		return store.Job{}, "", err
	}
	now := s.now()
	if reuse != 0 {
		j, err = s.Store.UpdateJob(ctx, reuse, func(j *store.Job) error {
			if j.State != store.JobPending {
				return fmt.Errorf("job %d is %s: %w", j.ID, j.State, ErrBusy)
			}
			j.TokenHash, j.Boots, j.TokenIssuedAt = HashToken(token), j.Boots+1, now
			return nil
		})
		if err != nil {
			return store.Job{}, "", err
		}
		s.event(ctx, j, fmt.Sprintf("job %d handed out again to %s (boot %d of the job; the previous token no longer works) — %s", j.ID, orUnknown(j.ClientIP), j.Boots, r.Why))
		return j, token, nil
	}
	j.TokenHash, j.ClientIP, j.Boots, j.TokenIssuedAt, j.CreatedAt = HashToken(token), clientAddr(r.ClientIP), 1, now, now
	if j, err = s.Store.CreateJob(ctx, j); err != nil {
		return store.Job{}, "", err
	}
	s.event(ctx, j, createdMessage(j, r.Why))
	return j, token, nil
}

func createdMessage(j store.Job, why string) string {
	return fmt.Sprintf("job %d created: bundle %s (%s%s), handed to %s — %s", j.ID, j.Bundle, j.Kind, imageNote(j), orUnknown(j.ClientIP), why)
}

// Prepared is a job made ready for the store to create in the
// transaction of its device's registration (store.Registration.Job).
type Prepared struct {
	Job   store.Job // to create: its token's hash set, no ID yet
	Token string    // the job's token, shown once
	Why   string
}

// Prepare makes the job Start would create for r ready for a device its
// boot request just created: such a device has no job to hand out again,
// supersede or wait for, so of Start's claim rules only the rate limit
// applies (ErrRateLimited; the hand-out counts now). The store creates
// the job with the device's registration, in one transaction, unless the
// device has an open job after all (a MAC whose device was deleted and
// seen again): then the caller calls Start, which checks everything (and
// counts the hand-out again).
func (s *Service) Prepare(ctx context.Context, r StartRequest) (Prepared, error) {
	j, err := s.newJob(r)
	if err != nil {
		return Prepared{}, err
	}
	if !s.guard.allowClaim(r.MAC, s.now(), s.claimBurst()) {
		s.Security(ctx, r.MAC, "rate", fmt.Sprintf("boot request for %s from %s refused: more than %d job hand-outs for this device within %s",
			r.MAC, orUnknown(clientAddr(r.ClientIP)), s.claimBurst(), claimWindow))
		return Prepared{}, fmt.Errorf("%s: %w", r.MAC, ErrRateLimited)
	}
	token, err := newToken()
	if err != nil {
		return Prepared{}, err
	}
	now := s.now()
	j.TokenHash, j.ClientIP, j.Boots, j.TokenIssuedAt, j.CreatedAt = HashToken(token), clientAddr(r.ClientIP), 1, now, now
	return Prepared{Job: j, Token: token, Why: r.Why}, nil
}

// CreatedEvent is the event of a prepared job the store created (j: as
// stored, its ID set): what Start records for a job it creates.
func (p Prepared) CreatedEvent(j store.Job) store.Event {
	return store.Event{MAC: j.MAC, Job: j.ID, Kind: store.EventJob, Message: createdMessage(j, p.Why)}
}

// claim decides whether a device may get a new job for r: it expires the
// device's stale open jobs, refuses when another open job is alive
// (ErrBusy), and returns either the job to create or the ID of a pending
// job of the same bundle and address to hand out again.
func (s *Service) claim(ctx context.Context, r StartRequest) (store.Job, int64, error) {
	j, err := s.newJob(r)
	if err != nil {
		return store.Job{}, 0, err
	}
	open, err := s.Store.Jobs(ctx, store.JobFilter{MAC: r.MAC, Open: true})
	if err != nil {
		return store.Job{}, 0, err
	}
	ip := clientAddr(r.ClientIP)
	var reuse int64
	for _, o := range open {
		if why := s.stale(o); why != "" {
			if _, err := s.finish(ctx, o.ID, store.JobFailed, why); err != nil && !errors.Is(err, ErrJobOver) {
				return store.Job{}, 0, err
			}
			continue
		}
		sameClient := o.ClientIP == "" || o.ClientIP == ip
		switch {
		case o.State == store.JobPending && sameClient && o.BundleID == j.BundleID && o.BundleVersion == j.BundleVersion &&
			o.Kind == j.Kind && o.Boots < s.maxBoots():
			reuse = o.ID
		case o.State == store.JobPending && sameClient:
			// The same machine booted again into other work (the
			// assignment changed), or too often without its agent
			// starting: that job is over.
			msg := fmt.Sprintf("superseded: the device booted again (from %s) into bundle %s before its agent started", orUnknown(ip), r.Bundle.Name)
			if o.Boots >= s.maxBoots() {
				msg = fmt.Sprintf("the device booted %d times without its agent starting: check that the imaging environment boots on this machine", o.Boots)
			}
			if _, err := s.finish(ctx, o.ID, store.JobFailed, msg); err != nil && !errors.Is(err, ErrJobOver) {
				return store.Job{}, 0, err
			}
		default:
			s.Security(ctx, r.MAC, "busy", fmt.Sprintf("boot request for %s from %s refused: its job %d (bundle %s) is %s, handed to %s; the running job wins",
				r.MAC, orUnknown(ip), o.ID, o.Bundle, o.State, orUnknown(o.ClientIP)))
			return store.Job{}, 0, &BusyError{Job: o}
		}
	}
	if !s.guard.allowClaim(r.MAC, s.now(), s.claimBurst()) {
		s.Security(ctx, r.MAC, "rate", fmt.Sprintf("boot request for %s from %s refused: more than %d job hand-outs for this device within %s",
			r.MAC, orUnknown(ip), s.claimBurst(), claimWindow))
		return store.Job{}, 0, fmt.Errorf("%s: %w", r.MAC, ErrRateLimited)
	}
	return j, reuse, nil
}

// newJob is the job of r, its image pinned (ResolveImage).
func (s *Service) newJob(r StartRequest) (store.Job, error) {
	j, err := r.job()
	if err != nil {
		return store.Job{}, err
	}
	if s.ResolveImage != nil && j.Image != "" && (j.Kind == store.KindImageRestore || j.Kind == store.KindMulticast) {
		if j.Image, err = s.ResolveImage(j.Image); err != nil {
			return store.Job{}, fmt.Errorf("bundle %s: image %s: %w", r.Bundle.Name, j.Image, err)
		}
	}
	return j, nil
}

// BusyError is the refusal of a claim for a device whose job is open.
type BusyError struct{ Job store.Job }

func (e *BusyError) Error() string {
	return fmt.Sprintf("job %d (bundle %s) is %s for this device: %s", e.Job.ID, e.Job.Bundle, e.Job.State, ErrBusy)
}

// Unwrap makes errors.Is(err, ErrBusy) true.
func (e *BusyError) Unwrap() error { return ErrBusy }

// Errors of Start and HandOut.
var (
	ErrBusy        = errors.New("the device's open job wins over a new boot request")
	ErrRateLimited = errors.New("too many job hand-outs for this device; try again later")
)

func orUnknown(ip string) string {
	if ip == "" {
		return "an unknown address"
	}
	return ip
}

// clientAddr normalises an address or host:port ("[::ffff:10.0.0.5]:80"
// is 10.0.0.5); anything unparsable is kept as is.
func clientAddr(s string) string {
	if host, _, err := net.SplitHostPort(s); err == nil {
		s = host
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return s
	}
	return a.Unmap().WithZone("").String()
}

func imageNote(j store.Job) string {
	if j.Image == "" {
		return ""
	}
	return ", image " + j.Image
}

// HandOut records a bundle that leaves the server and never reports back
// (os-install): its job is created and succeeds at once. The same claim
// rules as Start apply: a device whose job is open elsewhere gets nothing
// (ErrBusy), and hand-outs are rate-limited per device.
func (s *Service) HandOut(ctx context.Context, r StartRequest) (store.Job, error) {
	j, reuse, err := s.claim(ctx, r)
	if err != nil {
		return store.Job{}, err
	}
	if reuse != 0 {
		msg := fmt.Sprintf("superseded: the device booted again (from %s) into bundle %s before its agent started", orUnknown(clientAddr(r.ClientIP)), r.Bundle.Name)
		if _, err := s.finish(ctx, reuse, store.JobFailed, msg); err != nil && !errors.Is(err, ErrJobOver) {
			return store.Job{}, err
		}
	}
	token, err := newToken()
	if err != nil {
		return store.Job{}, err
	}
	now := s.now()
	j.TokenHash = HashToken(token) // never handed to anyone
	j.ClientIP, j.Boots, j.CreatedAt, j.StartedAt, j.TokenIssuedAt = clientAddr(r.ClientIP), 1, now, now, now
	if j, err = s.Store.CreateJob(ctx, j); err != nil {
		return store.Job{}, err
	}
	s.event(ctx, j, fmt.Sprintf("job %d created: bundle %s (%s), handed to %s — %s", j.ID, j.Bundle, j.Kind, orUnknown(j.ClientIP), r.Why))
	return s.finish(ctx, j.ID, store.JobSucceeded, "handed out to the device (the installer does not report back)")
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

// Authenticate returns the open job a token belongs to, for a request
// from remote (an address or host:port; "" skips the address check, for
// callers that are not network requests). A token works only from the
// address its job was handed to (ErrWrongClient, recorded as a security
// event) and only while its job is open and alive: the token of a job
// that went silent expires with it (ErrJobOver).
func (s *Service) Authenticate(ctx context.Context, token, remote string) (store.Job, error) {
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
	if remote != "" && j.ClientIP != "" {
		if ip := clientAddr(remote); ip != j.ClientIP {
			s.Security(ctx, j.MAC, "client", fmt.Sprintf("job %d: its token was used from %s, but the job was handed to %s: refused", j.ID, ip, j.ClientIP))
			return store.Job{}, fmt.Errorf("job %d: token used from %s: %w", j.ID, ip, ErrWrongClient)
		}
	}
	if why := s.stale(j); why != "" {
		if _, err := s.finish(ctx, j.ID, store.JobFailed, why); err != nil && !errors.Is(err, ErrJobOver) {
			return store.Job{}, err
		}
		return store.Job{}, fmt.Errorf("job %d expired: %w", j.ID, ErrJobOver)
	}
	return j, nil
}

// Errors of Authenticate.
var (
	ErrUnauthorized = errors.New("missing or unknown job token")
	ErrJobOver      = errors.New("job already ended")
	ErrWrongClient  = errors.New("a job token works only from the address its job was handed to")
)

// Fetched records that the agent asked for its job.
func (s *Service) Fetched(ctx context.Context, id int64) (store.Job, error) {
	j, err := s.Store.UpdateJob(ctx, id, func(j *store.Job) error {
		if j.State == store.JobPending {
			j.State = store.JobBooting
			j.StartedAt = s.now()
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
	// Timing is where a capture's or restore's time went so far (a
	// timing.Breakdown; agents that predate it send none and the job
	// keeps the one it has).
	Timing json.RawMessage `json:"timing,omitempty"`
}

// Report records progress.
func (s *Service) Report(ctx context.Context, id int64, p Progress) (store.Job, error) {
	if p.BytesDone < 0 || p.BytesTotal < 0 || p.Rate < 0 || (p.BytesTotal > 0 && p.BytesDone > p.BytesTotal) {
		return store.Job{}, fmt.Errorf("progress: bytes_done %d, bytes_total %d, rate %d: %w", p.BytesDone, p.BytesTotal, p.Rate, ErrInvalid)
	}
	tm, err := timing.Parse(p.Timing)
	if err != nil {
		return store.Job{}, fmt.Errorf("progress: timing: %w: %w", err, ErrInvalid)
	}
	var tmJSON json.RawMessage
	if tm != nil {
		if tmJSON, err = json.Marshal(tm); err != nil {
			return store.Job{}, fmt.Errorf("progress: timing: %w", err)
		}
	}
	started := false
	j, err := s.Store.UpdateJob(ctx, id, func(j *store.Job) error {
		if j.State != store.JobRunning {
			started = true
			j.State = store.JobRunning
			if j.StartedAt.IsZero() {
				j.StartedAt = s.now()
			}
		}
		j.Phase, j.BytesDone, j.BytesTotal, j.Rate, j.Message = clip(p.Phase, 64), p.BytesDone, p.BytesTotal, p.Rate, clip(p.Message, 512)
		if tmJSON != nil {
			j.Timing = tmJSON
		}
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
		j.FinishedAt = s.now()
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
