package httpstore

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/preboot/preboot/image"
	"github.com/preboot/preboot/tlspin"
)

// Client defaults, used when the corresponding field is zero.
const (
	DefaultAttempts = 5
	DefaultBackoff  = 250 * time.Millisecond
	DefaultTimeout  = 2 * time.Minute
	maxBackoff      = 5 * time.Second
	// missingBatch is how many hashes go into one POST chunks/missing.
	missingBatch = 4096
	// maxJSONAnswer bounds JSON answers (a listing, a manifest).
	maxJSONAnswer = image.MaxManifestSize + 1<<20
)

// Client talks to a Preboot server's image repository. It implements
// image.ChunkStore and image.Publisher, so image.Capture and image.Restore
// run against a remote repository, and the admin calls of `preboot image`.
//
// Idempotent calls (everything but Import) are retried with exponential
// backoff on network errors and 5xx answers (except 501 and 507), at most
// Attempts times. Errors name the method, URL and status; answers with a
// status are *StatusError, which unwraps to image.ErrNotFound,
// image.ErrMissingChunks, image.ErrExists or image.ErrCorruptChunk where
// they apply. A Client is safe for concurrent use; do not copy it after
// first use.
type Client struct {
	// BaseURL is the server's root URL, e.g. http://10.0.0.1:8080 (what
	// preboot.server= carries); the /api/v1 routes are appended.
	BaseURL string
	// Token, when set, goes out as "Authorization: Bearer TOKEN".
	Token string
	// HTTP is the client to use; nil means one with keep-alive for
	// parallel chunk transfers and no overall timeout (Timeout bounds each
	// attempt of the short calls instead).
	HTTP *http.Client
	// TLSFingerprint, when set (sha256:HEX), makes the default client
	// accept exactly the server certificate with that fingerprint (the
	// pin on the imaging environment's kernel command line).
	TLSFingerprint string
	// Image, when set, is sent as ?image=NAME on chunk requests so that a
	// server restricting a token to one image can check them.
	Image string
	// Replace makes Publish replace an existing image of the same name
	// (otherwise that is an error wrapping image.ErrExists).
	Replace bool
	// Attempts bounds tries per call (DefaultAttempts when 0; 1 = no retry).
	Attempts int
	// Backoff is the first retry delay, doubled per retry up to 5 s
	// (DefaultBackoff when 0).
	Backoff time.Duration
	// Timeout bounds one attempt of a chunk, manifest, list or remove
	// call (DefaultTimeout when 0). Verify, Export and Import are bounded
	// by their context only.
	Timeout time.Duration
	Logger  *slog.Logger

	once sync.Once
	hc   *http.Client
}

// StatusError is a non-2xx answer from the server.
type StatusError struct {
	Method     string
	URL        string
	StatusCode int
	Status     string // "409 Conflict"
	Body       ErrorBody
}

func (e *StatusError) Error() string {
	msg := e.Body.Error
	if msg == "" {
		msg = "(no error message)"
	}
	return fmt.Sprintf("%s %s: %s: %s", e.Method, e.URL, e.Status, msg)
}

// Unwrap maps the answer to the image package's errors.
func (e *StatusError) Unwrap() error {
	switch {
	case e.Body.Code == CodeMissingChunks:
		return image.ErrMissingChunks
	case e.Body.Code == CodeExists:
		return image.ErrExists
	case e.Body.Code == CodeCorrupt:
		return image.ErrCorruptChunk
	case e.StatusCode == http.StatusNotFound:
		return image.ErrNotFound
	}
	return nil
}

