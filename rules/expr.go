// Package rules is the expression language administrators write to match
// devices: the filters of the assignment rules for unregistered devices
// and the membership expressions of dynamic groups (store.Rule.Match,
// store.Group.Match). For example
//
//	mac ^= "52:54:00" and (ram >= 4GiB or not maker = "Dell") and ip in 10.1.0.0/16
//
// Parse compiles an expression (and refuses one that can never match, see
// ErrNeverMatches); Expr.Match evaluates it against a device's Facts
// without allocating. docs/rules.md describes the language for admins.
//
// A comparison on a fact the device did not report (an empty string, a
// zero size, no IP address) is false, whatever the operator, and so its
// negation with not is true: `ram < 4GiB` does not match a device whose
// RAM is unknown, `not ram >= 4GiB` does.
package rules

import (
	"net/netip"
	"strconv"
	"strings"

	"github.com/preboot/preboot/store"
)

// Facts is what the expressions know about a device. Strings are compared
// case-insensitively; an empty string, a zero (or negative) size and an
// invalid IP address mean "unknown".
type Facts struct {
	MAC    string     `json:"mac,omitempty"`    // normalised: lower-case aa:bb:cc:dd:ee:ff (store.NormalizeMAC)
	IP     netip.Addr `json:"ip,omitzero"`      // the device's address (IPv4 unmapped)
	Maker  string     `json:"maker,omitempty"`  // SMBIOS manufacturer
	Model  string     `json:"model,omitempty"`  // SMBIOS product name
	Serial string     `json:"serial,omitempty"` // SMBIOS serial number
	UUID   string     `json:"uuid,omitempty"`   // SMBIOS UUID, lower case with dashes
	Asset  string     `json:"asset,omitempty"`  // SMBIOS asset tag
	Arch   string     `json:"arch,omitempty"`   // firmware architecture as policy.ArchName names it: bios, efi-x64, …
	Name   string     `json:"name,omitempty"`   // the device's name in Preboot
	RAM    int64      `json:"ram,omitempty"`    // bytes
	Disk   int64      `json:"disk,omitempty"`   // bytes, total of the fixed disks
}

// FactsOf returns the facts of a stored device, normalised the way
// expressions compare them.
func FactsOf(d store.Device) Facts {
	f := Facts{
		Maker:  strings.TrimSpace(d.Manufacturer),
		Model:  strings.TrimSpace(d.Product),
		Serial: strings.TrimSpace(d.Serial),
		UUID:   strings.TrimSpace(d.UUID),
		Asset:  strings.TrimSpace(d.AssetTag),
		Arch:   strings.ToLower(strings.TrimSpace(d.Arch)),
		Name:   strings.TrimSpace(d.Name),
	}
	if m := strings.TrimSpace(d.MAC); m != "" {
		// Else unknown: MAC conditions assume 6 bytes, normalised.
		if n, err := store.NormalizeMAC(m); err == nil && len(n) == len("aa:bb:cc:dd:ee:ff") {
			f.MAC = n
		}
	}
	if u, ok := normalizeUUID(f.UUID); ok {
		f.UUID = u
	}
	if a, err := netip.ParseAddr(strings.TrimSpace(d.IP)); err == nil {
		f.IP = a.Unmap().WithZone("")
	}
	if d.RAMBytes > 0 {
		f.RAM = d.RAMBytes
	}
	if d.DiskBytes > 0 {
		f.Disk = d.DiskBytes
	}
	return f
}

// field is a fact an expression can test.
type field uint8

const (
	fMAC field = iota
	fIP
	fMaker
	fModel
	fSerial
	fUUID
	fAsset
	fArch
	fFirmware
	fRAM
	fDisk
	fName
	nFields
)

// fieldName is the canonical name of each field.
func (f field) String() string {
	switch f {
	case fMAC:
		return "mac"
	case fIP:
		return "ip"
	case fMaker:
		return "maker"
	case fModel:
		return "model"
	case fSerial:
		return "serial"
	case fUUID:
		return "uuid"
	case fAsset:
		return "asset"
	case fArch:
		return "arch"
	case fFirmware:
		return "firmware"
	case fRAM:
		return "ram"
	case fDisk:
		return "disk"
	case fName:
		return "name"
	}
	return "field(" + strconv.Itoa(int(f)) + ")"
}

