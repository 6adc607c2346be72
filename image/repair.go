package image

import (
	"context"
	"errors"
	"fmt"
)

// RemoveChunk deletes one stored chunk, so that a corrupt copy can be
// replaced by a good one (Put keeps an existing object as it is). Removing
// a chunk that is absent is not an error. A manifest that references the
// chunk stays published: the caller (a replica's scrub) puts the good copy
// back.
func (r *Repo) RemoveChunk(ctx context.Context, h Hash) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.maxBytes > 0 {
		if _, err := r.storedBytes(); err != nil {
			return fmt.Errorf("remove chunk %s: repository size: %w", h, err)
		}
	}
	key := chunkKey(h)
	oi, err := r.obj.Stat(ctx, key)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove chunk %s: %w", h, err)
	}
	if err := r.obj.Delete(ctx, key); err != nil {
		return fmt.Errorf("remove chunk %s: %w", h, err)
	}
	if r.maxBytes > 0 {
		r.stored.Add(-oi.Size)
	}
	return nil
}

// LastVersion is the highest version number ever given to image name (a
// removed version's number included; 0 when the image does not exist): a
// replica publishing version N of an upstream image reads it to keep the
// upstream's numbering.
func (r *Repo) LastVersion(ctx context.Context, name string) (int, error) {
	if err := ValidName(name); err != nil {
		return 0, err
	}
	h, err := r.readHead(ctx, name)
	if errors.Is(err, ErrNotFound) {
		vs, verr := r.versionNumbers(ctx, name)
		if verr != nil || len(vs) == 0 {
			return 0, verr
		}
		return vs[len(vs)-1], nil
	}
	if err != nil {
		return 0, err
	}
	return h.Last, nil
}