func (c *Client) client() *http.Client {
	c.once.Do(func() {
		if c.HTTP != nil {
			c.hc = c.HTTP
			return
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = 32
		if c.TLSFingerprint != "" {
			tc, err := tlspin.Config(c.TLSFingerprint)
			if err != nil {
				// A malformed pin accepts no certificate at all.
				c.log().Error("bad TLS fingerprint: no server will be accepted", "err", err)
				tc = &tls.Config{VerifyPeerCertificate: func([][]byte, [][]*x509.Certificate) error { return err }, InsecureSkipVerify: true}
			}
			tr.TLSClientConfig = tc
		}
		c.hc = &http.Client{Transport: tr}
	})
	return c.hc
}

func (c *Client) log() *slog.Logger {
	if c.Logger != nil {
		return c.Logger
	}
	return slog.New(slog.DiscardHandler)
}

func (c *Client) url(path string, q url.Values) string {
	base := strings.TrimRight(c.BaseURL, "/")
	base = strings.TrimSuffix(base, APIPrefix)
	u := base + APIPrefix + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	return u
}

func (c *Client) chunkQuery() url.Values {
	if c.Image == "" {
		return nil
	}
	return url.Values{"image": {c.Image}}
}

// call describes one API request.
type call struct {
	method, path string
	query        url.Values
	body         []byte    // sent for every attempt (nil: no body)
	stream       io.Reader // sent once (no retry); excludes body
	contentType  string
	noTimeout    bool // no per-attempt timeout (long server work, streams)
	noRetry      bool
	header       http.Header // added to the request
	// handle reads a 2xx answer inside the attempt. An error it wraps in
	// retryable is retried like a network error.
	handle func(resp *http.Response) error
}

type retryableError struct{ err error }

func (r retryableError) Error() string { return r.err.Error() }
func (r retryableError) Unwrap() error { return r.err }

// guardedReader serves body bytes until closed; the transport may still
// read a request body after Do returns, and Put must not retain data.
type guardedReader struct {
	mu     sync.Mutex
	r      bytes.Reader
	closed bool
}

func (g *guardedReader) Read(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return 0, errors.New("request body read after the call returned")
	}
	return g.r.Read(p)
}

func (g *guardedReader) Close() error {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
	return nil
}

// do runs a call with retries. It returns the number of attempts made.
func (c *Client) do(ctx context.Context, cl call) (int, error) {
	attempts := c.Attempts
	if attempts <= 0 {
		attempts = DefaultAttempts
	}
	if cl.noRetry || cl.stream != nil {
		attempts = 1
	}
	backoff := c.Backoff
	if backoff <= 0 {
		backoff = DefaultBackoff
	}
	u := c.url(cl.path, cl.query)
	var last error
	i := 1
	for ; ; i++ {
		retry, err := c.attempt(ctx, cl, u)
		if err == nil {
			return i, nil
		}
		last = err
		if !retry || i >= attempts || ctx.Err() != nil {
			break
		}
		d := min(backoff<<(i-1), maxBackoff)
		d = d/2 + rand.N(d/2+1) // jitter: many agents hit one server
		c.log().WarnContext(ctx, "image repository request failed, retrying", "method", cl.method, "url", u, "attempt", i, "delay", d, "err", err)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return i, fmt.Errorf("%s %s: %w (after: %w)", cl.method, u, ctx.Err(), last)
		case <-t.C:
		}
	}
	if ctx.Err() != nil && !errors.Is(last, ctx.Err()) {
		return i, fmt.Errorf("%s %s: %w (after: %w)", cl.method, u, ctx.Err(), last)
	}
	if i > 1 {
		return i, fmt.Errorf("%w (gave up after %d attempts)", last, i)
	}
	return i, last
}

