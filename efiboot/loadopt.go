package efiboot

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"unicode/utf16"
)

// Load option attributes (UEFI 2.10 §3.1.3).
const (
	LoadOptionActive         uint32 = 0x00000001
	LoadOptionForceReconnect uint32 = 0x00000002
	LoadOptionHidden         uint32 = 0x00000008
)

// Device path node types and subtypes used here (UEFI 2.10 §10.3).
const (
	TypeHardware  = 0x01
	TypeACPI      = 0x02
	TypeMessaging = 0x03
	TypeMedia     = 0x04
	TypeBBS       = 0x05
	TypeEnd       = 0x7f

	SubHardDrive = 0x01 // media
	SubFilePath  = 0x04 // media
	SubFvFile    = 0x06 // media
	SubPCI       = 0x01 // hardware
	SubACPI      = 0x01 // ACPI
	SubMAC       = 0x0b // messaging
	SubIPv4      = 0x0c // messaging
	SubIPv6      = 0x0d // messaging
	SubURI       = 0x18 // messaging
	SubEndEntire = 0xff
	SubEndInst   = 0x01
)

// Hard Drive media node fields.
const (
	MBRTypePCAT = 0x01 // legacy MBR partition table
	MBRTypeGPT  = 0x02 // GUID partition table

	SigTypeMBR  = 0x01 // 32-bit MBR disk signature
	SigTypeGUID = 0x02 // partition GUID
)

// Bounds for decoding untrusted NVRAM contents.
const (
	maxOptionSize = 64 << 10 // a load option larger than this is rejected
	maxNodes      = 256      // device path nodes per load option
	maxDescChars  = 4096     // description length in UTF-16 units
)

// Node is one device path node: its type, subtype and the data after the
// 4-byte header.
type Node struct {
	Type    byte
	SubType byte
	Data    []byte
}

// DevicePath is a list of device path nodes, without the end node.
type DevicePath []Node

// LoadOption is an EFI_LOAD_OPTION: the content of a Boot#### variable.
type LoadOption struct {
	Attributes   uint32
	Description  string
	FilePath     DevicePath
	OptionalData []byte
}

// Active reports whether the option has LOAD_OPTION_ACTIVE.
func (o LoadOption) Active() bool { return o.Attributes&LoadOptionActive != 0 }

// HardDrive is a Hard Drive media device path node.
type HardDrive struct {
	PartitionNumber uint32
	Start           uint64 // in logical blocks
	Size            uint64 // in logical blocks
	Signature       [16]byte
	MBRType         byte
	SignatureType   byte
}

// Node encodes h as a device path node.
func (h HardDrive) Node() Node {
	d := make([]byte, 38)
	binary.LittleEndian.PutUint32(d[0:], h.PartitionNumber)
	binary.LittleEndian.PutUint64(d[4:], h.Start)
	binary.LittleEndian.PutUint64(d[12:], h.Size)
	copy(d[20:36], h.Signature[:])
	d[36] = h.MBRType
	d[37] = h.SignatureType
	return Node{Type: TypeMedia, SubType: SubHardDrive, Data: d}
}

// HardDriveOf decodes a Hard Drive media node; ok is false when n is not one.
func HardDriveOf(n Node) (h HardDrive, ok bool) {
	if n.Type != TypeMedia || n.SubType != SubHardDrive || len(n.Data) != 38 {
		return h, false
	}
	h.PartitionNumber = binary.LittleEndian.Uint32(n.Data[0:])
	h.Start = binary.LittleEndian.Uint64(n.Data[4:])
	h.Size = binary.LittleEndian.Uint64(n.Data[12:])
	copy(h.Signature[:], n.Data[20:36])
	h.MBRType = n.Data[36]
	h.SignatureType = n.Data[37]
	return h, true
}

// FilePathNode encodes a File Path media node for a backslash path.
func FilePathNode(path string) Node {
	u := utf16.Encode([]rune(path))
	d := make([]byte, 2*len(u)+2)
	for i, c := range u {
		binary.LittleEndian.PutUint16(d[2*i:], c)
	}
	return Node{Type: TypeMedia, SubType: SubFilePath, Data: d}
}

// FilePathOf decodes a File Path media node; ok is false when n is not one.
func FilePathOf(n Node) (path string, ok bool) {
	if n.Type != TypeMedia || n.SubType != SubFilePath {
		return "", false
	}
	return utf16String(n.Data), true
}

// utf16String decodes NUL-terminated (or unterminated) UTF-16LE.
func utf16String(b []byte) string {
	u := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		c := binary.LittleEndian.Uint16(b[i:])
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	return string(utf16.Decode(u))
}

