package api

import (
	"context"
	"net/http"
	"time"
)

// StatusInfo is GET /api/v1/status: how the server runs (the console's
// dashboard and settings pages show it).
type StatusInfo struct {
	Version       string          `json:"version"`
	StartedAt     time.Time       `json:"started_at"`
	UptimeSeconds int64           `json:"uptime_seconds"`
	Services      []ServiceStatus `json:"services"`
	ImageRepo     RepoStatus      `json:"image_repo"`
	Config        ConfigSummary   `json:"config"`
	Counts        StatusCounts    `json:"counts"`
}

// ServiceStatus is one of the server's daemons: "http", "tftp" or
// "proxydhcp". Listen lists the addresses it is bound to (the configured
// ones while it is not up).
type ServiceStatus struct {
	Name    string   `json:"name"`
	Enabled bool     `json:"enabled"`
	Listen  []string `json:"listen"`
	Up      bool     `json:"up"`
}

// RepoStatus is the image repository's place on disk: the file system's
// size and free space, and the bytes of the chunks images reference.
type RepoStatus struct {
	Path              string `json:"path"`
	TotalBytes        int64  `json:"total_bytes"`
	FreeBytes         int64  `json:"free_bytes"`
	UsedByImagesBytes int64  `json:"used_by_images_bytes"`
}

// ConfigSummary is the part of the configuration file an administrator
// checks from the console (read only: it changes with the file and a
// restart).
type ConfigSummary struct {
	ProxyDHCP ProxyDHCPConfig `json:"proxydhcp"`
	TFTP      TFTPConfig      `json:"tftp"`
	HTTP      HTTPConfig      `json:"http"`
	Store     StoreConfig     `json:"store"`
}

// ProxyDHCPConfig is the proxydhcp section of the configuration.
type ProxyDHCPConfig struct {
	Enabled    bool   `json:"enabled"`
	DHCPListen string `json:"dhcp_listen"`
	PXEListen  string `json:"pxe_listen"`
	Interface  string `json:"interface"`
}

// TFTPConfig is the tftp section of the configuration.
type TFTPConfig struct {
	Enabled       bool   `json:"enabled"`
	Listen        string `json:"listen"`
	Root          string `json:"root"`
	MaxBlksize    int    `json:"max_blksize"`
	MaxWindowsize int    `json:"max_windowsize"`
}

// HTTPConfig is the http section of the configuration.
type HTTPConfig struct {
	Listen        string `json:"listen"`
	TrustLoopback bool   `json:"trust_loopback"`
	// TLSListen is where HTTPS is served ("" = no TLS) and
	// TLSFingerprint the SHA-256 of the certificate in use ("sha256:HEX",
	// what `preboot login --tls-fingerprint` pins); AdminSocket the unix
	// socket of local administration ("" = none).
	TLSListen      string `json:"tls_listen"`
	TLSFingerprint string `json:"tls_fingerprint"`
	AdminSocket    string `json:"admin_socket"`
}

// StoreConfig is the store section of the configuration (the driver only:
// a DSN may hold a password).
type StoreConfig struct {
	Driver string `json:"driver"`
}

// StatusCounts are the dashboard's figures. JobsRunning counts the jobs
// not finished (pending, booting, running).
type StatusCounts struct {
	Devices             int `json:"devices"`
	DevicesSeenLastHour int `json:"devices_seen_last_hour"`
	JobsRunning         int `json:"jobs_running"`
	JobsFailedLastDay   int `json:"jobs_failed_last_day"`
}

// StatusFunc reports the server's status (the server fills it in).
type StatusFunc func(ctx context.Context) (StatusInfo, error)

func (h *Handler) status(w http.ResponseWriter, r *http.Request) {
	if h.Status == nil {
		writeError(w, http.StatusNotFound, "this server does not report its status")
		return
	}
	s, err := h.Status(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if s.Services == nil {
		s.Services = []ServiceStatus{}
	}
	for i := range s.Services {
		s.Services[i].Listen = nonNil(s.Services[i].Listen)
	}
	writeJSON(w, http.StatusOK, s)
}
