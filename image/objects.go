package image

import (
	"context"
	"fmt"
	"io"
)

// readObject reads a whole object (a manifest, a head, a record).
func (r *Repo) readObject(ctx context.Context, key string) ([]byte, error) {
	f, _, err := r.obj.Open(ctx, key)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxManifestObject))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	return data, nil
}

// maxManifestObject bounds what readObject reads.
const maxManifestObject = 256 << 20

// removeImage deletes every object of image name. Without a backend that
// removes a tree at once, head.json goes first: from then on the image
// does not exist (List, Resolve), and what a crash leaves of its versions
// is only garbage (a later publish of the name numbers past it).
func (r *Repo) removeImage(ctx context.Context, name string) error {
	prefix := imagePrefix(name)
	if t, ok := r.obj.(treeRemover); ok {
		return t.RemoveTree(ctx, prefix)
	}
	if err := r.obj.Delete(ctx, headKey(name)); err != nil {
		return err
	}
	var keys []string
	if err := r.obj.List(ctx, prefix, func(oi ObjectInfo) error {
		keys = append(keys, oi.Key)
		return nil
	}); err != nil {
		return err
	}
	for _, k := range keys {
		if err := r.obj.Delete(ctx, k); err != nil {
			return err
		}
	}
	return r.obj.Sync(ctx)
}

// chunkPath is the file of a chunk on the directory backend (tests damage
// it); on another backend, its key.
func (r *Repo) chunkPath(h Hash) string {
	if d, ok := r.obj.(*dirBackend); ok {
		return d.path(chunkKey(h))
	}
	return chunkKey(h)
}

// Dir is the repository's directory, "" when it is on another backend
// (an object store: no file system to measure).
func (r *Repo) Dir() string {
	if d, ok := r.obj.(*dirBackend); ok {
		return d.root
	}
	return ""
}
