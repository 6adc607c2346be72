// Package replica keeps a site server's image repository a verified,
// incremental replica of a central server's: it lists the upstream's
// images and versions, pulls only the chunks the site lacks (each one
// hashed before it is stored), publishes a version only once every chunk
// it references is stored, keeps the upstream's version numbers and
// current version, removes what the upstream removed (unless told to keep
// it), and scrubs the chunks at rest, fetching a good copy of a corrupt
// one from the upstream.
package replica

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/preboot/preboot/image"
	"github.com/preboot/preboot/image/httpstore"
)

// Defaults used when the corresponding Options field is zero.
const (
	DefaultInterval = 5 * time.Minute
	DefaultParallel = 4
	DefaultAttempts = 4
	DefaultBackoff  = 250 * time.Millisecond
	maxBackoff      = 10 * time.Second
	// publishPasses bounds the "ask what is missing, pull it" passes of
	// one version (a pass after the first only refills what a GC at the
	// site took meanwhile).
	publishPasses = 3
)

// Upstream is the central server's repository as the replicator reads it
// (*httpstore.Client with a replication or admin token).
type Upstream interface {
	List(ctx context.Context) (*httpstore.ImageList, error)
	Versions(ctx context.Context, name string) (*httpstore.ImageVersions, error)
	Manifest(ctx context.Context, ref string) (*image.Manifest, error)
	Get(ctx context.Context, h image.Hash, dst []byte) ([]byte, error)
}

// Local is the site's repository (*image.Repo), used only through these
// methods so that any backend behind them works.
type Local interface {
	Missing(ctx context.Context, hashes []image.Hash) (map[image.Hash]struct{}, error)
	Put(ctx context.Context, h image.Hash, data []byte) error
	Get(ctx context.Context, h image.Hash, dst []byte) ([]byte, error)
	RemoveChunk(ctx context.Context, h image.Hash) error
	PublishVersion(ctx context.Context, m *image.Manifest) (int, error)
	LastVersion(ctx context.Context, name string) (int, error)
	Manifest(ref string) (*image.Manifest, error)
	List() ([]string, error)
	Versions(name string) ([]image.Version, error)
	Remove(ctx context.Context, ref string) error
	Rollback(ctx context.Context, name string, to int) (int, error)
}

// Options configure New.
type Options struct {
	Upstream Upstream
	// UpstreamURL is reported in the status.
	UpstreamURL string
	Local       Local
	Select      Selector
	// KeepDeleted keeps images and versions the upstream removed (or that
	// are no longer selected). By default the site removes them, so it
	// never restores what the centre retired; an upstream that lists no
	// image at all removes nothing (a fresh or misconfigured centre).
	KeepDeleted bool
	// Interval between rounds (DefaultInterval when 0).
	Interval time.Duration
	// ScrubInterval between scrubs of the chunks at rest (0: no periodic
	// scrub; Scrub runs on demand).
	ScrubInterval time.Duration
	// Parallel bounds concurrent chunk fetches (DefaultParallel when 0).
	Parallel int
	// Attempts bounds tries per chunk (a transfer error or a chunk that
	// fails verification; DefaultAttempts when 0), Backoff is the first
	// delay between them, doubled per try up to 10 s.
	Attempts int
	Backoff  time.Duration
	// StateFile keeps which local images are replicas and when each was
	// last in sync (e.g. DATA_DIR/replicas.json). Empty: in memory only.
	StateFile string
	Logger    *slog.Logger
}

// Image states.
const (
	StateInSync  = "in-sync"
	StatePending = "pending" // selected, not pulled yet this run
	StatePulling = "pulling"
	StateFailed  = "failed"
)