const fieldList = "mac, ip, maker (or manufacturer), model (or product), serial, uuid, asset, arch, firmware, ram, disk, name"

// lookupField finds a field by name or alias, ignoring case.
func lookupField(s string) (field, bool) {
	if len(s) > 16 {
		return 0, false
	}
	switch strings.ToLower(s) {
	case "mac":
		return fMAC, true
	case "ip":
		return fIP, true
	case "maker", "manufacturer":
		return fMaker, true
	case "model", "product":
		return fModel, true
	case "serial":
		return fSerial, true
	case "uuid":
		return fUUID, true
	case "asset":
		return fAsset, true
	case "arch":
		return fArch, true
	case "firmware":
		return fFirmware, true
	case "ram":
		return fRAM, true
	case "disk":
		return fDisk, true
	case "name":
		return fName, true
	}
	return 0, false
}

func (f field) isSize() bool { return f == fRAM || f == fDisk }

// op is a comparison operator.
type op uint8

const (
	opEq     op = iota // =
	opNe               // !=
	opPrefix           // ^=
	opSuffix           // $=
	opGlob             // ~=
	opLt               // <
	opLe               // <=
	opGt               // >
	opGe               // >=
	opIn               // in
)

func (o op) String() string {
	switch o {
	case opEq:
		return "="
	case opNe:
		return "!="
	case opPrefix:
		return "^="
	case opSuffix:
		return "$="
	case opGlob:
		return "~="
	case opLt:
		return "<"
	case opLe:
		return "<="
	case opGt:
		return ">"
	case opGe:
		return ">="
	case opIn:
		return "in"
	}
	return "op(" + strconv.Itoa(int(o)) + ")"
}

func lookupOp(s string) (op, bool) {
	switch s {
	case "=":
		return opEq, true
	case "!=":
		return opNe, true
	case "^=":
		return opPrefix, true
	case "$=":
		return opSuffix, true
	case "~=":
		return opGlob, true
	case "<":
		return opLt, true
	case "<=":
		return opLe, true
	case ">":
		return opGt, true
	case ">=":
		return opGe, true
	}
	return 0, false
}

// kind is the kind of a node.
type kind uint8

const (
	kTrue kind = iota
	kFalse
	kNot
	kAnd
	kOr
	kCond
)

// node is a node of a compiled expression. And and Or nodes are flat (no
// And directly under an And), so that String and Parse are inverses.
type node struct {
	kind kind
	kids []*node // kNot: 1, kAnd/kOr: ≥ 2
	pos  int     // byte offset in the source, for messages

	// kCond:
	field field
	op    op
	str   string         // string fields: the value (normalised for mac, arch, firmware, uuid)
	strs  []string       // string fields, in
	num   int64          // ram, disk
	nums  []int64        // ram, disk, in
	addr  netip.Addr     // ip = / !=
	pfxs  []netip.Prefix // ip in
	src   *node          // the firmware condition a synthetic arch condition stands for
}

// Expr is a compiled expression. It is immutable and safe for concurrent
// use.
type Expr struct {
	root *node
}

// Match reports whether the device with facts f matches the expression. It
// does not allocate. A nil Expr matches nothing.
func (e *Expr) Match(f Facts) bool {
	if e == nil || e.root == nil {
		return false
	}
	return eval(e.root, &f)
}

func eval(n *node, f *Facts) bool {
	switch n.kind {
	case kTrue:
		return true
	case kNot:
		return !eval(n.kids[0], f)
	case kAnd:
		for _, k := range n.kids {
			if !eval(k, f) {
				return false
			}
		}
		return true
	case kOr:
		for _, k := range n.kids {
			if eval(k, f) {
				return true
			}
		}
		return false
	case kCond:
		return evalCond(n, f)
	}
	return false
}

// stringFact returns a string-valued fact; "" = unknown.
func stringFact(f *Facts, fl field) string {
	switch fl {
	case fMAC:
		return f.MAC
	case fMaker:
		return f.Maker
	case fModel:
		return f.Model
	case fSerial:
		return f.Serial
	case fUUID:
		return f.UUID
	case fAsset:
		return f.Asset
	case fArch:
		return f.Arch
	case fFirmware:
		return firmwareOf(f.Arch)
	case fName:
		return f.Name
	}
	return ""
}

