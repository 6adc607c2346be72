package tftp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func TestLockStepDownload(t *testing.T) {
	root := t.TempDir()
	sizes := map[string]int{"empty": 0, "one": 1, "exact": 512 * 4, "odd": 512*7 + 3, "blk8": 8 * 100}
	for name, n := range sizes {
		writeFile(t, filepath.Join(root, name), randomBytes(uint64(n), n))
	}
	addr := startServer(t, &Server{Root: root})
	for name, n := range sizes {
		for _, blk := range []int{512, 8, 1468} {
			t.Run(fmt.Sprintf("%s/blksize%d", name, blk), func(t *testing.T) {
				got := download(t, addr, name, blk, 1)
				if !bytes.Equal(got, randomBytes(uint64(n), n)) {
					t.Fatalf("got %d bytes, want %d (content differs)", len(got), n)
				}
			})
		}
	}
}

func TestWindowedDownload(t *testing.T) {
	root := t.TempDir()
	data := randomBytes(1, 300_000)
	writeFile(t, filepath.Join(root, "f"), data)
	writeFile(t, filepath.Join(root, "exact"), data[:1468*32])
	addr := startServer(t, &Server{Root: root, MaxWindow: 64})
	for _, w := range []int{1, 2, 16, 64} {
		for _, blk := range []int{512, 1468, 8192} {
			t.Run(fmt.Sprintf("w%d/b%d", w, blk), func(t *testing.T) {
				if got := download(t, addr, "f", blk, w); !bytes.Equal(got, data) {
					t.Fatalf("content differs: got %d bytes", len(got))
				}
				if got := download(t, addr, "exact", blk, w); !bytes.Equal(got, data[:1468*32]) {
					t.Fatalf("content differs: got %d bytes", len(got))
				}
			})
		}
	}
}

// A duplicate ACK must never make the server send again (Sorcerer's Apprentice Syndrome);
// only its timer may.
func TestDuplicateAckDoesNotResend(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "f"), randomBytes(2, 512*3+10))
	addr := startServer(t, &Server{Root: root, MinTimeout: 2 * time.Second, InitialTimeout: 2 * time.Second})
	c := newTestClient(t, addr)
	c.rrq("f")
	c.mustData(1)
	c.ack(1)
	c.mustData(2)
	for range 3 {
		c.ack(1) // duplicates
	}
	if p, err := c.recv(500 * time.Millisecond); err == nil {
		t.Fatalf("server answered a duplicate ACK with %s", describe(p))
	}
	c.ack(2)
	c.mustData(3)
	c.ack(3)
	c.mustData(4)
	c.ack(4)
	if p, err := c.recv(300 * time.Millisecond); err == nil {
		t.Fatalf("unexpected %s after the last ACK", describe(p))
	}
}

func TestWindowGoBackOnAckInsideWindow(t *testing.T) {
	root := t.TempDir()
	data := randomBytes(3, 512*20+5)
	writeFile(t, filepath.Join(root, "f"), data)
	addr := startServer(t, &Server{Root: root, MinTimeout: 2 * time.Second, InitialTimeout: 2 * time.Second})
	c := newTestClient(t, addr)
	c.rrq("f", "windowsize", "8")
	if o := c.mustOACK(); o["windowsize"] != "8" {
		t.Fatalf("OACK %v", o)
	}
	c.ack(0)
	for b := uint16(1); b <= 8; b++ {
		c.mustData(b)
	}
	// Pretend block 4 was lost: acknowledge 3; the server must continue with 4..11.
	c.ack(3)
	for b := uint16(4); b <= 11; b++ {
		c.mustData(b)
	}
	// A stale ACK (already acknowledged block) changes nothing.
	c.ack(2)
	if p, err := c.recv(300 * time.Millisecond); err == nil {
		t.Fatalf("server answered a stale ACK with %s", describe(p))
	}
	c.ack(11)
	for b := uint16(12); b <= 19; b++ {
		c.mustData(b)
	}
	c.ack(19)
	c.mustData(20)
	d := c.mustData(21)
	if len(d.Data) != 5 {
		t.Fatalf("last block has %d bytes", len(d.Data))
	}
	c.ack(21)
}