// ImageStatus is one replicated image.
type ImageStatus struct {
	Name  string `json:"name"`
	State string `json:"state"`
	// Version is the site's current version, UpstreamVersion the
	// upstream's; Versions how many versions the site keeps.
	Version         int `json:"version"`
	UpstreamVersion int `json:"upstream_version"`
	Versions        int `json:"versions"`
	// Progress of the round in flight (or the last one): chunks fetched
	// of those missing, bytes fetched (compressed).
	ChunksDone  int   `json:"chunks_done"`
	ChunksTotal int   `json:"chunks_total"`
	Bytes       int64 `json:"bytes"`
	// CorruptFetched counts chunks from the upstream refused because they
	// did not hash to their name (each was fetched again).
	CorruptFetched int       `json:"corrupt_fetched,omitempty"`
	Error          string    `json:"error,omitempty"`
	LastSuccess    time.Time `json:"last_success,omitzero"`
	LastAttempt    time.Time `json:"last_attempt,omitzero"`
	// LagSeconds: how long the site has been behind the upstream (since
	// the upstream's oldest version the site lacks was created); 0 in sync.
	LagSeconds float64 `json:"lag_seconds"`

	behindSince time.Time
}

// ScrubResult is what one scrub found and did.
type ScrubResult struct {
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished,omitzero"`
	Images   int       `json:"images"`
	Chunks   int       `json:"chunks"`
	Corrupt  int       `json:"corrupt"`
	Missing  int       `json:"missing"`
	Repaired int       `json:"repaired"`
	Errors   []string  `json:"errors,omitempty"`
}

// Status is the replicator's report.
type Status struct {
	Upstream    string        `json:"upstream"`
	Select      string        `json:"select"`
	KeepDeleted bool          `json:"keep_deleted"`
	Interval    string        `json:"interval"`
	LastRound   time.Time     `json:"last_round,omitzero"`
	RoundError  string        `json:"round_error,omitempty"`
	Images      []ImageStatus `json:"images"`
	// Removed lists the images removed because the upstream removed them
	// (or they are no longer selected) in the last round.
	Removed   []string     `json:"removed,omitempty"`
	LastScrub *ScrubResult `json:"last_scrub,omitempty"`
}

// Replicator keeps the site's repository a replica of the upstream's.
type Replicator struct {
	o   Options
	log *slog.Logger

	work sync.Mutex // one round or scrub at a time

	mu        sync.Mutex
	images    map[string]*ImageStatus
	replicas  map[string]replicaRecord // persisted
	lastRound time.Time
	roundErr  string
	removed   []string
	lastScrub *ScrubResult

	// verifiers keeps chunk verifiers (a zstd decoder and a buffer each)
	// for the fetch and scrub workers.
	verifiers chan *image.Verifier

	bytes, chunks, corruptUp, corruptLocal, repaired atomic.Int64
	rounds, roundFailures                            atomic.Int64
}

type replicaRecord struct {
	LastSuccess time.Time `json:"last_success,omitzero"`
}

type stateFile struct {
	Replicas map[string]replicaRecord `json:"replicas"`
}