// attempt sends the request once; retry tells whether a failure is worth
// another try.
func (c *Client) attempt(ctx context.Context, cl call, u string) (retry bool, err error) {
	actx := ctx
	if !cl.noTimeout {
		t := c.Timeout
		if t <= 0 {
			t = DefaultTimeout
		}
		var cancel context.CancelFunc
		actx, cancel = context.WithTimeout(ctx, t)
		defer cancel()
	}
	var body io.Reader
	var guard *guardedReader
	switch {
	case cl.stream != nil:
		body = cl.stream
	case cl.body != nil:
		guard = &guardedReader{}
		guard.r.Reset(cl.body)
		body = guard
		defer guard.Close()
	}
	req, err := http.NewRequestWithContext(actx, cl.method, u, body)
	if err != nil {
		return false, fmt.Errorf("%s %s: %w", cl.method, u, err)
	}
	for k, v := range cl.header {
		req.Header[k] = v
	}
	if guard != nil {
		req.ContentLength = int64(len(cl.body))
		req.GetBody = nil
	}
	if cl.contentType != "" {
		req.Header.Set("Content-Type", cl.contentType)
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := c.client().Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return false, fmt.Errorf("%s %s: %w", cl.method, u, ctx.Err())
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // it repeats method and URL
		}
		return true, fmt.Errorf("%s %s: cannot reach the image repository: %w", cl.method, u, err)
	}
	defer func() {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
	}()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		se := &StatusError{Method: cl.method, URL: u, StatusCode: resp.StatusCode, Status: resp.Status}
		data, rerr := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if json.Unmarshal(data, &se.Body) != nil || se.Body.Error == "" {
			se.Body.Error = strings.TrimSpace(string(data))
			if len(se.Body.Error) > 200 {
				se.Body.Error = se.Body.Error[:200] + "…"
			}
		}
		if rerr != nil && se.Body.Error == "" {
			se.Body.Error = "reading the answer: " + rerr.Error()
		}
		retry := resp.StatusCode >= 500 && resp.StatusCode != http.StatusNotImplemented &&
			resp.StatusCode != http.StatusInsufficientStorage || resp.StatusCode == http.StatusTooManyRequests
		return retry, se
	}
	if cl.handle == nil {
		return false, nil
	}
	if err := cl.handle(resp); err != nil {
		var re retryableError
		if errors.As(err, &re) {
			if ctx.Err() != nil {
				return false, fmt.Errorf("%s %s: %w", cl.method, u, ctx.Err())
			}
			return true, fmt.Errorf("%s %s: reading the answer: %w", cl.method, u, re.err)
		}
		return false, fmt.Errorf("%s %s: %w", cl.method, u, err)
	}
	return false, nil
}

// decodeJSON returns a handle that decodes a bounded JSON answer into out.
func decodeJSON(out any) func(*http.Response) error {
	return func(resp *http.Response) error {
		data, err := io.ReadAll(io.LimitReader(resp.Body, maxJSONAnswer))
		if err != nil {
			return retryableError{err}
		}
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("bad answer: %w", err)
		}
		return nil
	}
}

// Missing implements image.ChunkStore, asking in batches.
func (c *Client) Missing(ctx context.Context, hashes []image.Hash) (map[image.Hash]struct{}, error) {
	out := make(map[image.Hash]struct{})
	for len(hashes) > 0 {
		n := min(len(hashes), missingBatch)
		req := MissingRequest{Hashes: make([]string, n)}
		asked := make(map[image.Hash]struct{}, n)
		for i, h := range hashes[:n] {
			req.Hashes[i] = h.String()
			asked[h] = struct{}{}
		}
		body, err := json.Marshal(req)
		if err != nil {
			return nil, err
		}
		var resp MissingResponse
		if _, err := c.do(ctx, call{method: http.MethodPost, path: "/chunks/missing", query: c.chunkQuery(), body: body,
			contentType: "application/json", handle: decodeJSON(&resp)}); err != nil {
			return nil, err
		}
		for _, s := range resp.Missing {
			h, err := image.ParseHash(s)
			if err != nil {
				return nil, fmt.Errorf("chunks/missing: bad answer: %w", err)
			}
			if _, ok := asked[h]; !ok {
				return nil, fmt.Errorf("chunks/missing: bad answer: hash %s was not asked for", h)
			}
			out[h] = struct{}{}
		}
		hashes = hashes[n:]
	}
	return out, nil
}

// Put implements image.ChunkStore. The server verifies the chunk; a corrupt
// one is an error wrapping image.ErrCorruptChunk.
func (c *Client) Put(ctx context.Context, h image.Hash, data []byte) error {
	if data == nil {
		data = []byte{}
	}
	_, err := c.do(ctx, call{method: http.MethodPut, path: "/chunks/" + h.String(), query: c.chunkQuery(), body: data,
		contentType: "application/zstd"})
	return err
}

