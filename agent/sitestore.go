package agent

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/preboot/preboot/image"
	"github.com/preboot/preboot/image/httpstore"
)

// siteFailLimit: after this many chunks the site server could not give,
// the restore reads everything else from the central server.
const siteFailLimit = 3

// siteStore is a restore's image store when the job's server sends the
// agent to its site server for image data (preboot.images=): manifest
// and chunks come from the site, and from the central server whenever
// the site does not have them (its replica lags: 404) or does not answer
// — a site that lags costs bandwidth, never the restore. Job control
// (progress, log, result) does not go through it.
type siteStore struct {
	site, centre *httpstore.Client
	log          *slog.Logger

	central atomic.Bool  // everything from the centre from now on
	fails   atomic.Int32 // chunks the site could not give
	once    sync.Once
	// Counters, for the log at the end.
	fromSite, fromCentre atomic.Int64
}

func (s *siteStore) toCentre(ctx context.Context, why string, err error) {
	s.central.Store(true)
	s.once.Do(func() {
		s.log.WarnContext(ctx, "site server: image data from the central server instead", "site", s.site.BaseURL, "central", s.centre.BaseURL, "why", why, "err", err)
	})
}

// Manifest implements ManifestGetter: the site's when it holds the
// version, else the centre's (and everything after it from the centre).
func (s *siteStore) Manifest(ctx context.Context, name string) (*image.Manifest, error) {
	if !s.central.Load() {
		m, err := s.site.Manifest(ctx, name)
		if err == nil {
			s.log.InfoContext(ctx, "image data from the site server", "site", s.site.BaseURL, "image", name)
			return m, nil
		}
		if ctx.Err() != nil {
			return nil, err
		}
		why := "the site server does not answer"
		if errors.Is(err, image.ErrNotFound) {
			why = "the site server does not hold this image version yet"
		}
		s.toCentre(ctx, why, err)
	}
	return s.centre.Manifest(ctx, name)
}

// Missing implements image.ChunkStore: a site missing any chunk of the
// image sends the whole restore to the centre.
func (s *siteStore) Missing(ctx context.Context, hashes []image.Hash) (map[image.Hash]struct{}, error) {
	if !s.central.Load() {
		miss, err := s.site.Missing(ctx, hashes)
		if err == nil && len(miss) == 0 {
			return miss, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		s.toCentre(ctx, "the site server lacks chunks of this image", err)
	}
	return s.centre.Missing(ctx, hashes)
}

// Get implements image.ChunkStore: from the site, else from the centre.
func (s *siteStore) Get(ctx context.Context, h image.Hash, dst []byte) ([]byte, error) {
	if !s.central.Load() {
		data, err := s.site.Get(ctx, h, dst)
		if err == nil {
			s.fromSite.Add(1)
			return data, nil
		}
		if ctx.Err() != nil {
			return nil, err
		}
		if n := s.fails.Add(1); n >= siteFailLimit || !errors.Is(err, image.ErrNotFound) {
			s.toCentre(ctx, "the site server failed to give chunks", err)
		} else {
			s.log.WarnContext(ctx, "site server lacks a chunk: fetched from the central server", "chunk", h.String(), "err", err)
		}
	}
	data, err := s.centre.Get(ctx, h, dst)
	if err == nil {
		s.fromCentre.Add(1)
	}
	return data, err
}

// Put and Publish go to the centre (a restore does neither).
func (s *siteStore) Put(ctx context.Context, h image.Hash, data []byte) error {
	return s.centre.Put(ctx, h, data)
}

// Publish implements image.Publisher.
func (s *siteStore) Publish(ctx context.Context, m *image.Manifest) error {
	return s.centre.Publish(ctx, m)
}

func (s *siteStore) report(ctx context.Context) {
	s.log.InfoContext(ctx, "chunks read", "from_site", s.fromSite.Load(), "from_central", s.fromCentre.Load(), "site", s.site.BaseURL)
}
