// Package proxydhcp implements a PXE proxyDHCP server (PXE 2.1 specification,
// DESIGN.md §1 phases 1, 1a and 1b).
//
// The server listens on UDP 67 (the DHCP server port, where PXE firmware
// broadcasts its DHCPDISCOVER) and on UDP 4011 (the PXE boot server port, where
// a client sends its DHCPREQUEST when the site's DHCP server runs on the same
// host, or when the firmware asks the proxy again). It only ever answers
// clients whose option 60 starts with "PXEClient" or "HTTPClient", it never
// hands out an address (yiaddr is always 0.0.0.0) and it never answers a
// DHCPREQUEST on port 67, so the site's DHCP server is not disturbed.
//
// What a client boots is not decided here: the server asks a [Booter].
package proxydhcp

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// Well-known ports.
const (
	// DHCPPort is the DHCP server port where PXE firmware broadcasts its DISCOVER.
	DHCPPort = 67
	// PXEPort is the PXE boot server (proxyDHCP) port.
	PXEPort = 4011
	// ClientPort is the DHCP client port that broadcast replies go to.
	ClientPort = 68
)

// Vendor class identifiers (option 60) this package cares about.
const (
	VendorPXEClient  = "PXEClient"
	VendorHTTPClient = "HTTPClient"
)

// Limits on what is accepted as a request.
const (
	// minRequestLen is the fixed BOOTP header (236 bytes) plus the magic cookie.
	minRequestLen = 240
	// MaxRequestLen is the largest request accepted. DHCP messages are
	// normally at most 576 bytes; anything above an Ethernet MTU worth of
	// UDP payload is not a PXE client.
	MaxRequestLen = 1472
	// maxFileField is the usable length of the BOOTP file field (128 bytes,
	// NUL terminated).
	maxFileField = 127
)

// PXE vendor-specific sub-options carried in option 43 (PXE 2.1 spec, table 2-1).
const (
	pxeDiscoveryControl = 6  // PXE_DISCOVERY_CONTROL
	pxeBootItem         = 71 // PXE_BOOT_ITEM
	pxeEnd              = 255

	// discoveryBootFileOnly is PXE_DISCOVERY_CONTROL bit 3: "if set, and a
	// boot file name is present in the initial DHCP or proxyDHCP offer
	// packet, download the boot file (do not prompt/menu/discover)".
	discoveryBootFileOnly = 8
)

// Errors returned by [ParseRequest]. Each error it returns wraps exactly one
// of them so that callers can classify a dropped packet.
var (
	// ErrMalformed means the bytes are not a well-formed DHCP request.
	ErrMalformed = errors.New("malformed DHCP request")
	// ErrNotPXE means a well-formed DHCP request that is not from a PXE or
	// UEFI HTTP boot client (no option 60 "PXEClient"/"HTTPClient").
	ErrNotPXE = errors.New("not a PXE client")
	// ErrMessageType means a PXE client message that a proxy does not answer
	// (for example DHCPRELEASE, or a BOOTREPLY).
	ErrMessageType = errors.New("message type not answered by a proxy")
)

// ErrIgnore, wrapped in an error returned by [Booter.BootFor], means: do not
// answer this client at all (for example a device that must boot from its
// local disk, so that its firmware falls through to the next boot device).
var ErrIgnore = errors.New("proxydhcp: ignore this client")

// Client is what the proxy learned about a PXE client from its packet.
type Client struct {
	MAC         net.HardwareAddr
	Arch        iana.Arch // option 93 (first value); 0 (BIOS) if absent
	HasArch     bool      // option 93 was present (or the arch was read from option 60)
	VendorClass string    // option 60, e.g. "PXEClient:Arch:00007:UNDI:003000"
	UserClass   string    // option 77 (first), "iPXE" when the client is already iPXE
	UUID        []byte    // option 97 raw (type byte + 16 bytes), may be nil
	ServerIP    net.IP    // our IPv4 address on the interface the request came in on
	Port        int       // 67 or 4011: where the request arrived
	RelayIP     net.IP    // giaddr if relayed, else nil
	Interface   string    // the receiving interface's name when the client is on its segment (not relayed), else ""
}

// IsHTTPClient reports whether the client is a UEFI HTTP boot client.
func (c Client) IsHTTPClient() bool {
	return strings.HasPrefix(c.VendorClass, VendorHTTPClient)
}

// IsIPXE reports whether the client is already running iPXE (user class
// "iPXE"), so that it should be given a script URL rather than iPXE again.
func (c Client) IsIPXE() bool {
	return c.UserClass == "iPXE"
}

// Boot is the answer: what the client should load next.
type Boot struct {
	Filename   string // TFTP file name (e.g. "undionly.kpxe") or an http:// URL
	HTTPClient bool   // answer with option 60 "HTTPClient" (UEFI HTTP boot) instead of "PXEClient"
}

