package proxydhcp

import (
	"context"
	"net"
	"os"
	"runtime"
	"testing"
	"unsafe"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"golang.org/x/sys/unix"
)

// openFDs counts this process's open descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// Serve answers on a UDP socket with workers blocked in recvmsg(2); when ctx
// is done they are woken, the socket and its duplicate are closed (the port
// can be bound again) and no descriptor is left open. Run several times: a
// worker that stayed blocked would hang Serve.
func TestRawSockShutdownReleasesPort(t *testing.T) {
	client := listenClient(t)
	before := openFDs(t)
	for round := range 3 {
		ctx, cancel := context.WithCancel(context.Background())
		dc, err := ListenUDP(ctx, "", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := dc.LocalAddr().String()
		s := &Server{Booter: &fakeBooter{}, Logger: quietLogger(t), bcastAddr: client.LocalAddr().(*net.UDPAddr), Workers: 3, allowLoopback: true}
		done := make(chan error, 1)
		go func() { done <- s.Serve(ctx, dc, nil) }()
		req := pxeRequest(pxeKinds[0], net.HardwareAddr{2, 0, 0, 0, 2, byte(round)}, uint32(0x700+round), dhcpv4.MessageTypeDiscover)
		if reply := exchange(t, client, dc.LocalAddr().(*net.UDPAddr), req.ToBytes()); reply.TransactionID != req.TransactionID {
			t.Fatalf("reply xid %v, want %v", reply.TransactionID, req.TransactionID)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Serve: %v", err)
		}
		again, err := ListenUDP(context.Background(), "", addr)
		if err != nil {
			t.Fatalf("round %d: %s still bound after Serve returned: %v", round, addr, err)
		}
		again.Close()
	}
	runtime.GC()
	if after := openFDs(t); after != before {
		t.Errorf("%d descriptors open before, %d after", before, after)
	}
}

func TestParsePktinfo(t *testing.T) {
	var oob [64]byte
	h := (*unix.Cmsghdr)(unsafePointer(&oob[0]))
	h.Level, h.Type = unix.IPPROTO_IP, unix.IP_PKTINFO
	h.SetLen(unix.CmsgLen(unix.SizeofInet4Pktinfo))
	pi := (*unix.Inet4Pktinfo)(unsafePointer(&oob[unix.CmsgLen(0)]))
	pi.Ifindex = 7
	pi.Addr = [4]byte{192, 0, 2, 9}
	n := unix.CmsgSpace(unix.SizeofInet4Pktinfo)
	if idx, dst := parsePktinfo(oob[:n]); idx != 7 || !dst.Equal(net.IPv4(192, 0, 2, 9)) {
		t.Errorf("parsePktinfo = %d, %v; want 7, 192.0.2.9", idx, dst)
	}
	// Truncated or absurd lengths are ignored, never read past the buffer.
	for _, cut := range []int{0, 8, unix.CmsgLen(0), unix.CmsgLen(unix.SizeofInet4Pktinfo) - 1} {
		if idx, dst := parsePktinfo(oob[:cut]); idx != 0 || dst != nil {
			t.Errorf("parsePktinfo(%d bytes) = %d, %v; want nothing", cut, idx, dst)
		}
	}
	h.Len = 1 << 40
	if idx, dst := parsePktinfo(oob[:n]); idx != 0 || dst != nil {
		t.Errorf("parsePktinfo with a huge length = %d, %v; want nothing", idx, dst)
	}
}

func unsafePointer(b *byte) unsafe.Pointer { return unsafe.Pointer(b) }
