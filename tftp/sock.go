package tftp

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"
)

// sockaddr is a peer's address in the kernel's form, built once per transfer: every packet to the
// peer is sent with it and every packet received is compared with it, without allocating.
type sockaddr struct {
	sa4 unix.RawSockaddrInet4
	sa6 unix.RawSockaddrInet6
	v6  bool
}

func newSockaddr(ap netip.AddrPort) sockaddr {
	var s sockaddr
	if ap.Addr().Is4() {
		s.sa4 = unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: ap.Addr().As4()}
		putPort(&s.sa4.Port, ap.Port())
		return s
	}
	s.v6 = true
	s.sa6 = unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: ap.Addr().As16(), Scope_id: scopeID(ap.Addr().Zone())}
	putPort(&s.sa6.Port, ap.Port())
	return s
}

// scopeID is the interface index of an IPv6 zone (an interface name or a number), 0 if none.
func scopeID(zone string) uint32 {
	if zone == "" {
		return 0
	}
	if ifi, err := net.InterfaceByName(zone); err == nil {
		return uint32(ifi.Index)
	}
	if n, err := strconv.ParseUint(zone, 10, 32); err == nil {
		return uint32(n)
	}
	return 0
}

// ptr returns the address as sendmsg(2) and sendto(2) take it.
func (s *sockaddr) ptr() (*byte, uint32) {
	if s.v6 {
		return (*byte)(unsafe.Pointer(&s.sa6)), unix.SizeofSockaddrInet6
	}
	return (*byte)(unsafe.Pointer(&s.sa4)), unix.SizeofSockaddrInet4
}

// sendto sends b to s; errors count as a lost packet.
func (s *sockaddr) sendto(fd int, b []byte) {
	to, n := s.ptr()
	sendto(fd, b, to, n)
}

// is reports whether the address recvfrom(2) filled in is s.
func (s *sockaddr) is(from *unix.RawSockaddrAny) bool {
	if s.v6 {
		f := (*unix.RawSockaddrInet6)(unsafe.Pointer(from))
		return f.Family == unix.AF_INET6 && f.Port == s.sa6.Port && f.Addr == s.sa6.Addr && f.Scope_id == s.sa6.Scope_id
	}
	f := (*unix.RawSockaddrInet4)(unsafe.Pointer(from))
	return f.Family == unix.AF_INET && f.Port == s.sa4.Port && f.Addr == s.sa4.Addr
}

// addrPort converts an address filled in by recvfrom(2), for logs.
func addrPort(from *unix.RawSockaddrAny) netip.AddrPort {
	switch from.Addr.Family {
	case unix.AF_INET:
		f := (*unix.RawSockaddrInet4)(unsafe.Pointer(from))
		return netip.AddrPortFrom(netip.AddrFrom4(f.Addr), getPort(&f.Port))
	case unix.AF_INET6:
		f := (*unix.RawSockaddrInet6)(unsafe.Pointer(from))
		a := netip.AddrFrom16(f.Addr).Unmap()
		if f.Scope_id != 0 && a.Is6() {
			a = a.WithZone(strconv.FormatUint(uint64(f.Scope_id), 10))
		}
		return netip.AddrPortFrom(a, getPort(&f.Port))
	}
	return netip.AddrPort{}
}

// putPort stores port in network byte order in a sockaddr's port field.
func putPort(field *uint16, port uint16) {
	b := (*[2]byte)(unsafe.Pointer(field))
	b[0], b[1] = byte(port>>8), byte(port)
}

func getPort(field *uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(field))
	return uint16(b[0])<<8 | uint16(b[1])
}

