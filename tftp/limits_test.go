package tftp

import (
	"bytes"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// openFDs counts this process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// sampleFDs records the highest descriptor count until stop is closed.
func sampleFDs(t *testing.T, stop <-chan struct{}) <-chan int {
	out := make(chan int, 1)
	go func() {
		high := 0
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			if ents, err := os.ReadDir("/proc/self/fd"); err == nil {
				high = max(high, len(ents))
			}
			select {
			case <-stop:
				out <- high
				return
			case <-tick.C:
			}
		}
	}()
	return out
}

// settle waits (bounded) until v stops changing for 300 ms.
func settle(t *testing.T, v func() float64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	last, since := v(), time.Now()
	for time.Since(since) < 300*time.Millisecond {
		if time.Now().After(deadline) {
			t.Fatal("value still changing after 10 s")
		}
		time.Sleep(10 * time.Millisecond)
		if n := v(); n != last {
			last, since = n, time.Now()
		}
	}
}

// floodFrom sends n distinct read requests for name from one socket bound to
// ip, answering nothing, and returns the socket (closed by the test's end).
func floodFrom(t *testing.T, ip string, server netip.AddrPort, name string, n int) *net.UDPConn {
	t.Helper()
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(ip)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	for i := range n {
		// Distinct requests (an unknown option varies), so that none is a
		// duplicate of another: each would start a transfer if allowed.
		b, err := (&RequestPacket{Op: OpRRQ, Filename: name, Mode: "octet",
			Options: []Option{{Name: "x-flood", Value: itoa(i)}}}).AppendBinary(nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.WriteToUDPAddrPort(b, server); err != nil {
			t.Fatal(err)
		}
		if i%200 == 199 {
			time.Sleep(time.Millisecond) // let the server's socket buffer drain a little
		}
	}
	return conn
}

// Thousands of unanswered requests from one port hold at most
// MaxTransfersPerClient transfers (and their descriptors); a real client
// on another address still gets its file at once.
func TestFloodFromOnePortIsBounded(t *testing.T) {
	root := t.TempDir()
	data := randomBytes(40, 100000)
	writeFile(t, filepath.Join(root, "f"), data)
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	addr := startServer(t, &Server{Root: root, Metrics: m, Logger: discardLogger()})
	before := openFDs(t)

	stop := make(chan struct{})
	high := sampleFDs(t, stop)
	floodFrom(t, "127.0.0.2", addr, "f", 3000)
	// Wait (bounded) until the server has read what the socket buffer kept of the flood.
	settle(t, func() float64 { return metricValue(t, m.refused.WithLabelValues(refusedClientBusy)) })
	if got := metricValue(t, m.refused.WithLabelValues(refusedClientBusy)); got < 200 {
		t.Fatalf("only %v requests refused", got)
	}
	if got := metricValue(t, m.active); got > DefaultMaxTransfersPerClient {
		t.Errorf("%v transfers in progress from one address, cap %d", got, DefaultMaxTransfersPerClient)
	}

	// A real client, from another address, while the flood's transfers are alive.
	out := filepath.Join(t.TempDir(), "out")
	o, err := runClient(t, "tftp", "-m", "binary", "127.0.0.1", itoa(int(addr.Port())), "-c", "get", "f", out)
	if err != nil || strings.Contains(o, "Error") {
		t.Fatalf("tftp during the flood: %v\n%s", err, o)
	}
	if got, _ := os.ReadFile(out); !bytes.Equal(got, data) {
		t.Fatalf("tftp during the flood got %d bytes, want %d", len(got), len(data))
	}
	close(stop)
	// Each transfer holds a socket and a file.
	if h := <-high; h > before+2*DefaultMaxTransfersPerClient+20 {
		t.Errorf("descriptors rose from %d to %d during the flood", before, h)
	}
	// The unanswered transfers give up after a few retransmissions.
	waitFor(t, func() bool { return metricValue(t, m.active) == 0 })
}

// The global cap holds across source addresses.
func TestGlobalTransferCap(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "f"), randomBytes(41, 5000))
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	addr := startServer(t, &Server{Root: root, Metrics: m, Logger: discardLogger(), MaxTransfers: 20, MaxTransfersPerClient: 8})
	before := openFDs(t)
	stop := make(chan struct{})
	high := sampleFDs(t, stop)
	for i := 2; i < 8; i++ {
		floodFrom(t, "127.0.0."+itoa(i), addr, "f", 300)
	}
	settle(t, func() float64 {
		return metricValue(t, m.refused.WithLabelValues(refusedClientBusy)) + metricValue(t, m.refused.WithLabelValues(refusedBusy))
	})
	if got := metricValue(t, m.active); got > 20 {
		t.Errorf("%v transfers in progress, cap 20", got)
	}
	if metricValue(t, m.refused.WithLabelValues(refusedBusy)) == 0 {
		t.Error("no request refused by the global cap")
	}
	close(stop)
	if h := <-high; h > before+2*20+20 {
		t.Errorf("descriptors rose from %d to %d during the flood", before, h)
	}
	waitFor(t, func() bool { return metricValue(t, m.active) == 0 })
	// Once they gave up, the next request is served.
	c := newTestClient(t, addr)
	c.rrq("f")
	c.mustData(1)
}

