package tftp

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Results of a transfer, as logged and counted in preboot_tftp_transfers_total.
const (
	resultOK               = "ok"
	resultNotFound         = "not_found"
	resultAccessViolation  = "access_violation"
	resultIllegalOperation = "illegal_operation"
	resultTimeout          = "timeout"
	resultClientError      = "client_error"
	resultAborted          = "aborted"
	resultError            = "error"
)

// protoError is a failure that is reported to the client in an ERROR packet.
type protoError struct {
	code   ErrorCode
	msg    string // sent to the client
	result string
	err    error // logged
}

func (e *protoError) Error() string { return e.err.Error() }
func (e *protoError) Unwrap() error { return e.err }

// clientError is an ERROR packet received from the client.
type clientError struct{ pkt *ErrorPacket }

func (e *clientError) Error() string {
	return fmt.Sprintf("client sent error %d: %q", e.pkt.Code, e.pkt.Message)
}

// transfer is one read request being served. A goroutine opens it (open: the generator or the
// file, the options, the socket), then hands it to an event loop that runs its data phase: start,
// then onAck and onTimeout as packets and timeouts come, until it is over and ends (end).
type transfer struct {
	cfg     *config
	ctx     context.Context // the server's: generators and logs
	release func()          // frees its place in the limiter
	begun   time.Time

	fd    int      // the transfer's socket (its TID), -1 until opened
	to    sockaddr // peer, in the kernel's form
	peer  netip.AddrPort
	local netip.Addr
	file  string
	mode  string

	blksize, window int
	timeoutOpt      int   // seconds, 0 = not negotiated
	tsize           int64 // offered tsize, -1 = none

	bytes       int64 // file bytes delivered (acknowledged)
	sent        int64 // payload bytes sent, retransmissions included
	retransmits int
	acked       bool // the client acknowledged something: its address is its own
	rtt         rttEstimator

	// The content: mapped when it is a regular file sent in octet mode (its blocks go out
	// straight from the page cache), else read from src into the window's slots.
	src      io.Reader
	closeSrc func()
	mapped   []byte

	oack       []byte // the OACK packet, nil if none
	waitOACK   bool   // the OACK is sent, ACK 0 not yet received
	oackSentAt time.Time

	// The window (RFC 7440). Sequence numbers count blocks from 1 without wrapping; the wire
	// block is the low 16 bits.
	base    uint64 // first unacknowledged block
	next    uint64 // next block to send
	filled  uint64 // next block to read from the content
	maxSent uint64 // highest block sent so far
	last    uint64 // the final (short) block, once read
	retries int    // timeouts in a row
	slots   [][]byte
	lens    []int
	sentAt  []time.Time
	resent  []bool

	// Timer: due is the retransmission deadline, at the time the loop's heap looks at it
	// (see timers), timer the index in the heap (-1: not in).
	due, at time.Time
	timer   int

	over   bool
	result string
	err    error
}

func newTransfer(ctx context.Context, cfg *config, req *RequestPacket, peer netip.AddrPort, local netip.Addr, release func()) *transfer {
	cfg.metrics.start()
	return &transfer{
		cfg: cfg, ctx: ctx, release: release, begun: time.Now(), fd: -1, timer: -1,
		peer: peer, local: local, file: req.Filename, mode: req.Mode,
		blksize: 512, window: 1, tsize: -1, base: 1, next: 1, filled: 1,
		rtt: rttEstimator{rto: cfg.initialRTO, min: cfg.minRTO, max: cfg.maxRTO},
	}
}

// serveRequest opens the transfer of req and hands it to l. It runs in its own goroutine: a
// generator may take its time.
func serveRequest(ctx context.Context, cfg *config, l *loop, req *RequestPacket, peer netip.AddrPort, local netip.Addr, release func()) {
	t := newTransfer(ctx, cfg, req, peer, local, release)
	if !t.open(req) {
		t.end()
		return
	}
	if !l.add(t) {
		t.fail(errShutdown)
		t.end()
	}
}

