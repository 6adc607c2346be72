package efiboot

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// GlobalVariable is the EFI_GLOBAL_VARIABLE vendor GUID of Boot#### and
// BootOrder.
const GlobalVariable = "8be4df61-93ca-11d2-aa0d-00e098032b8c"

// DefaultVarsDir is where Linux mounts efivarfs.
const DefaultVarsDir = "/sys/firmware/efi/efivars"

// Variable attributes.
const (
	AttrNonVolatile       uint32 = 0x1
	AttrBootServiceAccess uint32 = 0x2
	AttrRuntimeAccess     uint32 = 0x4
	// DefaultAttrs are the attributes of boot variables.
	DefaultAttrs = AttrNonVolatile | AttrBootServiceAccess | AttrRuntimeAccess
)

// maxVarSize bounds how much of a variable file is read.
const maxVarSize = 1 << 20

// Vars reads and writes EFI global variables in an efivarfs directory:
// each variable is a file Name-GUID holding a 4-byte little-endian
// attribute word followed by the data.
type Vars struct {
	Dir string
}

// BootName is the variable name of boot option num, e.g. "Boot000A".
func BootName(num uint16) string { return fmt.Sprintf("Boot%04X", num) }

func (v Vars) path(name string) string { return filepath.Join(v.Dir, name+"-"+GlobalVariable) }

// Get reads a global variable; the error wraps fs.ErrNotExist when it is
// not set.
func (v Vars) Get(name string) (data []byte, attrs uint32, err error) {
	f, err := os.Open(v.path(name))
	if err != nil {
		return nil, 0, fmt.Errorf("read EFI variable %s: %w", name, err)
	}
	defer f.Close()
	// efivarfs wants the whole variable in one read.
	buf := make([]byte, maxVarSize+1)
	n := 0
	for n < len(buf) {
		m, err := f.Read(buf[n:])
		n += m
		if err != nil || m == 0 {
			break
		}
	}
	if n > maxVarSize {
		return nil, 0, fmt.Errorf("read EFI variable %s: larger than %d bytes", name, maxVarSize)
	}
	if n < 4 {
		return nil, 0, fmt.Errorf("read EFI variable %s: %d bytes, no attributes", name, n)
	}
	return slices.Clone(buf[4:n]), binary.LittleEndian.Uint32(buf), nil
}

// Set writes a global variable in one write(2), clearing the immutable
// flag efivarfs puts on existing variables first.
func (v Vars) Set(name string, attrs uint32, data []byte) error {
	p := v.path(name)
	if err := makeMutable(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("write EFI variable %s: %w", name, err)
	}
	buf := make([]byte, 4+len(data))
	binary.LittleEndian.PutUint32(buf, attrs)
	copy(buf[4:], data)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("write EFI variable %s: %w", name, err)
	}
	if err := truncateIfPlain(f); err != nil {
		f.Close()
		return fmt.Errorf("write EFI variable %s: %w", name, err)
	}
	n, err := f.Write(buf)
	if err == nil && n != len(buf) {
		err = fmt.Errorf("short write: %d of %d bytes", n, len(buf))
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write EFI variable %s: %w", name, err)
	}
	return nil
}

// BootNumbers lists the Boot#### variables present, in number order.
func (v Vars) BootNumbers() ([]uint16, error) {
	ents, err := os.ReadDir(v.Dir)
	if err != nil {
		return nil, fmt.Errorf("list EFI variables: %w", err)
	}
	var out []uint16
	suffix := "-" + GlobalVariable
	for _, e := range ents {
		name := e.Name()
		if len(name) != 8+len(suffix) || !strings.HasPrefix(name, "Boot") ||
			!strings.EqualFold(name[8:], suffix) {
			continue
		}
		n, err := strconv.ParseUint(name[4:8], 16, 16)
		if err != nil {
			continue
		}
		out = append(out, uint16(n))
	}
	slices.Sort(out)
	return out, nil
}

// BootOrder reads BootOrder; ok is false when it is not set.
func (v Vars) BootOrder() (order []uint16, ok bool, err error) {
	data, _, err := v.Get("BootOrder")
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	return ParseBootOrder(data), true, nil
}

// ParseBootOrder decodes a list of little-endian u16 (an odd trailing
// byte is ignored).
func ParseBootOrder(b []byte) []uint16 {
	out := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		out = append(out, binary.LittleEndian.Uint16(b[i:]))
	}
	return out
}

// SetBootOrder writes BootOrder.
func (v Vars) SetBootOrder(order []uint16) error {
	b := make([]byte, 0, 2*len(order))
	for _, n := range order {
		b = binary.LittleEndian.AppendUint16(b, n)
	}
	return v.Set("BootOrder", DefaultAttrs, b)
}
