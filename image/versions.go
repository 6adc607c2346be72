package image

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Images are versioned: every publish of NAME adds version N+1 and makes
// it current; older versions stay until an administrator removes them.
// A reference is NAME (the current version) or NAME@N (version N):
//
//	ROOT/images/NAME/versions/N.json   the manifest of version N (never rewritten)
//	ROOT/images/NAME/head.json         {"current": N, "last": M}
//
// "last" is the highest version number ever given to NAME, so a removed
// version's number is never reused while the image exists. A repository
// written before versions (ROOT/images/NAME/manifest.json) is migrated in
// place when opened: that manifest becomes version 1.

// ErrNoVersion: a rollback with no older version to go back to.
var ErrNoVersion = errors.New("no such version")

// ParseRef splits an image reference NAME or NAME@N. version is 0 for a
// bare NAME (the current version).
func ParseRef(ref string) (name string, version int, err error) {
	name, v, found := strings.Cut(ref, "@")
	if err := ValidName(name); err != nil {
		return "", 0, err
	}
	if !found {
		return name, 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || strconv.Itoa(n) != v {
		return "", 0, fmt.Errorf("invalid image reference %.140q: want NAME or NAME@VERSION (a version number from 1)", ref)
	}
	return name, n, nil
}

// ValidRef checks an image reference (NAME or NAME@N).
func ValidRef(ref string) error {
	_, _, err := ParseRef(ref)
	return err
}

// RefName is the image name of a reference (what precedes '@').
func RefName(ref string) string {
	name, _, _ := strings.Cut(ref, "@")
	return name
}

// Ref formats NAME@N (NAME when version is 0).
func Ref(name string, version int) string {
	if version == 0 {
		return name
	}
	return name + "@" + strconv.Itoa(version)
}

type head struct {
	Current int `json:"current"`
	Last    int `json:"last"`
}

func imagePrefix(name string) string { return "images/" + name + "/" }

func versionKey(name string, v int) string {
	return imagePrefix(name) + "versions/" + strconv.Itoa(v) + ".json"
}

func headKey(name string) string { return imagePrefix(name) + "head.json" }

func (r *Repo) readHead(ctx context.Context, name string) (head, error) {
	var h head
	data, err := r.readObject(ctx, headKey(name))
	if errors.Is(err, ErrNotFound) {
		return h, fmt.Errorf("image %s: %w", name, ErrNotFound)
	}
	if err != nil {
		return h, fmt.Errorf("image %s: %w", name, err)
	}
	if err := json.Unmarshal(data, &h); err != nil || h.Current < 1 || h.Last < h.Current {
		return h, fmt.Errorf("image %s: bad head.json %q", name, data)
	}
	return h, nil
}

func (r *Repo) writeHead(ctx context.Context, name string, h head) error {
	data, _ := json.Marshal(h)
	if err := r.obj.Put(ctx, headKey(name), append(data, '\n')); err != nil {
		return err
	}
	return r.obj.Sync(ctx)
}

// versionNumbers lists the versions of name present, ascending.
func (r *Repo) versionNumbers(ctx context.Context, name string) ([]int, error) {
	prefix := imagePrefix(name) + "versions/"
	var vs []int
	err := r.obj.List(ctx, prefix, func(oi ObjectInfo) error {
		s, ok := strings.CutSuffix(strings.TrimPrefix(oi.Key, prefix), ".json")
		if !ok {
			return nil
		}
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || strconv.Itoa(n) != s {
			return nil
		}
		vs = append(vs, n)
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.Sort(vs)
	return slices.Compact(vs), nil
}

// VersionNumbers lists the version numbers image name keeps, ascending,
// without reading the manifests (ErrNotFound when the image does not
// exist).
func (r *Repo) VersionNumbers(name string) ([]int, error) {
	if err := ValidName(name); err != nil {
		return nil, err
	}
	ctx := context.Background()
	if _, err := r.readHead(ctx, name); err != nil {
		return nil, err
	}
	vs, err := r.versionNumbers(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", name, err)
	}
	return vs, nil
}

// Resolve turns a reference into the image name and an existing version
// (the current one for a bare NAME).
func (r *Repo) Resolve(ref string) (string, int, error) {
	return r.resolve(context.Background(), ref)
}

func (r *Repo) resolve(ctx context.Context, ref string) (string, int, error) {
	name, v, err := ParseRef(ref)
	if err != nil {
		return "", 0, err
	}
	if v == 0 {
		h, err := r.readHead(ctx, name)
		if err != nil {
			return "", 0, err
		}
		v = h.Current
	}
	if _, err := r.obj.Stat(ctx, versionKey(name, v)); errors.Is(err, ErrNotFound) {
		return "", 0, fmt.Errorf("image %s: %w", Ref(name, v), ErrNotFound)
	} else if err != nil {
		return "", 0, fmt.Errorf("image %s: %w", Ref(name, v), err)
	}
	return name, v, nil
}

// Version describes one version of an image.
type Version struct {
	Version  int               `json:"version"`
	Current  bool              `json:"current"`
	Created  time.Time         `json:"created"`
	Source   map[string]string `json:"source,omitempty"`
	Logical  int64             `json:"logical"`
	Used     int64             `json:"used"`
	Uploaded int64             `json:"uploaded"`
	Chunks   int               `json:"chunks"`
}

// Versions lists the versions of image name, oldest first.
func (r *Repo) Versions(name string) ([]Version, error) {
	if err := ValidName(name); err != nil {
		return nil, err
	}
	ctx := context.Background()
	h, err := r.readHead(ctx, name)
	if err != nil {
		return nil, err
	}
	vs, err := r.versionNumbers(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", name, err)
	}
	out := make([]Version, 0, len(vs))
	for _, v := range vs {
		m, err := r.readVersion(ctx, name, v)
		if errors.Is(err, ErrNotFound) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, err
		}
		out = append(out, Version{Version: v, Current: v == h.Current, Created: m.Created, Source: m.Source,
			Logical: m.Sizes.Logical, Used: m.Sizes.Used, Uploaded: m.Sizes.Uploaded, Chunks: len(m.ChunkHashes())})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("image %s: %w", name, ErrNotFound)
	}
	return out, nil
}

func (r *Repo) readVersion(ctx context.Context, name string, v int) (*Manifest, error) {
	ref := Ref(name, v)
	f, _, err := r.obj.Open(ctx, versionKey(name, v))
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("image %s: %w", ref, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", ref, err)
	}
	defer f.Close()
	m, err := ParseManifest(f)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", ref, err)
	}
	if m.Name != name {
		return nil, fmt.Errorf("image %s: manifest names %q", ref, m.Name)
	}
	return m, nil
}

// Rollback makes version to of image name current again (to 0: the
// newest version older than the current one) and returns it. Nothing is
// deleted: the versions after it stay (and a later rollback --to can
// return to them).
func (r *Repo) Rollback(ctx context.Context, name string, to int) (int, error) {
	if err := ValidName(name); err != nil {
		return 0, err
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	r.pubMu.Lock()
	defer r.pubMu.Unlock()
	var from int
	h, err := r.updateHead(ctx, name, func(h head, exists bool) (head, bool, error) {
		if !exists {
			return h, false, fmt.Errorf("image %s: %w", name, ErrNotFound)
		}
		vs, err := r.versionNumbers(ctx, name)
		if err != nil {
			return h, false, fmt.Errorf("rollback %s: %w", name, err)
		}
		to := to
		if to == 0 {
			for _, v := range vs {
				if v < h.Current {
					to = v
				}
			}
			if to == 0 {
				return h, false, fmt.Errorf("rollback %s: version %d is the oldest: %w", name, h.Current, ErrNoVersion)
			}
		} else if !slices.Contains(vs, to) {
			return h, false, fmt.Errorf("rollback %s: version %d: %w", name, to, ErrNotFound)
		}
		from = h.Current
		h.Current = to
		return h, true, nil
	})
	if err != nil {
		if errors.Is(err, ErrNotFound) || errors.Is(err, ErrNoVersion) {
			return 0, err
		}
		return 0, fmt.Errorf("rollback %s: %w", name, err)
	}
	to = h.Current
	r.log.InfoContext(ctx, "image rolled back", "image", name, "from", from, "to", to)
	return to, nil
}

// migrate turns the pre-version layout (images/NAME/manifest.json) into
// version 1. It is idempotent and safe to interrupt: the old manifest is
// removed only after version 1 and head.json are durable.
func (r *Repo) migrate() error {
	ctx := context.Background()
	var olds []string
	err := r.obj.List(ctx, "images/", func(oi ObjectInfo) error {
		name, ok := strings.CutSuffix(strings.TrimPrefix(oi.Key, "images/"), "/manifest.json")
		if ok && ValidName(name) == nil {
			olds = append(olds, name)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, name := range olds {
		old := imagePrefix(name) + "manifest.json"
		data, err := r.readObject(ctx, old)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		if _, err := r.obj.Stat(ctx, versionKey(name, 1)); errors.Is(err, ErrNotFound) {
			if err := r.obj.Put(ctx, versionKey(name, 1), data); err != nil {
				return err
			}
			if err := r.obj.Sync(ctx); err != nil {
				return err
			}
		}
		if _, err := r.readHead(ctx, name); err != nil {
			vs, err := r.versionNumbers(ctx, name)
			if err != nil {
				return err
			}
			last := vs[len(vs)-1]
			if err := r.writeHead(ctx, name, head{Current: last, Last: last}); err != nil {
				return err
			}
		}
		if err := r.obj.Delete(ctx, old); err != nil {
			return err
		}
		if err := r.obj.Sync(ctx); err != nil {
			return err
		}
		r.log.Info("image migrated to versions", "image", name, "version", 1)
	}
	return nil
}
