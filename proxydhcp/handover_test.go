package proxydhcp

import (
	"context"
	"net"
	"strconv"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// blockingBooter holds every answer for one MAC until release is closed.
type blockingBooter struct {
	slow    string
	entered chan struct{}
	release chan struct{}
}

func (b *blockingBooter) BootFor(ctx context.Context, c Client) (Boot, error) {
	if c.MAC.String() == b.slow {
		b.entered <- struct{}{}
		select {
		case <-b.release:
		case <-ctx.Done():
		}
	}
	return Boot{Filename: "undionly.kpxe"}, nil
}

// One worker reads at a time and answers itself; a Booter that does not
// return makes the next worker take over the socket, so other clients are
// still answered while it waits.
func TestSlowBooterHandsOver(t *testing.T) {
	for _, workers := range []int{2, 4} {
		t.Run(strconv.Itoa(workers), func(t *testing.T) {
			client := listenClient(t)
			ctx, cancel := context.WithCancel(context.Background())
			dc, err := ListenUDP(ctx, "", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			slowMAC := net.HardwareAddr{2, 0, 0, 0, 0, 0x51}
			b := &blockingBooter{slow: slowMAC.String(), entered: make(chan struct{}, workers), release: make(chan struct{})}
			s := &Server{Booter: b, Logger: quietLogger(t), bcastAddr: client.LocalAddr().(*net.UDPAddr), Workers: workers, allowLoopback: true}
			done := make(chan error, 1)
			go func() { done <- s.Serve(ctx, dc, nil) }()
			defer func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("Serve: %v", err)
				}
			}()
			dst := dc.LocalAddr().(*net.UDPAddr)
			// Every worker but one is held by the slow client...
			for i := range workers - 1 {
				if _, err := client.WriteToUDP(pxeRequest(pxeKinds[0], slowMAC, uint32(0x500+i), dhcpv4.MessageTypeDiscover).ToBytes(), dst); err != nil {
					t.Fatal(err)
				}
				<-b.entered
			}
			// ...and the last one still answers the others, one after another.
			for i := range 3 {
				probe := pxeRequest(pxeKinds[0], net.HardwareAddr{2, 0, 0, 0, 1, byte(i)}, uint32(0x600+i), dhcpv4.MessageTypeDiscover)
				if reply := exchange(t, client, dst, probe.ToBytes()); reply.TransactionID != probe.TransactionID {
					t.Fatalf("reply xid %v, want %v", reply.TransactionID, probe.TransactionID)
				}
			}
			close(b.release)
			for i := range workers - 1 {
				if reply := readReply(t, client); reply.ClientHWAddr.String() != slowMAC.String() {
					t.Fatalf("reply %d after the release is for %s, want %s", i, reply.ClientHWAddr, slowMAC)
				}
			}
		})
	}
}