// Get implements image.ChunkStore. A chunk the server lacks is an error
// wrapping image.ErrNotFound.
func (c *Client) Get(ctx context.Context, h image.Hash, dst []byte) ([]byte, error) {
	out := dst[:0]
	_, err := c.do(ctx, call{method: http.MethodGet, path: "/chunks/" + h.String(), query: c.chunkQuery(),
		handle: func(resp *http.Response) error {
			if resp.ContentLength > DefaultMaxChunkBytes {
				return fmt.Errorf("chunk of %d bytes, limit %d", resp.ContentLength, DefaultMaxChunkBytes)
			}
			buf := bytes.NewBuffer(dst[:0])
			if resp.ContentLength > 0 {
				buf.Grow(int(resp.ContentLength))
			}
			n, err := buf.ReadFrom(io.LimitReader(resp.Body, DefaultMaxChunkBytes+1))
			if err != nil {
				return retryableError{err}
			}
			if n > DefaultMaxChunkBytes {
				return fmt.Errorf("chunk larger than %d bytes", DefaultMaxChunkBytes)
			}
			if resp.ContentLength >= 0 && n != resp.ContentLength {
				return retryableError{fmt.Errorf("got %d of %d bytes", n, resp.ContentLength)}
			}
			out = buf.Bytes()
			return nil
		}})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Publish implements image.Publisher: the server validates m and publishes
// it only if it holds every chunk (else an error wrapping
// image.ErrMissingChunks). An existing name is image.ErrExists unless
// Replace is set.
func (c *Client) Publish(ctx context.Context, m *image.Manifest) error {
	var buf bytes.Buffer
	if err := m.Encode(&buf); err != nil {
		return err
	}
	if err := image.ValidName(m.Name); err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	var q url.Values
	if c.Replace {
		q = url.Values{"replace": {"true"}}
	}
	n, err := c.do(ctx, call{method: http.MethodPut, path: "/images/" + m.Name, query: q, body: buf.Bytes(),
		contentType: "application/json"})
	if err != nil && n > 1 && errors.Is(err, image.ErrExists) {
		// An earlier attempt may have published it and lost the answer.
		if got, gerr := c.Manifest(ctx, m.Name); gerr == nil {
			var gb bytes.Buffer
			if got.Encode(&gb) == nil && bytes.Equal(gb.Bytes(), buf.Bytes()) {
				return nil
			}
		}
	}
	return err
}

// List returns the images with their sizes and the repository totals.
func (c *Client) List(ctx context.Context) (*ImageList, error) {
	var out ImageList
	if _, err := c.do(ctx, call{method: http.MethodGet, path: "/images", handle: decodeJSON(&out)}); err != nil {
		return nil, err
	}
	return &out, nil
}

// Detail returns one image's manifest and usage.
func (c *Client) Detail(ctx context.Context, name string) (*ImageDetail, error) {
	if err := image.ValidRef(name); err != nil {
		return nil, err
	}
	var out ImageDetail
	if _, err := c.do(ctx, call{method: http.MethodGet, path: "/images/" + name, handle: decodeJSON(&out)}); err != nil {
		return nil, err
	}
	if out.Manifest == nil {
		return nil, fmt.Errorf("image %s: answer holds no manifest", name)
	}
	return &out, nil
}

// Manifest returns the (validated) manifest of image name; what a restore
// needs.
func (c *Client) Manifest(ctx context.Context, name string) (*image.Manifest, error) {
	if err := image.ValidRef(name); err != nil {
		return nil, err
	}
	var m *image.Manifest
	_, err := c.do(ctx, call{method: http.MethodGet, path: "/images/" + name, query: url.Values{"only": {"manifest"}},
		handle: func(resp *http.Response) error {
			data, err := io.ReadAll(io.LimitReader(resp.Body, image.MaxManifestSize+1))
			if err != nil {
				return retryableError{err}
			}
			m, err = image.ParseManifest(bytes.NewReader(data))
			return err
		}})
	if err != nil {
		return nil, err
	}
	if m.Name != image.RefName(name) {
		return nil, fmt.Errorf("image %s: server sent the manifest of %q", name, m.Name)
	}
	return m, nil
}

// Remove deletes image name, every version of it (NAME) or one version
// (NAME@N); chunks stay until the server's GC.
func (c *Client) Remove(ctx context.Context, name string) error {
	if err := image.ValidRef(name); err != nil {
		return err
	}
	n, err := c.do(ctx, call{method: http.MethodDelete, path: "/images/" + name})
	if err != nil && n > 1 && errors.Is(err, image.ErrNotFound) {
		return nil // an earlier attempt removed it
	}
	return err
}

// Versions lists the versions of image name and which one is current.
func (c *Client) Versions(ctx context.Context, name string) (*ImageVersions, error) {
	if err := image.ValidName(name); err != nil {
		return nil, err
	}
	var out ImageVersions
	if _, err := c.do(ctx, call{method: http.MethodGet, path: "/images/" + name + "/versions", handle: decodeJSON(&out)}); err != nil {
		return nil, err
	}
	return &out, nil
}

// Rollback makes version to of image name current (0: the version before
// the current one) and returns the versions.
func (c *Client) Rollback(ctx context.Context, name string, to int) (*ImageVersions, error) {
	if err := image.ValidName(name); err != nil {
		return nil, err
	}
	body, err := json.Marshal(RollbackRequest{To: to})
	if err != nil {
		return nil, err
	}
	var out ImageVersions
	if _, err := c.do(ctx, call{method: http.MethodPost, path: "/images/" + name + "/rollback", body: body,
		contentType: "application/json", handle: decodeJSON(&out)}); err != nil {
		return nil, err
	}
	return &out, nil
}

// GC asks the server to collect the repository's garbage now.
func (c *Client) GC(ctx context.Context) (*image.GCStats, error) {
	var out image.GCStats
	if _, err := c.do(ctx, call{method: http.MethodPost, path: "/images/gc", noTimeout: true, noRetry: true,
		handle: decodeJSON(&out)}); err != nil {
		return nil, err
	}
	return &out, nil
}

// Verify asks the server to check every chunk of image name. A damaged
// image is not an error: see VerifyResult.OK and Error.
func (c *Client) Verify(ctx context.Context, name string) (*VerifyResult, error) {
	if err := image.ValidRef(name); err != nil {
		return nil, err
	}
	var out VerifyResult
	if _, err := c.do(ctx, call{method: http.MethodPost, path: "/images/" + name + "/verify", noTimeout: true,
		handle: decodeJSON(&out)}); err != nil {
		return nil, err
	}
	return &out, nil
}

// Export streams image name as one portable tar file to w and returns the
// bytes written. A stream the server breaks off is an error (the tar in w
// is then incomplete).
func (c *Client) Export(ctx context.Context, name string, w io.Writer) (int64, error) {
	if err := image.ValidRef(name); err != nil {
		return 0, err
	}
	var total int64
	_, err := c.do(ctx, call{method: http.MethodGet, path: "/images/" + name + "/export", noTimeout: true,
		handle: func(resp *http.Response) error {
			n, err := io.Copy(w, resp.Body)
			total += n
			if err != nil && n == 0 && total == 0 {
				return retryableError{err}
			}
			if err != nil {
				return fmt.Errorf("after %d bytes: %w", total, err)
			}
			return nil
		}})
	return total, err
}

// Import uploads a portable file (as written by Export) read from r. name,
// when not empty, renames the image. The server verifies every chunk and
// publishes only at the end; an existing name is image.ErrExists. Import is
// not retried (r is read once).
func (c *Client) Import(ctx context.Context, r io.Reader, name string) (*ImageInfo, error) {
	var q url.Values
	if name != "" {
		if err := image.ValidName(name); err != nil {
			return nil, err
		}
		q = url.Values{"name": {name}}
	}
	var out ImageInfo
	if _, err := c.do(ctx, call{method: http.MethodPost, path: "/images/import", query: q, stream: r,
		contentType: "application/x-tar", noTimeout: true, handle: decodeJSON(&out)}); err != nil {
		return nil, err
	}
	return &out, nil
}

var (
	_ image.ChunkStore = (*Client)(nil)
	_ image.Publisher  = (*Client)(nil)
)

// CallJSON sends in (JSON, nil for no body) to path under the API prefix
// with the client's token, TLS pin and retries, and decodes a 2xx answer
// into out (nil to ignore it). Other services of the server that agents
// talk to (multicast sessions) use it.
func (c *Client) CallJSON(ctx context.Context, method, path string, in, out any) error {
	cl := call{method: method, path: path}
	if in != nil {
		body, err := json.Marshal(in)
		if err != nil {
			return err
		}
		cl.body, cl.contentType = body, "application/json"
	}
	if out != nil {
		cl.handle = decodeJSON(out)
	}
	_, err := c.do(ctx, cl)
	return err
}

// HTTPClient is the http.Client the client sends its requests with.
func (c *Client) HTTPClient() *http.Client { return c.client() }
