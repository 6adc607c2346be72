package server

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/preboot/preboot/config"
	"github.com/preboot/preboot/image"
	"github.com/preboot/preboot/image/httpstore"
	"github.com/preboot/preboot/replica"
	"github.com/preboot/preboot/siteauth"
)

// defaultScrubInterval: how often a site server re-hashes its replicated
// chunks when upstream.scrub_interval is 0.
const defaultScrubInterval = 24 * time.Hour

// newReplicator builds the site server's replicator (nil when no
// upstream is configured): the central server's image API over HTTPS with
// the token of upstream.token_file (a replication or admin token of the
// upstream) and, if given, its certificate pin; and the checker of the
// upstream's job tokens (agents the upstream sends here for image data).
func newReplicator(cfg config.Config, repo *image.Repo, log *slog.Logger) (*replica.Replicator, *siteauth.Checker, error) {
	u := cfg.Upstream
	if !u.Enabled() {
		return nil, nil, nil
	}
	data, err := os.ReadFile(u.TokenFile)
	if err != nil {
		return nil, nil, fmt.Errorf("upstream.token_file: %w", err)
	}
	token := strings.TrimSpace(string(data))
	if token == "" {
		return nil, nil, errors.New("upstream.token_file: empty")
	}
	sel, err := replica.ParseSelector(u.Replicate)
	if err != nil {
		return nil, nil, fmt.Errorf("upstream.replicate: %w", err)
	}
	scrub := u.ScrubInterval
	switch {
	case scrub == 0:
		scrub = defaultScrubInterval
	case scrub < 0:
		scrub = 0
	}
	client := &httpstore.Client{BaseURL: u.URL, Token: token, TLSFingerprint: u.Pin, Logger: log}
	// Introspection is on the agent's request path: two short tries.
	intro := &httpstore.Client{BaseURL: u.URL, Token: token, TLSFingerprint: u.Pin, Logger: log, Attempts: 2, Timeout: 10 * time.Second}
	rep, err := replica.New(replica.Options{
		Upstream: client, UpstreamURL: u.URL, Local: repo, Select: sel, KeepDeleted: u.KeepDeleted,
		Interval: u.Interval, ScrubInterval: scrub, Parallel: u.Parallel,
		StateFile: filepath.Join(cfg.DataDir, "replicas.json"), Logger: log,
	})
	if err != nil {
		return nil, nil, err
	}
	return rep, &siteauth.Checker{Upstream: intro}, nil
}