func TestWrongTIDGetsErrorAndTransferContinues(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "f"), randomBytes(4, 1000))
	addr := startServer(t, &Server{Root: root, MinTimeout: 2 * time.Second, InitialTimeout: 2 * time.Second})
	c := newTestClient(t, addr)
	c.rrq("f")
	c.mustData(1)

	intruder := newTestClient(t, addr)
	intruder.tid = c.tid
	intruder.sendTo(c.tid, &AckPacket{Block: 1})
	if e := intruder.mustError(ErrUnknownTID); !strings.Contains(e.Message, "Unknown transfer ID") {
		t.Errorf("message %q", e.Message)
	}
	if p, err := c.recv(200 * time.Millisecond); err == nil {
		t.Fatalf("the real client got %s because of the intruder", describe(p))
	}
	c.ack(1)
	if d := c.mustData(2); len(d.Data) != 1000-512 {
		t.Fatalf("block 2 has %d bytes", len(d.Data))
	}
	c.ack(2)
}

func TestOptionNegotiation(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "f"), randomBytes(5, 100_000))
	writeFile(t, filepath.Join(root, "text"), []byte("a\nb\r\nc\rd\n"))
	cases := []struct {
		name string
		srv  Server
		mode string
		opts []string
		want map[string]string // nil: no OACK, DATA 1 directly
		blk  int
	}{
		{"blksize too large is lowered", Server{}, "octet", []string{"blksize", "100000"}, map[string]string{"blksize": "65464"}, 65464},
		{"blksize above server max", Server{MaxBlockSize: 1024}, "octet", []string{"blksize", "1468"}, map[string]string{"blksize": "1024"}, 1024},
		{"blksize below 8 is ignored", Server{}, "octet", []string{"blksize", "4"}, nil, 512},
		{"blksize garbage is ignored", Server{}, "octet", []string{"blksize", "x12"}, nil, 512},
		{"case and order kept", Server{}, "OCTET", []string{"TSize", "0", "BLKSIZE", "1000"}, map[string]string{"TSize": "100000", "BLKSIZE": "1000"}, 1000},
		{"netascii tsize is the converted size", Server{}, "netascii", []string{"tsize", "0"}, nil, 512},
		{"windowsize capped", Server{}, "octet", []string{"windowsize", "1000"}, map[string]string{"windowsize": "64"}, 512},
		{"windowsize server cap", Server{MaxWindow: 4}, "octet", []string{"windowsize", "16"}, map[string]string{"windowsize": "4"}, 512},
		{"windowsize 0 ignored", Server{}, "octet", []string{"windowsize", "0"}, nil, 512},
		{"windowsize bounded by bytes", Server{}, "octet", []string{"blksize", "8192", "windowsize", "64"}, map[string]string{"blksize": "8192", "windowsize": "8"}, 8192},
		{"windowsize at least 1", Server{}, "octet", []string{"windowsize", "64", "blksize", "65464"}, map[string]string{"blksize": "65464", "windowsize": "1"}, 65464},
		{"MaxWindowBytes", Server{MaxWindowBytes: 1 << 20}, "octet", []string{"blksize", "65464", "windowsize", "64"}, map[string]string{"blksize": "65464", "windowsize": "16"}, 65464},
		{"timeout echoed", Server{}, "octet", []string{"timeout", "3"}, map[string]string{"timeout": "3"}, 512},
		{"timeout 0 ignored", Server{}, "octet", []string{"timeout", "0"}, nil, 512},
		{"timeout 256 ignored", Server{}, "octet", []string{"timeout", "256"}, nil, 512},
		{"unknown option ignored", Server{}, "octet", []string{"multicast", "", "foo", "bar"}, nil, 512},
		{"tsize nonzero ignored", Server{}, "octet", []string{"tsize", "5"}, nil, 512},
		{"repeated option: first wins", Server{}, "octet", []string{"blksize", "600", "blksize", "700"}, map[string]string{"blksize": "600"}, 600},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := tc.srv
			srv.Root = root
			addr := startServer(t, &srv)
			c := newTestClient(t, addr)
			file := "f"
			if tc.mode == "netascii" {
				file = "text"
				tc.want = map[string]string{"tsize": "14"} // 3 LF -> CR LF, 2 CR -> CR NUL: 9 + 5 = 14
				tc.blk = 14
			}
			req := &RequestPacket{Op: OpRRQ, Filename: file, Mode: tc.mode}
			for i := 0; i+1 < len(tc.opts); i += 2 {
				req.Options = append(req.Options, Option{Name: tc.opts[i], Value: tc.opts[i+1]})
			}
			c.sendTo(addr, req)
			p := c.mustRecv()
			if tc.want == nil {
				d, ok := p.(*DataPacket)
				if !ok || d.Block != 1 || len(d.Data) != tc.blk {
					t.Fatalf("got %s, want DATA 1 with %d bytes", describe(p), tc.blk)
				}
				c.sendTo(c.tid, &ErrorPacket{Code: ErrUndefined, Message: "test done"})
				return
			}
			o, ok := p.(*OAckPacket)
			if !ok {
				t.Fatalf("got %s, want OACK %v", describe(p), tc.want)
			}
			got := map[string]string{}
			var order []string
			for _, opt := range o.Options {
				got[opt.Name] = opt.Value
				order = append(order, opt.Name)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("OACK %v, want %v", got, tc.want)
			}
			if tc.name == "case and order kept" && strings.Join(order, ",") != "TSize,BLKSIZE" {
				t.Fatalf("OACK order %v", order)
			}
			c.ack(0)
			if d := c.mustData(1); len(d.Data) != tc.blk {
				t.Fatalf("DATA 1 has %d bytes, want %d", len(d.Data), tc.blk)
			}
			c.sendTo(c.tid, &ErrorPacket{Code: ErrUndefined, Message: "test done"})
		})
	}
}

