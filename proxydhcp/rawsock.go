package proxydhcp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"unsafe"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// rawSock serves a UDP socket without Go's network poller: each worker
// blocks in recvmsg(2) on the socket itself (the descriptor is in blocking
// mode), so that a datagram wakes one worker's thread straight from the
// kernel (a socket's blocked readers are woken one per datagram), and that
// thread answers with sendmsg(2). Through the poller, a datagram costs a
// read that fails with EAGAIN, a park, an epoll wake-up of some thread and
// the scheduling of the reader on it, and a thread wake-up more for every
// timer armed on the way: tens of microseconds of latency per request.
//
// The blocked reads hold no P (they are ordinary blocking system calls for
// the runtime), so idle workers cost a thread each and nothing else. A slow
// Booter holds up only the worker answering it: the others keep reading.
type rawSock struct {
	// fd is a duplicate of the conn's descriptor, so that closing the
	// conn (Go waits for its own users of a descriptor, not for ours)
	// does not race with the reads blocked on it. It shares the socket,
	// and so its blocking mode, with the conn: the conn itself must not
	// be read or written any more.
	fd      int
	closing atomic.Bool
}

// newRawSock duplicates uc's descriptor, asks for IP_PKTINFO and puts the
// socket in blocking mode.
func newRawSock(uc *net.UDPConn) (*rawSock, error) {
	rc, err := uc.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("proxydhcp: raw conn of %s: %w", uc.LocalAddr(), err)
	}
	fd, derr := -1, error(nil)
	if err := rc.Control(func(s uintptr) {
		fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return nil, fmt.Errorf("proxydhcp: duplicating the socket of %s: %w", uc.LocalAddr(), err)
	}
	if derr != nil {
		return nil, fmt.Errorf("proxydhcp: duplicating the socket of %s: %w", uc.LocalAddr(), derr)
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_PKTINFO, 1); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("proxydhcp: IP_PKTINFO on %s: %w", uc.LocalAddr(), err)
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("proxydhcp: blocking mode on %s: %w", uc.LocalAddr(), err)
	}
	return &rawSock{fd: fd}, nil
}

// shutdown wakes every worker blocked reading (their reads return 0 from
// then on) and makes them return. Shutting down the read side of an
// unconnected UDP socket reports ENOTCONN but takes effect all the same.
func (r *rawSock) shutdown() {
	r.closing.Store(true)
	_ = unix.Shutdown(r.fd, unix.SHUT_RD)
}

// close closes the descriptor; the workers must have returned.
func (r *rawSock) close() { unix.Close(r.fd) }

// rawReader is one worker's receive state.
type rawReader struct {
	from unix.RawSockaddrInet4
	oob  [64]byte // one IP_PKTINFO message: 16 + 12 bytes, aligned
}

// recv reads one datagram into b. It returns its length, source address,
// receiving interface and destination address (0 and nil when unknown).
func (r *rawReader) recv(fd int, b []byte) (n int, src *net.UDPAddr, ifIndex int, dst net.IP, err error) {
	iov := unix.Iovec{Base: &b[0]}
	iov.SetLen(len(b))
	msg := unix.Msghdr{
		Name:    (*byte)(unsafe.Pointer(&r.from)),
		Namelen: unix.SizeofSockaddrInet4,
		Iov:     &iov,
		Control: &r.oob[0],
	}
	msg.SetIovlen(1)
	msg.SetControllen(len(r.oob))
	for {
		m, _, e := unix.Syscall(unix.SYS_RECVMSG, uintptr(fd), uintptr(unsafe.Pointer(&msg)), 0)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return 0, nil, 0, nil, e
		}
		n = int(m)
		break
	}
	if msg.Namelen >= unix.SizeofSockaddrInet4 && r.from.Family == unix.AF_INET {
		port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&r.from.Port))[:])
		src = &net.UDPAddr{IP: net.IPv4(r.from.Addr[0], r.from.Addr[1], r.from.Addr[2], r.from.Addr[3]).To4(), Port: int(port)}
	}
	ifIndex, dst = parsePktinfo(r.oob[:min(int(msg.Controllen), len(r.oob))])
	return n, src, ifIndex, dst, nil
}

// parsePktinfo finds the IP_PKTINFO message among control messages.
func parsePktinfo(oob []byte) (ifIndex int, dst net.IP) {
	hdr := unix.CmsgLen(0)
	for len(oob) >= hdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < hdr || l > len(oob) {
			return 0, nil
		}
		if h.Level == unix.IPPROTO_IP && h.Type == unix.IP_PKTINFO && l >= hdr+unix.SizeofInet4Pktinfo {
			pi := (*unix.Inet4Pktinfo)(unsafe.Pointer(&oob[hdr]))
			return int(pi.Ifindex), net.IPv4(pi.Addr[0], pi.Addr[1], pi.Addr[2], pi.Addr[3]).To4()
		}
		oob = oob[min(unix.CmsgSpace(l-hdr), len(oob)):]
	}
	return 0, nil
}

// errNotIPv4 is returned for a destination that is not an IPv4 address.
var errNotIPv4 = errors.New("not an IPv4 destination")

// send sends b to dst with sendmsg(2), out of cm.IfIndex and from cm.Src
// when cm says so (IP_PKTINFO, as ipv4.PacketConn.WriteTo does).
func (r *rawSock) send(b []byte, cm *ipv4.ControlMessage, dst *net.UDPAddr) error {
	ip := dst.IP.To4()
	if ip == nil {
		return fmt.Errorf("proxydhcp: send to %s: %w", dst, errNotIPv4)
	}
	to := unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: [4]byte(ip)}
	binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&to.Port))[:], uint16(dst.Port))
	iov := unix.Iovec{Base: &b[0]}
	iov.SetLen(len(b))
	msg := unix.Msghdr{
		Name:    (*byte)(unsafe.Pointer(&to)),
		Namelen: unix.SizeofSockaddrInet4,
		Iov:     &iov,
	}
	msg.SetIovlen(1)
	var oob [32]byte // CmsgSpace(SizeofInet4Pktinfo) = 32
	if cm != nil && (cm.Src.To4() != nil || cm.IfIndex > 0) {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		h.Level, h.Type = unix.IPPROTO_IP, unix.IP_PKTINFO
		h.SetLen(unix.CmsgLen(unix.SizeofInet4Pktinfo))
		pi := (*unix.Inet4Pktinfo)(unsafe.Pointer(&oob[unix.CmsgLen(0)]))
		pi.Ifindex = int32(cm.IfIndex)
		if s := cm.Src.To4(); s != nil {
			pi.Spec_dst = [4]byte(s)
		}
		msg.Control = &oob[0]
		msg.SetControllen(unix.CmsgSpace(unix.SizeofInet4Pktinfo))
	}
	for {
		_, _, e := unix.Syscall(unix.SYS_SENDMSG, uintptr(r.fd), uintptr(unsafe.Pointer(&msg)), 0)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return fmt.Errorf("sendmsg to %s: %w", dst, e)
		}
		return nil
	}
}
