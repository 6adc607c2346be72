package proxydhcp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// bootpMinLen is the smallest BOOTP message (RFC 951): shorter replies are
// padded, as some relays drop them.
const bootpMinLen = 300

// appendReply appends to dst the proxyDHCP answer to req, byte for byte what
// BuildReply(req, c, serverIP, b).ToBytes() encodes (options in ascending
// code order, 82 last, values over 255 bytes split, padded to 300 bytes),
// without building the intermediate packet and its option map: the answer
// path costs a few allocations instead of dozens. It returns the message
// type of the answer.
func appendReply(dst []byte, req *dhcpv4.DHCPv4, c Client, serverIP net.IP, b Boot) ([]byte, dhcpv4.MessageType, error) {
	sip := serverIP.To4()
	if sip == nil || sip.IsUnspecified() {
		return dst, 0, fmt.Errorf("proxydhcp: no usable server IPv4 address (%v)", serverIP)
	}
	if b.Filename == "" {
		return dst, 0, errors.New("proxydhcp: empty boot file name")
	}
	if len(b.Filename) > 255 {
		return dst, 0, fmt.Errorf("proxydhcp: boot file name is %d bytes, longer than option 67 allows", len(b.Filename))
	}
	var mt dhcpv4.MessageType
	switch req.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		mt = dhcpv4.MessageTypeOffer
	case dhcpv4.MessageTypeRequest:
		mt = dhcpv4.MessageTypeAck
	default:
		return dst, 0, fmt.Errorf("proxydhcp: cannot answer %s", req.MessageType())
	}
	start := len(dst)
	dst = append(dst, byte(dhcpv4.OpcodeBootReply), byte(req.HWType), byte(len(req.ClientHWAddr)), 0)
	dst = append(dst, req.TransactionID[:]...)
	dst = append(dst, 0, 0) // secs
	dst = binary.BigEndian.AppendUint16(dst, req.Flags)
	dst = appendIPv4(dst, req.ClientIPAddr) // ciaddr
	dst = append(dst, 0, 0, 0, 0)           // yiaddr: a proxy gives no address
	dst = append(dst, sip...)               // siaddr
	gi := req.GatewayIPAddr.To4()
	dst = appendIPv4(dst, gi) // giaddr
	dst = appendField(dst, req.ClientHWAddr, 16, 16)
	// pixiecore and smee put the server address in sname; some firmware
	// uses it as the TFTP server when siaddr is not honoured.
	var name [15]byte
	dst = appendField(dst, netip.AddrFrom4([4]byte(sip)).AppendTo(name[:0]), 63, 64)
	var file []byte
	if len(b.Filename) <= maxFileField {
		file = []byte(b.Filename)
	}
	dst = appendField(dst, file, maxFileField, 128)
	dst = append(dst, 99, 130, 83, 99) // magic cookie

	// Options in ascending order of code, as the library writes them.
	httpClient := b.HTTPClient || c.IsHTTPClient()
	if !httpClient {
		var vendor [16]byte
		dst = appendOption(dst, dhcpv4.OptionVendorSpecificInformation, appendPXEVendorOptions(vendor[:0], req))
	}
	dst = append(dst, byte(dhcpv4.OptionDHCPMessageType.Code()), 1, byte(mt))
	dst = append(dst, byte(dhcpv4.OptionServerIdentifier.Code()), 4)
	dst = append(dst, sip...)
	class := VendorPXEClient
	if httpClient {
		// UEFI HTTP boot only accepts offers whose class is HTTPClient.
		class = VendorHTTPClient
	}
	dst = appendOption(dst, dhcpv4.OptionClassIdentifier, []byte(class))
	dst = appendOption(dst, dhcpv4.OptionBootfileName, []byte(b.Filename))
	// PXE spec: the server must echo the client machine identifier.
	if v := req.Options.Get(dhcpv4.OptionClientMachineIdentifier); v != nil {
		dst = appendOption(dst, dhcpv4.OptionClientMachineIdentifier, v)
	}
	// RFC 3046: relay agent information goes back to the relay, last.
	if v := req.Options.Get(dhcpv4.OptionRelayAgentInformation); v != nil && gi != nil && !gi.IsUnspecified() {
		dst = appendOption(dst, dhcpv4.OptionRelayAgentInformation, v)
	}
	dst = append(dst, byte(dhcpv4.OptionEnd.Code()))
	for len(dst)-start < bootpMinLen {
		dst = append(dst, byte(dhcpv4.OptionPad.Code()))
	}
	return dst, mt, nil
}

// appendIPv4 appends ip as 4 bytes, zeros when it is not an IPv4 address.
func appendIPv4(dst []byte, ip net.IP) []byte {
	if v4 := ip.To4(); v4 != nil {
		return append(dst, v4...)
	}
	return append(dst, 0, 0, 0, 0)
}

// appendField appends a fixed-size header field of size bytes holding at
// most keep bytes of v, zero-filled.
func appendField(dst, v []byte, keep, size int) []byte {
	n := min(len(v), keep)
	dst = append(dst, v[:n]...)
	for range size - n {
		dst = append(dst, 0)
	}
	return dst
}

// appendOption appends one option, listed several times when its value is
// longer than 255 bytes (RFC 3396), with length 0 when it is empty.
func appendOption(dst []byte, code dhcpv4.OptionCode, v []byte) []byte {
	if len(v) == 0 {
		return append(dst, code.Code(), 0)
	}
	for len(v) > 0 {
		n := min(len(v), 255)
		dst = append(dst, code.Code(), byte(n))
		dst = append(dst, v[:n]...)
		v = v[n:]
	}
	return dst
}

// appendPXEVendorOptions appends what pxeVendorOptions returns.
func appendPXEVendorOptions(dst []byte, req *dhcpv4.DHCPv4) []byte {
	dst = append(dst, pxeDiscoveryControl, 1, discoveryBootFileOnly)
	if item := pxeSubOption(req.Options.Get(dhcpv4.OptionVendorSpecificInformation), pxeBootItem); len(item) == 4 {
		dst = append(dst, pxeBootItem, 4)
		dst = append(dst, item...)
	}
	return append(dst, pxeEnd)
}