func TestOACKRejectedByClient(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "f"), randomBytes(6, 1000))
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	addr := startServer(t, &Server{Root: root, Metrics: m})
	c := newTestClient(t, addr)
	c.rrq("f", "blksize", "1024")
	c.mustOACK()
	c.sendTo(c.tid, &ErrorPacket{Code: ErrOptionRefused, Message: "no thanks"})
	if p, err := c.recv(300 * time.Millisecond); err == nil {
		t.Fatalf("server went on after error 8: %s", describe(p))
	}
	waitFor(t, func() bool { return metricValue(t, m.transfers.WithLabelValues(resultClientError)) == 1 })
}

func TestRetransmitAndGiveUp(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "f"), randomBytes(7, 2000))
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	addr := startServer(t, &Server{Root: root, Metrics: m, MinTimeout: 20 * time.Millisecond, InitialTimeout: 50 * time.Millisecond,
		MaxTimeout: 200 * time.Millisecond, MaxRetries: 3})
	c := newTestClient(t, addr)
	c.rrq("f")
	c.mustData(1)
	c.ack(1)
	c.mustData(2)
	// Stay silent: DATA 2 must come again, MaxRetries times, with growing gaps, then nothing.
	var gaps []time.Duration
	last := time.Now()
	for range 3 {
		c.mustData(2)
		gaps = append(gaps, time.Since(last))
		last = time.Now()
	}
	if p, err := c.recv(time.Second); err == nil {
		t.Fatalf("server sent %s after giving up", describe(p))
	}
	if !(gaps[2] > gaps[0]) {
		t.Errorf("no back-off between retransmissions: %v", gaps)
	}
	waitFor(t, func() bool { return metricValue(t, m.transfers.WithLabelValues(resultTimeout)) == 1 })
	if got := metricValue(t, m.retransmits); got != 3 {
		t.Errorf("retransmits metric %v, want 3", got)
	}
	if got := metricValue(t, m.active); got != 0 {
		t.Errorf("active transfers %v", got)
	}
}

func TestOACKRetransmitted(t *testing.T) {
	root := t.TempDir()
	data := randomBytes(8, 3000)
	writeFile(t, filepath.Join(root, "f"), data)
	addr := startServer(t, &Server{Root: root, InitialTimeout: 30 * time.Millisecond})
	c := newTestClient(t, addr)
	c.rrq("f", "blksize", "1000")
	c.mustOACK()
	c.mustOACK() // not acknowledged: sent again
	c.ack(0)
	r := &windowReceiver{c: c, blksize: 1000, window: 1}
	if got := r.run(nil); !bytes.Equal(got, data) {
		t.Fatal("content differs")
	}
}

