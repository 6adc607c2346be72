package server

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/preboot/preboot/config"
)

// Short limits, generous bounds: nothing here depends on exact timing.
const (
	testRead  = 500 * time.Millisecond
	testWrite = 500 * time.Millisecond
	testIdle  = 500 * time.Millisecond
	bound     = 10 * time.Second
)

// limitedServer serves h on loopback with the limits applied and returns
// its address.
func limitedServer(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: h, ErrorLog: slog.NewLogLogger(slog.DiscardHandler, slog.LevelError)}
	newHTTPLimits(config.HTTP{ReadTimeout: testRead, WriteTimeout: testWrite, IdleTimeout: testIdle}).apply(hs)
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	return ln.Addr().String()
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// waitResult waits (bounded) for what a handler reports.
func waitResult[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(bound):
		t.Fatalf("%s: nothing after %s", what, bound)
		panic("unreachable")
	}
}

// A body that stalls is cut after the read timeout; one that trickles
// below the minimum rate too; a slow upload that keeps the rate is not,
// however long it takes.
func TestBodyDeadlines(t *testing.T) {
	type result struct {
		n   int64
		err error
	}
	results := make(chan result, 1)
	addr := limitedServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		results <- result{n, err}
		fmt.Fprintf(w, "%d\n", n)
	}))

	t.Run("stalled", func(t *testing.T) {
		c := dial(t, addr)
		fmt.Fprintf(c, "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n0123456789")
		r := waitResult(t, results, "stalled body")
		if r.err == nil || r.n != 10 {
			t.Fatalf("stalled body: read %d, %v; want a timeout after 10 bytes", r.n, r.err)
		}
	})

	t.Run("trickle", func(t *testing.T) {
		c := dial(t, addr)
		fmt.Fprintf(c, "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
		stop := make(chan struct{})
		defer close(stop)
		go func() { // 10 bytes/s, far below MinBodyRate, never stalling
			for i := 0; i < 200; i++ {
				select {
				case <-stop:
					return
				case <-time.After(100 * time.Millisecond):
				}
				if _, err := c.Write([]byte("x")); err != nil {
					return
				}
			}
		}()
		r := waitResult(t, results, "trickled body")
		if r.err == nil {
			t.Fatalf("trickled body read whole (%d bytes)", r.n)
		}
	})

	t.Run("slow upload completes", func(t *testing.T) {
		c := dial(t, addr)
		const pieces, size = 20, 64 << 10 // 1.25 MiB over ~2 s: 4× the read timeout, well above the rate
		fmt.Fprintf(c, "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", pieces*size)
		for range pieces {
			if _, err := c.Write(make([]byte, size)); err != nil {
				t.Fatal(err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		r := waitResult(t, results, "slow upload")
		if r.err != nil || r.n != pieces*size {
			t.Fatalf("slow upload: %d bytes, %v", r.n, r.err)
		}
	})
}

// An idle keep-alive connection is closed after the idle timeout.
func TestIdleConnectionClosed(t *testing.T) {
	addr := limitedServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") }))
	c := dial(t, addr)
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(bound))
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("idle connection: %v, want EOF (closed by the server)", err)
	}
	t.Logf("closed after %v idle", time.Since(start))

	// A connection that never sends its headers is closed too.
	c2 := dial(t, addr)
	fmt.Fprintf(c2, "GET / HTTP/1.1\r\n")
	c2.SetReadDeadline(time.Now().Add(bound))
	if _, err := io.ReadAll(c2); err != nil {
		t.Fatalf("half-sent headers: %v, want the server to close", err)
	}
}

// Long responses that keep moving are not cut (a slow download, an event
// stream quiet for longer than every timeout); a client that stops
// reading is.
func TestResponseDeadlines(t *testing.T) {
	file := filepath.Join(t.TempDir(), "big")
	if err := os.WriteFile(file, bytes.Repeat([]byte("0123456789abcdef"), 4<<20), 0o600); err != nil { // 64 MiB
		t.Fatal(err)
	}
	served := make(chan error, 1)
	addr := limitedServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/stream": // quiet for 2× every timeout, then more
			fl := w.(http.Flusher)
			for i := range 3 {
				fmt.Fprintf(w, "event %d\n", i)
				fl.Flush()
				select {
				case <-r.Context().Done():
					served <- r.Context().Err()
					return
				case <-time.After(2 * testRead):
				}
			}
			served <- nil
		case "/slow": // 64 KiB every 100 ms for 2 s
			for range 20 {
				if _, err := w.Write(make([]byte, 64<<10)); err != nil {
					served <- err
					return
				}
				w.(http.Flusher).Flush()
				time.Sleep(100 * time.Millisecond)
			}
			served <- nil
		case "/file":
			f, err := os.Open(file)
			if err != nil {
				served <- err
				return
			}
			defer f.Close()
			fi, _ := f.Stat()
			sw := &statusWriter{ResponseWriter: w} // as the access log wraps it
			http.ServeContent(sw, r, "big", fi.ModTime(), f)
			served <- fmt.Errorf("served %d bytes", sw.bytes)
		}
	}))

	get := func(path string) *http.Response {
		t.Helper()
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	t.Run("event stream", func(t *testing.T) {
		b, err := io.ReadAll(get("/stream").Body)
		if err := waitResult(t, served, "stream"); err != nil {
			t.Fatalf("stream ended early: %v", err)
		}
		if err != nil || strings.Count(string(b), "event") != 3 {
			t.Fatalf("stream: %q %v", b, err)
		}
	})
	t.Run("slow download", func(t *testing.T) {
		b, rerr := io.ReadAll(get("/slow").Body)
		if err := waitResult(t, served, "slow"); err != nil || rerr != nil || len(b) != 20<<16 {
			t.Fatalf("slow download: %d bytes, %v, %v", len(b), err, rerr)
		}
	})
	t.Run("file read slowly", func(t *testing.T) {
		resp := get("/file")
		var n int64
		for { // ~2 MiB/s: 64 MiB would take 30 s; read 3 MiB over ~1.5 s
			m, err := io.CopyN(io.Discard, resp.Body, 64<<10)
			n += m
			if err != nil {
				t.Fatalf("after %d bytes: %v", n, err)
			}
			if n >= 3<<20 {
				break
			}
			time.Sleep(30 * time.Millisecond)
		}
		resp.Body.Close()
		waitResult(t, served, "file")
	})
	t.Run("reader stops", func(t *testing.T) {
		c := dial(t, addr)
		fmt.Fprintf(c, "GET /file HTTP/1.1\r\nHost: x\r\n\r\n")
		// Never read: the server's writes block, then time out.
		err := waitResult(t, served, "unread file")
		if err == nil || !strings.Contains(err.Error(), "served") || strings.Contains(err.Error(), fmt.Sprint(64<<20)) {
			t.Fatalf("unread response: %v", err)
		}
	})
}

// Oversized headers are refused.
func TestMaxHeaderBytes(t *testing.T) {
	addr := limitedServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") }))
	req, _ := http.NewRequestWithContext(context.Background(), "GET", "http://"+addr+"/", nil)
	req.Header.Set("X-Big", strings.Repeat("a", 2*MaxHeaderBytes))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("status %d", resp.StatusCode)
	}
}

// A FIFO (or another non-regular file) in the TFTP root is not served
// over /files/, and does not block the handler.
func TestFilesFIFONotFound(t *testing.T) {
	h, _, cfg := newHandler(t)
	if err := syscall.Mkfifo(filepath.Join(cfg.TFTP.Root, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(cfg.TFTP.Root, "dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/files/fifo", "/files/dir", "/files/fifo/x"} {
		done := make(chan int, 1)
		go func() { code, _ := call(h, "GET", p, remote, "", ""); done <- code }()
		if code := waitResult(t, done, p); code != http.StatusNotFound {
			t.Errorf("%s: %d, want 404", p, code)
		}
	}
}