// open prepares the transfer: socket, content, options. It reports false if the transfer is
// already over (refused, or the server cannot serve it).
func (t *transfer) open(req *RequestPacket) bool {
	fd, err := openTID(t.local, t.peer)
	if err != nil {
		t.over, t.result, t.err = true, resultError, err
		return false
	}
	t.fd, t.to = fd, newSockaddr(t.peer)

	src, size, closeSrc, err := t.prepare(t.ctx, req)
	if err != nil {
		var pe *protoError
		if errors.As(err, &pe) {
			t.sendError(pe.code, pe.msg)
			t.over, t.result, t.err = true, pe.result, err
			return false
		}
		t.sendError(ErrUndefined, "Internal error")
		t.over, t.result, t.err = true, resultError, err
		return false
	}
	t.closeSrc = closeSrc

	oack, err := t.negotiate(req.Options, src, size)
	if err == nil && len(oack) > 0 {
		t.oack, err = (&OAckPacket{Options: oack}).AppendBinary(nil)
	}
	if err != nil {
		t.sendError(ErrUndefined, "Internal error")
		t.over, t.result, t.err = true, resultError, err
		return false
	}
	switch {
	case t.mode == "netascii":
		t.src = newNetasciiReader(src)
	case t.mapSource(src):
	case t.window*t.blksize < sourceBuffer:
		t.src = newBufferedReader(src)
	default:
		t.src = src
	}
	w := t.window
	t.lens, t.sentAt, t.resent = make([]int, w), make([]time.Time, w), make([]bool, w)
	if t.mapped == nil {
		// One packet buffer per block of the window, allocated when first needed: a small file
		// asked for with a large window and blksize costs only the blocks it has.
		t.slots = make([][]byte, w)
	}
	return true
}

// mapSource maps src when it is a regular file sent in octet mode. It reports whether it did.
func (t *transfer) mapSource(src io.ReadSeeker) bool {
	f, ok := src.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		return false
	}
	t.mapped = mapFile(f, fi.Size())
	return t.mapped != nil
}

// fail ends the transfer with err, telling the client when the error is for it.
func (t *transfer) fail(err error) {
	if t.over {
		return
	}
	t.over, t.err = true, err
	var ce *clientError
	var pe *protoError
	switch {
	case errors.As(err, &ce):
		t.result = resultClientError
	case errors.As(err, &pe):
		t.sendError(pe.code, pe.msg)
		t.result = pe.result
	case errors.Is(err, errShutdown) || t.ctx.Err() != nil:
		t.result = resultAborted
	case errors.Is(err, errGaveUp):
		t.result = resultTimeout
	default:
		t.sendError(ErrUndefined, "Internal error")
		t.result = resultError
	}
}

// end releases what the transfer holds, counts it and logs it.
func (t *transfer) end() {
	if t.fd >= 0 {
		unix.Close(t.fd)
		t.fd = -1
	}
	unmapFile(t.mapped)
	t.mapped = nil
	if t.closeSrc != nil {
		t.closeSrc()
	}
	t.release()
	d := time.Since(t.begun)
	t.cfg.metrics.finish(t.result, t.sent, t.retransmits, d)

	attrs := []slog.Attr{
		slog.String("peer", t.peer.String()),
		slog.String("file", t.file),
		slog.String("mode", t.mode),
		slog.Int("blksize", t.blksize),
		slog.Int("windowsize", t.window),
	}
	if t.tsize >= 0 {
		attrs = append(attrs, slog.Int64("tsize", t.tsize))
	}
	if t.timeoutOpt > 0 {
		attrs = append(attrs, slog.Int("timeout", t.timeoutOpt))
	}
	if t.local.IsValid() {
		attrs = append(attrs, slog.String("local", t.local.String()))
	}
	attrs = append(attrs,
		slog.Int64("bytes", t.bytes),
		slog.Duration("duration", d),
		slog.Int("retransmits", t.retransmits),
		slog.String("result", t.result))
	if t.err != nil {
		attrs = append(attrs, slog.String("error", t.err.Error()))
	}
	t.cfg.log.LogAttrs(t.ctx, slog.LevelInfo, "tftp transfer", attrs...)
}

