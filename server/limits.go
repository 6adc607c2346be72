package server

import (
	"io"
	"net/http"
	"time"

	"github.com/preboot/preboot/config"
)

// HTTP limits that are not configurable.
const (
	// MaxHeaderBytes bounds a request's header block.
	MaxHeaderBytes = 64 << 10
	// maxHeaderTimeout bounds the wait for a request's headers.
	maxHeaderTimeout = 10 * time.Second
	// MinBodyRate is the average rate (bytes/s) a request body must keep
	// once http.read_timeout has passed: a trickling upload is cut.
	MinBodyRate = 4 << 10
	// writePiece is the most a response writes under one write deadline:
	// a response must move writePiece bytes every http.write_timeout.
	writePiece = 256 << 10
)

// httpLimits bounds how long a connection may hold the server: a request's
// headers and body must arrive, and its response be taken, at a minimum
// pace; idle keep-alive connections are closed. Long transfers (chunk
// uploads and downloads, image export and import, the event stream) are
// not cut as long as data flows: the deadlines move with it.
type httpLimits struct {
	read, write, idle time.Duration
}

func newHTTPLimits(c config.HTTP) httpLimits {
	return httpLimits{read: c.ReadTimeout, write: c.WriteTimeout, idle: c.IdleTimeout}
}

// apply sets hs's timeouts and wraps its handler so that deadlines follow
// the data.
func (l httpLimits) apply(hs *http.Server) {
	hs.ReadHeaderTimeout = maxHeaderTimeout
	if l.read > 0 {
		hs.ReadHeaderTimeout = min(l.read, maxHeaderTimeout)
	}
	hs.ReadTimeout = l.read
	hs.WriteTimeout = l.write
	hs.IdleTimeout = l.idle
	hs.MaxHeaderBytes = MaxHeaderBytes
	hs.Handler = l.wrap(hs.Handler)
}

// wrap extends the connection's deadlines as the request body arrives and
// the response leaves.
func (l httpLimits) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		if r.Body == nil || r.Body == http.NoBody || (r.ContentLength == 0 && len(r.TransferEncoding) == 0) {
			// Nothing more to read: without a read deadline the server's
			// background read (which notices a client going away) does not
			// cancel a long response (the event stream) when the deadline
			// passes.
			_ = rc.SetReadDeadline(time.Time{})
		} else if l.read > 0 {
			r.Body = &deadlineBody{ReadCloser: r.Body, rc: rc, start: time.Now(), stall: l.read}
		}
		if l.write > 0 {
			w = &deadlineWriter{ResponseWriter: w, rc: rc, stall: l.write}
			// The server writes the end of the response after the handler.
			defer func() { _ = rc.SetWriteDeadline(time.Now().Add(l.write)) }()
		}
		next.ServeHTTP(w, r)
	})
}

// deadlineBody moves the read deadline while the body arrives: never more
// than stall after the last read, nor past the time the body would have
// taken at MinBodyRate (plus stall). At the end of the body the deadline
// is lifted (see wrap).
type deadlineBody struct {
	io.ReadCloser
	rc    *http.ResponseController
	start time.Time
	stall time.Duration
	read  int64
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.read += int64(n)
	switch {
	case err == io.EOF:
		_ = b.rc.SetReadDeadline(time.Time{})
	case n > 0:
		now := time.Now()
		byRate := b.start.Add(b.stall + time.Duration(float64(b.read)/MinBodyRate*float64(time.Second)))
		deadline := now.Add(b.stall)
		if byRate.Before(deadline) {
			deadline = byRate
		}
		_ = b.rc.SetReadDeadline(deadline)
	}
	return n, err
}

// deadlineWriter gives every piece of the response (at most writePiece
// bytes) a fresh write deadline: a client that stops reading is cut after
// stall, a slow one that keeps reading is not.
type deadlineWriter struct {
	http.ResponseWriter
	rc    *http.ResponseController
	stall time.Duration
}

func (d *deadlineWriter) arm() { _ = d.rc.SetWriteDeadline(time.Now().Add(d.stall)) }

func (d *deadlineWriter) Write(b []byte) (int, error) {
	var n int
	for len(b) > 0 {
		p := b[:min(len(b), writePiece)]
		d.arm()
		m, err := d.ResponseWriter.Write(p)
		n += m
		if err != nil {
			return n, err
		}
		b = b[m:]
	}
	return n, nil
}

// ReadFrom keeps the fast path (sendfile) of the underlying writer, a
// piece at a time.
func (d *deadlineWriter) ReadFrom(r io.Reader) (int64, error) {
	rf, ok := d.ResponseWriter.(io.ReaderFrom)
	if !ok {
		return io.Copy(writerOnly{d}, r)
	}
	// sendfile sees through one *io.LimitedReader around an *os.File only:
	// pieces of a LimitedReader (http.ServeContent's) replace it.
	outer, _ := r.(*io.LimitedReader)
	var total int64
	for {
		piece := &io.LimitedReader{R: r, N: writePiece}
		if outer != nil {
			if outer.N <= 0 {
				return total, nil
			}
			piece = &io.LimitedReader{R: outer.R, N: min(outer.N, writePiece)}
		}
		want := piece.N
		d.arm()
		n, err := rf.ReadFrom(piece)
		total += n
		if outer != nil {
			outer.N -= n
		}
		if err != nil || n < want {
			return total, err
		}
	}
}

func (d *deadlineWriter) Flush() {
	d.arm()
	_ = d.rc.Flush()
}

// Unwrap gives http.ResponseController the underlying writer.
func (d *deadlineWriter) Unwrap() http.ResponseWriter { return d.ResponseWriter }

// writerOnly hides ReadFrom (no recursion in io.Copy).
type writerOnly struct{ io.Writer }
