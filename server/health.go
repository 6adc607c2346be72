package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"time"
)

// readyTimeout bounds each readiness check: a load balancer asks often
// and must get an answer before its own timeout (usually 2–5 s).
const readyTimeout = 2 * time.Second

// ReadyCheck is one line of GET /readyz.
type ReadyCheck struct {
	Name  string `json:"name"`
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	// Milliseconds is how long the check took.
	Milliseconds float64 `json:"ms"`
}

// Readiness is the body of GET /readyz.
type Readiness struct {
	Ready  bool         `json:"ready"`
	Reason string       `json:"reason,omitempty"` // the first failed check, in a sentence
	Checks []ReadyCheck `json:"checks"`
}

// ready answers GET /readyz: 200 when this server can serve a boot (its
// store answers a read within readyTimeout, its data directory takes a
// write, every enabled daemon listens), 503 with the reason otherwise.
// A load balancer in front of several servers on one database takes a
// server out of rotation on 503; GET /healthz only says the process
// answers HTTP (a liveness probe: restart it when that fails).
func (s *serverStatus) ready(w http.ResponseWriter, r *http.Request) {
	rd := s.readiness(r.Context())
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if !rd.Ready {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(rd)
}

func (s *serverStatus) readiness(ctx context.Context) Readiness {
	rd := Readiness{Ready: true}
	check := func(name string, f func(context.Context) error) {
		cctx, cancel := context.WithTimeout(ctx, readyTimeout)
		defer cancel()
		start := time.Now()
		err := f(cctx)
		if err == nil && cctx.Err() != nil {
			err = cctx.Err()
		}
		c := ReadyCheck{Name: name, OK: err == nil, Milliseconds: float64(time.Since(start).Microseconds()) / 1000}
		if err != nil {
			c.Error = err.Error()
			if rd.Ready {
				rd.Reason = fmt.Sprintf("%s: %v", name, err)
			}
			rd.Ready = false
		}
		rd.Checks = append(rd.Checks, c)
	}
	check("store", s.pingStore)
	check("data_dir", s.dataDirWritable)
	check("listeners", s.listening)
	return rd
}

// pingStore reads the settings row: one round trip to the database.
func (s *serverStatus) pingStore(ctx context.Context) error {
	done := make(chan error, 1)
	go func() {
		_, _, err := s.st.Settings(ctx)
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("store %s unreachable: %w", s.cfg.Store.Driver, err)
		}
		return nil
	case <-ctx.Done():
		// A driver that ignores the context must not hold the probe.
		return fmt.Errorf("store %s did not answer within %s: %w", s.cfg.Store.Driver, readyTimeout, ctx.Err())
	}
}

// dataDirWritable creates and removes a file in the data directory (the
// SQLite database, leases, the TFTP root and images live there).
func (s *serverStatus) dataDirWritable(context.Context) error {
	dir := s.cfg.DataDir
	if dir == "" {
		return nil
	}
	f, err := os.CreateTemp(dir, ".readyz-*")
	if err != nil {
		return fmt.Errorf("data directory not writable: %w", err)
	}
	name := f.Name()
	_, werr := f.Write([]byte("ok\n"))
	cerr := f.Close()
	rerr := os.Remove(name)
	if err := errors.Join(werr, cerr, rerr); err != nil {
		return fmt.Errorf("data directory not writable: %w", err)
	}
	return nil
}

// listening fails when an enabled daemon is not (or no longer) up.
func (s *serverStatus) listening(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var down []string
	for name, sv := range s.services {
		if sv.Enabled && !sv.Up {
			down = append(down, name)
		}
	}
	if len(down) > 0 {
		slices.Sort(down)
		return fmt.Errorf("not listening: %v", down)
	}
	return nil
}
