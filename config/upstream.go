package config

import (
	"fmt"
	"net/url"
	"time"
)

// Upstream makes this server a site server (docs/scale-out.md, "Site
// servers"): it keeps a verified replica of the images of a central
// server. Off while URL is empty.
type Upstream struct {
	// URL is the central server's HTTPS base URL, e.g.
	// https://central.example:8443.
	URL string `yaml:"url"`
	// TokenFile holds an admin token of the central server (`preboot
	// token create` there).
	TokenFile string `yaml:"token_file"`
	// Pin is the central server's certificate fingerprint (sha256:HEX);
	// empty: the system's CAs verify it.
	Pin string `yaml:"pin"`
	// Replicate selects the images: all (default), or a comma-separated
	// list of names, patterns (lab-*) and label:KEY=VALUE terms.
	Replicate string `yaml:"replicate"`
	// KeepDeleted keeps images and versions the central server removed
	// (default: the site removes them too).
	KeepDeleted bool `yaml:"keep_deleted"`
	// Interval between replication rounds (0: 5m); the first runs at start.
	Interval time.Duration `yaml:"interval"`
	// ScrubInterval between scrubs that re-hash the chunks at rest and
	// re-fetch corrupt ones (0: 24h; negative: never).
	ScrubInterval time.Duration `yaml:"scrub_interval"`
	// Parallel bounds concurrent chunk fetches (0: 4).
	Parallel int `yaml:"parallel"`
}

// Enabled reports whether this server replicates from an upstream.
func (u Upstream) Enabled() bool { return u.URL != "" }

func (u Upstream) check() []error {
	if !u.Enabled() {
		return nil
	}
	var errs []error
	p, err := url.Parse(u.URL)
	if err != nil || (p.Scheme != "https" && p.Scheme != "http") || p.Host == "" {
		errs = append(errs, fmt.Errorf("upstream.url %q: want https://HOST[:PORT]", u.URL))
	}
	if u.TokenFile == "" {
		errs = append(errs, fmt.Errorf("upstream.token_file: required with upstream.url (an admin token of the central server)"))
	}
	if u.Interval < 0 {
		errs = append(errs, fmt.Errorf("upstream.interval %s: must not be negative", u.Interval))
	}
	if u.Parallel < 0 || u.Parallel > 64 {
		errs = append(errs, fmt.Errorf("upstream.parallel %d: want 1..64 (0: 4)", u.Parallel))
	}
	return errs
}