// Marshal encodes the device path followed by the End Entire node.
func (p DevicePath) Marshal() ([]byte, error) {
	var b bytes.Buffer
	for i, n := range p {
		l := 4 + len(n.Data)
		if l > 0xffff {
			return nil, fmt.Errorf("device path node %d: %d bytes is too long", i, l)
		}
		b.Write([]byte{n.Type, n.SubType, byte(l), byte(l >> 8)})
		b.Write(n.Data)
	}
	b.Write([]byte{TypeEnd, SubEndEntire, 4, 0})
	return b.Bytes(), nil
}

// ParseDevicePath decodes a device path up to its End Entire node (or the
// end of b). Nodes must have a length of at least 4 that fits in b.
func ParseDevicePath(b []byte) (DevicePath, error) {
	var p DevicePath
	for off := 0; off < len(b); {
		if len(b)-off < 4 {
			return nil, fmt.Errorf("device path: %d trailing bytes at %d", len(b)-off, off)
		}
		t, st := b[off], b[off+1]
		l := int(binary.LittleEndian.Uint16(b[off+2:]))
		if l < 4 || l > len(b)-off {
			return nil, fmt.Errorf("device path: node at %d has length %d (%d bytes left)", off, l, len(b)-off)
		}
		if t == TypeEnd && st == SubEndEntire {
			return p, nil
		}
		if len(p) >= maxNodes {
			return nil, fmt.Errorf("device path: more than %d nodes", maxNodes)
		}
		p = append(p, Node{Type: t, SubType: st, Data: bytes.Clone(b[off+4 : off+l])})
		off += l
	}
	return p, nil
}

// Marshal encodes the load option as stored in a Boot#### variable.
func (o LoadOption) Marshal() ([]byte, error) {
	fp, err := o.FilePath.Marshal()
	if err != nil {
		return nil, err
	}
	if len(fp) > 0xffff {
		return nil, fmt.Errorf("load option: device path of %d bytes is too long", len(fp))
	}
	desc := utf16.Encode([]rune(o.Description))
	b := make([]byte, 6, 6+2*len(desc)+2+len(fp)+len(o.OptionalData))
	binary.LittleEndian.PutUint32(b[0:], o.Attributes)
	binary.LittleEndian.PutUint16(b[4:], uint16(len(fp)))
	for _, c := range desc {
		b = binary.LittleEndian.AppendUint16(b, c)
	}
	b = append(b, 0, 0)
	b = append(b, fp...)
	b = append(b, o.OptionalData...)
	return b, nil
}

// ParseLoadOption decodes an EFI_LOAD_OPTION. It never panics and bounds
// everything by len(b).
func ParseLoadOption(b []byte) (LoadOption, error) {
	var o LoadOption
	if len(b) > maxOptionSize {
		return o, fmt.Errorf("load option: %d bytes is too large", len(b))
	}
	if len(b) < 6 {
		return o, fmt.Errorf("load option: %d bytes is too short", len(b))
	}
	o.Attributes = binary.LittleEndian.Uint32(b[0:])
	fpl := int(binary.LittleEndian.Uint16(b[4:]))
	off := 6
	var desc []uint16
	for {
		if len(b)-off < 2 {
			return o, errors.New("load option: description is not NUL-terminated")
		}
		c := binary.LittleEndian.Uint16(b[off:])
		off += 2
		if c == 0 {
			break
		}
		if len(desc) >= maxDescChars {
			return o, fmt.Errorf("load option: description longer than %d characters", maxDescChars)
		}
		desc = append(desc, c)
	}
	o.Description = string(utf16.Decode(desc))
	if fpl > len(b)-off {
		return o, fmt.Errorf("load option: device path list of %d bytes, %d left", fpl, len(b)-off)
	}
	fp, err := ParseDevicePath(b[off : off+fpl])
	if err != nil {
		return o, fmt.Errorf("load option %q: %w", o.Description, err)
	}
	o.FilePath = fp
	if rest := b[off+fpl:]; len(rest) > 0 {
		o.OptionalData = bytes.Clone(rest)
	}
	return o, nil
}

// IsNetwork reports whether the path boots from the network: it has a MAC
// address, IPv4, IPv6 or URI messaging node.
func (p DevicePath) IsNetwork() bool {
	for _, n := range p {
		if n.Type == TypeMessaging {
			switch n.SubType {
			case SubMAC, SubIPv4, SubIPv6, SubURI:
				return true
			}
		}
	}
	return false
}

// HardDrive returns the path's first Hard Drive node.
func (p DevicePath) HardDrive() (HardDrive, bool) {
	for _, n := range p {
		if h, ok := HardDriveOf(n); ok {
			return h, true
		}
	}
	return HardDrive{}, false
}

