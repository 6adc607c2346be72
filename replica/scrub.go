package replica

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/preboot/preboot/image"
)

// maxScrubErrors bounds the errors a ScrubResult lists.
const maxScrubErrors = 20

// Scrub re-hashes the chunks at rest of every local image (only: that
// image), every version. A chunk that is corrupt or missing is, with
// repair, replaced by a copy fetched from the upstream and verified.
// Images of the site's own (not replicas) are checked too; the upstream
// may still hold their chunks.
func (r *Replicator) Scrub(ctx context.Context, only string, repair bool) (ScrubResult, error) {
	r.work.Lock()
	defer r.work.Unlock()
	res := ScrubResult{Started: time.Now()}
	var names []string
	if only != "" {
		if err := image.ValidName(only); err != nil {
			return res, err
		}
		names = []string{only}
	} else {
		var err error
		if names, err = r.o.Local.List(); err != nil {
			return res, fmt.Errorf("scrub: %w", err)
		}
	}
	seen := make(map[image.Hash]struct{})
	var hashes []image.Hash
	for _, n := range names {
		vs, err := r.o.Local.Versions(n)
		if errors.Is(err, image.ErrNotFound) && only == "" {
			continue // removed meanwhile
		}
		if err != nil {
			return res, fmt.Errorf("scrub: %w", err)
		}
		res.Images++
		for _, v := range vs {
			m, err := r.o.Local.Manifest(image.Ref(n, v.Version))
			if errors.Is(err, image.ErrNotFound) {
				continue
			}
			if err != nil {
				return res, fmt.Errorf("scrub: %w", err)
			}
			for _, h := range m.ChunkHashes() {
				if _, ok := seen[h]; !ok {
					seen[h] = struct{}{}
					hashes = append(hashes, h)
				}
			}
		}
	}
	res.Chunks = len(hashes)
	var mu sync.Mutex
	note := func(err error) {
		if len(res.Errors) < maxScrubErrors {
			res.Errors = append(res.Errors, err.Error())
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(r.o.Parallel)
	for _, h := range hashes {
		g.Go(func() error {
			data, err := r.o.Local.Get(gctx, h, nil)
			missing := errors.Is(err, image.ErrNotFound)
			if err != nil && !missing {
				if gctx.Err() != nil {
					return gctx.Err()
				}
				mu.Lock()
				note(fmt.Errorf("chunk %s: %w", h, err))
				mu.Unlock()
				return nil
			}
			if !missing {
				if err = r.verify(h, data); err == nil {
					return nil
				}
			}
			r.corruptLocal.Add(1)
			mu.Lock()
			if missing {
				res.Missing++
			} else {
				res.Corrupt++
			}
			mu.Unlock()
			r.log.WarnContext(gctx, "replica scrub: bad chunk at rest", "chunk", h.String(), "missing", missing, "err", err, "repair", repair)
			if !repair {
				return nil
			}
			if !missing {
				if err := r.o.Local.RemoveChunk(gctx, h); err != nil {
					mu.Lock()
					note(err)
					mu.Unlock()
					return nil
				}
			}
			if _, err := r.fetchOne(gctx, "", h); err != nil {
				if gctx.Err() != nil {
					return gctx.Err()
				}
				mu.Lock()
				note(fmt.Errorf("repair: %w", err))
				mu.Unlock()
				return nil
			}
			r.repaired.Add(1)
			mu.Lock()
			res.Repaired++
			mu.Unlock()
			return nil
		})
	}
	err := g.Wait()
	res.Finished = time.Now()
	slices.Sort(res.Errors)
	r.mu.Lock()
	c := res
	r.lastScrub = &c
	r.mu.Unlock()
	if err != nil {
		return res, fmt.Errorf("scrub: %w", err)
	}
	r.log.InfoContext(ctx, "replica scrub", "images", res.Images, "chunks", res.Chunks, "corrupt", res.Corrupt,
		"missing", res.Missing, "repaired", res.Repaired)
	return res, nil
}
