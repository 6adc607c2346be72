package server

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"

	"github.com/preboot/preboot/bootmedia"
	"github.com/preboot/preboot/policy"
)

// MediaFile is where the server offers its manual preboot medium, under
// /files/ (the TFTP root's HTTP view).
const MediaFile = "preboot.iso"

// mediaISO serves GET /files/preboot.iso: the manual preboot medium
// (package bootmedia) with this server's agent URL and certificate pin
// baked in for the address the request came to, built from the imaging
// environment in the TFTP root on the first request and kept in
// DATA_DIR/media until the environment (or the address) changes.
type mediaISO struct {
	pol            *policy.Engine
	kernel, initrd string
	dir            string
	log            *slog.Logger
	mu             sync.Mutex // one build at a time
}

func newMediaISO(pol *policy.Engine, tftpRoot, kernel, initrd, dataDir string, log *slog.Logger) *mediaISO {
	return &mediaISO{pol: pol, kernel: filepath.Join(tftpRoot, kernel), initrd: filepath.Join(tftpRoot, initrd),
		dir: filepath.Join(dataDir, "media"), log: log}
}

// server is the URL and pin the medium asks: the agent's https URL for
// the address the request reached, else the request's own base.
func (m *mediaISO) server(r *http.Request) (string, string) {
	if m.pol != nil && m.pol.AgentServer != nil {
		if s := m.pol.AgentServer(r.Host); s != "" {
			return s, m.pol.AgentFingerprint
		}
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	pin := ""
	if m.pol != nil && r.TLS != nil {
		pin = m.pol.AgentFingerprint
	}
	return scheme + "://" + r.Host, pin
}

func (m *mediaISO) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	server, pin := m.server(r)
	if _, err := bootmedia.CheckServer(server, pin); err != nil {
		http.Error(w, "manual preboot medium: "+err.Error(), http.StatusBadRequest)
		return
	}
	file, err := m.build(r, server, pin)
	if err != nil {
		m.log.ErrorContext(r.Context(), "manual preboot medium not built", "err", err)
		http.Error(w, "manual preboot medium unavailable: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	f, err := os.Open(file)
	if err != nil {
		http.Error(w, "manual preboot medium unavailable", http.StatusServiceUnavailable)
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		http.Error(w, "manual preboot medium unavailable", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", `attachment; filename="`+MediaFile+`"`)
	http.ServeContent(w, r, MediaFile, fi.ModTime(), f)
}

// build returns the medium for server and pin, building it when the
// environment or the server changed since the last one.
func (m *mediaISO) build(r *http.Request, server, pin string) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00", server, pin)
	for _, f := range []string{m.kernel, m.initrd} {
		st, err := os.Stat(f)
		if err != nil {
			return "", fmt.Errorf("the imaging environment is missing (%s): run `preboot env build --out %s`", filepath.Base(f), filepath.Dir(f))
		}
		fmt.Fprintf(h, "%s\x00%d\x00%d\x00", f, st.Size(), st.ModTime().UnixNano())
	}
	key := hex.EncodeToString(h.Sum(nil))[:16]
	file := filepath.Join(m.dir, "preboot-"+key+".iso")
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, err := os.Stat(file); err == nil {
		return file, nil
	}
	if err := os.MkdirAll(m.dir, 0o755); err != nil {
		return "", err
	}
	m.log.InfoContext(r.Context(), "building the manual preboot medium", "server", server, "file", file)
	if err := bootmedia.Build(r.Context(), bootmedia.Options{Kernel: m.kernel, Initrd: m.initrd, Out: file, Server: server, TLS: pin, Logger: m.log}); err != nil {
		return "", err
	}
	// Media made from an older environment are not offered any more;
	// those for the server's other addresses stay.
	env, err := os.Stat(m.initrd)
	if err != nil {
		return file, nil
	}
	old, _ := filepath.Glob(filepath.Join(m.dir, "preboot-*.iso"))
	for _, o := range old {
		if st, err := os.Stat(o); err == nil && o != file && st.ModTime().Before(env.ModTime()) {
			_ = os.Remove(o)
		}
	}
	return file, nil
}
