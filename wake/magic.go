// Package wake sends Wake-on-LAN magic packets: to the directed broadcast
// of the subnet where a device was last seen, out of the server interface
// on that subnet, or to a routed subnet's directed broadcast.
package wake

import (
	"bytes"
	"errors"
	"fmt"
	"net"
)

// Port is the UDP port magic packets go to (discard; 7 is the other
// customary one, and NICs look at the payload whatever the port).
const Port = 9

// PacketLen is the length of a magic packet without a SecureOn password.
const PacketLen = 6 + 16*6

// ErrNotMagic: a datagram is not a magic packet.
var ErrNotMagic = errors.New("not a Wake-on-LAN magic packet")

// MagicPacket returns the magic packet that wakes the NIC with address
// mac: six bytes 0xFF, then the address sixteen times (102 bytes).
func MagicPacket(mac net.HardwareAddr) ([]byte, error) {
	if len(mac) != 6 {
		return nil, fmt.Errorf("magic packet: %q is not a 48-bit MAC address", mac.String())
	}
	p := make([]byte, 0, PacketLen)
	p = append(p, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
	for range 16 {
		p = append(p, mac...)
	}
	return p, nil
}

// ParseMagicPacket returns the MAC address a magic packet wakes. It
// accepts exactly 102 bytes, or 106 or 108 with a SecureOn password
// (which it ignores).
func ParseMagicPacket(b []byte) (net.HardwareAddr, error) {
	switch len(b) {
	case PacketLen, PacketLen + 4, PacketLen + 6:
	default:
		return nil, fmt.Errorf("%w: %d bytes, want %d (or with a 4 or 6 byte password)", ErrNotMagic, len(b), PacketLen)
	}
	if !bytes.Equal(b[:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}) {
		return nil, fmt.Errorf("%w: no synchronisation stream (6×0xFF)", ErrNotMagic)
	}
	mac := b[6:12]
	for i := 1; i < 16; i++ {
		if !bytes.Equal(b[6+6*i:12+6*i], mac) {
			return nil, fmt.Errorf("%w: repetition %d of the address differs", ErrNotMagic, i+1)
		}
	}
	return net.HardwareAddr(bytes.Clone(mac)), nil
}