// Booter decides what a client boots. Returning an error wrapping [ErrIgnore]
// means: do not answer this client. Any other error is logged and the client
// is not answered either.
type Booter interface {
	BootFor(ctx context.Context, c Client) (Boot, error)
}

// BooterFunc adapts a function to the [Booter] interface.
type BooterFunc func(ctx context.Context, c Client) (Boot, error)

// BootFor calls f.
func (f BooterFunc) BootFor(ctx context.Context, c Client) (Boot, error) { return f(ctx, c) }

// ParseRequest parses and validates a proxyDHCP request. It is a pure
// function (no I/O) and safe to fuzz. On success it returns the decoded packet
// and what was learned about the client; the ServerIP and Port fields of the
// Client are left for the caller to fill in. Errors wrap [ErrMalformed],
// [ErrNotPXE] or [ErrMessageType].
//
// Accepted: BOOTREQUEST, Ethernet (htype 1, hlen 6), DHCPDISCOVER or
// DHCPREQUEST, option 60 starting with "PXEClient" or "HTTPClient".
func ParseRequest(b []byte) (*dhcpv4.DHCPv4, Client, error) {
	if len(b) < minRequestLen {
		return nil, Client{}, fmt.Errorf("%w: %d bytes, shorter than a BOOTP header", ErrMalformed, len(b))
	}
	if len(b) > MaxRequestLen {
		return nil, Client{}, fmt.Errorf("%w: %d bytes, longer than %d", ErrMalformed, len(b), MaxRequestLen)
	}
	// The library clamps hlen; check the raw header fields first.
	if op := dhcpv4.OpcodeType(b[0]); op != dhcpv4.OpcodeBootRequest {
		return nil, Client{}, fmt.Errorf("%w: op %d is not BOOTREQUEST", ErrMessageType, b[0])
	}
	if htype, hlen := b[1], b[2]; iana.HWType(htype) != iana.HWTypeEthernet || hlen != 6 {
		return nil, Client{}, fmt.Errorf("%w: htype %d hlen %d, want Ethernet (1, 6)", ErrMalformed, htype, hlen)
	}
	pkt, err := dhcpv4.FromBytes(b)
	if err != nil {
		return nil, Client{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if v := pkt.Options.Get(dhcpv4.OptionDHCPMessageType); v == nil {
		return nil, Client{}, fmt.Errorf("%w: no DHCP message type (plain BOOTP)", ErrMessageType)
	} else if len(v) != 1 {
		return nil, Client{}, fmt.Errorf("%w: option 53 has length %d", ErrMalformed, len(v))
	}
	mt := pkt.MessageType()

	c := Client{
		MAC:         append(net.HardwareAddr(nil), pkt.ClientHWAddr...),
		VendorClass: pkt.ClassIdentifier(),
	}
	if !strings.HasPrefix(c.VendorClass, VendorPXEClient) && !strings.HasPrefix(c.VendorClass, VendorHTTPClient) {
		return nil, Client{}, fmt.Errorf("%w: option 60 %q", ErrNotPXE, c.VendorClass)
	}
	if mt != dhcpv4.MessageTypeDiscover && mt != dhcpv4.MessageTypeRequest {
		return nil, Client{}, fmt.Errorf("%w: %s", ErrMessageType, mt)
	}

	if v := pkt.Options.Get(dhcpv4.OptionClientSystemArchitectureType); v != nil {
		if len(v) < 2 || len(v)%2 != 0 {
			return nil, Client{}, fmt.Errorf("%w: option 93 has length %d", ErrMalformed, len(v))
		}
		c.Arch = iana.Arch(binary.BigEndian.Uint16(v))
		c.HasArch = true
	} else if a, ok := archFromVendorClass(c.VendorClass); ok {
		c.Arch, c.HasArch = a, true
	}
	if v := pkt.Options.Get(dhcpv4.OptionUserClassInformation); v != nil {
		if uc := pkt.UserClass(); len(uc) > 0 {
			c.UserClass = uc[0]
		}
	}
	if v := pkt.Options.Get(dhcpv4.OptionClientMachineIdentifier); v != nil {
		c.UUID = append([]byte(nil), v...)
	}
	if gi := pkt.GatewayIPAddr.To4(); gi != nil && !gi.IsUnspecified() {
		c.RelayIP = append(net.IP(nil), gi...)
	}
	return pkt, c, nil
}

// archFromVendorClass reads the architecture from a vendor class such as
// "PXEClient:Arch:00007:UNDI:003000", for clients that omit option 93.
func archFromVendorClass(vc string) (iana.Arch, bool) {
	parts := strings.Split(vc, ":")
	if len(parts) < 3 || parts[1] != "Arch" {
		return 0, false
	}
	n, err := strconv.ParseUint(parts[2], 10, 16)
	if err != nil {
		return 0, false
	}
	return iana.Arch(n), true
}

// BuildReply builds the proxyDHCP answer to req. serverIP is the address
// the client should talk to (siaddr, option 54, sname). The reply is an OFFER
// for a DISCOVER and an ACK for a REQUEST; yiaddr is always 0.0.0.0.
func BuildReply(req *dhcpv4.DHCPv4, c Client, serverIP net.IP, b Boot) (*dhcpv4.DHCPv4, error) {
	sip := serverIP.To4()
	if sip == nil || sip.IsUnspecified() {
		return nil, fmt.Errorf("proxydhcp: no usable server IPv4 address (%v)", serverIP)
	}
	if b.Filename == "" {
		return nil, errors.New("proxydhcp: empty boot file name")
	}
	if len(b.Filename) > 255 {
		return nil, fmt.Errorf("proxydhcp: boot file name is %d bytes, longer than option 67 allows", len(b.Filename))
	}
	var mt dhcpv4.MessageType
	switch req.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		mt = dhcpv4.MessageTypeOffer
	case dhcpv4.MessageTypeRequest:
		mt = dhcpv4.MessageTypeAck
	default:
		return nil, fmt.Errorf("proxydhcp: cannot answer %s", req.MessageType())
	}

	// Build the packet directly: dhcpv4.New would draw a random xid only to
	// overwrite it.
	reply := &dhcpv4.DHCPv4{
		OpCode:        dhcpv4.OpcodeBootReply,
		HWType:        req.HWType,
		TransactionID: req.TransactionID,
		Flags:         req.Flags,
		ClientIPAddr:  net.IPv4zero,
		YourIPAddr:    net.IPv4zero,
		ServerIPAddr:  sip,
		GatewayIPAddr: net.IPv4zero,
		ClientHWAddr:  req.ClientHWAddr,
		// pixiecore and smee put the server address in sname; some
		// firmware uses it as the TFTP server when siaddr is not honoured.
		ServerHostName: sip.String(),
		Options:        make(dhcpv4.Options, 8),
	}
	if ci := req.ClientIPAddr.To4(); ci != nil {
		reply.ClientIPAddr = ci
	}
	if gi := req.GatewayIPAddr.To4(); gi != nil {
		reply.GatewayIPAddr = gi
	}
	if len(b.Filename) <= maxFileField {
		reply.BootFileName = b.Filename
	}
	reply.UpdateOption(dhcpv4.OptMessageType(mt))
	reply.UpdateOption(dhcpv4.OptServerIdentifier(sip))

	httpClient := b.HTTPClient || c.IsHTTPClient()
	if httpClient {
		// UEFI HTTP boot only accepts offers whose class is HTTPClient.
		reply.UpdateOption(dhcpv4.OptClassIdentifier(VendorHTTPClient))
	} else {
		// The PXE spec wants the server to identify as "PXEClient" too.
		reply.UpdateOption(dhcpv4.OptClassIdentifier(VendorPXEClient))
		reply.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionVendorSpecificInformation, pxeVendorOptions(req)))
	}
	reply.UpdateOption(dhcpv4.OptBootFileName(b.Filename))
	// PXE spec: the server must echo the client machine identifier.
	if v := req.Options.Get(dhcpv4.OptionClientMachineIdentifier); v != nil {
		reply.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionClientMachineIdentifier, v))
	}
	// RFC 3046: relay agent information goes back to the relay.
	if v := req.Options.Get(dhcpv4.OptionRelayAgentInformation); v != nil && len(reply.GatewayIPAddr) == 4 && !reply.GatewayIPAddr.IsUnspecified() {
		reply.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionRelayAgentInformation, v))
	}
	return reply, nil
}