// A lossy link both ways: the transfer completes with the right content.
func TestLossyDownload(t *testing.T) {
	root := t.TempDir()
	data := randomBytes(9, 400_000)
	writeFile(t, filepath.Join(root, "f"), data)
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	addr := startServer(t, &Server{Root: root, Metrics: m})
	for _, w := range []int{1, 8} {
		t.Run(fmt.Sprintf("window%d", w), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(42, uint64(w)))
			c := newTestClient(t, addr)
			c.rrq("f", "blksize", "1468", "windowsize", itoa(w))
			c.mustOACK()
			c.ack(0)
			r := &windowReceiver{c: c, blksize: 1468, window: w,
				dropData: func(uint16) bool { return rng.IntN(100) < 5 },
				dropAck:  func(uint16) bool { return rng.IntN(100) < 5 }}
			if got := r.run(nil); !bytes.Equal(got, data) {
				t.Fatal("content differs")
			}
		})
	}
	waitFor(t, func() bool { return metricValue(t, m.transfers.WithLabelValues(resultOK)) >= 1 })
	if metricValue(t, m.retransmits) == 0 {
		t.Error("no retransmissions counted on a lossy link")
	}
}

// Block numbers wrap from 65535 to 0 (blksize 8 makes that a 512 KiB file).
func TestBlockNumberRollover(t *testing.T) {
	root := t.TempDir()
	data := randomBytes(10, 8*65536+8*20+3)
	writeFile(t, filepath.Join(root, "f"), data)
	addr := startServer(t, &Server{Root: root})
	for _, w := range []int{1, 16} {
		t.Run(fmt.Sprintf("window%d", w), func(t *testing.T) {
			if got := download(t, addr, "f", 8, w); !bytes.Equal(got, data) {
				t.Fatalf("content differs: got %d bytes, want %d", len(got), len(data))
			}
		})
	}
}

func TestErrorsToGoClient(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "f"), []byte("x"))
	addr := startServer(t, &Server{Root: root})
	t.Run("mode mail", func(t *testing.T) {
		c := newTestClient(t, addr)
		c.sendTo(addr, &RequestPacket{Op: OpRRQ, Filename: "f", Mode: "mail"})
		c.mustError(ErrIllegalOperation)
	})
	t.Run("WRQ", func(t *testing.T) {
		c := newTestClient(t, addr)
		c.sendTo(addr, &RequestPacket{Op: OpWRQ, Filename: "new", Mode: "octet"})
		c.mustError(ErrAccessViolation)
	})
	t.Run("dotdot", func(t *testing.T) {
		c := newTestClient(t, addr)
		c.rrq(`sub\..\..\f`)
		c.mustError(ErrAccessViolation)
	})
	t.Run("root itself", func(t *testing.T) {
		c := newTestClient(t, addr)
		c.rrq("/")
		c.mustError(ErrAccessViolation)
	})
	t.Run("missing", func(t *testing.T) {
		c := newTestClient(t, addr)
		c.rrq("nope")
		if e := c.mustError(ErrFileNotFound); e.Message != "File not found" {
			t.Errorf("message %q", e.Message)
		}
	})
	t.Run("file as directory", func(t *testing.T) {
		c := newTestClient(t, addr)
		c.rrq("f/x")
		c.mustError(ErrFileNotFound)
	})
}

// Garbage on the server port and on a transfer port is dropped; serving goes on.
func TestGarbagePackets(t *testing.T) {
	root := t.TempDir()
	data := randomBytes(11, 1500)
	writeFile(t, filepath.Join(root, "f"), data)
	addr := startServer(t, &Server{Root: root})
	g := newTestClient(t, addr)
	for _, b := range [][]byte{{}, {0}, {0, 1}, {0, 1, 'f'}, {0, 9, 1, 2}, {0, 3, 0, 1, 'x'}, {0, 4, 0, 1}, {0, 5, 0, 1, 'e', 0},
		{0, 1, 'f', 0}, randomBytes(12, 600), []byte("GET / HTTP/1.0\r\n\r\n")} {
		g.sendRawTo(addr, b)
	}
	if p, err := g.recv(200 * time.Millisecond); err == nil {
		t.Fatalf("server answered garbage with %s", describe(p))
	}
	c := newTestClient(t, addr)
	c.rrq("f")
	c.mustData(1)
	for _, b := range [][]byte{{0}, {0, 4}, {0, 3, 0, 1}, {0, 1, 'f', 0, 'o', 'c', 't', 'e', 't', 0}, {0, 77, 0, 0}} {
		c.sendRawTo(c.tid, b)
	}
	c.ack(1)
	c.mustData(2)
	c.ack(2)
	c.mustData(3)
	c.ack(3)
}

