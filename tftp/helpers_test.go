package tftp

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// startServer serves srv on a random loopback port until the test ends.
func startServer(t testing.TB, srv *Server) netip.AddrPort {
	t.Helper()
	return startServerOn(t, srv, "127.0.0.1:0")
}

func startServerOn(t testing.TB, srv *Server, addr string) netip.AddrPort {
	t.Helper()
	if srv.Logger == nil {
		srv.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	conn, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, conn) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Serve did not return after cancel")
		}
	})
	return conn.LocalAddr().(*net.UDPAddr).AddrPort()
}

// randomBytes returns n deterministic pseudo-random bytes.
func randomBytes(seed uint64, n int) []byte {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	b := make([]byte, n)
	_, _ = rand.NewChaCha8(s).Read(b)
	return b
}

func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func sha(b []byte) [32]byte { return sha256.Sum256(b) }

// testClient is a TFTP client for protocol tests: it sends what the test says and reports what
// arrives, nothing more.
type testClient struct {
	t      testing.TB
	conn   *net.UDPConn
	server netip.AddrPort // the server's request port
	tid    netip.AddrPort // the transfer's port, once a reply came
	buf    []byte
}

func newTestClient(t testing.TB, server netip.AddrPort) *testClient {
	t.Helper()
	network := "udp4"
	if server.Addr().Is6() {
		network = "udp6"
	}
	conn, err := net.ListenUDP(network, &net.UDPAddr{IP: server.Addr().AsSlice()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &testClient{t: t, conn: conn, server: server, buf: make([]byte, 70000)}
}

func (c *testClient) sendTo(to netip.AddrPort, p Packet) {
	c.t.Helper()
	b, err := p.AppendBinary(nil)
	if err != nil {
		c.t.Fatal(err)
	}
	c.sendRawTo(to, b)
}

func (c *testClient) sendRawTo(to netip.AddrPort, b []byte) {
	c.t.Helper()
	if _, err := c.conn.WriteToUDPAddrPort(b, to); err != nil {
		c.t.Fatal(err)
	}
}

func (c *testClient) rrq(name string, opts ...string) {
	c.t.Helper()
	req := &RequestPacket{Op: OpRRQ, Filename: name, Mode: "octet"}
	for i := 0; i+1 < len(opts); i += 2 {
		req.Options = append(req.Options, Option{Name: opts[i], Value: opts[i+1]})
	}
	c.sendTo(c.server, req)
}

func (c *testClient) ack(block uint16) {
	c.t.Helper()
	c.sendTo(c.tid, &AckPacket{Block: block})
}

var errNoPacket = errors.New("no packet")

// recv returns the next packet within d, or errNoPacket. The first reply fixes the TID.
func (c *testClient) recv(d time.Duration) (Packet, error) {
	c.t.Helper()
	if err := c.conn.SetReadDeadline(time.Now().Add(d)); err != nil {
		c.t.Fatal(err)
	}
	n, from, err := c.conn.ReadFromUDPAddrPort(c.buf)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return nil, errNoPacket
	}
	if err != nil {
		c.t.Fatal(err)
	}
	if !c.tid.IsValid() {
		c.tid = from
	} else if from != c.tid {
		c.t.Fatalf("packet from %v, transfer is with %v", from, c.tid)
	}
	p, err := ParsePacket(bytes.Clone(c.buf[:n]))
	if err != nil {
		c.t.Fatalf("server sent a malformed packet: %v", err)
	}
	return p, nil
}

// mustRecv returns the next packet, failing the test if none comes within 5 s.
func (c *testClient) mustRecv() Packet {
	c.t.Helper()
	p, err := c.recv(5 * time.Second)
	if err != nil {
		c.t.Fatal("expected a packet from the server, got none")
	}
	return p
}

func (c *testClient) mustData(block uint16) *DataPacket {
	c.t.Helper()
	p := c.mustRecv()
	d, ok := p.(*DataPacket)
	if !ok || d.Block != block {
		c.t.Fatalf("got %s, want DATA %d", describe(p), block)
	}
	return d
}

func (c *testClient) mustError(code ErrorCode) *ErrorPacket {
	c.t.Helper()
	p := c.mustRecv()
	e, ok := p.(*ErrorPacket)
	if !ok || e.Code != code {
		c.t.Fatalf("got %s, want ERROR %d", describe(p), code)
	}
	return e
}

func (c *testClient) mustOACK() map[string]string {
	c.t.Helper()
	p := c.mustRecv()
	o, ok := p.(*OAckPacket)
	if !ok {
		c.t.Fatalf("got %s, want OACK", describe(p))
	}
	m := map[string]string{}
	for _, opt := range o.Options {
		m[opt.Name] = opt.Value
	}
	return m
}

func describe(p Packet) string {
	switch p := p.(type) {
	case *DataPacket:
		return "DATA " + itoa(int(p.Block)) + " (" + itoa(len(p.Data)) + " bytes)"
	case *AckPacket:
		return "ACK " + itoa(int(p.Block))
	case *ErrorPacket:
		return "ERROR " + itoa(int(p.Code)) + " " + p.Message
	case *OAckPacket:
		return "OACK"
	case *RequestPacket:
		return p.Op.String()
	}
	return "?"
}

func itoa(i int) string { return strconv.Itoa(i) }

// windowReceiver downloads a file like an RFC 7440 client: it acknowledges every windowsize
// blocks, and on a gap or a silence acknowledges the last block received in order. drop, if
// set, decides whether an arriving DATA packet (or an ACK about to be sent) is lost.
type windowReceiver struct {
	c        *testClient
	blksize  int
	window   int
	dropData func(block uint16) bool
	dropAck  func(block uint16) bool
	acks     int
}

func (r *windowReceiver) sendAck(block uint16) {
	r.acks++
	if r.dropAck != nil && r.dropAck(block) {
		return
	}
	r.c.ack(block)
}

// run receives the file after the request (and ACK 0 of the OACK, if any) was sent.
func (r *windowReceiver) run(first Packet) []byte {
	t := r.c.t
	t.Helper()
	var out bytes.Buffer
	var last uint16 // last block received in order
	inWindow := 0
	p := first
	deadline := time.Now().Add(60 * time.Second)
	for {
		if time.Now().After(deadline) {
			t.Fatal("download did not finish in 60 s")
		}
		if p == nil {
			var err error
			p, err = r.c.recv(300 * time.Millisecond)
			if errors.Is(err, errNoPacket) {
				r.sendAck(last) // silence: tell the server where we are
				inWindow = 0
				continue
			}
		}
		switch d := p.(type) {
		case *DataPacket:
			if r.dropData != nil && r.dropData(d.Block) {
				break
			}
			if d.Block != last+1 {
				// A gap, or a block we already have (our ACK was lost): say where we are.
				r.sendAck(last)
				inWindow = 0
				break
			}
			if len(d.Data) > r.blksize {
				t.Fatalf("DATA %d has %d bytes, blksize is %d", d.Block, len(d.Data), r.blksize)
			}
			out.Write(d.Data)
			last = d.Block
			inWindow++
			if len(d.Data) < r.blksize {
				r.sendAck(last)
				return out.Bytes()
			}
			if inWindow == r.window {
				r.sendAck(last)
				inWindow = 0
			}
		case *ErrorPacket:
			t.Fatalf("server error %d: %s", d.Code, d.Message)
		default:
			t.Fatalf("unexpected %s", describe(p))
		}
		p = nil
	}
}

// readAll downloads name with lock-step or windowed transfer through a testClient.
func download(t testing.TB, server netip.AddrPort, name string, blksize, window int) []byte {
	t.Helper()
	c := newTestClient(t, server)
	var opts []string
	if blksize != 512 {
		opts = append(opts, "blksize", itoa(blksize))
	}
	if window != 1 {
		opts = append(opts, "windowsize", itoa(window))
	}
	c.rrq(name, opts...)
	r := &windowReceiver{c: c, blksize: blksize, window: window}
	if len(opts) > 0 {
		c.mustOACK()
		c.ack(0)
		return r.run(nil)
	}
	return r.run(c.mustRecv())
}

func writeFileErr(path string, data []byte) error { return os.WriteFile(path, data, 0o644) }

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
