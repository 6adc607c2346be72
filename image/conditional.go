package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// ErrConflict: a conditional write found the object changed (created,
// replaced or removed) since the caller looked.
var ErrConflict = errors.New("object changed meanwhile")

// Conditional is a Backend that writes conditionally, so that several
// processes sharing it (servers on one bucket) neither give two publishes
// the same version number nor lose an update of head.json:
// versions/N.json is created only where no object is (the loser takes the
// next number), and head.json is replaced only if it is still what the
// writer read (the loser reads it again). A Backend without it is ordered
// inside one process only.
type Conditional interface {
	// Create stores data under key only if no object is there; else it
	// fails with an error wrapping ErrConflict. Durable once Sync returns.
	Create(ctx context.Context, key string, data []byte) error
	// ReadTag reads a whole small object and a tag of its content
	// (ErrNotFound when missing).
	ReadTag(ctx context.Context, key string) (data []byte, tag string, err error)
	// Swap replaces the object under key with data only if its tag is
	// still tag (tag "": only if there is still no object); else it fails
	// with an error wrapping ErrConflict. Durable once Sync returns.
	Swap(ctx context.Context, key string, data []byte, tag string) error
}

// singleWriter is a Conditional backend that could not make its writes
// conditional (an object store that ignores the conditions) and was told
// that only this server writes to it: the Repo warns at open.
type singleWriter interface {
	SingleWriter() bool
}

// maxHeadAttempts bounds the retries of one head.json update and the
// version numbers one publish tries.
const maxHeadAttempts = 1000

// createVersion stores manifest data as the first free version number
// from v on, and returns that number. On a Conditional backend a number
// another process takes meanwhile is skipped; otherwise pubMu orders it.
func (r *Repo) createVersion(ctx context.Context, name string, v int, data []byte) (int, error) {
	c, ok := r.obj.(Conditional)
	if !ok {
		return v, r.obj.Put(ctx, versionKey(name, v), data)
	}
	for range maxHeadAttempts {
		err := c.Create(ctx, versionKey(name, v), data)
		if err == nil {
			return v, nil
		}
		if !errors.Is(err, ErrConflict) {
			return 0, err
		}
		// A retried request of our own may have landed before its answer
		// was lost: the object holds exactly our manifest.
		if got, rerr := r.readObject(ctx, versionKey(name, v)); rerr == nil && bytes.Equal(got, data) {
			return v, nil
		}
		r.log.DebugContext(ctx, "version number taken by another publish", "image", name, "version", v)
		v++
	}
	return 0, fmt.Errorf("no free version number after %d attempts", maxHeadAttempts)
}

// updateHead reads the head of image name and writes what fn makes of it
// (exists is false when there is none; write false leaves it as is). On a
// Conditional backend the write happens only if the head is still what fn
// saw, else fn runs again on the new one; otherwise pubMu orders it.
// It returns the head as left.
func (r *Repo) updateHead(ctx context.Context, name string, fn func(h head, exists bool) (head, bool, error)) (head, error) {
	c, ok := r.obj.(Conditional)
	if !ok {
		h, err := r.readHead(ctx, name)
		exists := err == nil
		if err != nil && !errors.Is(err, ErrNotFound) {
			return h, err
		}
		nh, write, err := fn(h, exists)
		if err != nil || !write {
			return h, err
		}
		return nh, r.writeHead(ctx, name, nh)
	}
	for range maxHeadAttempts {
		data, tag, err := c.ReadTag(ctx, headKey(name))
		var h head
		exists := err == nil
		switch {
		case errors.Is(err, ErrNotFound):
			tag = ""
		case err != nil:
			return h, fmt.Errorf("image %s: %w", name, err)
		default:
			if err := json.Unmarshal(data, &h); err != nil || h.Current < 1 || h.Last < h.Current {
				return h, fmt.Errorf("image %s: bad head.json %q", name, data)
			}
		}
		nh, write, err := fn(h, exists)
		if err != nil || !write {
			return h, err
		}
		out, _ := json.Marshal(nh)
		err = c.Swap(ctx, headKey(name), append(out, '\n'), tag)
		if errors.Is(err, ErrConflict) {
			r.log.DebugContext(ctx, "head changed meanwhile: reading it again", "image", name)
			continue
		}
		if err != nil {
			return h, err
		}
		return nh, r.obj.Sync(ctx)
	}
	return head{}, fmt.Errorf("image %s: head.json changed %d times while updating it", name, maxHeadAttempts)
}

// Create links a fsynced temporary file to the object's name: link(2)
// fails where a file exists, so of two writers one wins, whole.
func (d *dirBackend) Create(ctx context.Context, key string, data []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	err := d.write(key, data, createFileSync)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s: %w", key, ErrConflict)
	}
	return err
}

// ReadTag reads the file; its tag is the SHA-256 of the content.
func (d *dirBackend) ReadTag(ctx context.Context, key string) ([]byte, string, error) {
	f, _, err := d.Open(ctx, key)
	if err != nil {
		return nil, "", err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxManifestObject))
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", key, err)
	}
	return data, contentTag(data), nil
}

func contentTag(data []byte) string {
	s := sha256.Sum256(data)
	return hex.EncodeToString(s[:])
}

// Swap compares and replaces under an exclusive flock(2) of ROOT/lock,
// which orders every process (and every Repo) using the directory; the
// replacement itself is the usual temporary file renamed into place, so
// readers, which do not lock, see the old file or the new one.
func (d *dirBackend) Swap(ctx context.Context, key string, data []byte, tag string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	lf, err := os.OpenFile(filepath.Join(d.root, "lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer lf.Close() // releases the lock
	if err := unix.Flock(int(lf.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("lock %s: %w", lf.Name(), err)
	}
	cur, err := os.ReadFile(d.path(key))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if tag != "" {
			return fmt.Errorf("%s: removed: %w", key, ErrConflict)
		}
	case err != nil:
		return err
	case tag == "" || contentTag(cur) != tag:
		return fmt.Errorf("%s: %w", key, ErrConflict)
	}
	return d.Put(ctx, key, data)
}

var _ Conditional = (*dirBackend)(nil)