// pxeVendorOptions encodes option 43 for a PXE client:
// PXE_DISCOVERY_CONTROL = 8 (no boot prompt, menu or boot server discovery:
// boot the file named in this packet, from siaddr), as pixiecore and smee
// send. EDK2 (PxeBcSelectBootPrompt) honours it exactly so: with bit 3 set
// and a boot file in the proxy offer it skips discovery and downloads the
// file. Plus, when the client asked for a boot
// item (option 43 sub-option 71 in a REQUEST to 4011, as BIOS PXE ROMs do
// after a menu selection), that boot item echoed back as the PXE spec
// requires.
func pxeVendorOptions(req *dhcpv4.DHCPv4) []byte {
	out := []byte{pxeDiscoveryControl, 1, discoveryBootFileOnly}
	if item := pxeSubOption(req.Options.Get(dhcpv4.OptionVendorSpecificInformation), pxeBootItem); len(item) == 4 {
		out = append(out, pxeBootItem, 4)
		out = append(out, item...)
	}
	return append(out, pxeEnd)
}

// pxeSubOption returns the value of sub-option code inside an encapsulated
// option 43, or nil.
func pxeSubOption(v []byte, code byte) []byte {
	for len(v) > 0 {
		c := v[0]
		if c == 0 {
			v = v[1:]
			continue
		}
		if c == pxeEnd || len(v) < 2 {
			return nil
		}
		n := int(v[1])
		if len(v) < 2+n {
			return nil
		}
		if c == code {
			return v[2 : 2+n]
		}
		v = v[2+n:]
	}
	return nil
}
