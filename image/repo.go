package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// maxStoredChunk bounds a compressed chunk: zstd never expands a block by
// more than a few bytes per 128 KiB, so this leaves ample room.
const maxStoredChunk = MaxChunkSize + MaxChunkSize/64 + 4096

// ErrExists is returned by Import when the image name is taken.
var ErrExists = errors.New("image exists")

// Repo is a repository of images on a local directory:
//
//	ROOT/chunks/ab/abcdef…   one zstd frame per chunk, named by its hash
//	ROOT/images/NAME/manifest.json
//
// Chunks are written to a temporary file, fsynced, then renamed into
// place, so a chunk file that exists is complete. Publish makes the chunk
// directories durable (syncfs) before it atomically writes the manifest.
type Repo struct {
	root string
	log  *slog.Logger
	// grace protects recent chunks from GC (captures in flight).
	grace time.Duration
	// mu orders GC (exclusive) against Put/Missing/Publish (shared), so GC
	// never deletes a chunk between a capture's upload and its publish in
	// this process. Other processes are covered by the grace period.
	mu sync.RWMutex
}

// RepoOptions configure OpenRepo.
type RepoOptions struct {
	Logger *slog.Logger
	// GCGrace: GC keeps unreferenced chunks younger than this (default 1h;
	// negative means 0). Missing refreshes the time of chunks it reports
	// present, so dedupe hits of a running capture are protected too.
	GCGrace time.Duration
}

// OpenRepo opens (creating if needed) the repository at dir.
func OpenRepo(dir string, opts RepoOptions) (*Repo, error) {
	r := &Repo{root: dir, log: opts.Logger, grace: opts.GCGrace}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	switch {
	case r.grace == 0:
		r.grace = time.Hour
	case r.grace < 0:
		r.grace = 0
	}
	for _, d := range []string{"chunks", "images", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, fmt.Errorf("open repository: %w", err)
		}
	}
	for i := range 256 {
		if err := os.MkdirAll(filepath.Join(dir, "chunks", fmt.Sprintf("%02x", i)), 0o755); err != nil {
			return nil, fmt.Errorf("open repository: %w", err)
		}
	}
	return r, nil
}

// Root is the repository directory.
func (r *Repo) Root() string { return r.root }

func (r *Repo) chunkPath(h Hash) string {
	s := h.String()
	return filepath.Join(r.root, "chunks", s[:2], s)
}

func (r *Repo) manifestPath(name string) string {
	return filepath.Join(r.root, "images", name, "manifest.json")
}

