package blockdev

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Segment is one piece of a linear device-mapper table: Sectors 512-byte
// sectors taken from the device Major:Minor at sector Offset.
type Segment struct {
	Major, Minor uint32
	Offset       int64 // 512-byte sectors
	Sectors      int64
}

// Mapper is a device-mapper device made by CreateLinear.
type Mapper struct {
	Name string
	Path string // /dev/dm-N
}

const dmControl = "/dev/mapper/control"

// ErrNoDM is wrapped when device-mapper cannot be used.
var ErrNoDM = errors.New("device-mapper is not available in this kernel (dm_mod)")

// DMAvailable reports whether device-mapper can be used.
func DMAvailable() error {
	f, err := os.OpenFile(dmControl, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNoDM, err)
	}
	defer f.Close()
	buf := newDMBuf("", 0)
	if err := dmIoctl(f, unix.DM_VERSION, buf); err != nil {
		return fmt.Errorf("%w: %w", ErrNoDM, err)
	}
	return nil
}

// CreateLinear creates (and activates) a device-mapper device name whose
// sectors are the segments in order.
func CreateLinear(name string, segs []Segment) (*Mapper, error) {
	if len(name) == 0 || len(name) >= 128 {
		return nil, fmt.Errorf("dm: bad name %q", name)
	}
	f, err := os.OpenFile(dmControl, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoDM, err)
	}
	defer f.Close()
	// Create.
	b := newDMBuf(name, 0)
	if err := dmIoctl(f, unix.DM_DEV_CREATE, b); err != nil {
		return nil, fmt.Errorf("dm: create %s: %w", name, err)
	}
	remove := func() { _ = dmIoctl(f, unix.DM_DEV_REMOVE, newDMBuf(name, 0)) }
	// Load the table.
	var specs bytes.Buffer
	var start uint64
	for i, s := range segs {
		if s.Sectors <= 0 || s.Offset < 0 {
			remove()
			return nil, fmt.Errorf("dm: segment %d: %d sectors at %d", i, s.Sectors, s.Offset)
		}
		params := fmt.Sprintf("%d:%d %d", s.Major, s.Minor, s.Offset)
		plen := len(params) + 1
		next := (int(unsafe.Sizeof(unix.DmTargetSpec{})) + plen + 7) &^ 7
		spec := unix.DmTargetSpec{Sector_start: start, Length: uint64(s.Sectors), Next: uint32(next)}
		copy(spec.Target_type[:], "linear")
		_ = binary.Write(&specs, binary.NativeEndian, &spec)
		specs.WriteString(params)
		specs.Write(make([]byte, next-int(unsafe.Sizeof(spec))-len(params)))
		start += uint64(s.Sectors)
	}
	b = newDMBuf(name, specs.Len())
	hdr := (*unix.DmIoctl)(unsafe.Pointer(&b[0]))
	hdr.Target_count = uint32(len(segs))
	copy(b[hdr.Data_start:], specs.Bytes())
	if err := dmIoctl(f, unix.DM_TABLE_LOAD, b); err != nil {
		remove()
		return nil, fmt.Errorf("dm: load table of %s: %w", name, err)
	}
	// Resume (activate).
	b = newDMBuf(name, 0)
	if err := dmIoctl(f, unix.DM_DEV_SUSPEND, b); err != nil {
		remove()
		return nil, fmt.Errorf("dm: activate %s: %w", name, err)
	}
	hdr = (*unix.DmIoctl)(unsafe.Pointer(&b[0]))
	major, minor := unix.Major(hdr.Dev), unix.Minor(hdr.Dev)
	m := &Mapper{Name: name, Path: fmt.Sprintf("/dev/dm-%d", minor)}
	if err := waitNode(m.Path, major, minor); err != nil {
		remove()
		return nil, err
	}
	return m, nil
}

// Remove removes the device (it must not be open).
func (m *Mapper) Remove() error {
	if m == nil {
		return nil
	}
	f, err := os.OpenFile(dmControl, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := dmIoctl(f, unix.DM_DEV_REMOVE, newDMBuf(m.Name, 0)); err != nil {
		return fmt.Errorf("dm: remove %s: %w", m.Name, err)
	}
	return nil
}

// newDMBuf returns a struct dm_ioctl for name followed by extra bytes of
// payload (and room for the kernel's answer).
func newDMBuf(name string, extra int) []byte {
	hs := int(unsafe.Sizeof(unix.DmIoctl{}))
	size := hs + extra + 16<<10
	b := make([]byte, size)
	h := (*unix.DmIoctl)(unsafe.Pointer(&b[0]))
	h.Version = [3]uint32{unix.DM_VERSION_MAJOR, 0, 0}
	h.Data_size = uint32(size)
	h.Data_start = uint32(hs)
	copy(h.Name[:], name)
	return b
}

func dmIoctl(f *os.File, req uint, b []byte) error {
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), uintptr(req), uintptr(unsafe.Pointer(&b[0])))
	if errno != 0 {
		return errno
	}
	return nil
}
