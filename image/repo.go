package image

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// maxStoredChunk bounds a compressed chunk: zstd never expands a block by
// more than a few bytes per 128 KiB, so this leaves ample room.
const maxStoredChunk = MaxChunkSize + MaxChunkSize/64 + 4096

// ErrExists is returned by Import when the image name is taken.
var ErrExists = errors.New("image exists")

// ErrQuota: storing more would take the repository past its size limit
// (RepoOptions.MaxBytes). Errors wrapping it are *QuotaError.
var ErrQuota = errors.New("image repository quota exceeded")

// QuotaError names the sizes of a refused write.
type QuotaError struct {
	Stored int64 // bytes of chunks stored now
	Adding int64 // bytes the write would add
	Limit  int64
}

func (e *QuotaError) Error() string {
	return fmt.Sprintf("%v: %d bytes stored + %d bytes to add > limit %d bytes (imaging.max_repo_size); remove images or versions and run `preboot image gc`",
		ErrQuota, e.Stored, e.Adding, e.Limit)
}

func (e *QuotaError) Unwrap() error { return ErrQuota }

// Repo is a repository of images on a Backend: a local directory
// (OpenRepo) or an S3-compatible bucket (OpenRepoBackend with
// image/s3store). Chunks are objects named by their hash; Publish checks
// every chunk of a manifest is stored and makes them durable (Sync) before
// it writes the manifest, the last object of a publish.
type Repo struct {
	root string
	obj  Backend
	log  *slog.Logger
	// grace protects recent chunks from GC (captures in flight).
	grace time.Duration
	// mu orders GC (exclusive) against Put/Missing/Publish (shared), so GC
	// never deletes a chunk between a capture's upload and its publish in
	// this process. Other processes are covered by the grace period.
	mu sync.RWMutex
	// pubMu orders version numbering and head.json updates.
	pubMu sync.Mutex
	// maxBytes is the quota (0: none); stored counts chunk bytes once
	// storedOnce has walked the repository.
	maxBytes   int64
	storedOnce sync.Once
	storedErr  error
	stored     atomic.Int64
	openJob    func(ctx context.Context, id int64) (bool, error)
	// recordSeq names upload record objects on backends without append.
	recordSeq atomic.Int64
}

// RepoOptions configure OpenRepo.
type RepoOptions struct {
	Logger *slog.Logger
	// GCGrace: GC keeps unreferenced chunks younger than this (default 1h;
	// negative means 0). Missing refreshes the time of chunks it reports
	// present, so dedupe hits of a running capture are protected too.
	GCGrace time.Duration
	// MaxBytes bounds the bytes of stored chunks (0: no limit): a Put (a
	// capture's upload, an import) past it fails with a *QuotaError.
	MaxBytes int64
	// OpenJob tells GC whether job id is still open: the chunks its upload
	// record names are then kept; records of other jobs are dropped. Nil
	// keeps records younger than a day (offline GC).
	OpenJob func(ctx context.Context, id int64) (bool, error)
}

// OpenRepo opens (creating if needed) the repository at dir.
func OpenRepo(dir string, opts RepoOptions) (*Repo, error) {
	b, err := newDirBackend(dir)
	if err != nil {
		return nil, fmt.Errorf("open repository: %w", err)
	}
	r := newRepo(b, opts)
	if err := r.migrate(); err != nil {
		return nil, fmt.Errorf("open repository: migrate to versioned images: %w", err)
	}
	return r, nil
}

// OpenRepoBackend opens a repository on b (an object store: see package
// image/s3store). Root is then b.String().
func OpenRepoBackend(b Backend, opts RepoOptions) *Repo {
	return newRepo(b, opts)
}

func newRepo(b Backend, opts RepoOptions) *Repo {
	r := &Repo{root: b.String(), obj: b, log: opts.Logger, grace: opts.GCGrace, maxBytes: opts.MaxBytes, openJob: opts.OpenJob}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	switch {
	case r.grace == 0:
		r.grace = time.Hour
	case r.grace < 0:
		r.grace = 0
	}
	if sw, ok := b.(singleWriter); ok && sw.SingleWriter() {
		r.log.Warn("image store does not honour conditional writes: only this server may publish, roll back or remove images in it; a second server sharing it could give two publishes the same version number",
			"store", b.String())
	}
	return r
}

// Root is the repository directory (the location of another Backend).
func (r *Repo) Root() string { return r.root }

