package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Backend holds the repository's objects, named by slash-separated keys:
//
//	chunks/ab/abcdef…             one zstd frame per chunk, named by its hash
//	images/NAME/versions/N.json   the manifest of version N
//	images/NAME/head.json         {"current": N, "last": M}
//	uploads/JOBID[/…]             the upload records of capture jobs
//
// A local directory (the default, OpenRepo) and an S3-compatible bucket
// (package image/s3store) implement it. Implementations must be safe for
// concurrent use. Both also implement Conditional, which makes publishes
// from several processes sharing one store safe.
type Backend interface {
	// Put stores data under key, replacing any object there. Readers see
	// the whole new object or the old one (or none), never a part. The
	// object is durable once Sync returns (at once on object stores).
	Put(ctx context.Context, key string, data []byte) error
	// Open opens an object for reading and returns its size. A missing
	// object yields an error wrapping ErrNotFound.
	Open(ctx context.Context, key string) (io.ReadCloser, int64, error)
	// Stat describes an object (ErrNotFound when missing).
	Stat(ctx context.Context, key string) (ObjectInfo, error)
	// List calls fn for every object whose key starts with prefix.
	// Objects put or deleted during the walk may or may not be seen.
	List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error
	// Delete removes an object; a missing one is not an error. Durable
	// once Sync returns.
	Delete(ctx context.Context, key string) error
	// Touch sets an object's modification time to now (so GC's grace
	// period covers a chunk a capture was just told is present).
	Touch(ctx context.Context, key string) error
	// Sync makes the Puts and Deletes before it durable.
	Sync(ctx context.Context) error
	// String names the backend's location (a directory, s3://bucket/prefix).
	String() string
}

// ObjectInfo describes one object of a Backend.
type ObjectInfo struct {
	Key     string
	Size    int64
	ModTime time.Time
}

// appender is a Backend that can append to an object durably (the
// directory: upload records are one file a job appends to). Without it an
// upload record is one object per append, under uploads/JOBID/.
type appender interface {
	Append(ctx context.Context, key string, data []byte) error
}

// treeRemover is a Backend that can remove every object under a prefix at
// once (the directory: a rename). Without it Remove deletes head.json
// first (the image is gone), then each version.
type treeRemover interface {
	RemoveTree(ctx context.Context, prefix string) error
}

// dirBackend is the repository on a local directory. Objects are files
// written to a temporary file, fsynced, then renamed into place, so a file
// that exists is complete; Sync flushes the whole filesystem (syncfs),
// which makes every rename durable in one call. Conditional writes (see
// conditional.go) use link(2) and an flock(2) of ROOT/lock.
type dirBackend struct{ root string }

func newDirBackend(root string) (*dirBackend, error) {
	for _, d := range []string{"chunks", "images", "tmp", "uploads"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return nil, err
		}
	}
	for i := range 256 {
		if err := os.MkdirAll(filepath.Join(root, "chunks", fmt.Sprintf("%02x", i)), 0o755); err != nil {
			return nil, err
		}
	}
	return &dirBackend{root: root}, nil
}

func (d *dirBackend) String() string { return d.root }

func (d *dirBackend) path(key string) string { return filepath.Join(d.root, filepath.FromSlash(key)) }

func (d *dirBackend) Put(ctx context.Context, key string, data []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return d.write(key, data, writeFileSync)
}

// write stores data at key's path with put (writeFileSync or
// createFileSync), making the key's directory when it does not exist.
func (d *dirBackend) write(key string, data []byte, put func(p string, data []byte) error) error {
	p := d.path(key)
	err := put(p, data)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		err = put(p, data)
	}
	return err
}

func (d *dirBackend) Open(ctx context.Context, key string) (io.ReadCloser, int64, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	f, err := os.Open(d.path(key))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, fmt.Errorf("%s: %w", key, ErrNotFound)
	}
	if err != nil {
		return nil, 0, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, fi.Size(), nil
}