// firmwareOf derives the firmware family from an architecture name.
func firmwareOf(arch string) string {
	switch {
	case equalFold(arch, "bios"):
		return "bios"
	case hasPrefixFold(arch, "efi-"):
		return "efi"
	}
	return ""
}

func evalCond(n *node, f *Facts) bool {
	switch n.field {
	case fRAM, fDisk:
		v := f.RAM
		if n.field == fDisk {
			v = f.Disk
		}
		if v <= 0 {
			return false
		}
		switch n.op {
		case opEq:
			return v == n.num
		case opNe:
			return v != n.num
		case opLt:
			return v < n.num
		case opLe:
			return v <= n.num
		case opGt:
			return v > n.num
		case opGe:
			return v >= n.num
		case opIn:
			for _, x := range n.nums {
				if v == x {
					return true
				}
			}
		}
		return false
	case fIP:
		a := f.IP
		if !a.IsValid() {
			return false
		}
		a = a.Unmap()
		if a.Zone() != "" {
			a = a.WithZone("")
		}
		switch n.op {
		case opEq:
			return a == n.addr
		case opNe:
			return a != n.addr
		case opIn:
			for _, p := range n.pfxs {
				if p.Contains(a) {
					return true
				}
			}
		}
		return false
	}
	v := stringFact(f, n.field)
	if v == "" {
		return false
	}
	switch n.op {
	case opEq:
		return equalFold(v, n.str)
	case opNe:
		return !equalFold(v, n.str)
	case opPrefix:
		return hasPrefixFold(v, n.str)
	case opSuffix:
		return hasSuffixFold(v, n.str)
	case opGlob:
		return globFold(n.str, v)
	case opIn:
		for _, s := range n.strs {
			if equalFold(v, s) {
				return true
			}
		}
	}
	return false
}

// String returns the canonical form of the expression: lower-case
// keywords, canonical field names, normalised values, minimal
// parentheses. Parse(e.String()) gives back the same expression.
func (e *Expr) String() string {
	if e == nil || e.root == nil {
		return ""
	}
	var b strings.Builder
	e.root.write(&b)
	return b.String()
}

func (n *node) String() string {
	var b strings.Builder
	n.write(&b)
	return b.String()
}

func (n *node) write(b *strings.Builder) {
	switch n.kind {
	case kTrue:
		b.WriteString("true")
	case kFalse:
		b.WriteString("false")
	case kNot:
		b.WriteString("not ")
		k := n.kids[0]
		paren := k.kind == kAnd || k.kind == kOr
		if paren {
			b.WriteByte('(')
		}
		k.write(b)
		if paren {
			b.WriteByte(')')
		}
	case kAnd, kOr:
		sep := " and "
		if n.kind == kOr {
			sep = " or "
		}
		for i, k := range n.kids {
			if i > 0 {
				b.WriteString(sep)
			}
			paren := n.kind == kAnd && k.kind == kOr
			if paren {
				b.WriteByte('(')
			}
			k.write(b)
			if paren {
				b.WriteByte(')')
			}
		}
	case kCond:
		if n.src != nil {
			n.src.write(b)
			return
		}
		b.WriteString(n.field.String())
		b.WriteByte(' ')
		b.WriteString(n.op.String())
		b.WriteByte(' ')
		n.writeValue(b)
	}
}

func (n *node) writeValue(b *strings.Builder) {
	var vals []string
	switch {
	case n.field.isSize():
		if n.op != opIn {
			b.WriteString(formatSize(n.num))
			return
		}
		for _, v := range n.nums {
			vals = append(vals, formatSize(v))
		}
	case n.field == fIP:
		if n.op != opIn {
			b.WriteString(n.addr.String())
			return
		}
		for _, p := range n.pfxs {
			if p.IsSingleIP() {
				vals = append(vals, p.Addr().String())
			} else {
				vals = append(vals, p.String())
			}
		}
	default:
		if n.op != opIn {
			b.WriteString(value(n.str))
			return
		}
		for _, s := range n.strs {
			vals = append(vals, value(s))
		}
	}
	if len(vals) == 1 {
		b.WriteString(vals[0])
		return
	}
	b.WriteByte('(')
	b.WriteString(strings.Join(vals, ", "))
	b.WriteByte(')')
}
