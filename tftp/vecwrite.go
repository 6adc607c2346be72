package tftp

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// vecWriter sends a transfer's DATA packets with sendmsg(2) from two pieces, the 4-byte header and
// the payload, so that a payload straight from a mapped file is never copied in user space. The
// message header, its address and the callback are built once per transfer: a packet costs one
// system call and no allocation.
type vecWriter struct {
	raw syscall.RawConn
	msg unix.Msghdr
	iov [2]unix.Iovec
	sa4 unix.RawSockaddrInet4
	sa6 unix.RawSockaddrInet6
	err syscall.Errno
	fn  func(fd uintptr) bool
}

func newVecWriter(conn *net.UDPConn, peer netip.AddrPort) (*vecWriter, error) {
	raw, err := conn.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("transfer socket: %w", err)
	}
	w := &vecWriter{raw: raw}
	port := peer.Port()
	la, _ := conn.LocalAddr().(*net.UDPAddr)
	if peer.Addr().Is4() && la != nil && la.IP.To4() != nil {
		w.sa4 = unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: peer.Addr().As4()}
		putPort(&w.sa4.Port, port)
		w.msg.Name = (*byte)(unsafe.Pointer(&w.sa4))
		w.msg.Namelen = unix.SizeofSockaddrInet4
	} else {
		w.sa6 = unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: peer.Addr().As16()}
		putPort(&w.sa6.Port, port)
		if z := peer.Addr().Zone(); z != "" {
			if ifi, err := net.InterfaceByName(z); err == nil {
				w.sa6.Scope_id = uint32(ifi.Index)
			} else if n, err := strconv.ParseUint(z, 10, 32); err == nil {
				w.sa6.Scope_id = uint32(n)
			}
		}
		w.msg.Name = (*byte)(unsafe.Pointer(&w.sa6))
		w.msg.Namelen = unix.SizeofSockaddrInet6
	}
	w.msg.Iov = &w.iov[0]
	w.fn = w.send
	return w, nil
}

// putPort stores port in network byte order in a sockaddr's port field.
func putPort(field *uint16, port uint16) {
	b := (*[2]byte)(unsafe.Pointer(field))
	b[0], b[1] = byte(port>>8), byte(port)
}

func (w *vecWriter) send(fd uintptr) bool {
	_, _, e := unix.Syscall(unix.SYS_SENDMSG, fd, uintptr(unsafe.Pointer(&w.msg)), 0)
	if e == unix.EAGAIN {
		return false // wait until the socket is writable
	}
	w.err = e
	return true
}

// errPayload marks a payload the kernel could not read: the mapped file shrank under the transfer.
var errPayload = errors.New("file changed while being sent")

// write sends hdr followed by payload as one datagram. Only a closed socket or an unreadable
// payload is an error: other send errors (no buffer space, unreachable for a moment) count as a
// lost packet, as with (*transfer).write.
func (w *vecWriter) write(hdr, payload []byte) error {
	w.iov[0].Base = &hdr[0]
	w.iov[0].SetLen(len(hdr))
	w.msg.Iovlen = 1
	if len(payload) > 0 {
		w.iov[1].Base = &payload[0]
		w.iov[1].SetLen(len(payload))
		w.msg.Iovlen = 2
	}
	w.err = 0
	if err := w.raw.Write(w.fn); err != nil {
		if errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrClosed) {
			return net.ErrClosed
		}
		return err
	}
	if w.err == unix.EFAULT {
		return errPayload
	}
	return nil
}

// mapFile maps a regular file read-only for the duration of a transfer: blocks are sent from the
// page cache without a read(2) per block and without copying. It returns nil when the file cannot
// be mapped (empty, or a file system without mmap): the transfer then reads it.
func mapFile(f *os.File, size int64) []byte {
	if size <= 0 || int64(int(size)) != size {
		return nil
	}
	if pos, err := f.Seek(0, io.SeekCurrent); err != nil || pos != 0 {
		return nil // a generated file handed over part read: read it
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return nil
	}
	var b []byte
	if err := rc.Control(func(fd uintptr) {
		b, err = unix.Mmap(int(fd), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	}); err != nil || b == nil {
		return nil
	}
	_ = unix.Madvise(b, unix.MADV_SEQUENTIAL)
	return b
}

func unmapFile(b []byte) {
	if b != nil {
		_ = unix.Munmap(b)
	}
}