// Missing implements ChunkStore.
func (r *Repo) Missing(ctx context.Context, hashes []Hash) (map[Hash]struct{}, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	missing := make(map[Hash]struct{})
	now := time.Now()
	for _, h := range hashes {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		p := r.chunkPath(h)
		fi, err := os.Stat(p)
		if errors.Is(err, fs.ErrNotExist) {
			missing[h] = struct{}{}
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("chunk %s: %w", h, err)
		}
		// Refresh old chunks so a concurrent GC's grace period covers
		// the capture that is about to reference them.
		if r.grace > 0 && now.Sub(fi.ModTime()) > r.grace/2 {
			if err := os.Chtimes(p, now, now); err != nil {
				return nil, fmt.Errorf("chunk %s: %w", h, err)
			}
		}
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
	p := r.chunkPath(h)
	if _, err := os.Stat(p); err == nil {
		return nil
	}
	if err := writeFileSync(p, data); err != nil {
		return fmt.Errorf("put chunk %s: %w", h, err)
	}
	return nil
}

// writeFileSync writes data to a temp file next to p, fsyncs it and renames
// it to p. The directory is not synced (Publish does that).
func writeFileSync(p string, data []byte) (err error) {
	f, err := os.CreateTemp(filepath.Dir(p), ".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
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
	return os.Rename(tmp, p)
}

// OpenChunk opens a stored chunk for streaming (e.g. straight to a network
// connection) and returns its size. The caller closes the file.
func (r *Repo) OpenChunk(ctx context.Context, h Hash) (*os.File, int64, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	f, err := os.Open(r.chunkPath(h))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, fmt.Errorf("chunk %s: %w", h, ErrNotFound)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("chunk %s: %w", h, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("chunk %s: %w", h, err)
	}
	return f, fi.Size(), nil
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

// syncFS flushes the whole filesystem holding the repository, which makes
// every chunk rename durable in one call.
func (r *Repo) syncFS() error {
	d, err := os.Open(r.root)
	if err != nil {
		return err
	}
	defer d.Close()
	return unix.Syncfs(int(d.Fd()))
}

// Publish implements Publisher: it validates m, checks every chunk is in
// the repository, makes them durable, then atomically writes (or replaces)
// images/NAME/manifest.json.
func (r *Repo) Publish(ctx context.Context, m *Manifest) error {
	if err := m.Validate(); err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	hashes := m.ChunkHashes()
	for _, h := range hashes {
		if err := ctx.Err(); err != nil {
			return err
		}
		if _, err := os.Stat(r.chunkPath(h)); err != nil {
			return fmt.Errorf("publish %s: %w: %s: %w", m.Name, ErrMissingChunks, h, err)
		}
	}
	if err := r.syncFS(); err != nil {
		return fmt.Errorf("publish %s: sync chunks: %w", m.Name, err)
	}
	dir := filepath.Join(r.root, "images", m.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("publish %s: %w", m.Name, err)
	}
	var buf strings.Builder
	if err := m.Encode(&buf); err != nil {
		return err
	}
	if err := writeFileSync(r.manifestPath(m.Name), []byte(buf.String())); err != nil {
		return fmt.Errorf("publish %s: %w", m.Name, err)
	}
	for _, d := range []string{dir, filepath.Join(r.root, "images")} {
		if err := syncDir(d); err != nil {
			return fmt.Errorf("publish %s: %w", m.Name, err)
		}
	}
	r.log.InfoContext(ctx, "image published", "image", m.Name, "chunks", len(hashes), "used", m.Sizes.Used)
	return nil
}

// Get returns the manifest of image name.
func (r *Repo) Manifest(name string) (*Manifest, error) {
	if err := ValidName(name); err != nil {
		return nil, err
	}
	f, err := os.Open(r.manifestPath(name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("image %s: %w", name, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", name, err)
	}
	defer f.Close()
	m, err := ParseManifest(f)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", name, err)
	}
	if m.Name != name {
		return nil, fmt.Errorf("image %s: manifest names %q", name, m.Name)
	}
	return m, nil
}

// List returns the names of all published images, sorted.
func (r *Repo) List() ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(r.root, "images"))
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	var names []string
	for _, e := range ents {
		if !e.IsDir() || ValidName(e.Name()) != nil {
			continue
		}
		if _, err := os.Stat(r.manifestPath(e.Name())); err == nil {
			names = append(names, e.Name())
		}
	}
	slices.Sort(names)
	return names, nil
}

// Remove deletes image name (its chunks stay until GC).
func (r *Repo) Remove(ctx context.Context, name string) error {
	if err := ValidName(name); err != nil {
		return err
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	dir := filepath.Join(r.root, "images", name)
	if _, err := os.Stat(filepath.Join(dir, "manifest.json")); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("image %s: %w", name, ErrNotFound)
	}
	gone, err := os.MkdirTemp(filepath.Join(r.root, "tmp"), "rm-"+name+"-")
	if err != nil {
		return fmt.Errorf("remove %s: %w", name, err)
	}
	if err := os.Rename(dir, filepath.Join(gone, name)); err != nil {
		os.Remove(gone)
		return fmt.Errorf("remove %s: %w", name, err)
	}
	if err := syncDir(filepath.Join(r.root, "images")); err != nil {
		return fmt.Errorf("remove %s: %w", name, err)
	}
	if err := os.RemoveAll(gone); err != nil {
		return fmt.Errorf("remove %s: %w", name, err)
	}
	r.log.InfoContext(ctx, "image removed", "image", name)
	return nil
}

// GCStats reports what GC did.
type GCStats struct {
	Kept       int   `json:"kept"`
	Removed    int   `json:"removed"`
	FreedBytes int64 `json:"freed_bytes"`
}

// GC deletes chunks no manifest references (and stale temporary files)
// that are older than the grace period. If any manifest cannot be read GC
// deletes nothing: a chunk it would free might belong to it.
func (r *Repo) GC(ctx context.Context) (GCStats, error) {
	var st GCStats
	r.mu.Lock()
	defer r.mu.Unlock()
	refs, err := r.references()
	if err != nil {
		return st, fmt.Errorf("gc: %w", err)
	}
	cutoff := time.Now().Add(-r.grace)
	err = r.walkChunks(func(path string, h Hash, ok bool, fi fs.FileInfo) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if ok {
			if _, used := refs[h]; used {
				st.Kept++
				return nil
			}
		}
		if fi.ModTime().After(cutoff) {
			st.Kept++
			return nil
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		st.Removed++
		st.FreedBytes += fi.Size()
		return nil
	})
	if err != nil {
		return st, fmt.Errorf("gc: %w", err)
	}
	if err := r.syncFS(); err != nil {
		return st, fmt.Errorf("gc: %w", err)
	}
	r.log.InfoContext(ctx, "repository gc", "kept", st.Kept, "removed", st.Removed, "freed", st.FreedBytes)
	return st, nil
}

// references maps every chunk hash to the images that use it.
func (r *Repo) references() (map[Hash][]string, error) {
	names, err := r.List()
	if err != nil {
		return nil, err
	}
	refs := make(map[Hash][]string)
	for _, n := range names {
		m, err := r.Manifest(n)
		if err != nil {
			return nil, err
		}
		for _, h := range m.ChunkHashes() {
			refs[h] = append(refs[h], n)
		}
	}
	return refs, nil
}

// walkChunks calls fn for every file under chunks/; ok tells whether its
// name is a hash (else it is a temporary file or stray).
func (r *Repo) walkChunks(fn func(path string, h Hash, ok bool, fi fs.FileInfo) error) error {
	base := filepath.Join(r.root, "chunks")
	dirs, err := os.ReadDir(base)
	if err != nil {
		return err
	}
	for _, d := range dirs {
		if !d.IsDir() {
			continue
		}
		ents, err := os.ReadDir(filepath.Join(base, d.Name()))
		if err != nil {
			return err
		}
		for _, e := range ents {
			fi, err := e.Info()
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return err
			}
			if !fi.Mode().IsRegular() {
				continue
			}
			h, perr := ParseHash(e.Name())
			ok := perr == nil && strings.HasPrefix(e.Name(), d.Name())
			if err := fn(filepath.Join(base, d.Name(), e.Name()), h, ok, fi); err != nil {
				return err
			}
		}
	}
	return nil
}

// ImageUsage is one image's share of the repository.
type ImageUsage struct {
	Name    string `json:"name"`
	Logical int64  `json:"logical"`
	Used    int64  `json:"used"`
	// Stored is the compressed size of the image's distinct chunks; Unique
	// the part no other image references (what removing it frees); Shared
	// the rest.
	Stored int64 `json:"stored"`
	Unique int64 `json:"unique"`
	Shared int64 `json:"shared"`
	Chunks int   `json:"chunks"`
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
	refs, err := r.references()
	if err != nil {
		return u, fmt.Errorf("usage: %w", err)
	}
	sizes := make(map[Hash]int64)
	err = r.walkChunks(func(_ string, h Hash, ok bool, fi fs.FileInfo) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		u.StoredBytes += fi.Size()
		if !ok {
			u.GarbageBytes += fi.Size()
			return nil
		}
		u.Chunks++
		sizes[h] = fi.Size()
		if _, used := refs[h]; !used {
			u.GarbageBytes += fi.Size()
		}
		return nil
	})
	if err != nil {
		return u, fmt.Errorf("usage: %w", err)
	}
	names, err := r.List()
	if err != nil {
		return u, err
	}
	for _, n := range names {
		m, err := r.Manifest(n)
		if err != nil {
			return u, fmt.Errorf("usage: %w", err)
		}
		iu := ImageUsage{Name: n, Logical: m.Sizes.Logical, Used: m.Sizes.Used}
		for _, h := range m.ChunkHashes() {
			sz := sizes[h]
			iu.Chunks++
			iu.Stored += sz
			if len(refs[h]) == 1 {
				iu.Unique += sz
			} else {
				iu.Shared += sz
			}
		}
		u.Images = append(u.Images, iu)
	}
	return u, nil
}