// openTID opens the non-blocking socket of one transfer (its TID), bound to the local address the
// request came to. The event loop polls it; nothing else reads it.
func openTID(local netip.Addr, peer netip.AddrPort) (int, error) {
	family := unix.AF_INET
	if peer.Addr().Is6() {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return -1, fmt.Errorf("opening transfer socket: %w", err)
	}
	var sa unix.Sockaddr = &unix.SockaddrInet4{}
	if family == unix.AF_INET6 {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("opening transfer socket: %w", err)
		}
		sa = &unix.SockaddrInet6{}
	}
	if local.IsValid() && !local.IsUnspecified() && local.Is4() == peer.Addr().Is4() {
		if local.Is4() {
			sa = &unix.SockaddrInet4{Addr: local.As4()}
		} else {
			s6 := &unix.SockaddrInet6{Addr: local.As16()}
			if local.IsLinkLocalUnicast() {
				s6.ZoneId = scopeID(peer.Addr().Zone())
			}
			sa = s6
		}
	}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("opening transfer socket on %v: %w", local, err)
	}
	return fd, nil
}

// sendto sends one datagram; errors count as a lost packet.
func sendto(fd int, b []byte, to *byte, tolen uint32) {
	for {
		_, _, e := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)),
			0, uintptr(unsafe.Pointer(to)), uintptr(tolen))
		if e != unix.EINTR {
			return
		}
	}
}

// recvfrom reads one datagram into b and its source into from, without waiting.
func recvfrom(fd int, b []byte, from *unix.RawSockaddrAny) (int, error) {
	for {
		fromlen := uint32(unix.SizeofSockaddrAny)
		n, _, e := unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)),
			0, uintptr(unsafe.Pointer(from)), uintptr(unsafe.Pointer(&fromlen)))
		switch e {
		case 0:
			return int(n), nil
		case unix.EINTR:
			continue
		}
		return 0, e
	}
}

// maxBatch is the number of datagrams one sendmmsg(2) sends.
const maxBatch = 64

// batch gathers a transfer's DATA packets and sends them with one sendmmsg(2): a window costs one
// system call, a lock-step block one as well. A packet is a 4-byte header and a payload that may
// come straight from a mapped file: no copy in user space. The loop owns one batch; its arrays are
// reused, so a packet costs no allocation.
type batch struct {
	msgs [maxBatch]unix.Mmsghdr
	iov  [2 * maxBatch]unix.Iovec
	hdrs [maxBatch][4]byte
	n    int
}

// errPayload marks a payload the kernel could not read: the mapped file shrank under the transfer.
var errPayload = errors.New("file changed while being sent")

// hdr returns the header buffer of the next packet, for a payload that is not already behind one.
func (b *batch) hdr() []byte { return b.hdrs[b.n][:] }

// add queues a packet made of hdr and payload (either may be empty, not both); the batch is sent
// when it is full. A payload must stay as it is until the batch is sent.
func (b *batch) add(fd int, to *sockaddr, hdr, payload []byte) error {
	m := &b.msgs[b.n]
	iov := b.iov[2*b.n : 2*b.n+2]
	k := 0
	for _, p := range [2][]byte{hdr, payload} {
		if len(p) > 0 {
			iov[k].Base = &p[0]
			iov[k].SetLen(len(p))
			k++
		}
	}
	m.Hdr = unix.Msghdr{Iov: &iov[0]}
	m.Hdr.SetIovlen(k)
	m.Hdr.Name, m.Hdr.Namelen = to.ptr()
	b.n++
	if b.n == maxBatch {
		return b.flush(fd)
	}
	return nil
}

// flush sends the queued packets. Only an unreadable payload is an error: other send errors (no
// buffer space, unreachable for a moment) count as lost packets, which the retransmission timer
// recovers.
func (b *batch) flush(fd int) error {
	defer func() { b.n = 0 }()
	for off := 0; off < b.n; {
		r, _, e := unix.RawSyscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&b.msgs[off])),
			uintptr(b.n-off), 0, 0, 0)
		switch e {
		case 0:
			off += int(r)
		case unix.EINTR:
		case unix.EFAULT:
			return errPayload
		case unix.EAGAIN:
			return nil // the socket buffer is full: the rest is lost
		default:
			off++ // this packet is lost
		}
	}
	return nil
}
