package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/preboot/preboot/timing"
	"github.com/preboot/preboot/tlspin"
)

// Job is the work the server assigned (GET /api/v1/agent/job): one run of
// a bundle. Kind is the bundle kind (image-capture, image-restore,
// multicast, script, wipe, inventory) and Params its parameters, decoded
// with bundle.Decode; Image, After, Compression and Device repeat what
// the imaging kinds need (Params win when both are set).
type Job struct {
	ID          int64           `json:"id"`
	Kind        string          `json:"kind"`
	Bundle      string          `json:"bundle,omitempty"`
	Params      json.RawMessage `json:"params,omitempty"`
	Image       string          `json:"image"`
	MAC         string          `json:"mac,omitempty"`
	After       string          `json:"after,omitempty"` // "reboot", "poweroff", "none"
	Compression int             `json:"compression,omitempty"`
	Device      string          `json:"device,omitempty"` // "" = first non-removable disk
	// Hostname is the device record's name as a host label (RFC 1123),
	// for bundles that personalize the restored system.
	Hostname string `json:"hostname,omitempty"`
}

// JobProgress is POSTed to /api/v1/agent/job/progress.
type JobProgress struct {
	State      string `json:"state"` // "running", "succeeded", "failed"
	Phase      string `json:"phase,omitempty"`
	BytesDone  int64  `json:"bytes_done"`
	BytesTotal int64  `json:"bytes_total"`
	Rate       int64  `json:"rate"` // bytes per second
	Message    string `json:"message,omitempty"`
	// Timing is where a capture's or restore's time went so far (servers
	// that predate it ignore it).
	Timing *timing.Breakdown `json:"timing,omitempty"`
}

// JobResult is POSTed to /api/v1/agent/job/result.
type JobResult struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	Image string `json:"image,omitempty"`
}

// ErrNoJob is returned by JobClient.Job when the server has no work for
// this device.
var ErrNoJob = errors.New("no job assigned")

// JobClient talks to the server's agent API with the per-job token.
// Calls are retried on network errors, 429 and 5xx answers.
type JobClient struct {
	BaseURL string
	Token   string
	HTTP    *http.Client // nil: a client with a 30 s timeout
	// TLSFingerprint, when set (sha256:HEX), makes the default client
	// accept exactly the server certificate with that fingerprint.
	TLSFingerprint string
	// Attempts per call (5 when 0); Backoff is the first retry delay,
	// doubled up to 5 s (500 ms when 0).
	Attempts int
	Backoff  time.Duration
	Logger   *slog.Logger

	hcOnce sync.Once
	hc     *http.Client
	hErr   error
}

// client is HTTP, else a client with a 30 s timeout (pinned when
// TLSFingerprint is set).
func (c *JobClient) client() (*http.Client, error) {
	if c.HTTP != nil {
		return c.HTTP, nil
	}
	c.hcOnce.Do(func() {
		c.hc = &http.Client{Timeout: 30 * time.Second}
		if c.TLSFingerprint != "" {
			tc, err := tlspin.Config(c.TLSFingerprint)
			if err != nil {
				c.hErr = err
				return
			}
			c.hc.Transport = tlspin.Transport(tc)
		}
	})
	return c.hc, c.hErr
}

// APIError is a non-2xx answer of the server.
type APIError struct {
	Method, URL string
	Status      int
	Message     string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("%s %s: %d %s: %s", e.Method, e.URL, e.Status, http.StatusText(e.Status), e.Message)
}

func (e *APIError) retryable() bool {
	return e.Status == http.StatusTooManyRequests || e.Status == http.StatusRequestTimeout ||
		(e.Status >= 500 && e.Status != http.StatusNotImplemented)
}

// Job fetches the assigned job.
func (c *JobClient) Job(ctx context.Context) (*Job, error) {
	var j Job
	err := c.do(ctx, http.MethodGet, "/api/v1/agent/job", nil, &j)
	var ae *APIError
	if errors.As(err, &ae) && ae.Status == http.StatusNotFound {
		return nil, fmt.Errorf("%w: %w", ErrNoJob, err)
	}
	if err != nil {
		return nil, err
	}
	if j.Kind == "" {
		return nil, ErrNoJob
	}
	return &j, nil
}

// Progress reports progress.
func (c *JobClient) Progress(ctx context.Context, p JobProgress) error {
	return c.do(ctx, http.MethodPost, "/api/v1/agent/job/progress", p, nil)
}

// Log sends log lines for the job's event log.
func (c *JobClient) Log(ctx context.Context, lines []string) error {
	return c.do(ctx, http.MethodPost, "/api/v1/agent/job/log", map[string][]string{"lines": lines}, nil)
}

// Result reports the job's outcome.
func (c *JobClient) Result(ctx context.Context, r JobResult) error {
	return c.do(ctx, http.MethodPost, "/api/v1/agent/job/result", r, nil)
}

// Info reports the machine's hardware, disks and image-safe data.
func (c *JobClient) Info(ctx context.Context, in Info) error {
	return c.do(ctx, http.MethodPost, "/api/v1/agent/info", in, nil)
}

func (c *JobClient) do(ctx context.Context, method, path string, body, out any) error {
	var payload []byte
	if body != nil {
		var err error
		if payload, err = json.Marshal(body); err != nil {
			return err
		}
	}
	attempts := c.Attempts
	if attempts <= 0 {
		attempts = 5
	}
	backoff := c.Backoff
	if backoff <= 0 {
		backoff = 500 * time.Millisecond
	}
	var err error
	for i := range attempts {
		if i > 0 {
			if c.Logger != nil {
				c.Logger.DebugContext(ctx, "retrying", "method", method, "path", path, "err", err)
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("%w (last error: %w)", ctx.Err(), err)
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 5*time.Second)
		}
		var retry bool
		retry, err = c.once(ctx, method, path, payload, out)
		if err == nil || !retry || ctx.Err() != nil {
			return err
		}
	}
	return err
}

func (c *JobClient) once(ctx context.Context, method, path string, payload []byte, out any) (retry bool, err error) {
	url := strings.TrimRight(c.BaseURL, "/") + path
	var rd io.Reader
	if payload != nil {
		rd = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return false, err
	}
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc, err := c.client()
	if err != nil {
		return false, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return true, fmt.Errorf("%s %s: %w", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return true, fmt.Errorf("%s %s: read answer: %w", method, url, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		ae := &APIError{Method: method, URL: url, Status: resp.StatusCode, Message: strings.TrimSpace(string(b))}
		var eb struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(b, &eb) == nil && eb.Error != "" {
			ae.Message = eb.Error
		}
		return ae.retryable(), ae
	}
	if out != nil && resp.StatusCode != http.StatusNoContent && len(bytes.TrimSpace(b)) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			return false, fmt.Errorf("%s %s: decode answer: %w", method, url, err)
		}
	}
	return false, nil
}