// New returns a Replicator; it loads Options.StateFile when it exists.
func New(o Options) (*Replicator, error) {
	if o.Upstream == nil || o.Local == nil {
		return nil, errors.New("replica: upstream and local repository required")
	}
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.Parallel <= 0 {
		o.Parallel = DefaultParallel
	}
	if o.Attempts <= 0 {
		o.Attempts = DefaultAttempts
	}
	if o.Backoff <= 0 {
		o.Backoff = DefaultBackoff
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Replicator{o: o, log: o.Logger, images: make(map[string]*ImageStatus), replicas: make(map[string]replicaRecord),
		verifiers: make(chan *image.Verifier, o.Parallel)}
	if o.StateFile != "" {
		data, err := os.ReadFile(o.StateFile)
		switch {
		case errors.Is(err, os.ErrNotExist):
		case err != nil:
			return nil, fmt.Errorf("replica state: %w", err)
		default:
			var sf stateFile
			if err := json.Unmarshal(data, &sf); err != nil {
				return nil, fmt.Errorf("replica state %s: %w", o.StateFile, err)
			}
			for n, rec := range sf.Replicas {
				r.replicas[n] = rec
				r.images[n] = &ImageStatus{Name: n, State: StatePending, LastSuccess: rec.LastSuccess}
			}
		}
	}
	return r, nil
}

// Run replicates at once, then every Interval (and scrubs every
// ScrubInterval) until ctx ends. Failures are logged, reported in the
// status and retried at the next round.
func (r *Replicator) Run(ctx context.Context) {
	tick := time.NewTicker(r.o.Interval)
	defer tick.Stop()
	var scrub <-chan time.Time
	if r.o.ScrubInterval > 0 {
		st := time.NewTicker(r.o.ScrubInterval)
		defer st.Stop()
		scrub = st.C
	}
	for {
		if err := r.Sync(ctx); err != nil && ctx.Err() == nil {
			r.log.WarnContext(ctx, "replication round failed", "upstream", r.o.UpstreamURL, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-scrub:
			if _, err := r.Scrub(ctx, "", true); err != nil && ctx.Err() == nil {
				r.log.WarnContext(ctx, "replica scrub failed", "err", err)
			}
		}
	}
}

// Sync runs one replication round: every selected upstream image is
// brought in sync (errors of one image do not stop the others) and what
// the upstream removed is removed. It returns the round's errors joined.
func (r *Replicator) Sync(ctx context.Context) error {
	r.work.Lock()
	defer r.work.Unlock()
	r.rounds.Add(1)
	err := r.round(ctx)
	r.mu.Lock()
	r.lastRound = time.Now()
	r.roundErr = ""
	if err != nil {
		r.roundErr = err.Error()
		r.roundFailures.Add(1)
	}
	r.mu.Unlock()
	return err
}

func (r *Replicator) round(ctx context.Context) error {
	list, err := r.o.Upstream.List(ctx)
	if err != nil {
		return fmt.Errorf("list upstream images: %w", err)
	}
	selected := make(map[string]httpstore.ImageInfo)
	for _, info := range list.Images {
		if r.o.Select.Match(info) {
			selected[info.Name] = info
		}
	}
	names := make([]string, 0, len(selected))
	for n := range selected {
		names = append(names, n)
	}
	slices.Sort(names)
	var errs []error
	for _, n := range names {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := r.syncImage(ctx, n); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			r.fail(n, err)
			errs = append(errs, fmt.Errorf("image %s: %w", n, err))
		}
	}
	removed, err := r.removeGone(ctx, selected, len(list.Images) > 0)
	if err != nil {
		errs = append(errs, err)
	}
	r.mu.Lock()
	r.removed = removed
	r.mu.Unlock()
	return errors.Join(errs...)
}

// removeGone removes the replicas the upstream no longer has (or that are
// no longer selected), unless KeepDeleted.
func (r *Replicator) removeGone(ctx context.Context, selected map[string]httpstore.ImageInfo, upstreamHasImages bool) ([]string, error) {
	r.mu.Lock()
	var gone []string
	for n := range r.replicas {
		if _, ok := selected[n]; !ok {
			gone = append(gone, n)
		}
	}
	r.mu.Unlock()
	slices.Sort(gone)
	if len(gone) == 0 {
		return nil, nil
	}
	if r.o.KeepDeleted || !upstreamHasImages {
		r.mu.Lock()
		for _, n := range gone {
			if st := r.images[n]; st != nil {
				st.State = StateInSync
				st.Error = "kept: no longer on the upstream (or not selected)"
			}
		}
		r.mu.Unlock()
		return nil, nil
	}
	var errs []error
	var removed []string
	for _, n := range gone {
		err := r.o.Local.Remove(ctx, n)
		if err != nil && !errors.Is(err, image.ErrNotFound) {
			errs = append(errs, fmt.Errorf("remove replica %s: %w", n, err))
			continue
		}
		r.log.InfoContext(ctx, "replica removed: gone from the upstream or no longer selected", "image", n)
		removed = append(removed, n)
		r.mu.Lock()
		delete(r.replicas, n)
		delete(r.images, n)
		r.mu.Unlock()
	}
	if err := r.save(); err != nil {
		errs = append(errs, err)
	}
	return removed, errors.Join(errs...)
}

func (r *Replicator) status(name string) *ImageStatus {
	st := r.images[name]
	if st == nil {
		st = &ImageStatus{Name: name, State: StatePending}
		r.images[name] = st
	}
	return st
}

func (r *Replicator) fail(name string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.status(name)
	st.State = StateFailed
	st.Error = err.Error()
	r.log.Warn("replication of an image failed", "image", name, "err", err)
}

func (r *Replicator) isReplica(name string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.replicas[name]
	return ok
}

// markReplica records (durably) that the local image name is a replica,
// before anything of it is published.
func (r *Replicator) markReplica(name string) error {
	r.mu.Lock()
	if _, ok := r.replicas[name]; ok {
		r.mu.Unlock()
		return nil
	}
	r.replicas[name] = replicaRecord{}
	r.mu.Unlock()
	return r.save()
}

func (r *Replicator) save() error {
	if r.o.StateFile == "" {
		return nil
	}
	r.mu.Lock()
	sf := stateFile{Replicas: make(map[string]replicaRecord, len(r.replicas))}
	for n, rec := range r.replicas {
		sf.Replicas[n] = rec
	}
	r.mu.Unlock()
	data, err := json.MarshalIndent(sf, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(r.o.StateFile), ".replicas-*")
	if err != nil {
		return fmt.Errorf("replica state: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("replica state: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("replica state: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("replica state: %w", err)
	}
	if err := os.Rename(tmp.Name(), r.o.StateFile); err != nil {
		return fmt.Errorf("replica state: %w", err)
	}
	return nil
}

// syncImage brings one image in sync: its missing versions, the versions
// the upstream removed, its current version.
func (r *Replicator) syncImage(ctx context.Context, name string) error {
	up, err := r.o.Upstream.Versions(ctx, name)
	if errors.Is(err, image.ErrNotFound) {
		return nil // removed since the listing: the next round removes it
	}
	if err != nil {
		return fmt.Errorf("upstream versions: %w", err)
	}
	local, err := r.o.Local.Versions(name)
	if err != nil && !errors.Is(err, image.ErrNotFound) {
		return fmt.Errorf("local versions: %w", err)
	}
	if len(local) > 0 && !r.isReplica(name) {
		return fmt.Errorf("the site has an image %s of its own (not a replica): rename or remove it to replicate the upstream's", name)
	}
	upBy := make(map[int]image.Version, len(up.Versions))
	for _, v := range up.Versions {
		upBy[v.Version] = v
	}
	// A version number whose capture time differs: the upstream image was
	// removed and captured again, numbering from 1. Start over (the chunks
	// stay, so only what changed is fetched).
	for _, lv := range local {
		if uv, ok := upBy[lv.Version]; ok && !uv.Created.Equal(lv.Created) {
			r.log.InfoContext(ctx, "upstream image re-created: replica pulled again", "image", name, "version", lv.Version)
			if err := r.o.Local.Remove(ctx, name); err != nil && !errors.Is(err, image.ErrNotFound) {
				return fmt.Errorf("remove stale replica: %w", err)
			}
			local = nil
			break
		}
	}
	have := make(map[int]bool, len(local))
	maxLocal := 0
	for _, lv := range local {
		have[lv.Version] = true
		maxLocal = max(maxLocal, lv.Version)
	}
	var todo []image.Version
	for _, uv := range up.Versions {
		if have[uv.Version] {
			continue
		}
		if uv.Version < maxLocal {
			// Older than what the site holds and not here: removed at the
			// site by hand. Its number cannot be given again.
			r.log.WarnContext(ctx, "upstream version older than the replica's newest is missing at the site: not replicated",
				"image", name, "version", uv.Version)
			continue
		}
		todo = append(todo, uv)
	}
	slices.SortFunc(todo, func(a, b image.Version) int { return a.Version - b.Version })

	r.mu.Lock()
	st := r.status(name)
	st.LastAttempt = time.Now()
	st.UpstreamVersion = up.Current
	st.Error = ""
	st.ChunksDone, st.ChunksTotal, st.Bytes, st.CorruptFetched = 0, 0, 0, 0
	if len(todo) > 0 {
		st.State = StatePulling
		if st.behindSince.IsZero() || todo[0].Created.Before(st.behindSince) {
			st.behindSince = todo[0].Created
		}
	}
	r.mu.Unlock()

	if len(todo) > 0 {
		if err := r.markReplica(name); err != nil {
			return err
		}
	}
	for _, uv := range todo {
		if err := r.pullVersion(ctx, name, uv.Version); err != nil {
			return fmt.Errorf("version %d: %w", uv.Version, err)
		}
	}
	if !r.o.KeepDeleted {
		for _, lv := range local {
			if _, ok := upBy[lv.Version]; ok {
				continue
			}
			if err := r.o.Local.Remove(ctx, image.Ref(name, lv.Version)); err != nil && !errors.Is(err, image.ErrNotFound) {
				return fmt.Errorf("remove version %d (removed upstream): %w", lv.Version, err)
			}
			r.log.InfoContext(ctx, "replica version removed (removed upstream)", "image", name, "version", lv.Version)
		}
	}
	// The upstream's current version (a rollback there rolls back here).
	cur, err := r.o.Local.Versions(name)
	if err != nil {
		return fmt.Errorf("local versions: %w", err)
	}
	localCur := 0
	for _, v := range cur {
		if v.Current {
			localCur = v.Version
		}
	}
	if localCur != up.Current {
		if _, ok := upBy[up.Current]; ok && slices.ContainsFunc(cur, func(v image.Version) bool { return v.Version == up.Current }) {
			if _, err := r.o.Local.Rollback(ctx, name, up.Current); err != nil {
				return fmt.Errorf("make version %d current: %w", up.Current, err)
			}
			localCur = up.Current
		}
	}
	now := time.Now()
	r.mu.Lock()
	st.State = StateInSync
	st.Version = localCur
	st.Versions = len(cur)
	st.LastSuccess = now
	st.behindSince = time.Time{}
	r.replicas[name] = replicaRecord{LastSuccess: now}
	r.mu.Unlock()
	return r.save()
}

// pullVersion fetches what version v of name lacks at the site and
// publishes it as version v.
func (r *Replicator) pullVersion(ctx context.Context, name string, v int) error {
	ref := image.Ref(name, v)
	m, err := r.o.Upstream.Manifest(ctx, ref)
	if err != nil {
		return fmt.Errorf("upstream manifest: %w", err)
	}
	if m.Name != name {
		return fmt.Errorf("upstream sent the manifest of %q for %s", m.Name, ref)
	}
	if err := m.Validate(); err != nil {
		return fmt.Errorf("upstream manifest: %w", err)
	}
	hashes := m.ChunkHashes()
	for pass := 0; ; pass++ {
		// Missing also refreshes the time of the chunks present, so the
		// site's GC grace period covers them until the publish.
		miss, err := r.o.Local.Missing(ctx, hashes)
		if err != nil {
			return fmt.Errorf("missing chunks: %w", err)
		}
		if len(miss) == 0 {
			break
		}
		if pass == publishPasses {
			return fmt.Errorf("%d chunks still missing after %d passes", len(miss), pass)
		}
		r.mu.Lock()
		r.status(name).ChunksTotal += len(miss)
		r.mu.Unlock()
		if err := r.fetch(ctx, name, miss); err != nil {
			return err
		}
	}
	return r.publishAs(ctx, m, v)
}

// fetch pulls the given chunks with bounded parallelism.
func (r *Replicator) fetch(ctx context.Context, name string, miss map[image.Hash]struct{}) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(r.o.Parallel)
	for h := range miss {
		g.Go(func() error {
			n, err := r.fetchOne(gctx, name, h)
			if err != nil {
				return err
			}
			r.mu.Lock()
			st := r.status(name)
			st.ChunksDone++
			st.Bytes += int64(n)
			r.mu.Unlock()
			return nil
		})
	}
	return g.Wait()
}

// fetchOne gets chunk h from the upstream, verifies it and stores it,
// trying again (with backoff) after a transfer error or a chunk that does
// not hash to h. It returns the bytes stored.
func (r *Replicator) fetchOne(ctx context.Context, name string, h image.Hash) (int, error) {
	delay := r.o.Backoff
	var last error
	for attempt := 1; attempt <= r.o.Attempts; attempt++ {
		data, err := r.o.Upstream.Get(ctx, h, nil)
		if err == nil {
			if verr := r.verify(h, data); verr != nil {
				r.corruptUp.Add(1)
				if name != "" {
					r.mu.Lock()
					r.status(name).CorruptFetched++
					r.mu.Unlock()
				}
				r.log.WarnContext(ctx, "chunk from the upstream refused: does not hash to its name", "chunk", h.String(), "attempt", attempt, "err", verr)
				err = fmt.Errorf("chunk %s from the upstream: %w", h, verr)
			} else {
				if err := r.o.Local.Put(ctx, h, data); err != nil {
					return 0, fmt.Errorf("store chunk %s: %w", h, err)
				}
				r.chunks.Add(1)
				r.bytes.Add(int64(len(data)))
				return len(data), nil
			}
		}
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		last = err
		if errors.Is(err, image.ErrNotFound) {
			break // not on the upstream (collected meanwhile): next round
		}
		if attempt == r.o.Attempts {
			break
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(delay):
		}
		delay = min(2*delay, maxBackoff)
	}
	return 0, fmt.Errorf("chunk %s: %w", h, last)
}

// verify checks that a chunk hashes to h, with a pooled verifier.
func (r *Replicator) verify(h image.Hash, data []byte) error {
	var v *image.Verifier
	select {
	case v = <-r.verifiers:
	default:
		var err error
		if v, err = image.NewVerifier(); err != nil {
			return err
		}
	}
	err := v.Verify(h, data)
	select {
	case r.verifiers <- v:
	default:
		v.Close()
	}
	return err
}

// publishAs publishes m as version v of its image, keeping the upstream's
// numbering: the site's next version number is the one after the last it
// ever gave; when that is below v (versions removed upstream before the
// site saw them) placeholder versions take the numbers in between and are
// removed once v is published.
func (r *Replicator) publishAs(ctx context.Context, m *image.Manifest, v int) error {
	last, err := r.o.Local.LastVersion(ctx, m.Name)
	if err != nil {
		return fmt.Errorf("last version: %w", err)
	}
	if last >= v {
		return fmt.Errorf("the site already gave version numbers up to %d: remove the replica (preboot image rm %s at the site) to pull it again", last, m.Name)
	}
	var pads []int
	for n := last + 1; n < v; n++ {
		p := *m
		p.Created = m.Created.Add(time.Duration(n-v) * time.Nanosecond)
		got, err := r.o.Local.PublishVersion(ctx, &p)
		if err != nil {
			return fmt.Errorf("publish placeholder %d: %w", n, err)
		}
		pads = append(pads, got)
	}
	got, err := r.o.Local.PublishVersion(ctx, m)
	if err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	for _, p := range pads {
		if err := r.o.Local.Remove(ctx, image.Ref(m.Name, p)); err != nil {
			return fmt.Errorf("remove placeholder %d: %w", p, err)
		}
	}
	if got != v {
		return fmt.Errorf("published as version %d, upstream's is %d", got, v)
	}
	r.log.InfoContext(ctx, "replica version published", "image", m.Name, "version", v)
	return nil
}

// Status reports the replication state.
func (r *Replicator) Status() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	s := Status{
		Upstream: r.o.UpstreamURL, Select: r.o.Select.String(), KeepDeleted: r.o.KeepDeleted,
		Interval: r.o.Interval.String(), LastRound: r.lastRound, RoundError: r.roundErr,
		Removed: slices.Clone(r.removed), Images: []ImageStatus{},
	}
	if r.lastScrub != nil {
		sc := *r.lastScrub
		s.LastScrub = &sc
	}
	for _, st := range r.images {
		c := *st
		if !st.behindSince.IsZero() {
			c.LagSeconds = max(0, now.Sub(st.behindSince).Seconds())
		}
		s.Images = append(s.Images, c)
	}
	slices.SortFunc(s.Images, func(a, b ImageStatus) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	return s
}