// A request whose source address never acknowledges (a spoofed victim's)
// gets a few packets, never a window, and the server gives up: a small,
// bounded amplification.
func TestSpoofedRequestGetsBoundedReply(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "big"), randomBytes(42, 10<<20))
	for _, c := range []struct {
		name     string
		opts     []string
		maxBytes int // UDP payload bytes the victim may receive
	}{
		{"no options", nil, 3 * (4 + 512)},
		{"large blksize and window", []string{"blksize", "65464", "windowsize", "64", "tsize", "0"}, 3 * 64},
		{"blksize", []string{"blksize", "1468"}, 3 * 64},
	} {
		t.Run(c.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			m := NewMetrics(reg)
			addr := startServer(t, &Server{Root: root, Metrics: m, Logger: discardLogger()})
			victim := newTestClient(t, addr)
			victim.rrq("big", c.opts...)
			req, _ := (&RequestPacket{Op: OpRRQ, Filename: "big", Mode: "octet"}).AppendBinary(nil)
			// The server gives up on its own (default timeouts: 0.25 + 0.5 + 1 s).
			waitFor(t, func() bool { return metricValue(t, m.transfers.WithLabelValues(resultTimeout)) == 1 })
			packets, total := 0, 0
			for {
				if err := victim.conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond)); err != nil {
					t.Fatal(err)
				}
				n, _, err := victim.conn.ReadFromUDPAddrPort(victim.buf)
				if err != nil {
					break
				}
				packets++
				total += n
				if p, err := ParsePacket(victim.buf[:n]); err == nil {
					if d, ok := p.(*DataPacket); ok && (len(c.opts) > 0 || d.Block != 1) {
						t.Errorf("unacknowledged transfer sent %s", describe(p))
					}
				}
			}
			t.Logf("request %d bytes, the server sent %d packets, %d bytes (%.1f×)", len(req), packets, total, float64(total)/float64(len(req)))
			if packets > 1+DefaultRetriesBeforeAck || total > c.maxBytes {
				t.Fatalf("victim received %d packets, %d bytes; want at most %d packets, %d bytes", packets, total, 1+DefaultRetriesBeforeAck, c.maxBytes)
			}
		})
	}
}

// A retransmitted request (same port, same bytes) does not start a second
// transfer; a different request from the same port (PXE firmware asks for
// the size, aborts, asks again) does.
func TestDuplicateRequestOneTransfer(t *testing.T) {
	root := t.TempDir()
	data := randomBytes(43, 3000)
	writeFile(t, filepath.Join(root, "f"), data)
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	addr := startServer(t, &Server{Root: root, Metrics: m, Logger: discardLogger()})
	c := newTestClient(t, addr)
	for range 5 {
		c.rrq("f")
	}
	// The four copies are refused while the first transfer waits for its
	// first ACK (a loaded machine may read them late: wait, bounded).
	waitFor(t, func() bool { return metricValue(t, m.refused.WithLabelValues(refusedDuplicate)) == 4 })
	// Every packet must come from the one TID (recv checks it).
	r := &windowReceiver{c: c, blksize: 512, window: 1}
	if got := r.run(nil); !bytes.Equal(got, data) {
		t.Fatal("content differs")
	}
	waitFor(t, func() bool { return metricValue(t, m.transfers.WithLabelValues(resultOK)) == 1 })
	if got := metricValue(t, m.refused.WithLabelValues(refusedDuplicate)); got != 4 {
		t.Errorf("duplicates refused: %v, want 4", got)
	}

	// tsize probe, abort, then the real request from the same port.
	drain(c)
	c.rrq("f", "tsize", "0")
	if o := c.mustOACK(); o["tsize"] != "3000" {
		t.Fatalf("OACK %v", o)
	}
	c.sendTo(c.tid, &ErrorPacket{Code: ErrOptionRefused, Message: "size only"})
	drain(c)
	c.rrq("f", "blksize", "1000")
	c.mustOACK()
	c.ack(0)
	r = &windowReceiver{c: c, blksize: 1000, window: 1}
	if got := r.run(nil); !bytes.Equal(got, data) {
		t.Fatal("content differs")
	}
}

// A FIFO in the root is answered "File not found" at once (opened without
// blocking, regular files only).
func TestFIFONotServed(t *testing.T) {
	root := t.TempDir()
	if err := syscall.Mkfifo(filepath.Join(root, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := startServer(t, &Server{Root: root, Logger: discardLogger()})
	c := newTestClient(t, addr)
	c.rrq("fifo")
	c.mustError(ErrFileNotFound)
}

// drain drops what is still queued from a finished transfer (late
// retransmissions under load) and forgets its TID.
func drain(c *testClient) {
	for {
		if err := c.conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond)); err != nil {
			c.t.Fatal(err)
		}
		if _, _, err := c.conn.ReadFromUDPAddrPort(c.buf); err != nil {
			break
		}
	}
	c.tid = netip.AddrPort{}
}