// File returns the path's File Path nodes joined (firmware may split a
// path over several nodes).
func (p DevicePath) File() string {
	var s strings.Builder
	for _, n := range p {
		if f, ok := FilePathOf(n); ok {
			if s.Len() > 0 && !strings.HasSuffix(s.String(), `\`) && !strings.HasPrefix(f, `\`) {
				s.WriteByte('\\')
			}
			s.WriteString(f)
		}
	}
	return s.String()
}

// SameTarget reports whether p and q name the same file on the same
// partition: the Hard Drive nodes' signatures and partition numbers match
// and the file paths match ignoring case (FAT is case-insensitive).
func (p DevicePath) SameTarget(q DevicePath) bool {
	hp, ok1 := p.HardDrive()
	hq, ok2 := q.HardDrive()
	if !ok1 || !ok2 {
		return false
	}
	if hp.Signature != hq.Signature || hp.SignatureType != hq.SignatureType ||
		hp.PartitionNumber != hq.PartitionNumber {
		return false
	}
	return strings.EqualFold(p.File(), q.File())
}

// String formats the path as the UEFI device-path-to-text protocol and
// efibootmgr -v do, e.g. HD(1,GPT,<guid>,0x800,0x100000)/File(\EFI\debian\shimx64.efi).
// Nodes without a text form here are shown as Path(type,subtype,hex).
func (p DevicePath) String() string {
	parts := make([]string, 0, len(p))
	for _, n := range p {
		parts = append(parts, n.String())
	}
	return strings.Join(parts, "/")
}

// String formats one node.
func (n Node) String() string {
	d := n.Data
	switch {
	case n.Type == TypeMedia && n.SubType == SubHardDrive && len(d) == 38:
		h, _ := HardDriveOf(n)
		var sig string
		switch h.SignatureType {
		case SigTypeGUID:
			sig = GUIDString(h.Signature)
		case SigTypeMBR:
			sig = fmt.Sprintf("0x%08x", binary.LittleEndian.Uint32(h.Signature[:4]))
		default:
			sig = "0"
		}
		kind := "MBR"
		if h.MBRType == MBRTypeGPT {
			kind = "GPT"
		} else if h.MBRType != MBRTypePCAT {
			kind = fmt.Sprint(h.MBRType)
		}
		return fmt.Sprintf("HD(%d,%s,%s,0x%x,0x%x)", h.PartitionNumber, kind, sig, h.Start, h.Size)
	case n.Type == TypeMedia && n.SubType == SubFilePath:
		return "File(" + utf16String(d) + ")"
	case n.Type == TypeMessaging && n.SubType == SubMAC && len(d) == 33:
		return fmt.Sprintf("MAC(%x,0x%x)", d[:6], d[32])
	case n.Type == TypeMessaging && n.SubType == SubIPv4:
		if len(d) >= 4 {
			return fmt.Sprintf("IPv4(%d.%d.%d.%d)", d[0], d[1], d[2], d[3])
		}
		return "IPv4()"
	case n.Type == TypeMessaging && n.SubType == SubIPv6:
		return "IPv6()"
	case n.Type == TypeMessaging && n.SubType == SubURI:
		return "Uri(" + string(d) + ")"
	case n.Type == TypeHardware && n.SubType == SubPCI && len(d) == 2:
		return fmt.Sprintf("Pci(0x%x,0x%x)", d[1], d[0])
	case n.Type == TypeACPI && n.SubType == SubACPI && len(d) == 8 &&
		binary.LittleEndian.Uint32(d) == 0x0a0341d0:
		return fmt.Sprintf("PciRoot(0x%x)", binary.LittleEndian.Uint32(d[4:]))
	case n.Type == TypeEnd && n.SubType == SubEndInst:
		return ","
	}
	return fmt.Sprintf("Path(%d,%d,%s)", n.Type, n.SubType, hex.EncodeToString(d))
}

// ParseGUID parses the text form of a GUID into the EFI_GUID byte layout
// (first three fields little-endian), as GPT and device paths store it.
func ParseGUID(s string) ([16]byte, error) {
	var g [16]byte
	s = strings.TrimSpace(s)
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return g, fmt.Errorf("GUID %q: not in 8-4-4-4-12 form", s)
	}
	raw, err := hex.DecodeString(strings.ReplaceAll(s, "-", ""))
	if err != nil || len(raw) != 16 {
		return g, fmt.Errorf("GUID %q: not hexadecimal", s)
	}
	g[0], g[1], g[2], g[3] = raw[3], raw[2], raw[1], raw[0]
	g[4], g[5] = raw[5], raw[4]
	g[6], g[7] = raw[7], raw[6]
	copy(g[8:], raw[8:])
	return g, nil
}

// GUIDString formats an EFI_GUID byte layout in lower-case text form.
func GUIDString(g [16]byte) string {
	return fmt.Sprintf("%08x-%04x-%04x-%x-%x",
		binary.LittleEndian.Uint32(g[0:]), binary.LittleEndian.Uint16(g[4:]),
		binary.LittleEndian.Uint16(g[6:]), g[8:10], g[10:16])
}