func TestGenerator(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "pxelinux.cfg", "default"), []byte("default from disk\n"))
	var (
		mu  sync.Mutex
		got []Request
	)
	gen := GeneratorFunc(func(ctx context.Context, req Request) (io.ReadSeeker, int64, error) {
		mu.Lock()
		got = append(got, req)
		mu.Unlock()
		switch {
		case strings.HasPrefix(req.Filename, "pxelinux.cfg/01-"):
			s := "label generated for " + req.Filename + " from " + req.Peer.Addr().String() + "\n"
			return strings.NewReader(s), int64(len(s)), nil
		case req.Filename == "secret":
			return nil, 0, fmt.Errorf("policy says no: %w", fs.ErrPermission)
		case req.Filename == "broken":
			return nil, 0, errors.New("database down")
		}
		return nil, 0, fmt.Errorf("not generated: %w", fs.ErrNotExist)
	})
	addr := startServer(t, &Server{Root: root, Generator: gen})
	if b := download(t, addr, `\pxelinux.cfg\01-52-54-00-12-34-56`, 512, 1); string(b) != "label generated for pxelinux.cfg/01-52-54-00-12-34-56 from 127.0.0.1\n" {
		t.Errorf("generated file: %q", b)
	}
	if b := download(t, addr, "pxelinux.cfg/default", 512, 1); string(b) != "default from disk\n" {
		t.Errorf("fallback file: %q", b)
	}
	c := newTestClient(t, addr)
	c.rrq("secret")
	c.mustError(ErrAccessViolation)
	c = newTestClient(t, addr)
	c.rrq("broken")
	c.mustError(ErrUndefined)
	mu.Lock()
	defer mu.Unlock()
	if len(got) == 0 || got[0].Mode != "octet" || got[0].Local != netip.MustParseAddr("127.0.0.1") || got[0].Peer.Port() == 0 {
		t.Errorf("generator saw %+v", got)
	}
}

func TestOnlyGeneratedFiles(t *testing.T) {
	gen := GeneratorFunc(func(ctx context.Context, req Request) (io.ReadSeeker, int64, error) {
		if req.Filename == "hello" {
			return strings.NewReader("hi"), -1, nil // unknown size: tsize found by seeking
		}
		return nil, 0, fs.ErrNotExist
	})
	addr := startServer(t, &Server{Generator: gen})
	c := newTestClient(t, addr)
	c.rrq("hello", "tsize", "0")
	if o := c.mustOACK(); o["tsize"] != "2" {
		t.Errorf("OACK %v", o)
	}
	c.ack(0)
	c.mustData(1)
	c.ack(1)
	c = newTestClient(t, addr)
	c.rrq("other")
	c.mustError(ErrFileNotFound)
}

// Listening on 0.0.0.0, a reply leaves from the address the request was sent to.
func TestReplyFromRequestAddress(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "f"), []byte("hello"))
	var (
		mu   sync.Mutex
		seen []Request
	)
	gen := GeneratorFunc(func(ctx context.Context, req Request) (io.ReadSeeker, int64, error) {
		mu.Lock()
		seen = append(seen, req)
		mu.Unlock()
		return nil, 0, fs.ErrNotExist
	})
	addr := startServerOn(t, &Server{Root: root, Generator: gen}, "0.0.0.0:0")
	for _, ip := range []string{"127.0.0.1", "127.0.0.2", "127.3.4.5"} {
		target := netip.AddrPortFrom(netip.MustParseAddr(ip), addr.Port())
		c := newTestClient(t, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), 0))
		c.server = target
		c.rrq("f")
		c.mustData(1)
		if c.tid.Addr().String() != ip {
			t.Errorf("request to %s answered from %s", ip, c.tid.Addr())
		}
		c.ack(1)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 3 || seen[1].Local.String() != "127.0.0.2" {
		t.Errorf("generator saw %+v", seen)
	}
}

func TestIPv6Loopback(t *testing.T) {
	conn, err := net.ListenPacket("udp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback here: %v", err)
	}
	conn.Close()
	root := t.TempDir()
	data := randomBytes(13, 5000)
	writeFile(t, filepath.Join(root, "f"), data)
	addr := startServerOn(t, &Server{Root: root}, "[::1]:0")
	if got := download(t, addr, "f", 1468, 4); !bytes.Equal(got, data) {
		t.Fatal("content differs")
	}
}

