package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/preboot/preboot/config"
	"github.com/preboot/preboot/image"
	"github.com/preboot/preboot/image/s3store"
	"github.com/preboot/preboot/store"
)

// OpenRepo opens the configured image repository with its quota, and
// with GC asking st which capture jobs are still open (their upload
// records protect their chunks). st may be nil (offline GC then keeps the
// records younger than a day).
func OpenRepo(cfg config.Config, st store.Store, log *slog.Logger) (*image.Repo, error) {
	opts := image.RepoOptions{Logger: log.With("component", "images"), MaxBytes: int64(cfg.Imaging.MaxRepoSize)}
	if st != nil {
		opts.OpenJob = func(ctx context.Context, id int64) (bool, error) {
			j, err := st.Job(ctx, id)
			if errors.Is(err, store.ErrNotFound) {
				return false, nil
			}
			if err != nil {
				return false, err
			}
			return !store.JobFinished(j.State), nil
		}
	}
	if cfg.Imaging.Store != "" {
		// Startup, not a request: bounded so a dead endpoint fails fast.
		ctx, cancel := context.WithTimeout(context.Background(), openStoreTimeout)
		defer cancel()
		b, err := s3store.Open(ctx, cfg.Imaging.Store)
		if err != nil {
			return nil, fmt.Errorf("image repository: %w", err)
		}
		opts.Logger.Info("image repository on object storage", "store", b.String())
		return image.OpenRepoBackend(b, opts), nil
	}
	repo, err := image.OpenRepo(cfg.Imaging.Repo, opts)
	if err != nil {
		return nil, fmt.Errorf("image repository: %w", err)
	}
	return repo, nil
}

// openStoreTimeout bounds connecting to the image store at startup.
const openStoreTimeout = 30 * time.Second

// pinImage resolves a restore's image NAME to the version current now
// (NAME@N), for jobs.Service.ResolveImage. An image that does not exist
// stays as named: the agent fails the job saying so.
func pinImage(repo *image.Repo) func(string) (string, error) {
	return func(ref string) (string, error) {
		name, v, err := repo.Resolve(ref)
		if errors.Is(err, image.ErrNotFound) {
			return ref, nil
		}
		if err != nil {
			return "", err
		}
		return image.Ref(name, v), nil
	}
}

// runRepoGC collects the repository's garbage every interval until ctx
// ends. A failed run is logged and retried at the next tick.
func runRepoGC(ctx context.Context, repo *image.Repo, every time.Duration, log *slog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := repo.GC(ctx); err != nil && ctx.Err() == nil {
			log.ErrorContext(ctx, "scheduled repository gc failed", "err", err)
		}
	}
}