// Backend is where the repository's objects are.
func (r *Repo) Backend() Backend { return r.obj }

func chunkKey(h Hash) string {
	s := h.String()
	return "chunks/" + s[:2] + "/" + s
}

// local: the backend is the directory, where a Stat costs microseconds;
// on an object store the per-chunk requests of Missing and Publish run in
// parallel.
func (r *Repo) local() bool {
	_, ok := r.obj.(*dirBackend)
	return ok
}

// statChunks calls fn with the Stat of every hash, in parallel on a
// remote backend. fn may run concurrently; its first error stops the rest.
func (r *Repo) statChunks(ctx context.Context, hashes []Hash, fn func(Hash, ObjectInfo, error) error) error {
	if r.local() || len(hashes) < 2 {
		for _, h := range hashes {
			if err := ctx.Err(); err != nil {
				return err
			}
			oi, err := r.obj.Stat(ctx, chunkKey(h))
			if err := fn(h, oi, err); err != nil {
				return err
			}
		}
		return nil
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	work := make(chan Hash)
	var wg sync.WaitGroup
	for range min(remoteParallel, len(hashes)) {
		wg.Go(func() {
			for h := range work {
				oi, err := r.obj.Stat(ctx, chunkKey(h))
				if err := fn(h, oi, err); err != nil {
					cancel(err)
				}
			}
		})
	}
feed:
	for _, h := range hashes {
		select {
		case work <- h:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	return context.Cause(ctx)
}

// remoteParallel bounds the concurrent requests of one Missing or Publish
// to a remote backend.
const remoteParallel = 16

// storedBytes is the size of every chunk file, walked once then kept up
// to date by Put and GC.
func (r *Repo) storedBytes() (int64, error) {
	r.storedOnce.Do(func() {
		var total int64
		r.storedErr = r.walkChunks(context.Background(), func(_ Hash, _ bool, oi ObjectInfo) error {
			total += oi.Size
			return nil
		})
		r.stored.Add(total)
	})
	return r.stored.Load(), r.storedErr
}

// reserve accounts n new bytes against the quota; release undoes it.
func (r *Repo) reserve(n int64) error {
	if r.maxBytes <= 0 {
		return nil
	}
	if _, err := r.storedBytes(); err != nil {
		return fmt.Errorf("repository size: %w", err)
	}
	if now := r.stored.Add(n); now > r.maxBytes {
		r.stored.Add(-n)
		return &QuotaError{Stored: now - n, Adding: n, Limit: r.maxBytes}
	}
	return nil
}

// MaxBytes is the repository's size limit (0: none).
func (r *Repo) MaxBytes() int64 { return r.maxBytes }

// Missing implements ChunkStore.
func (r *Repo) Missing(ctx context.Context, hashes []Hash) (map[Hash]struct{}, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	missing := make(map[Hash]struct{})
	var mmu sync.Mutex
	now := time.Now()
	err := r.statChunks(ctx, hashes, func(h Hash, oi ObjectInfo, err error) error {
		if errors.Is(err, ErrNotFound) {
			mmu.Lock()
			missing[h] = struct{}{}
			mmu.Unlock()
			return nil
		}
		if err != nil {
			return fmt.Errorf("chunk %s: %w", h, err)
		}
		// Refresh old chunks so a concurrent GC's grace period covers
		// the capture that is about to reference them.
		if r.grace > 0 && now.Sub(oi.ModTime) > r.grace/2 {
			if err := r.obj.Touch(ctx, chunkKey(h)); err != nil {
				return fmt.Errorf("chunk %s: %w", h, err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return missing, nil
}

// Put implements ChunkStore. It trusts data to hash to h; callers that
// receive chunks from elsewhere check them with VerifyChunk first.
func (r *Repo) Put(ctx context.Context, h Hash, data []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(data) > maxStoredChunk {
		return fmt.Errorf("put chunk %s: %d bytes, limit %d", h, len(data), maxStoredChunk)
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	key := chunkKey(h)
	if _, err := r.obj.Stat(ctx, key); err == nil {
		return nil
	}
	if err := r.reserve(int64(len(data))); err != nil {
		return fmt.Errorf("put chunk %s: %w", h, err)
	}
	if err := r.obj.Put(ctx, key, data); err != nil {
		if r.maxBytes > 0 {
			r.stored.Add(-int64(len(data)))
		}
		return fmt.Errorf("put chunk %s: %w", h, err)
	}
	return nil
}

// writeFileSync writes data to a temp file next to p, fsyncs it and renames
// it to p. The directory is not synced (Publish does that).
func writeFileSync(p string, data []byte) error { return placeFileSync(p, data, os.Rename) }

// createFileSync is writeFileSync that never replaces p: link(2) fails
// with fs.ErrExist where a file exists, so of two writers one wins, whole.
func createFileSync(p string, data []byte) error { return placeFileSync(p, data, os.Link) }

// placeFileSync writes data to a temp file next to p, fsyncs it and puts
// it at p with place (os.Rename or os.Link); the temp name never stays.
func placeFileSync(p string, data []byte, place func(oldpath, newpath string) error) (err error) {
	f, err := os.CreateTemp(filepath.Dir(p), ".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after a rename: already gone
	defer func() {
		if err != nil {
			f.Close()
		}
	}()
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	return place(tmp, p)
}

// OpenChunk opens a stored chunk for streaming (e.g. straight to a network
// connection) and returns its size. The caller closes it. On the
// directory backend it is an *os.File (sendfile where the connection
// allows it).
func (r *Repo) OpenChunk(ctx context.Context, h Hash) (io.ReadCloser, int64, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	f, size, err := r.obj.Open(ctx, chunkKey(h))
	if errors.Is(err, ErrNotFound) {
		return nil, 0, fmt.Errorf("chunk %s: %w", h, ErrNotFound)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("chunk %s: %w", h, err)
	}
	return f, size, nil
}

// Get implements ChunkStore.
func (r *Repo) Get(ctx context.Context, h Hash, dst []byte) ([]byte, error) {
	f, size, err := r.OpenChunk(ctx, h)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if size > maxStoredChunk {
		return nil, fmt.Errorf("chunk %s: %w: %d bytes stored", h, ErrCorruptChunk, size)
	}
	n := int(size)
	if cap(dst) < n {
		dst = make([]byte, n)
	}
	dst = dst[:n]
	if _, err := io.ReadFull(f, dst); err != nil {
		return nil, fmt.Errorf("chunk %s: %w", h, err)
	}
	return dst, nil
}

// syncDir fsyncs a directory.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Publish implements Publisher: it publishes m as a new version of its
// image (see PublishVersion).
func (r *Repo) Publish(ctx context.Context, m *Manifest) error {
	_, err := r.PublishVersion(ctx, m)
	return err
}

// PublishVersion validates m, checks every chunk is in the repository,
// makes them durable, then atomically adds version N+1 of image m.Name and
// makes it current. It returns the version. A manifest identical to the
// current version's (a retried publish) adds nothing and returns that
// version.
func (r *Repo) PublishVersion(ctx context.Context, m *Manifest) (int, error) {
	if err := m.Validate(); err != nil {
		return 0, fmt.Errorf("publish: %w", err)
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	hashes := m.ChunkHashes()
	err := r.statChunks(ctx, hashes, func(h Hash, _ ObjectInfo, err error) error {
		if err != nil {
			return fmt.Errorf("publish %s: %w: %s: %w", m.Name, ErrMissingChunks, h, err)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	if err := r.obj.Sync(ctx); err != nil {
		return 0, fmt.Errorf("publish %s: sync chunks: %w", m.Name, err)
	}
	var buf bytes.Buffer
	if err := m.Encode(&buf); err != nil {
		return 0, err
	}
	r.pubMu.Lock()
	defer r.pubMu.Unlock()
	h, err := r.readHead(ctx, m.Name)
	switch {
	case errors.Is(err, ErrNotFound):
	case err != nil:
		return 0, fmt.Errorf("publish %s: %w", m.Name, err)
	default:
		if cur, err := r.readObject(ctx, versionKey(m.Name, h.Current)); err == nil && bytes.Equal(cur, buf.Bytes()) {
			return h.Current, nil
		}
	}
	// The next number past head's "last" and past every version present
	// (versions without a head: a crash). Another server may take it
	// meanwhile: createVersion then moves on to the next.
	v := h.Last + 1
	vs, err := r.versionNumbers(ctx, m.Name)
	if err != nil {
		return 0, fmt.Errorf("publish %s: %w", m.Name, err)
	}
	if len(vs) > 0 && vs[len(vs)-1] >= v {
		v = vs[len(vs)-1] + 1
	}
	if v, err = r.createVersion(ctx, m.Name, v, buf.Bytes()); err != nil {
		return 0, fmt.Errorf("publish %s: %w", m.Name, err)
	}
	if err := r.obj.Sync(ctx); err != nil {
		return 0, fmt.Errorf("publish %s: %w", m.Name, err)
	}
	// The highest version published is current: a concurrent publish that
	// took a higher number and moved head.json first stays current.
	nh, err := r.updateHead(ctx, m.Name, func(h head, exists bool) (head, bool, error) {
		if exists && h.Last >= v {
			return h, false, nil
		}
		return head{Current: v, Last: v}, true, nil
	})
	if err != nil {
		return 0, fmt.Errorf("publish %s: %w", m.Name, err)
	}
	if nh.Current != v {
		r.log.InfoContext(ctx, "image version published; a higher one published meanwhile stays current", "image", m.Name, "version", v, "current", nh.Current)
	}
	r.log.InfoContext(ctx, "image published", "image", m.Name, "version", v, "chunks", len(hashes), "used", m.Sizes.Used)
	return v, nil
}

// Manifest returns the manifest of an image reference: NAME (its current
// version) or NAME@N.
func (r *Repo) Manifest(ref string) (*Manifest, error) {
	name, v, err := r.Resolve(ref)
	if err != nil {
		return nil, err
	}
	return r.readVersion(context.Background(), name, v)
}

// List returns the names of all published images, sorted.
func (r *Repo) List() ([]string, error) {
	return r.list(context.Background())
}

func (r *Repo) list(ctx context.Context) ([]string, error) {
	var names []string
	err := r.obj.List(ctx, "images/", func(oi ObjectInfo) error {
		name, ok := strings.CutSuffix(strings.TrimPrefix(oi.Key, "images/"), "/head.json")
		if ok && ValidName(name) == nil {
			names = append(names, name)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	slices.Sort(names)
	return slices.Compact(names), nil
}

// Remove deletes an image: NAME removes every version, NAME@N that version
// only (its chunks stay until GC). Removing the current version makes the
// newest remaining one current; removing the last one removes the image.
func (r *Repo) Remove(ctx context.Context, ref string) error {
	name, v, err := ParseRef(ref)
	if err != nil {
		return err
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	r.pubMu.Lock()
	defer r.pubMu.Unlock()
	h, err := r.readHead(ctx, name)
	if err != nil {
		return err
	}
	if v != 0 {
		vs, err := r.versionNumbers(ctx, name)
		if err != nil {
			return fmt.Errorf("remove %s: %w", ref, err)
		}
		if !slices.Contains(vs, v) {
			return fmt.Errorf("image %s: %w", ref, ErrNotFound)
		}
		if len(vs) > 1 {
			// Another server may publish or roll back meanwhile: the
			// head is moved off v only if it still names v.
			h, err = r.updateHead(ctx, name, func(h head, exists bool) (head, bool, error) {
				if !exists || h.Current != v {
					return h, false, nil
				}
				rest := slices.DeleteFunc(slices.Clone(vs), func(x int) bool { return x == v })
				h.Current = rest[len(rest)-1]
				return h, true, nil
			})
			if err != nil {
				return fmt.Errorf("remove %s: %w", ref, err)
			}
			if err := r.obj.Delete(ctx, versionKey(name, v)); err != nil {
				return fmt.Errorf("remove %s: %w", ref, err)
			}
			if err := r.obj.Sync(ctx); err != nil {
				return fmt.Errorf("remove %s: %w", ref, err)
			}
			r.log.InfoContext(ctx, "image version removed", "image", name, "version", v, "current", h.Current)
			return nil
		}
	}
	if err := r.removeImage(ctx, name); err != nil {
		return fmt.Errorf("remove %s: %w", ref, err)
	}
	r.log.InfoContext(ctx, "image removed", "image", name)
	return nil
}

// GCStats reports what GC did.
type GCStats struct {
	Kept       int   `json:"kept"`
	Removed    int   `json:"removed"`
	FreedBytes int64 `json:"freed_bytes"`
	// TempRemoved counts leftover temporary files and directories (of a
	// Put, publish or remove cut short by a crash); RecordsDropped the
	// upload records of jobs no longer open; Protected the unreferenced
	// chunks kept for open jobs' records or the grace period.
	TempRemoved    int `json:"temp_removed"`
	RecordsDropped int `json:"records_dropped"`
	Protected      int `json:"protected"`
}

// recordTTL: without RepoOptions.OpenJob, upload records older than this
// are considered abandoned.
const recordTTL = 24 * time.Hour

// GC deletes chunks no version of any image references, unless they are
// named by the upload record of a job still open (RepoOptions.OpenJob) or
// younger than the grace period (covers uploads with an admin token, which
// keep no record); it drops the records of jobs no longer open and removes
// leftover temporary files older than the grace period. If any manifest
// cannot be read GC deletes nothing: a chunk it would free might belong to
// it. Put, Missing, Publish and Remove wait while GC runs.
func (r *Repo) GC(ctx context.Context) (GCStats, error) {
	var st GCStats
	r.mu.Lock()
	defer r.mu.Unlock()
	refs, err := r.references(ctx)
	if err != nil {
		return st, fmt.Errorf("gc: %w", err)
	}
	protected, orphans, err := r.liveUploads(ctx, &st)
	if err != nil {
		return st, fmt.Errorf("gc: %w", err)
	}
	cutoff := time.Now().Add(-r.grace)
	var kept int64
	err = r.walkChunks(ctx, func(h Hash, ok bool, oi ObjectInfo) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if ok {
			if _, used := refs[h]; used {
				st.Kept++
				kept += oi.Size
				return nil
			}
			if _, live := protected[h]; live {
				st.Kept++
				st.Protected++
				kept += oi.Size
				return nil
			}
		}
		// Chunks a dead job uploaded (its record says so) and nothing
		// references are orphans now, however young; the grace period
		// protects only uploads that keep no record (admin tokens).
		if _, orphan := orphans[h]; !(ok && orphan) && oi.ModTime.After(cutoff) {
			st.Kept++
			st.Protected++
			kept += oi.Size
			return nil
		}
		if err := r.obj.Delete(ctx, oi.Key); err != nil {
			return err
		}
		if ok {
			st.Removed++
			st.FreedBytes += oi.Size
		} else {
			st.TempRemoved++
		}
		return nil
	})
	if err != nil {
		return st, fmt.Errorf("gc: %w", err)
	}
	if d, ok := r.obj.(*dirBackend); ok {
		if err := d.removeTemps(cutoff, &st); err != nil {
			return st, fmt.Errorf("gc: %w", err)
		}
	}
	if err := r.obj.Sync(ctx); err != nil {
		return st, fmt.Errorf("gc: %w", err)
	}
	if r.maxBytes > 0 {
		r.storedOnce.Do(func() {})
		r.stored.Store(kept)
	}
	r.log.InfoContext(ctx, "repository gc", "kept", st.Kept, "removed", st.Removed, "freed", st.FreedBytes,
		"protected", st.Protected, "temp_removed", st.TempRemoved, "records_dropped", st.RecordsDropped)
	return st, nil
}

// liveUploads collects the hashes of the upload records of open jobs
// (live) and of the others (orphans: what jobs that ended without
// publishing left), and drops the records of the jobs no longer open.
func (r *Repo) liveUploads(ctx context.Context, st *GCStats) (live, orphans map[Hash]struct{}, err error) {
	ids, err := r.uploadJobs(ctx)
	if err != nil {
		return nil, nil, err
	}
	live = make(map[Hash]struct{})
	orphans = make(map[Hash]struct{})
	for _, id := range ids {
		hs, mod, err := r.uploads(ctx, id)
		if err != nil {
			return nil, nil, err
		}
		var open bool
		if r.openJob != nil {
			if open, err = r.openJob(ctx, id); err != nil {
				return nil, nil, fmt.Errorf("job %d: %w", id, err)
			}
		} else {
			open = time.Since(mod) < recordTTL
		}
		if !open {
			for h := range hs {
				orphans[h] = struct{}{}
			}
			if err := r.DropUploads(id); err != nil {
				return nil, nil, err
			}
			st.RecordsDropped++
			continue
		}
		for h := range hs {
			live[h] = struct{}{}
		}
	}
	return live, orphans, nil
}

// references maps every chunk hash to the image versions (NAME@N) that
// use it.
func (r *Repo) references(ctx context.Context) (map[Hash][]string, error) {
	names, err := r.list(ctx)
	if err != nil {
		return nil, err
	}
	refs := make(map[Hash][]string)
	for _, n := range names {
		vs, err := r.versionNumbers(ctx, n)
		if err != nil {
			return nil, err
		}
		for _, v := range vs {
			m, err := r.readVersion(ctx, n, v)
			if errors.Is(err, ErrNotFound) {
				continue // removed meanwhile (GC excludes removals)
			}
			if err != nil {
				return nil, err
			}
			for _, h := range m.ChunkHashes() {
				refs[h] = append(refs[h], Ref(n, v))
			}
		}
	}
	return refs, nil
}

// walkChunks calls fn for every object under chunks/; ok tells whether
// its name is a hash (else it is a temporary file or stray).
func (r *Repo) walkChunks(ctx context.Context, fn func(h Hash, ok bool, oi ObjectInfo) error) error {
	return r.obj.List(ctx, "chunks/", func(oi ObjectInfo) error {
		dir, name, found := strings.Cut(strings.TrimPrefix(oi.Key, "chunks/"), "/")
		h, perr := ParseHash(name)
		ok := found && perr == nil && strings.HasPrefix(name, dir) && len(dir) == 2
		return fn(h, ok, oi)
	})
}

// ImageUsage is one image's share of the repository.
type ImageUsage struct {
	Name    string `json:"name"`
	Logical int64  `json:"logical"`
	Used    int64  `json:"used"`
	// Stored is the compressed size of the distinct chunks of all its
	// versions; Unique the part no other image references (what removing
	// the image frees); Shared the rest.
	Stored int64 `json:"stored"`
	Unique int64 `json:"unique"`
	Shared int64 `json:"shared"`
	Chunks int   `json:"chunks"`
	// Version is the current version; Versions how many are kept.
	Version  int `json:"version"`
	Versions int `json:"versions"`
}

// Usage is the repository's space accounting.
type Usage struct {
	Images []ImageUsage `json:"images"`
	// Chunks and StoredBytes count every chunk file; Garbage is what GC
	// would free (ignoring the grace period).
	Chunks       int   `json:"chunks"`
	StoredBytes  int64 `json:"stored_bytes"`
	GarbageBytes int64 `json:"garbage_bytes"`
}

// Usage computes space accounting over all images.
func (r *Repo) Usage(ctx context.Context) (Usage, error) {
	var u Usage
	refs, err := r.references(ctx)
	if err != nil {
		return u, fmt.Errorf("usage: %w", err)
	}
	sizes := make(map[Hash]int64)
	err = r.walkChunks(ctx, func(h Hash, ok bool, oi ObjectInfo) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		u.StoredBytes += oi.Size
		if !ok {
			u.GarbageBytes += oi.Size
			return nil
		}
		u.Chunks++
		sizes[h] = oi.Size
		if _, used := refs[h]; !used {
			u.GarbageBytes += oi.Size
		}
		return nil
	})
	if err != nil {
		return u, fmt.Errorf("usage: %w", err)
	}
	names, err := r.list(ctx)
	if err != nil {
		return u, err
	}
	for _, n := range names {
		name, cur, err := r.resolve(ctx, n)
		if errors.Is(err, ErrNotFound) {
			continue // removed meanwhile
		}
		if err != nil {
			return u, fmt.Errorf("usage: %w", err)
		}
		m, err := r.readVersion(ctx, name, cur)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return u, fmt.Errorf("usage: %w", err)
		}
		iu := ImageUsage{Name: n, Logical: m.Sizes.Logical, Used: m.Sizes.Used, Version: cur}
		vs, err := r.versionNumbers(ctx, n)
		if err != nil {
			return u, fmt.Errorf("usage: %w", err)
		}
		iu.Versions = len(vs)
		mine := make(map[Hash]struct{})
		for _, v := range vs {
			vm, err := r.readVersion(ctx, n, v)
			if errors.Is(err, ErrNotFound) {
				continue
			}
			if err != nil {
				return u, fmt.Errorf("usage: %w", err)
			}
			for _, h := range vm.ChunkHashes() {
				mine[h] = struct{}{}
			}
		}
		for h := range mine {
			sz := sizes[h]
			iu.Chunks++
			iu.Stored += sz
			others := false
			for _, ref := range refs[h] {
				if RefName(ref) != n {
					others = true
					break
				}
			}
			if others {
				iu.Shared += sz
			} else {
				iu.Unique += sz
			}
		}
		u.Images = append(u.Images, iu)
	}
	return u, nil
}
