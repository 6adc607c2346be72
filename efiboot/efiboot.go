// Package efiboot makes a restored disk boot on a UEFI machine whose NVRAM
// does not know it (a new machine or a replaced board): it finds the OS
// loader on the disk's EFI System Partition and creates the Boot#### load
// option and the BootOrder through efivarfs, as efibootmgr does.
package efiboot

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"slices"
	"strings"

	"github.com/preboot/preboot/disk"
)

// ESPType is the GPT partition type GUID of an EFI System Partition.
const ESPType = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"

// MBRESPType is the MBR partition type of an EFI System Partition.
const MBRESPType = "0xef"

// Loader is an OS loader found on an ESP.
type Loader struct {
	Path        string // backslash path as stored, e.g. \EFI\debian\shimx64.efi
	Description string // boot entry description, e.g. "debian"
}

// archSuffix is the UEFI file-name suffix of a Go architecture ("x64" for
// amd64), as in shimx64.efi and BOOTX64.EFI.
func archSuffix(goarch string) string {
	switch goarch {
	case "386":
		return "ia32"
	case "arm64":
		return "aa64"
	case "arm":
		return "arm"
	case "riscv64":
		return "riscv64"
	case "loong64":
		return "loongarch64"
	default:
		return "x64"
	}
}

// FindLoaders lists the OS loaders on the FAT filesystem fs, best first:
// \EFI\Microsoft\Boot\bootmgfw.efi ("Windows Boot Manager"); for each other
// directory of \EFI (in name order) its shim<arch>.efi, else its
// grub<arch>.efi, described by the directory name as distribution installers
// name their entries ("debian", "ubuntu", "fedora"); last
// \EFI\BOOT\BOOT<ARCH>.EFI ("UEFI OS"). goarch selects the architecture
// (runtime.GOARCH when empty).
func FindLoaders(fs *FS, goarch string) ([]Loader, error) {
	if goarch == "" {
		goarch = runtime.GOARCH
	}
	arch := archSuffix(goarch)
	root, err := fs.ReadDir(`\`)
	if err != nil {
		return nil, err
	}
	efi, ok := Find(root, "EFI")
	if !ok || !efi.IsDir {
		return nil, fmt.Errorf(`\EFI: %w`, ErrNotExist)
	}
	// Every directory is read once: \EFI, each of its first
	// maxLoaderDirs subdirectories, and \EFI\Microsoft\Boot.
	dirs, err := fs.ReadDirOf(efi)
	if err != nil {
		return nil, fmt.Errorf(`\EFI: %w`, err)
	}
	dirs = slices.DeleteFunc(slices.Clone(dirs), func(e DirEntry) bool { return !e.IsDir })
	slices.SortStableFunc(dirs, func(a, b DirEntry) int {
		return strings.Compare(strings.ToLower(a.Name), strings.ToLower(b.Name))
	})
	if len(dirs) > maxLoaderDirs {
		dirs = dirs[:maxLoaderDirs]
	}
	// file is the first of names that is a non-empty file in ents.
	file := func(ents []DirEntry, names ...string) (DirEntry, bool) {
		for _, n := range names {
			if e, ok := Find(ents, n); ok && !e.IsDir && e.Size > 0 {
				return e, true
			}
		}
		return DirEntry{}, false
	}
	var windows, distros, fallback []Loader
	for _, d := range dirs {
		ents, err := fs.ReadDirOf(d)
		if err != nil {
			continue // one unreadable directory hides no other loader
		}
		switch strings.ToLower(d.Name) {
		case "microsoft":
			boot, ok := Find(ents, "Boot")
			if !ok || !boot.IsDir || len(windows) > 0 {
				continue
			}
			bents, err := fs.ReadDirOf(boot)
			if err != nil {
				continue
			}
			if e, ok := file(bents, "bootmgfw.efi"); ok {
				windows = append(windows, Loader{Path: `\EFI\` + d.Name + `\` + boot.Name + `\` + e.Name,
					Description: "Windows Boot Manager"})
			}
		case "boot":
			if e, ok := file(ents, "BOOT"+strings.ToUpper(arch)+".EFI"); ok && len(fallback) == 0 {
				fallback = append(fallback, Loader{Path: `\EFI\` + d.Name + `\` + e.Name, Description: "UEFI OS"})
			}
		default:
			if e, ok := file(ents, "shim"+arch+".efi", "grub"+arch+".efi"); ok {
				distros = append(distros, Loader{Path: `\EFI\` + d.Name + `\` + e.Name, Description: d.Name})
			}
		}
	}
	return slices.Concat(windows, distros, fallback), nil
}

// maxLoaderDirs bounds the \EFI subdirectories looked into.
const maxLoaderDirs = 64

// FindESP returns the EFI System Partition of a GPT (or MBR) table.
func FindESP(t *disk.Table) (disk.Partition, error) {
	if t == nil {
		return disk.Partition{}, errors.New("no partition table")
	}
	for _, p := range t.Partitions {
		if (t.Kind == "gpt" && strings.EqualFold(p.Type, ESPType)) ||
			(t.Kind == "mbr" && strings.EqualFold(p.Type, MBRESPType)) {
			return p, nil
		}
	}
	return disk.Partition{}, fmt.Errorf("no EFI System Partition in the %s partition table", t.Kind)
}

// HardDriveFor is the Hard Drive device path node of partition p of t.
func HardDriveFor(t *disk.Table, p disk.Partition) (HardDrive, error) {
	ss := int64(t.SectorSize)
	if ss <= 0 {
		return HardDrive{}, fmt.Errorf("sector size %d", t.SectorSize)
	}
	if p.Index <= 0 || p.Start%ss != 0 || p.Size%ss != 0 || p.Start < 0 || p.Size <= 0 {
		return HardDrive{}, fmt.Errorf("partition %d (start %d, size %d) is not sector aligned", p.Index, p.Start, p.Size)
	}
	h := HardDrive{PartitionNumber: uint32(p.Index), Start: uint64(p.Start / ss), Size: uint64(p.Size / ss)}
	switch t.Kind {
	case "gpt":
		g, err := ParseGUID(p.UUID)
		if err != nil {
			return HardDrive{}, fmt.Errorf("partition %d unique GUID: %w", p.Index, err)
		}
		h.Signature, h.MBRType, h.SignatureType = g, MBRTypeGPT, SigTypeGUID
	case "mbr":
		var id uint32
		if _, err := fmt.Sscanf(t.DiskID, "0x%x", &id); err != nil {
			return HardDrive{}, fmt.Errorf("MBR disk id %q: %w", t.DiskID, err)
		}
		h.Signature[0], h.Signature[1], h.Signature[2], h.Signature[3] = byte(id), byte(id>>8), byte(id>>16), byte(id>>24)
		h.MBRType, h.SignatureType = MBRTypePCAT, SigTypeMBR
	default:
		return HardDrive{}, fmt.Errorf("%s partition table has no EFI device path", t.Kind)
	}
	return h, nil
}

// EnsureOptions says which disk to make bootable and how.
type EnsureOptions struct {
	// Disk is the whole restored disk and Table its partition table.
	Disk  io.ReaderAt
	Table *disk.Table
	// VarsDir is the efivarfs directory (DefaultVarsDir when empty; it is
	// mounted when missing). Tests use a plain directory.
	VarsDir string
	// KeepNetworkFirst keeps the network-boot entries of BootOrder ahead
	// of the new entry (Preboot's machines network-boot first so the
	// server decides); false puts the new entry first of all.
	KeepNetworkFirst bool
	// Arch is the Go architecture whose loaders are looked for
	// (runtime.GOARCH when empty).
	Arch   string
	Logger *slog.Logger
}

// Entry is the boot entry Ensure created or found.
type Entry struct {
	Num         uint16 // Boot#### number
	Description string
	Path        string     // loader path on the ESP
	DevicePath  string     // text form, e.g. HD(1,GPT,…)/File(\EFI\debian\shimx64.efi)
	ESP         int        // partition number of the ESP
	Created     bool       // false: an entry with the same device path existed
	Updated     bool       // the Boot#### variable was (re)written
	BootOrder   []uint16   // the BootOrder written
	Loaders     []Loader   // every loader found, best first
	Option      LoadOption // the option as written
}

// Name is the variable name, e.g. "Boot0003".
func (e Entry) Name() string { return BootName(e.Num) }

// ErrNoLoader is wrapped by Ensure when the ESP holds no known OS loader.
var ErrNoLoader = errors.New("no OS loader on the EFI System Partition")

// Ensure finds the ESP of opts.Table on opts.Disk, picks its best OS loader
// and makes sure NVRAM has an active Boot#### entry for it, placed in
// BootOrder first (after the network entries with KeepNetworkFirst). An
// existing entry with the same partition and file is reused.
func Ensure(ctx context.Context, opts EnsureOptions) (Entry, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.Disk == nil {
		return Entry{}, errors.New("efiboot: no disk")
	}
	esp, err := FindESP(opts.Table)
	if err != nil {
		return Entry{}, err
	}
	hd, err := HardDriveFor(opts.Table, esp)
	if err != nil {
		return Entry{}, fmt.Errorf("ESP: %w", err)
	}
	fs, err := OpenFS(io.NewSectionReader(opts.Disk, esp.Start, esp.Size), esp.Size)
	if err != nil {
		return Entry{}, fmt.Errorf("ESP (partition %d): %w", esp.Index, err)
	}
	loaders, err := FindLoaders(fs, opts.Arch)
	if err != nil && !errors.Is(err, ErrNotExist) {
		return Entry{}, fmt.Errorf("ESP (partition %d): %w", esp.Index, err)
	}
	if len(loaders) == 0 {
		return Entry{}, fmt.Errorf("partition %d: %w", esp.Index, ErrNoLoader)
	}
	best := loaders[0]
	opt := LoadOption{
		Attributes:  LoadOptionActive,
		Description: best.Description,
		FilePath:    DevicePath{hd.Node(), FilePathNode(best.Path)},
	}
	if err := ctx.Err(); err != nil {
		return Entry{}, err
	}
	dir := opts.VarsDir
	if dir == "" {
		dir = DefaultVarsDir
		if err := MountVars(ctx); err != nil {
			return Entry{}, err
		}
	}
	vars := Vars{Dir: dir}
	num, created, updated, err := vars.putOption(opt)
	if err != nil {
		return Entry{}, err
	}
	order, err := vars.putOrder(num, opts.KeepNetworkFirst, log)
	if err != nil {
		return Entry{}, err
	}
	return Entry{
		Num: num, Description: best.Description, Path: best.Path,
		DevicePath: opt.FilePath.String(), ESP: esp.Index,
		Created: created, Updated: updated, BootOrder: order, Loaders: loaders, Option: opt,
	}, nil
}

// putOption writes opt as a Boot#### variable: the number of an existing
// option with the same target (rewritten only when it differs), else the
// lowest free number.
func (v Vars) putOption(opt LoadOption) (num uint16, created, updated bool, err error) {
	data, err := opt.Marshal()
	if err != nil {
		return 0, false, false, err
	}
	nums, err := v.BootNumbers()
	if err != nil {
		return 0, false, false, err
	}
	order, _, err := v.BootOrder()
	if err != nil {
		return 0, false, false, err
	}
	for _, n := range nums {
		cur, _, err := v.Get(BootName(n))
		if err != nil {
			continue
		}
		lo, err := ParseLoadOption(cur)
		if err != nil || !lo.FilePath.SameTarget(opt.FilePath) {
			continue
		}
		if bytes.Equal(cur, data) {
			return n, false, false, nil
		}
		if err := v.Set(BootName(n), DefaultAttrs, data); err != nil {
			return 0, false, false, err
		}
		return n, false, true, nil
	}
	used := make(map[uint16]bool, len(nums)+len(order))
	for _, n := range nums {
		used[n] = true
	}
	for _, n := range order {
		used[n] = true
	}
	for n := 0; n <= 0xffff; n++ {
		if !used[uint16(n)] {
			if err := v.Set(BootName(uint16(n)), DefaultAttrs, data); err != nil {
				return 0, false, false, err
			}
			return uint16(n), true, true, nil
		}
	}
	return 0, false, false, errors.New("no free Boot#### number")
}

// putOrder writes BootOrder as NewOrder says.
func (v Vars) putOrder(num uint16, keepNetwork bool, log *slog.Logger) ([]uint16, error) {
	cur, _, err := v.BootOrder()
	if err != nil {
		return nil, err
	}
	isNet := func(n uint16) bool {
		data, _, err := v.Get(BootName(n))
		if err != nil {
			return false
		}
		lo, err := ParseLoadOption(data)
		if err != nil {
			log.Debug("boot option unreadable", "var", BootName(n), "err", err)
			return false
		}
		return lo.FilePath.IsNetwork()
	}
	current := -1
	if b, _, err := v.Get("BootCurrent"); err == nil && len(b) == 2 {
		current = int(binary.LittleEndian.Uint16(b))
	}
	order := NewOrder(cur, num, keepNetwork, isNet, current)
	if slices.Equal(order, cur) {
		return order, nil
	}
	if err := v.SetBootOrder(order); err != nil {
		return nil, err
	}
	return order, nil
}

// NewOrder is the boot order cur with num first or, when keepNetwork,
// right after the network entry that boots the machine: current (the
// BootCurrent variable; -1 when unknown) when it is a network entry of cur,
// else cur's first network entry (per isNet). Every other entry keeps its
// relative order after them; duplicate numbers are dropped. Only one
// network entry goes ahead of the disk: the firmware's other network
// entries (PXE over IPv6, HTTP boot) would each wait for their own
// timeout before the disk's turn.
func NewOrder(cur []uint16, num uint16, keepNetwork bool, isNet func(uint16) bool, current int) []uint16 {
	anchor := -1
	if keepNetwork {
		if current >= 0 && slices.Contains(cur, uint16(current)) && isNet(uint16(current)) {
			anchor = current
		} else {
			for _, n := range cur {
				if n != num && isNet(n) {
					anchor = int(n)
					break
				}
			}
		}
	}
	out := make([]uint16, 0, len(cur)+1)
	if anchor >= 0 {
		out = append(out, uint16(anchor))
	}
	out = append(out, num)
	seen := map[uint16]bool{num: true}
	if anchor >= 0 {
		seen[uint16(anchor)] = true
	}
	for _, n := range cur {
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	return out
}
