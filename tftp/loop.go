package tftp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// loop serves the data phase of transfers: it owns an epoll instance (level-triggered) over their
// sockets and a heap of their retransmission timers, and sleeps in epoll_wait until a socket is
// readable or the nearest timer is due. A readable socket costs one recvfrom(2); the blocks that
// follow an acknowledgement leave in one sendmmsg(2), straight from the mapped file. There is no
// goroutine per transfer, no wake-up of one per block, and no second recvfrom returning EAGAIN.
//
// A loop runs in its own goroutine. Other goroutines hand it transfers with add and stop it with
// stop; everything else in it is its goroutine's own.
type loop struct {
	epfd, evfd int

	mu       sync.Mutex
	incoming []*transfer
	stopping bool
	done     chan struct{}

	// The loop goroutine's own.
	transfers map[int32]*transfer
	timers    timers
	events    [128]unix.EpollEvent
	rbuf      [2048]byte
	from      unix.RawSockaddrAny
	out       batch
	errTID    []byte // ERROR 5, sent to packets from unknown addresses
}

func newLoop() (*loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("tftp: creating epoll instance: %w", err)
	}
	evfd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("tftp: creating eventfd: %w", err)
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, evfd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(evfd)}); err != nil {
		unix.Close(epfd)
		unix.Close(evfd)
		return nil, fmt.Errorf("tftp: polling eventfd: %w", err)
	}
	errTID, _ := (&ErrorPacket{Code: ErrUnknownTID, Message: "Unknown transfer ID"}).AppendBinary(nil)
	l := &loop{epfd: epfd, evfd: evfd, done: make(chan struct{}), transfers: map[int32]*transfer{}, errTID: errTID}
	go l.run()
	return l, nil
}

// add hands t, ready to start, to the loop. It reports false if the loop is stopping: t is then
// still the caller's.
func (l *loop) add(t *transfer) bool {
	l.mu.Lock()
	if l.stopping {
		l.mu.Unlock()
		return false
	}
	l.incoming = append(l.incoming, t)
	l.mu.Unlock()
	l.wake()
	return true
}

// stop ends every transfer (aborted), closes every socket and waits for the loop to return.
func (l *loop) stop() {
	l.mu.Lock()
	l.stopping = true
	l.mu.Unlock()
	l.wake()
	<-l.done
}

func (l *loop) wake() {
	one := [8]byte{1}
	for {
		_, err := unix.Write(l.evfd, one[:])
		if !errors.Is(err, unix.EINTR) {
			return // EAGAIN: the counter is already non-zero, the loop wakes anyway
		}
	}
}

func (l *loop) run() {
	// The loop spends its life in system calls: it keeps its thread rather than move between
	// threads each time epoll_wait returns.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	defer close(l.done)
	defer unix.Close(l.evfd)
	defer unix.Close(l.epfd)
	for {
		now := time.Now()
		for t := l.timers.expired(now); t != nil; t = l.timers.expired(now) {
			t.onTimeout(now, &l.out)
			l.settle(t)
		}
		wait := -1
		if at, ok := l.timers.next(); ok {
			// epoll_wait counts milliseconds: round up, a timer never fires early.
			wait = int((at.Sub(now) + time.Millisecond - 1) / time.Millisecond)
			wait = max(wait, 0)
		}
		n, err := unix.EpollWait(l.epfd, l.events[:], wait)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			// Cannot happen with a valid epoll instance and buffer; end the transfers rather than spin.
			l.fatal(fmt.Errorf("epoll_wait: %w", err))
			return
		}
		for i := range n {
			fd := l.events[i].Fd
			if int(fd) == l.evfd {
				if !l.accept() {
					return
				}
				continue
			}
			if t := l.transfers[fd]; t != nil {
				l.readable(t)
			}
		}
	}
}

// accept starts the transfers handed over by add. It reports false if the loop must stop: it
// then has ended every transfer.
func (l *loop) accept() bool {
	var cnt [8]byte
	_, _ = unix.Read(l.evfd, cnt[:])
	l.mu.Lock()
	in, stopping := l.incoming, l.stopping
	l.incoming = nil
	l.mu.Unlock()
	for _, t := range in {
		if stopping {
			t.fail(errShutdown)
			t.end()
			continue
		}
		if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, t.fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(t.fd)}); err != nil {
			t.fail(fmt.Errorf("polling transfer socket: %w", err))
			t.end()
			continue
		}
		l.transfers[int32(t.fd)] = t
		t.start(time.Now(), &l.out)
		l.settle(t)
	}
	if stopping {
		l.abortAll(errShutdown)
		return false
	}
	return true
}

var errShutdown = errors.New("server shutting down")

// readable reads one datagram from t's socket. Level-triggered epoll reports the socket again if
// more are waiting.
func (l *loop) readable(t *transfer) {
	n, err := recvfrom(t.fd, l.rbuf[:], &l.from)
	if err != nil {
		return // EAGAIN, or an error queued on the socket: nothing to read
	}
	if !t.to.is(&l.from) {
		t.cfg.log.Debug("tftp: packet from unknown transfer ID", "peer", t.peer, "from", addrPort(&l.from))
		sendto(t.fd, l.errTID, (*byte)(unsafe.Pointer(&l.from)), fromLen(&l.from))
		return
	}
	b := l.rbuf[:n]
	now := time.Now()
	if n >= 4 && Opcode(binary.BigEndian.Uint16(b)) == OpACK {
		t.onAck(binary.BigEndian.Uint16(b[2:]), now, &l.out)
		l.settle(t)
		return
	}
	p, err := ParsePacket(b)
	if err != nil {
		t.cfg.log.Debug("tftp: dropping malformed packet", "peer", t.peer, "len", n, "error", err)
		return
	}
	if ep, ok := p.(*ErrorPacket); ok {
		t.fail(&clientError{ep})
		l.settle(t)
	}
	// Anything else (DATA, a repeated request, ...) is not part of a read transfer: ignore.
}

func fromLen(from *unix.RawSockaddrAny) uint32 {
	if from.Addr.Family == unix.AF_INET6 {
		return unix.SizeofSockaddrInet6
	}
	return unix.SizeofSockaddrInet4
}

// settle files t after an event: its timer if it goes on, its end if it is over.
func (l *loop) settle(t *transfer) {
	if !t.over {
		l.timers.schedule(t)
		return
	}
	l.timers.remove(t)
	delete(l.transfers, int32(t.fd))
	t.end() // closing the socket takes it out of the epoll set
}

// fatal ends every transfer, those handed over but not started too, and refuses new ones.
func (l *loop) fatal(err error) {
	l.mu.Lock()
	l.stopping = true
	in := l.incoming
	l.incoming = nil
	l.mu.Unlock()
	for _, t := range in {
		t.fail(err)
		t.end()
	}
	l.abortAll(err)
}

func (l *loop) abortAll(err error) {
	for _, t := range l.transfers {
		t.fail(err)
		l.settle(t)
	}
}
