package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"
)

const (
	opRRQ   = 1
	opDATA  = 3
	opACK   = 4
	opERROR = 5
	opOACK  = 6
)

// tftpGet downloads name from server:69 as a PXE ROM does: lock-step,
// the block size asked for (EDK2 asks 1468), tsize; a lost packet is
// retransmitted after timeout, 6 times at most. It returns the file.
func tftpGet(ctx context.Context, local net.IP, server net.IP, name string, blksize, window int, timeout time.Duration, stats *clientStats) ([]byte, error) {
	return tftpGetPort(ctx, local, server, 69, name, blksize, window, timeout, stats)
}

func tftpGetPort(ctx context.Context, local net.IP, server net.IP, port int, name string, blksize, window int, timeout time.Duration, stats *clientStats) ([]byte, error) {
	var lc net.ListenConfig
	conn, err := lc.ListenPacket(ctx, "udp4", net.JoinHostPort(local.String(), "0"))
	if err != nil {
		return nil, fmt.Errorf("tftp: listen: %w", err)
	}
	defer conn.Close()
	rrq := []byte{0, opRRQ}
	rrq = append(append(rrq, name...), 0)
	rrq = append(append(rrq, "octet"...), 0)
	opts := [][2]string{{"blksize", strconv.Itoa(blksize)}, {"tsize", "0"}}
	if window > 1 {
		opts = append(opts, [2]string{"windowsize", strconv.Itoa(window)})
	}
	for _, o := range opts {
		rrq = append(append(rrq, o[0]...), 0)
		rrq = append(append(rrq, o[1]...), 0)
	}
	srv := &net.UDPAddr{IP: server, Port: port}
	var peer net.Addr // the server's transfer port, once known
	last := rrq       // what to send again on timeout
	lastTo := net.Addr(srv)
	size, win := 512, 1
	var file bytes.Buffer
	next := uint16(1)
	tries := 0
	buf := make([]byte, 65536+4)
	send := func(b []byte, to net.Addr) error {
		last, lastTo = b, to
		_, err := conn.WriteTo(b, to)
		return err
	}
	ack := func(block uint16) []byte {
		return []byte{0, opACK, byte(block >> 8), byte(block)}
	}
	if err := send(rrq, srv); err != nil {
		return nil, fmt.Errorf("tftp: send: %w", err)
	}
	inWindow := 0
	for {
		deadline := time.Now().Add(timeout)
		if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
			deadline = d
		}
		conn.SetReadDeadline(deadline)
		n, from, err := conn.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("tftp %s: block %d: %w", name, next, ctx.Err())
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				tries++
				stats.tftpTimeouts++
				if tries > 6 {
					return nil, fmt.Errorf("tftp %s: block %d: no answer after %d tries", name, next, tries)
				}
				if _, err := conn.WriteTo(last, lastTo); err != nil {
					return nil, fmt.Errorf("tftp: send: %w", err)
				}
				continue
			}
			return nil, fmt.Errorf("tftp: read: %w", err)
		}
		if n < 4 {
			continue
		}
		if peer != nil && from.String() != peer.String() {
			continue // another TID
		}
		op := binary.BigEndian.Uint16(buf[:2])
		switch op {
		case opERROR:
			return nil, fmt.Errorf("tftp %s: error %d: %s", name, binary.BigEndian.Uint16(buf[2:4]), bytes.TrimRight(buf[4:n], "\x00"))
		case opOACK:
			if peer != nil {
				continue
			}
			peer = from
			fields := bytes.Split(bytes.TrimRight(buf[2:n], "\x00"), []byte{0})
			for i := 0; i+1 < len(fields); i += 2 {
				v, _ := strconv.Atoi(string(fields[i+1]))
				switch string(bytes.ToLower(fields[i])) {
				case "blksize":
					size = v
				case "windowsize":
					win = v
				}
			}
			tries = 0
			if err := send(ack(0), peer); err != nil {
				return nil, fmt.Errorf("tftp: send: %w", err)
			}
		case opDATA:
			if peer == nil {
				peer = from // no OACK: the server ignored the options
			}
			block := binary.BigEndian.Uint16(buf[2:4])
			if block != next {
				// Out of order or a duplicate: ask again from what we have.
				if err := send(ack(next-1), peer); err != nil {
					return nil, fmt.Errorf("tftp: send: %w", err)
				}
				inWindow = 0
				continue
			}
			tries = 0
			file.Write(buf[4:n])
			next++
			inWindow++
			final := n-4 < size
			if final || inWindow >= win {
				inWindow = 0
				if err := send(ack(block), peer); err != nil {
					return nil, fmt.Errorf("tftp: send: %w", err)
				}
			}
			if final {
				return file.Bytes(), nil
			}
		}
	}
}