// prepare checks the request and opens its content.
func (t *transfer) prepare(ctx context.Context, req *RequestPacket) (io.ReadSeeker, int64, func(), error) {
	if req.Op == OpWRQ {
		return nil, 0, nil, &protoError{ErrAccessViolation, "Access violation: server is read-only", resultAccessViolation,
			errors.New("write request refused")}
	}
	t.mode = strings.ToLower(req.Mode)
	if t.mode != "octet" && t.mode != "netascii" {
		return nil, 0, nil, &protoError{ErrIllegalOperation, "Illegal TFTP operation: unsupported mode", resultIllegalOperation,
			fmt.Errorf("unsupported mode %q", req.Mode)}
	}
	name, err := NormalizeFilename(req.Filename)
	if err != nil {
		return nil, 0, nil, &protoError{ErrAccessViolation, "Access violation", resultAccessViolation, err}
	}
	t.file = name
	if g := t.cfg.generator; g != nil {
		rs, size, err := g.Generate(ctx, Request{Peer: t.peer, Local: t.local, Filename: name, Mode: t.mode})
		switch {
		case err == nil:
			closeFn := func() {}
			if c, ok := rs.(io.Closer); ok {
				closeFn = func() { c.Close() }
			}
			return rs, size, closeFn, nil
		case errors.Is(err, fs.ErrNotExist):
			// not a generated file: look in the root
		case errors.Is(err, fs.ErrPermission):
			return nil, 0, nil, &protoError{ErrAccessViolation, "Access violation", resultAccessViolation, fmt.Errorf("generator: %w", err)}
		default:
			return nil, 0, nil, &protoError{ErrUndefined, "Cannot generate file", resultError, fmt.Errorf("generator: %w", err)}
		}
	}
	notFound := func(err error) error {
		return &protoError{ErrFileNotFound, "File not found", resultNotFound, err}
	}
	if t.cfg.root == nil {
		return nil, 0, nil, notFound(fmt.Errorf("%s: %w", name, fs.ErrNotExist))
	}
	// O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused below anyway.
	f, err := t.cfg.root.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		switch {
		case errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR):
			return nil, 0, nil, notFound(err)
		case errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) || errors.Is(err, syscall.ENOMEM):
			// Out of descriptors is the server's trouble, not the client's fault.
			return nil, 0, nil, &protoError{ErrUndefined, "Server busy", resultError, err}
		}
		return nil, 0, nil, &protoError{ErrAccessViolation, "Access violation", resultAccessViolation, err}
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, nil, &protoError{ErrAccessViolation, "Access violation", resultAccessViolation, err}
	}
	if !fi.Mode().IsRegular() {
		// Directories, FIFOs, devices and sockets are not served: not found,
		// as over HTTP.
		f.Close()
		return nil, 0, nil, notFound(fmt.Errorf("%s is not a regular file (%s)", name, fi.Mode().Type()))
	}
	return f, fi.Size(), func() { f.Close() }, nil
}

// negotiate applies the request's options (RFC 2347) and returns the OACK options, in the
// client's order and spelling. Unknown or invalid options are ignored; values beyond the
// server's limits are lowered.
func (t *transfer) negotiate(opts []Option, src io.ReadSeeker, size int64) ([]Option, error) {
	const (
		blk = 1 << iota
		tout
		tsz
		win
	)
	var have int
	var names [4]string
	index := map[string]int{"blksize": 0, "timeout": 1, "tsize": 2, "windowsize": 3}
	var order []int
	for _, o := range opts {
		i, ok := index[strings.ToLower(o.Name)]
		if !ok || have&(1<<i) != 0 {
			continue // unknown or repeated
		}
		v, err := strconv.ParseInt(o.Value, 10, 64)
		if err != nil {
			continue
		}
		switch i {
		case 0: // blksize, RFC 2348: 8..65464; a larger request gets our maximum
			if v < 8 {
				continue
			}
			t.blksize = int(min(v, int64(t.cfg.maxBlock)))
		case 1: // timeout, RFC 2349: 1..255 s
			if v < 1 || v > 255 {
				continue
			}
			t.timeoutOpt = int(v)
			t.rtt.max = min(t.rtt.max, time.Duration(v)*time.Second)
			t.rtt.rto = min(t.rtt.rto, t.rtt.max)
		case 2: // tsize, RFC 2349: the client sends 0 in a read request
			if v != 0 {
				continue
			}
		case 3: // windowsize, RFC 7440: 1..65535
			if v < 1 || v > 65535 {
				continue
			}
			t.window = int(min(v, int64(t.cfg.maxWindow)))
		}
		have |= 1 << i
		names[i] = o.Name
		order = append(order, i)
	}
	if have&win != 0 {
		t.window = max(1, min(t.window, t.cfg.maxWindowBytes/t.blksize))
	}
	if have&tsz != 0 {
		n, err := t.contentSize(src, size)
		if err != nil {
			return nil, err
		}
		if n <= 0 {
			// Unknown size: decline the option. An empty file too: curl rejects "tsize 0".
			have &^= tsz
			n = -1
		}
		t.tsize = n
	}
	var oack []Option
	for _, i := range order {
		if have&(1<<i) == 0 {
			continue
		}
		var v int64
		switch i {
		case 0:
			v = int64(t.blksize)
		case 1:
			v = int64(t.timeoutOpt)
		case 2:
			v = t.tsize
		case 3:
			v = int64(t.window)
		}
		oack = append(oack, Option{Name: names[i], Value: strconv.FormatInt(v, 10)})
	}
	return oack, nil
}

