package tftp

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
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

// transfer is one read request being served.
type transfer struct {
	cfg   *config
	conn  *net.UDPConn
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
	rbuf        []byte

	// mapped is the file's content when it is a regular file mapped into memory: its blocks go
	// out with vw straight from the page cache, behind hdr.
	mapped []byte
	vw     *vecWriter
	hdr    [4]byte

	// deadline is the read deadline set on conn (zero: none, or passed).
	deadline time.Time
}

func serveRequest(ctx context.Context, cfg *config, req *RequestPacket, peer netip.AddrPort, local netip.Addr) {
	start := time.Now()
	cfg.metrics.start()
	t := &transfer{cfg: cfg, peer: peer, local: local, file: req.Filename, mode: req.Mode, blksize: 512, window: 1, tsize: -1}
	result, err := t.run(ctx, req)
	d := time.Since(start)
	cfg.metrics.finish(result, t.sent, t.retransmits, d)

	attrs := []slog.Attr{
		slog.String("peer", peer.String()),
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
	if local.IsValid() {
		attrs = append(attrs, slog.String("local", local.String()))
	}
	attrs = append(attrs,
		slog.Int64("bytes", t.bytes),
		slog.Duration("duration", d),
		slog.Int("retransmits", t.retransmits),
		slog.String("result", result))
	if err != nil {
		attrs = append(attrs, slog.String("error", err.Error()))
	}
	cfg.log.LogAttrs(ctx, slog.LevelInfo, "tftp transfer", attrs...)
}

func (t *transfer) run(ctx context.Context, req *RequestPacket) (string, error) {
	conn, err := listenTID(t.local, t.peer)
	if err != nil {
		return resultError, err
	}
	t.conn = conn
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	t.rbuf = make([]byte, 2048)
	t.rtt = rttEstimator{rto: t.cfg.initialRTO, min: t.cfg.minRTO, max: t.cfg.maxRTO}

	src, size, closeSrc, err := t.prepare(ctx, req)
	if err != nil {
		var pe *protoError
		if errors.As(err, &pe) {
			t.sendError(t.peer, pe.code, pe.msg)
			return pe.result, err
		}
		t.sendError(t.peer, ErrUndefined, "Internal error")
		return resultError, err
	}
	defer closeSrc()

	oack, err := t.negotiate(req.Options, src, size)
	if err != nil {
		t.sendError(t.peer, ErrUndefined, "Internal error")
		return resultError, err
	}
	if len(oack) > 0 {
		if err := t.sendOACK(oack); err != nil {
			return t.failure(ctx, err)
		}
	}
	var r io.Reader = src
	if t.mode == "netascii" {
		r = newNetasciiReader(src)
	} else if t.mapSource(src) {
		defer unmapFile(t.mapped)
	} else if t.window*t.blksize < sourceBuffer {
		r = newBufferedReader(src)
	}
	if err := t.sendData(r); err != nil {
		return t.failure(ctx, err)
	}
	return resultOK, nil
}

// mapSource maps src when it is a regular file sent in octet mode, and prepares the vector
// writer its blocks are sent with. It reports whether it did.
func (t *transfer) mapSource(src io.ReadSeeker) bool {
	f, ok := src.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		return false
	}
	vw, err := newVecWriter(t.conn, t.peer)
	if err != nil {
		return false
	}
	m := mapFile(f, fi.Size())
	if m == nil {
		return false
	}
	t.mapped, t.vw = m, vw
	return true
}

