package image

import (
	"context"
	"errors"
	"fmt"

	"github.com/klauspost/compress/zstd"
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

// Verifier checks chunks as VerifyChunk does, reusing one decoder and one
// output buffer across calls (a replica verifies every chunk it pulls). It
// is not safe for concurrent use: keep one per worker.
type Verifier struct {
	dec *zstd.Decoder
	buf []byte
}

// NewVerifier returns a Verifier; Close releases its decoder.
func NewVerifier() (*Verifier, error) {
	dec, err := newDecoder(1)
	if err != nil {
		return nil, err
	}
	return &Verifier{dec: dec}, nil
}

// Verify decompresses data and checks it hashes to h.
func (v *Verifier) Verify(h Hash, data []byte) error {
	out, err := decodeVerify(v.dec, h, data, -1, v.buf)
	if cap(out) > cap(v.buf) {
		v.buf = out[:0]
	}
	return err
}

// Close releases the decoder.
func (v *Verifier) Close() { v.dec.Close() }