// contentSize is the number of bytes the client will receive, or -1 if unknown.
func (t *transfer) contentSize(src io.ReadSeeker, size int64) (int64, error) {
	if size < 0 {
		end, err := src.Seek(0, io.SeekEnd)
		if err != nil {
			return -1, nil
		}
		if _, err := src.Seek(0, io.SeekStart); err != nil {
			return 0, fmt.Errorf("rewinding %s: %w", t.file, err)
		}
		size = end
	}
	if t.mode != "netascii" {
		return size, nil
	}
	n, err := netasciiSize(src)
	if err != nil {
		return 0, err
	}
	if _, err := src.Seek(0, io.SeekStart); err != nil {
		return 0, fmt.Errorf("rewinding %s: %w", t.file, err)
	}
	return n, nil
}

var errGaveUp = errors.New("peer stopped answering")

// maxRetries is the number of timeouts in a row a transfer survives: few
// until the client has acknowledged a packet (an unverified, perhaps
// spoofed, address gets a small bounded number of packets), more after.
func (t *transfer) maxRetries() int {
	if !t.acked {
		return min(t.cfg.retriesBeforeAck, t.cfg.retries)
	}
	return t.cfg.retries
}

// start sends the first packet: the OACK, or the first window.
func (t *transfer) start(now time.Time, out *batch) {
	if t.oack == nil {
		t.sendWindow(now, out)
		return
	}
	t.waitOACK = true
	t.oackSentAt = now
	t.to.sendto(t.fd, t.oack)
	t.due = now.Add(t.rtt.rto)
}

// onAck handles ACK block. The data phase follows RFC 7440 with go-back-N recovery: an ACK inside
// the window restarts the window after the acknowledged block; an ACK for an already acknowledged
// block (duplicate) is ignored, never answered with a resend (Sorcerer's Apprentice). Block
// numbers wrap from 65535 to 0.
func (t *transfer) onAck(block uint16, now time.Time, out *batch) {
	if t.waitOACK {
		if block != 0 {
			return
		}
		if t.retries == 0 {
			t.rtt.sample(now.Sub(t.oackSentAt))
		}
		t.waitOACK, t.acked, t.retries = false, true, 0
		t.sendWindow(now, out)
		return
	}
	d := uint64(block - uint16(t.base-1)) // distance from the last acknowledged block
	s := t.base - 1 + d
	if d == 0 || s > t.maxSent {
		return // duplicate (or not a block we sent): never resend on it
	}
	i := int(s % uint64(t.window))
	if s == t.next-1 && !t.resent[i] {
		t.rtt.sample(now.Sub(t.sentAt[i]))
	}
	t.base = s + 1
	t.retries = 0
	t.acked = true
	if s == t.last {
		t.over, t.result = true, resultOK
		return
	}
	if t.next > t.base {
		t.next = t.base // ACK inside the window: go back to the block after it
	}
	t.sendWindow(now, out)
}

// onTimeout handles the retransmission timer. The OACK is sent again. In the data phase a first
// timeout sends the first unacknowledged block alone (a probe the receiver answers with the ACK of
// the last block it holds), a second one resends the window from that block. The timeout doubles
// each time; after maxRetries in a row the transfer is given up.
func (t *transfer) onTimeout(now time.Time, out *batch) {
	if t.waitOACK {
		if t.retries >= t.maxRetries() {
			t.fail(fmt.Errorf("%w: no ACK for OACK after %d retries", errGaveUp, t.retries))
			return
		}
		t.rtt.backoff()
		t.retries++
		t.retransmits++
		t.oackSentAt = now
		t.to.sendto(t.fd, t.oack)
		t.due = now.Add(t.rtt.rto)
		return
	}
	t.retries++
	if t.retries > t.maxRetries() {
		t.fail(fmt.Errorf("%w: no ACK for block %d after %d retries", errGaveUp, t.base, t.maxRetries()))
		return
	}
	t.rtt.backoff()
	if t.retries == 1 && t.window > 1 {
		// A receiver that has more (its ACK was lost, or only the tail of the window was)
		// answers with the last block it holds, and the window restarts from there, instead of
		// a whole window of duplicates filling its socket buffer.
		i := int(t.base % uint64(t.window))
		t.resent[i] = true
		t.retransmits++
		err := t.queue(t.base, out)
		if err == nil {
			err = out.flush(t.fd)
		}
		if err != nil {
			t.failSend(err, out)
			return
		}
		t.sent += int64(t.lens[i])
		t.due = now.Add(t.rtt.rto)
		return
	}
	t.next = t.base
	t.sendWindow(now, out)
}