// failure classifies the error that ended a transfer after it started.
func (t *transfer) failure(ctx context.Context, err error) (string, error) {
	var ce *clientError
	var pe *protoError
	switch {
	case errors.As(err, &ce):
		return resultClientError, err
	case errors.As(err, &pe):
		t.sendError(t.peer, pe.code, pe.msg)
		return pe.result, err
	case ctx.Err() != nil || errors.Is(err, net.ErrClosed):
		return resultAborted, err
	case errors.Is(err, errGaveUp):
		return resultTimeout, err
	}
	t.sendError(t.peer, ErrUndefined, "Internal error")
	return resultError, err
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

// sendOACK sends the option acknowledgement and waits for ACK 0.
func (t *transfer) sendOACK(opts []Option) error {
	pkt, err := (&OAckPacket{Options: opts}).AppendBinary(nil)
	if err != nil {
		return err
	}
	for retries := 0; ; retries++ {
		sentAt := time.Now()
		if err := t.write(pkt); err != nil {
			return err
		}
		if retries > 0 {
			t.retransmits++
		}
		if err := t.conn.SetReadDeadline(sentAt.Add(t.rtt.rto)); err != nil {
			return err
		}
		for {
			block, isAck, err := t.recv()
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			if err != nil {
				return err
			}
			if isAck && block == 0 {
				if retries == 0 {
					t.rtt.sample(time.Since(sentAt))
				}
				t.acked = true
				return nil
			}
		}
		if retries >= t.maxRetries() {
			return fmt.Errorf("%w: no ACK for OACK after %d retries", errGaveUp, retries)
		}
		t.rtt.backoff()
	}
}

// sendData sends the content as DATA blocks, windowsize blocks at a time (RFC 7440), with
// go-back-N recovery: a first timeout sends the first unacknowledged block alone (a probe the
// receiver answers with the ACK of the last block it holds), a second one resends the window
// from that block; an ACK inside the window restarts the window after the acknowledged block; an
// ACK for an already acknowledged block (duplicate) is ignored, never answered with a resend
// (Sorcerer's Apprentice). Block numbers wrap from 65535 to 0.
func (t *transfer) sendData(src io.Reader) error {
	bs := t.blksize
	w := t.window
	// One packet buffer per block of the window, allocated when first needed: a small file
	// asked for with a large window and blksize costs only the blocks it has.
	slots := make([][]byte, w)
	lens := make([]int, w)
	sentAt := make([]time.Time, w)
	resent := make([]bool, w)

	// Sequence numbers count blocks from 1 without wrapping; the wire block is the low 16 bits.
	var (
		base    uint64 = 1 // first unacknowledged block
		next    uint64 = 1 // next block to send
		filled  uint64 = 1 // next block to read from src
		maxSent uint64     // highest block sent so far
		last    uint64     // the final (short) block, once read
		retries int
	)
	for {
		for next < base+uint64(w) && (last == 0 || next <= last) {
			i := int(next % uint64(w))
			if t.mapped != nil {
				if next == filled {
					n := t.mappedBlock(next, &last)
					lens[i] = n
					filled++
					t.bytes += int64(n)
				}
				if next <= maxSent {
					resent[i] = true
					t.retransmits++
				} else {
					resent[i] = false
					maxSent = next
				}
				sentAt[i] = time.Now()
				if err := t.sendMapped(next); err != nil {
					return err
				}
				t.sent += int64(lens[i])
				next++
				continue
			}
			if slots[i] == nil {
				slots[i] = make([]byte, 4+bs)
			}
			b := slots[i]
			if next == filled {
				n, err := io.ReadFull(src, b[4:])
				switch {
				case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
					last = next
				case err != nil:
					return &protoError{ErrUndefined, "Read error", resultError, fmt.Errorf("reading %s: %w", t.file, err)}
				}
				binary.BigEndian.PutUint16(b, uint16(OpDATA))
				lens[i] = n
				filled++
				t.bytes += int64(n)
			}
			binary.BigEndian.PutUint16(b[2:], uint16(next))
			if next <= maxSent {
				resent[i] = true
				t.retransmits++
			} else {
				resent[i] = false
				maxSent = next
			}
			sentAt[i] = time.Now()
			if err := t.write(b[:4+lens[i]]); err != nil {
				return err
			}
			t.sent += int64(lens[i])
			next++
		}

		if err := t.armTimer(); err != nil {
			return err
		}
		for {
			block, isAck, err := t.recv()
			if errors.Is(err, os.ErrDeadlineExceeded) {
				t.deadline = time.Time{} // passed: the next wait sets its own
				retries++
				if retries > t.maxRetries() {
					return fmt.Errorf("%w: no ACK for block %d after %d retries", errGaveUp, base, t.maxRetries())
				}
				t.rtt.backoff()
				if retries == 1 && w > 1 {
					// First timeout: probe with the first unacknowledged block alone. A receiver
					// that has more (its ACK was lost, or only the tail of the window was) answers
					// with the last block it holds, and the window restarts from there, instead of
					// a whole window of duplicates filling its socket buffer.
					i := int(base % uint64(w))
					resent[i] = true
					t.retransmits++
					if t.mapped != nil {
						if err := t.sendMapped(base); err != nil {
							return err
						}
					} else if err := t.write(slots[i][:4+lens[i]]); err != nil {
						return err
					}
					t.sent += int64(lens[i])
					t.deadline = time.Time{}
					if err := t.armTimer(); err != nil {
						return err
					}
					continue
				}
				next = base
				break
			}
			if err != nil {
				return err
			}
			if !isAck {
				continue
			}
			d := uint64(block - uint16(base-1)) // distance from the last acknowledged block
			s := base - 1 + d
			if d == 0 || s > maxSent {
				continue // duplicate (or not a block we sent): never resend on it
			}
			i := int(s % uint64(w))
			if s == next-1 && !resent[i] {
				t.rtt.sample(time.Since(sentAt[i]))
			}
			base = s + 1
			retries = 0
			t.acked = true
			if s == last {
				return nil
			}
			if next > base {
				next = base // ACK inside the window: go back to the block after it
			}
			break
		}
	}
}

// armTimer makes the next read time out no sooner than one retransmission timeout from now and
// at most a quarter of one later. Lock-step transfers wait for an ACK after every block, a fraction
// of the timeout apart: re-arming the socket's deadline (a runtime timer update) only when it falls
// short saves one per block, at the price of a timeout firing up to 25 % late.
func (t *transfer) armTimer() error {
	now := time.Now()
	need := now.Add(t.rtt.rto)
	if !t.deadline.IsZero() && !t.deadline.Before(need) && t.deadline.Sub(need) <= t.rtt.rto/4 {
		return nil
	}
	d := need.Add(t.rtt.rto / 4)
	if err := t.conn.SetReadDeadline(d); err != nil {
		return err
	}
	t.deadline = d
	return nil
}

// mappedBlock returns the payload length of block seq of the mapped file, and sets *last when
// it is the final (short, possibly empty) block.
func (t *transfer) mappedBlock(seq uint64, last *uint64) int {
	off := int64(seq-1) * int64(t.blksize)
	n := int(max(0, min(int64(t.blksize), int64(len(t.mapped))-off)))
	if n < t.blksize {
		*last = seq
	}
	return n
}

// sendMapped sends block seq of the mapped file.
func (t *transfer) sendMapped(seq uint64) error {
	off := min(int64(seq-1)*int64(t.blksize), int64(len(t.mapped)))
	end := min(off+int64(t.blksize), int64(len(t.mapped)))
	binary.BigEndian.PutUint16(t.hdr[:], uint16(OpDATA))
	binary.BigEndian.PutUint16(t.hdr[2:], uint16(seq))
	err := t.vw.write(t.hdr[:], t.mapped[off:end])
	if errors.Is(err, errPayload) {
		return &protoError{ErrUndefined, "Read error", resultError, fmt.Errorf("reading %s: %w", t.file, err)}
	}
	return err
}

// recv waits (until the read deadline) for the next packet from the peer. It answers packets
// from any other address with "Unknown transfer ID" and drops malformed packets. It returns
// ACKs without allocating; an ERROR from the peer is returned as a *clientError.
func (t *transfer) recv() (block uint16, isAck bool, err error) {
	for {
		n, from, err := t.conn.ReadFromUDPAddrPort(t.rbuf)
		if err != nil {
			return 0, false, err
		}
		if from.Addr().Is4In6() {
			from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		}
		if from != t.peer {
			t.cfg.log.Debug("tftp: packet from unknown transfer ID", "peer", t.peer, "from", from)
			t.sendError(from, ErrUnknownTID, "Unknown transfer ID")
			continue
		}
		b := t.rbuf[:n]
		if n >= 4 && Opcode(binary.BigEndian.Uint16(b)) == OpACK {
			return binary.BigEndian.Uint16(b[2:]), true, nil
		}
		p, err := ParsePacket(b)
		if err != nil {
			t.cfg.log.Debug("tftp: dropping malformed packet", "peer", from, "len", n, "error", err)
			continue
		}
		if ep, ok := p.(*ErrorPacket); ok {
			return 0, false, &clientError{ep}
		}
		// Anything else (DATA, a repeated request, ...) is not part of a read transfer: ignore.
	}
}

func (t *transfer) write(b []byte) error {
	_, err := t.conn.WriteToUDPAddrPort(b, t.peer)
	if err != nil && errors.Is(err, net.ErrClosed) {
		return err
	}
	// Other send errors (no buffer space, unreachable for a moment) count as a lost packet.
	return nil
}

func (t *transfer) sendError(to netip.AddrPort, code ErrorCode, msg string) {
	b, err := (&ErrorPacket{Code: code, Message: msg}).AppendBinary(make([]byte, 0, 4+len(msg)+1))
	if err != nil {
		return
	}
	_, _ = t.conn.WriteToUDPAddrPort(b, to)
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