func (d *dirBackend) Stat(ctx context.Context, key string) (ObjectInfo, error) {
	fi, err := os.Stat(d.path(key))
	if errors.Is(err, fs.ErrNotExist) {
		return ObjectInfo{}, fmt.Errorf("%s: %w", key, ErrNotFound)
	}
	if err != nil {
		return ObjectInfo{}, err
	}
	return ObjectInfo{Key: key, Size: fi.Size(), ModTime: fi.ModTime()}, nil
}

// List walks the directory that holds prefix; temporary files (.tmp-*)
// are listed too, so GC sees what a crash left.
func (d *dirBackend) List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error {
	base := prefix[:strings.LastIndexByte(prefix, '/')+1]
	err := filepath.WalkDir(d.path(base), func(p string, e fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil // removed meanwhile
		}
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if !e.Type().IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(d.root, p)
		if err != nil {
			return err
		}
		key := filepath.ToSlash(rel)
		if !strings.HasPrefix(key, prefix) {
			return nil
		}
		fi, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		return fn(ObjectInfo{Key: key, Size: fi.Size(), ModTime: fi.ModTime()})
	})
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

func (d *dirBackend) Delete(_ context.Context, key string) error {
	if err := os.Remove(d.path(key)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

func (d *dirBackend) Touch(_ context.Context, key string) error {
	now := time.Now()
	return os.Chtimes(d.path(key), now, now)
}

func (d *dirBackend) Sync(context.Context) error {
	f, err := os.Open(d.root)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.Syncfs(int(f.Fd()))
}

// Append adds data to the file key, fsynced.
func (d *dirBackend) Append(_ context.Context, key string, data []byte) error {
	p := d.path(key)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		f, err = os.OpenFile(p, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	}
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// RemoveTree renames the directory prefix names into tmp/ (one atomic,
// durable step) and then deletes it; GC finishes what a crash cuts short.
func (d *dirBackend) RemoveTree(_ context.Context, prefix string) error {
	dir := d.path(strings.TrimSuffix(prefix, "/"))
	name := path.Base(strings.TrimSuffix(prefix, "/"))
	gone, err := os.MkdirTemp(filepath.Join(d.root, "tmp"), "rm-"+name+"-")
	if err != nil {
		return err
	}
	if err := os.Rename(dir, filepath.Join(gone, name)); err != nil {
		os.Remove(gone)
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%s: %w", prefix, ErrNotFound)
		}
		return err
	}
	if err := syncDir(filepath.Dir(dir)); err != nil {
		return err
	}
	return os.RemoveAll(gone)
}

// removeTemps deletes what writes cut short leave outside chunks/: the
// temporary manifests and heads of a publish (images/NAME/.tmp-*,
// images/NAME/versions/.tmp-*), removals in progress (tmp/*).
func (d *dirBackend) removeTemps(cutoff time.Time, st *GCStats) error {
	old := func(p string) bool {
		fi, err := os.Lstat(p)
		return err == nil && fi.ModTime().Before(cutoff)
	}
	var cands []string
	ents, err := os.ReadDir(filepath.Join(d.root, "tmp"))
	if err != nil {
		return err
	}
	for _, e := range ents {
		cands = append(cands, filepath.Join(d.root, "tmp", e.Name()))
	}
	imgs, err := os.ReadDir(filepath.Join(d.root, "images"))
	if err != nil {
		return err
	}
	for _, im := range imgs {
		if !im.IsDir() {
			if strings.HasPrefix(im.Name(), ".tmp-") {
				cands = append(cands, filepath.Join(d.root, "images", im.Name()))
			}
			continue
		}
		for _, dir := range []string{filepath.Join(d.root, "images", im.Name()), filepath.Join(d.root, "images", im.Name(), "versions")} {
			es, err := os.ReadDir(dir)
			if err != nil {
				continue
			}
			for _, e := range es {
				if strings.HasPrefix(e.Name(), ".tmp-") {
					cands = append(cands, filepath.Join(dir, e.Name()))
				}
			}
		}
	}
	for _, p := range cands {
		if !old(p) {
			continue
		}
		if err := os.RemoveAll(p); err != nil {
			return err
		}
		st.TempRemoved++
	}
	return nil
}