// sendWindow sends the blocks from next to the end of the window (or of the content), reading
// those not read yet, with one sendmmsg(2), and sets the retransmission deadline.
func (t *transfer) sendWindow(now time.Time, out *batch) {
	w := uint64(t.window)
	for t.next < t.base+w && (t.last == 0 || t.next <= t.last) {
		i := int(t.next % w)
		if t.next == t.filled {
			if err := t.fill(i); err != nil {
				t.failSend(err, out)
				return
			}
		}
		if t.next <= t.maxSent {
			t.resent[i] = true
			t.retransmits++
		} else {
			t.resent[i] = false
			t.maxSent = t.next
		}
		t.sentAt[i] = now
		if err := t.queue(t.next, out); err != nil {
			t.failSend(err, out)
			return
		}
		t.sent += int64(t.lens[i])
		t.next++
	}
	if err := out.flush(t.fd); err != nil {
		t.failSend(err, out)
		return
	}
	t.due = now.Add(t.rtt.rto)
}

// fill reads block filled into slot i (a mapped file needs no reading: only its length).
func (t *transfer) fill(i int) error {
	var n int
	if t.mapped != nil {
		off := int64(t.filled-1) * int64(t.blksize)
		n = int(max(0, min(int64(t.blksize), int64(len(t.mapped))-off)))
	} else {
		if t.slots[i] == nil {
			t.slots[i] = make([]byte, 4+t.blksize)
		}
		b := t.slots[i]
		var err error
		n, err = io.ReadFull(t.src, b[4:])
		switch {
		case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		case err != nil:
			return fmt.Errorf("reading %s: %w", t.file, err)
		}
		binary.BigEndian.PutUint16(b, uint16(OpDATA))
	}
	if n < t.blksize {
		t.last = t.filled
	}
	t.lens[i] = n
	t.filled++
	t.bytes += int64(n)
	return nil
}

// queue adds block seq, already filled, to out.
func (t *transfer) queue(seq uint64, out *batch) error {
	i := int(seq % uint64(t.window))
	if t.mapped == nil {
		b := t.slots[i]
		binary.BigEndian.PutUint16(b[2:], uint16(seq))
		return out.add(t.fd, &t.to, nil, b[:4+t.lens[i]])
	}
	hdr := out.hdr()
	binary.BigEndian.PutUint16(hdr, uint16(OpDATA))
	binary.BigEndian.PutUint16(hdr[2:], uint16(seq))
	off := int64(seq-1) * int64(t.blksize)
	return out.add(t.fd, &t.to, hdr, t.mapped[off:off+int64(t.lens[i])])
}

// failSend ends the transfer on an error reading its content; what is queued is sent first.
func (t *transfer) failSend(err error, out *batch) {
	_ = out.flush(t.fd)
	if errors.Is(err, errPayload) {
		err = fmt.Errorf("reading %s: %w", t.file, err)
	}
	t.fail(&protoError{ErrUndefined, "Read error", resultError, err})
}

func (t *transfer) sendError(code ErrorCode, msg string) {
	b, err := (&ErrorPacket{Code: code, Message: msg}).AppendBinary(make([]byte, 0, 4+len(msg)+1))
	if err != nil {
		return
	}
	t.to.sendto(t.fd, b)
}

// rttEstimator is the retransmission timer of RFC 6298, bounded by [min, max].
type rttEstimator struct {
	srtt, rttvar  time.Duration
	rto, min, max time.Duration
	measured      bool
}

func (r *rttEstimator) sample(m time.Duration) {
	if !r.measured {
		r.srtt, r.rttvar, r.measured = m, m/2, true
	} else {
		diff := r.srtt - m
		if diff < 0 {
			diff = -diff
		}
		r.rttvar = (3*r.rttvar + diff) / 4
		r.srtt = (7*r.srtt + m) / 8
	}
	r.rto = min(max(r.srtt+max(time.Millisecond, 4*r.rttvar), r.min), r.max)
}

func (r *rttEstimator) backoff() {
	r.rto = min(2*r.rto, r.max)
}
