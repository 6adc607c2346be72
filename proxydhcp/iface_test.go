package proxydhcp

import (
	"net"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// The booter learns the interface a client's request came in on (where
// Wake-on-LAN packets for it go later).
func TestBooterLearnsTheInterface(t *testing.T) {
	client := listenClient(t)
	ls := startLoopback(t, client.LocalAddr().(*net.UDPAddr))
	// A first exchange: once it is answered, the server reads with
	// IP_PKTINFO (a datagram that came before could carry none).
	warm := pxeRequest(pxeKinds[0], net.HardwareAddr{0x52, 0x54, 0x00, 0, 0x77, 0}, 0x776, dhcpv4.MessageTypeDiscover)
	exchange(t, client, ls.dhcpAddr, warm.ToBytes())
	mac := net.HardwareAddr{0x52, 0x54, 0x00, 0, 0x77, 1}
	disc := pxeRequest(pxeKinds[0], mac, 0x777, dhcpv4.MessageTypeDiscover)
	exchange(t, client, ls.dhcpAddr, disc.ToBytes())
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Skip("no interface lo")
	}
	seen := ls.booter.clients()
	if len(seen) != 2 || seen[1].MAC.String() != mac.String() || seen[1].Interface != lo.Name {
		t.Fatalf("booter saw %+v, want %s on %s last", seen, mac, lo.Name)
	}
}
