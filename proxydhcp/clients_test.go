package proxydhcp

import (
	"encoding/binary"
	"net"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// Request builders that mimic what real clients put on the wire (option
// sets and order taken from the PXE 2.1 spec, EDK2 PxeBcDhcp4.c / HttpBootDhcp4.c,
// iPXE's dhcp.c and ISC dhclient / busybox udhcpc defaults).

var testUUID = []byte{0, 0x4c, 0x4c, 0x45, 0x44, 0x00, 0x31, 0x10, 0x80, 0x4a, 0xb4, 0xc0, 0x4f, 0x4b, 0x56, 0x31, 0x32}

type clientKind struct {
	name        string
	vendorClass string
	arch        iana.Arch
	hasArch     bool
	userClass   string
	ipxe        bool // options 77 "iPXE" + 175
	uuid        bool
}

var pxeKinds = []clientKind{
	{name: "bios-pxe", vendorClass: "PXEClient:Arch:00000:UNDI:002001", arch: iana.INTEL_X86PC, hasArch: true, uuid: true},
	{name: "edk2-x64", vendorClass: "PXEClient:Arch:00007:UNDI:003000", arch: iana.EFI_X86_64, hasArch: true, uuid: true},
	{name: "efi-bc", vendorClass: "PXEClient:Arch:00009:UNDI:003016", arch: iana.EFI_BC, hasArch: true, uuid: true},
	{name: "edk2-arm64", vendorClass: "PXEClient:Arch:00011:UNDI:003000", arch: iana.EFI_ARM64, hasArch: true, uuid: true},
	{name: "uefi-http", vendorClass: "HTTPClient:Arch:00016:UNDI:003000", arch: iana.EFI_X86_64_HTTP, hasArch: true, uuid: true},
	{name: "ipxe", vendorClass: "PXEClient:Arch:00000:UNDI:002001", arch: iana.INTEL_X86PC, hasArch: true, userClass: "iPXE", ipxe: true},
}

func opt(code dhcpv4.OptionCode, v []byte) dhcpv4.Modifier {
	return dhcpv4.WithOption(dhcpv4.OptGeneric(code, v))
}

func u16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }

// pxeRequest builds a DISCOVER (or REQUEST) the way a PXE firmware does.
func pxeRequest(k clientKind, mac net.HardwareAddr, xid uint32, mt dhcpv4.MessageType) *dhcpv4.DHCPv4 {
	var x dhcpv4.TransactionID
	binary.BigEndian.PutUint32(x[:], xid)
	mods := []dhcpv4.Modifier{
		dhcpv4.WithTransactionID(x),
		dhcpv4.WithHwAddr(mac),
		dhcpv4.WithMessageType(mt),
		dhcpv4.WithBroadcast(true),
		opt(dhcpv4.OptionMaximumDHCPMessageSize, u16(1472)),
		prl(1, 2, 3, 4, 5, 6, 12, 13, 15, 17, 18, 22, 23, 28, 40, 41, 42, 43, 50, 51, 54, 58, 59, 60, 66, 67, 97, 128, 129, 130, 131, 132, 133, 134, 135),
		opt(dhcpv4.OptionClientNetworkInterfaceIdentifier, []byte{1, 3, 0}),
		opt(dhcpv4.OptionClassIdentifier, []byte(k.vendorClass)),
	}
	if k.hasArch {
		mods = append(mods, opt(dhcpv4.OptionClientSystemArchitectureType, u16(uint16(k.arch))))
	}
	if k.uuid {
		mods = append(mods, opt(dhcpv4.OptionClientMachineIdentifier, testUUID))
	}
	if k.ipxe {
		mods = append(mods,
			opt(dhcpv4.OptionUserClassInformation, []byte("iPXE")),
			opt(dhcpv4.OptionClientIdentifier, append([]byte{1}, mac...)),
			// iPXE's encapsulated option 175: priority, bus id, version, features.
			opt(dhcpv4.GenericOptionCode(175), []byte{0xb1, 0x05, 0x01, 0x80, 0x86, 0x10, 0x0e, 0xeb, 0x03, 0x01, 0x00, 0x00, 0x17, 0x01, 0x01, 0x22, 0x01, 0x01, 0x13, 0x01, 0x01, 0x11, 0x01, 0x01, 0x27, 0x01, 0x01, 0x19, 0x01, 0x01, 0x29, 0x01, 0x01, 0x10, 0x01, 0x02, 0x21, 0x01, 0x01, 0x15, 0x01, 0x01, 0x1b, 0x01, 0x01, 0x12, 0x01, 0x01}),
		)
	}
	p, err := dhcpv4.New(mods...)
	if err != nil {
		panic(err)
	}
	p.HWType = iana.HWTypeEthernet
	return p
}

// dhclientDiscover mimics ISC dhclient: no option 60.
func dhclientDiscover(mac net.HardwareAddr) *dhcpv4.DHCPv4 {
	p, err := dhcpv4.New(
		dhcpv4.WithHwAddr(mac),
		dhcpv4.WithMessageType(dhcpv4.MessageTypeDiscover),
		opt(dhcpv4.OptionHostName, []byte("debian")),
		prl(1, 28, 2, 3, 15, 6, 119, 12, 44, 47, 26, 121, 42),
	)
	if err != nil {
		panic(err)
	}
	return p
}

// udhcpcDiscover mimics busybox udhcpc: option 60 "udhcp 1.35.0".
func udhcpcDiscover(mac net.HardwareAddr) *dhcpv4.DHCPv4 {
	p, err := dhcpv4.New(
		dhcpv4.WithHwAddr(mac),
		dhcpv4.WithMessageType(dhcpv4.MessageTypeDiscover),
		opt(dhcpv4.OptionClientIdentifier, append([]byte{1}, mac...)),
		opt(dhcpv4.OptionMaximumDHCPMessageSize, u16(576)),
		opt(dhcpv4.OptionClassIdentifier, []byte("udhcp 1.35.0")),
		prl(1, 3, 6, 12, 15, 28, 42),
	)
	if err != nil {
		panic(err)
	}
	return p
}

// seedPackets are the request shapes used by unit tests and as the fuzz seed corpus.
func seedPackets() map[string][]byte {
	mac := net.HardwareAddr{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}
	m := map[string][]byte{}
	for i, k := range pxeKinds {
		m[k.name+"-discover"] = pxeRequest(k, mac, uint32(0x1000+i), dhcpv4.MessageTypeDiscover).ToBytes()
		r := pxeRequest(k, mac, uint32(0x2000+i), dhcpv4.MessageTypeRequest)
		r.ClientIPAddr = net.IPv4(10, 0, 0, 50).To4()
		m[k.name+"-request-4011"] = r.ToBytes()
	}
	// BIOS PXE REQUEST to 4011 after a boot menu selection: option 43 with
	// PXE_BOOT_ITEM (71), type 0x8000 layer 0.
	r := pxeRequest(pxeKinds[0], mac, 0x3000, dhcpv4.MessageTypeRequest)
	r.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionVendorSpecificInformation, []byte{71, 4, 0x80, 0x00, 0x00, 0x00, 255}))
	m["bios-pxe-request-bootitem"] = r.ToBytes()
	m["dhclient-discover"] = dhclientDiscover(mac).ToBytes()
	m["udhcpc-discover"] = udhcpcDiscover(mac).ToBytes()
	return m
}

// prl is option 55 (parameter request list) in the client's own order.
func prl(codes ...byte) dhcpv4.Modifier {
	return opt(dhcpv4.OptionParameterRequestList, codes)
}