func TestServeStopsTransfersOnCancel(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "f"), randomBytes(14, 10000))
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- (&Server{Root: root, MinTimeout: time.Second, InitialTimeout: time.Second}).Serve(ctx, conn)
	}()
	c := newTestClient(t, conn.LocalAddr().(*net.UDPAddr).AddrPort())
	c.rrq("f")
	c.mustData(1) // the transfer now waits for ACK 1
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return")
	}
}

func TestNormalizeFilename(t *testing.T) {
	for in, want := range map[string]string{
		"a":                  "a",
		"/a":                 "a",
		"//a//b/":            "a/b",
		`pxelinux.cfg\01-aa`: "pxelinux.cfg/01-aa",
		"a/./b/../c":         "a/c",
		"/etc/passwd":        "etc/passwd",
	} {
		if got, err := NormalizeFilename(in); err != nil || got != want {
			t.Errorf("NormalizeFilename(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"..", "../x", "a/../../x", `..\x`, "/", ".", "a/.."} {
		if got, err := NormalizeFilename(in); !errors.Is(err, fs.ErrPermission) {
			t.Errorf("NormalizeFilename(%q) = %q, %v; want a permission error", in, got, err)
		}
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// metricValue reads a counter or gauge.
func metricValue(t *testing.T, m prometheus.Metric) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		t.Fatal(err)
	}
	switch {
	case d.Counter != nil:
		return d.Counter.GetValue()
	case d.Gauge != nil:
		return d.Gauge.GetValue()
	}
	t.Fatalf("metric %v is neither counter nor gauge", m.Desc())
	return 0
}

// On a timeout with a window, the server first probes with the oldest unacknowledged block
// alone; only if that goes unanswered too does it resend the whole window.
func TestWindowTimeoutProbe(t *testing.T) {
	root := t.TempDir()
	data := randomBytes(15, 512*10)
	writeFile(t, filepath.Join(root, "f"), data)
	addr := startServer(t, &Server{Root: root, MinTimeout: 100 * time.Millisecond, InitialTimeout: 100 * time.Millisecond})
	c := newTestClient(t, addr)
	c.rrq("f", "windowsize", "4")
	c.mustOACK()
	c.ack(0)
	for b := uint16(1); b <= 4; b++ {
		c.mustData(b)
	}
	c.mustData(1) // the probe
	if p, err := c.recv(50 * time.Millisecond); err == nil {
		t.Fatalf("got %s right after the probe, want silence until the next timeout", describe(p))
	}
	for b := uint16(1); b <= 4; b++ { // second timeout: the whole window
		c.mustData(b)
	}
	c.ack(4)
	for b := uint16(5); b <= 8; b++ {
		c.mustData(b)
	}
	c.mustData(5) // probe again; this time the client says it has everything up to 8
	c.ack(8)
	c.mustData(9)
	c.mustData(10)
	if d := c.mustData(11); len(d.Data) != 0 {
		t.Fatalf("final block has %d bytes", len(d.Data))
	}
	c.ack(11)
}

// netascii grows the content; the window must still be full-sized (no stall waiting for a window
// the server never completes).
func TestNetasciiWindowed(t *testing.T) {
	root := t.TempDir()
	raw := bytes.Repeat([]byte("ab\n\r"), 1000) // 4000 bytes, 6000 once converted
	writeFile(t, filepath.Join(root, "t"), raw)
	addr := startServer(t, &Server{Root: root, MinTimeout: 2 * time.Second, InitialTimeout: 2 * time.Second})
	c := newTestClient(t, addr)
	c.sendTo(addr, &RequestPacket{Op: OpRRQ, Filename: "t", Mode: "netascii", Options: []Option{{"windowsize", "8"}, {"tsize", "0"}}})
	if o := c.mustOACK(); o["tsize"] != "6000" || o["windowsize"] != "8" {
		t.Fatalf("OACK %v", o)
	}
	c.ack(0)
	r := &windowReceiver{c: c, blksize: 512, window: 8}
	got := r.run(nil)
	want := bytes.Repeat([]byte("ab\r\n\r\x00"), 1000)
	if !bytes.Equal(got, want) {
		t.Fatalf("got %d bytes, want %d", len(got), len(want))
	}
}
