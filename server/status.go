package server

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/preboot/preboot/api"
	"github.com/preboot/preboot/config"
	"github.com/preboot/preboot/image"
	"github.com/preboot/preboot/replica"
	"github.com/preboot/preboot/siteauth"
	"github.com/preboot/preboot/store"
)

// Service names of GET /api/v1/status.
const (
	serviceHTTP      = "http"
	serviceTFTP      = "tftp"
	serviceProxyDHCP = "proxydhcp"
)

// usageEvery bounds how often the image repository's usage (a walk over
// every chunk file) is computed for the status.
const usageEvery = time.Minute

// serverStatus answers GET /api/v1/status. Run records the daemons'
// real listen addresses as they come up; a Handler without Run (tests)
// reports the configured ones.
type serverStatus struct {
	cfg     config.Config
	st      store.Store
	repo    *image.Repo
	started time.Time

	mu          sync.Mutex
	services    map[string]api.ServiceStatus
	tlsListen   string // the HTTPS address once it listens
	fingerprint string // of the certificate HTTPS serves
	// replication is a site server's replicator (nil: no upstream); the
	// admin API reports it.
	replication *replica.Replicator
	// upstreamTokens checks the upstream's job tokens on a site server
	// (nil: no upstream).
	upstreamTokens *siteauth.Checker

	usageMu sync.Mutex
	usedAt  time.Time // when used was computed
	used    int64
}

func newStatus(cfg config.Config, st store.Store, repo *image.Repo) *serverStatus {
	s := &serverStatus{cfg: cfg, st: st, repo: repo, started: time.Now(), services: map[string]api.ServiceStatus{}}
	var dhcp []string
	if cfg.ProxyDHCP.DHCPListen != "" {
		dhcp = append(dhcp, cfg.ProxyDHCP.DHCPListen)
	}
	// HTTP is up whenever someone can ask.
	s.services[serviceHTTP] = api.ServiceStatus{Name: serviceHTTP, Enabled: true, Listen: []string{cfg.HTTP.Listen}, Up: true}
	s.services[serviceTFTP] = api.ServiceStatus{Name: serviceTFTP, Enabled: cfg.TFTP.Enabled, Listen: []string{cfg.TFTP.Listen}}
	s.services[serviceProxyDHCP] = api.ServiceStatus{Name: serviceProxyDHCP, Enabled: cfg.ProxyDHCP.Enabled,
		Listen: append(dhcp, cfg.ProxyDHCP.PXEListen)}
	if cfg.DHCP.Enabled() {
		s.services[serviceDHCPServer] = api.ServiceStatus{Name: serviceDHCPServer, Enabled: true, Listen: dhcp}
		s.services[serviceProxyDHCP] = api.ServiceStatus{Name: serviceProxyDHCP, Enabled: cfg.ProxyDHCP.Enabled,
			Listen: []string{cfg.ProxyDHCP.PXEListen}}
	}
	return s
}

// up records that a service listens on addrs.
func (s *serverStatus) up(name string, addrs ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sv := s.services[name]
	sv.Listen, sv.Up = addrs, true
	s.services[name] = sv
}

// tls records where HTTPS listens and the fingerprint of its certificate.
func (s *serverStatus) tls(addr, fingerprint string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tlsListen, s.fingerprint = addr, fingerprint
}

// down records that a service stopped.
func (s *serverStatus) down(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sv := s.services[name]
	sv.Up = false
	s.services[name] = sv
}

// Info implements api.StatusFunc.
func (s *serverStatus) Info(ctx context.Context) (api.StatusInfo, error) {
	now := time.Now()
	out := api.StatusInfo{
		Version:       Version,
		StartedAt:     s.started.UTC(),
		UptimeSeconds: int64(now.Sub(s.started).Seconds()),
		Config: api.ConfigSummary{
			ProxyDHCP: api.ProxyDHCPConfig{Enabled: s.cfg.ProxyDHCP.Enabled, DHCPListen: s.cfg.ProxyDHCP.DHCPListen,
				PXEListen: s.cfg.ProxyDHCP.PXEListen, Interface: s.cfg.Interface},
			TFTP: api.TFTPConfig{Enabled: s.cfg.TFTP.Enabled, Listen: s.cfg.TFTP.Listen, Root: s.cfg.TFTP.Root,
				MaxBlksize: s.cfg.TFTP.MaxBlockSize, MaxWindowsize: s.cfg.TFTP.MaxWindow},
			HTTP: api.HTTPConfig{Listen: s.cfg.HTTP.Listen, TrustLoopback: s.cfg.HTTP.TrustLoopback, TLSListen: s.cfg.HTTP.TLSListen,
				AdminSocket: s.cfg.HTTP.AdminSocket},
			Store: api.StoreConfig{Driver: s.cfg.Store.Driver},
		},
	}
	s.mu.Lock()
	if s.tlsListen != "" {
		out.Config.HTTP.TLSListen = s.tlsListen
	}
	out.Config.HTTP.TLSFingerprint = s.fingerprint
	for _, name := range []string{serviceHTTP, serviceTFTP, serviceProxyDHCP, serviceDHCPServer} {
		sv, ok := s.services[name]
		if !ok {
			continue // the DHCP server, when off
		}
		sv.Listen = slices.Clone(sv.Listen)
		out.Services = append(out.Services, sv)
	}
	s.mu.Unlock()

	repo, err := s.repoStatus(ctx, now)
	if err != nil {
		return api.StatusInfo{}, err
	}
	out.ImageRepo = repo
	if out.Counts, err = s.counts(ctx, now); err != nil {
		return api.StatusInfo{}, err
	}
	return out, nil
}

// repoStatus measures the image repository's file system (statfs) and
// the chunks its images reference (cached for usageEvery).
func (s *serverStatus) repoStatus(ctx context.Context, now time.Time) (api.RepoStatus, error) {
	out := api.RepoStatus{Path: s.cfg.Imaging.Repo}
	if s.repo == nil {
		return out, nil
	}
	out.Path = s.repo.Root()
	if dir := s.repo.Dir(); dir != "" { // an object store has no file system to measure
		var fs unix.Statfs_t
		if err := unix.Statfs(dir, &fs); err != nil {
			return out, fmt.Errorf("image repository %s: statfs: %w", out.Path, err)
		}
		out.TotalBytes = int64(fs.Blocks) * int64(fs.Bsize)
		out.FreeBytes = int64(fs.Bavail) * int64(fs.Bsize)
	}

	s.usageMu.Lock()
	defer s.usageMu.Unlock()
	if s.usedAt.IsZero() || now.Sub(s.usedAt) >= usageEvery {
		u, err := s.repo.Usage(ctx)
		if err != nil {
			return out, fmt.Errorf("image repository: %w", err)
		}
		s.used, s.usedAt = max(0, u.StoredBytes-u.GarbageBytes), now
	}
	out.UsedByImagesBytes = s.used
	return out, nil
}

func (s *serverStatus) counts(ctx context.Context, now time.Time) (api.StatusCounts, error) {
	var c api.StatusCounts
	var err error
	if c.Devices, err = s.st.CountDevices(ctx, store.DeviceFilter{}); err != nil {
		return c, err
	}
	if c.DevicesSeenLastHour, err = s.st.CountDevices(ctx, store.DeviceFilter{SeenSince: now.Add(-time.Hour)}); err != nil {
		return c, err
	}
	if c.JobsRunning, err = s.st.CountJobs(ctx, store.JobFilter{Open: true}); err != nil {
		return c, err
	}
	if c.JobsFailedLastDay, err = s.st.CountJobs(ctx, store.JobFilter{State: store.JobFailed, FinishedSince: now.Add(-24 * time.Hour)}); err != nil {
		return c, err
	}
	return c, nil
}
