package agent

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/preboot/preboot/blockdev"
	"github.com/preboot/preboot/disk"
	"github.com/preboot/preboot/image"
)

// Partition types never chosen to take a disk's extra space.
var fixedTypes = []string{
	"c12a7328-f81f-11d2-ba4b-00a0c93ec93b", // EFI system
	"e3c9e316-0b5c-4db8-817d-f92df00215ae", // Microsoft reserved
	"de94bba4-06d1-4d40-a16a-bfd50179d6ac", // Windows Recovery
	"21686148-6449-6e6f-744e-656564454649", // BIOS boot
	"0xef", "0x27",
}

// canGrow and canShrink list the filesystems the agent resizes.
func canGrow(fstype string) bool {
	return isExt(fstype) || slices.Contains([]string{"ntfs", "xfs", "btrfs"}, fstype)
}

func canShrink(fstype string) bool {
	return isExt(fstype) || fstype == "ntfs" || fstype == "btrfs"
}

// resizePlan is how an image's partitions land on a disk of another size.
type resizePlan struct {
	table  *disk.Table
	moves  []disk.Move
	grow   *image.Area // the resized partition
	shrink bool
}

func (p *resizePlan) move(index int) *disk.Move {
	for i := range p.moves {
		if p.moves[i].Index == index {
			return &p.moves[i]
		}
	}
	return nil
}

// chooseGrow picks the partition that takes (or gives up) the difference
// of size: the bundle's choice, else the largest partition with a
// filesystem the agent resizes that is not an ESP, MSR, Recovery or BIOS
// boot partition.
func chooseGrow(m *image.Manifest, tbl *disk.Table, want int) (*image.Area, error) {
	if want > 0 {
		a := m.Partition(want)
		if a == nil {
			var have []string
			for _, p := range m.Partitions {
				have = append(have, fmt.Sprintf("%d (%s, %s)", p.Index, p.FSType, human(p.Size)))
			}
			return nil, fmt.Errorf("the bundle names partition %d to grow; the image has partitions %s", want, strings.Join(have, ", "))
		}
		return a, nil
	}
	typ := map[int]string{}
	for _, p := range tbl.Partitions {
		typ[p.Index] = strings.ToLower(p.Type)
	}
	var best *image.Area
	for i := range m.Partitions {
		a := &m.Partitions[i]
		if !canGrow(a.FSType) || slices.Contains(fixedTypes, typ[a.Index]) {
			continue
		}
		if best == nil || a.Size > best.Size {
			best = a
		}
	}
	return best, nil
}

// planResize lays the image's table out on a disk of size bytes. It
// returns nil (and no error) when the sizes match or nothing can be
// resized and the image fits as it is. Every refusal says why and with
// which sizes; nothing is written before it.
func planResize(m *image.Manifest, tbl *disk.Table, size int64, want int, noResize bool) (*resizePlan, error) {
	need := max(m.Disk.Size, m.RequiredSize())
	if size == m.Disk.Size || tbl == nil || (tbl.Kind != "gpt" && tbl.Kind != "mbr") {
		if size < need {
			return nil, tooSmall(m, size, need, "")
		}
		return nil, nil
	}
	g, err := chooseGrow(m, tbl, want)
	if err != nil {
		return nil, err
	}
	if g == nil {
		if size < tbl.Needed() {
			return nil, tooSmall(m, size, tbl.Needed(), "no partition holds a filesystem the agent can shrink")
		}
		nt, err := tbl.ForDisk(size, false)
		if err != nil {
			return nil, err
		}
		return &resizePlan{table: nt}, nil
	}
	nt, moves, err := tbl.Refit(size, g.Index)
	if errors.Is(err, disk.ErrCannotRefit) && size >= tbl.Needed() {
		// Logical partitions after it (an MBR extended container): the
		// old rule, the partition that ends last grows.
		nt, err = tbl.ForDisk(size, true)
		if err != nil {
			return nil, err
		}
		p := &resizePlan{table: nt}
		last := lastPartition(m)
		for _, np := range nt.Partitions {
			if last != nil && np.Index == last.Index && np.Size != last.Size {
				p.moves = []disk.Move{{Index: last.Index, Start: last.Start, Size: last.Size, NewStart: np.Start, NewSize: np.Size}}
				p.grow = last
			}
		}
		return p, nil
	}
	if err != nil {
		return nil, tooSmall(m, size, tbl.Needed(), err.Error())
	}
	p := &resizePlan{table: nt, moves: moves, grow: g}
	mv := p.move(g.Index)
	if mv == nil || mv.NewSize >= mv.Size {
		return p, nil
	}
	// Shrinking: only filesystems the agent can shrink, and only when
	// the data in use fits with room to spare.
	p.shrink = true
	var used int64
	for _, e := range g.Used {
		used += e.Length
	}
	least := used + used/10 + 16<<20
	switch {
	case noResize:
		return nil, tooSmall(m, size, tbl.Needed(), fmt.Sprintf("partition %d would have to shrink and filesystem resizing is off", g.Index))
	case !canShrink(g.FSType):
		return nil, tooSmall(m, size, tbl.Needed(), fmt.Sprintf("partition %d holds %s, which cannot shrink (%s)", g.Index, g.FSType, shrinkList))
	case mv.NewSize < least:
		return nil, tooSmall(m, size, tbl.Needed()-mv.NewSize+least,
			fmt.Sprintf("partition %d (%s) holds %s in use and would get %s; it needs at least %s", g.Index, g.FSType,
				human(used), human(mv.NewSize), human(least)))
	}
	if err := blockdev.DMAvailable(); err != nil {
		return nil, fmt.Errorf("restoring onto this smaller disk (%d bytes, %s; the image's disk had %d bytes, %s) shrinks partition %d (%s, %s in use) and needs device-mapper: %w; nothing was written",
			size, human(size), m.Disk.Size, human(m.Disk.Size), g.Index, g.FSType, human(used), err)
	}
	if spill, free := spillNeed(g, mv.NewSize), tempFree(); spill+64<<20 > free {
		return nil, fmt.Errorf("restoring onto a smaller disk keeps the %s of partition %d that lie beyond its new end in %s while the filesystem shrinks; only %s is free there; nothing was written",
			human(spill), g.Index, os.TempDir(), human(free))
	}
	return p, nil
}

const shrinkList = "the agent shrinks ext2/3/4, NTFS and Btrfs; XFS only grows, FAT keeps its size"

func tooSmall(m *image.Manifest, size, need int64, why string) error {
	if why != "" {
		why = "; " + why
	}
	return fmt.Errorf("restore %s: %w: the image's disk had %d bytes (%s), this disk has %d bytes (%s); the smallest disk it fits is about %d bytes (%s)%s; nothing was written",
		m.Name, image.ErrTargetTooSmall, m.Disk.Size, human(m.Disk.Size), size, human(size), need, human(need), why)
}

// spillNeed is how many used bytes of g lie at or beyond newSize.
func spillNeed(g *image.Area, newSize int64) int64 {
	var n int64
	for _, e := range g.Used {
		if e.End() > newSize {
			n += e.End() - max(e.Offset, newSize)
		}
	}
	return n
}

func tempFree() int64 {
	var st unix.Statfs_t
	if err := unix.Statfs(os.TempDir(), &st); err != nil {
		return 0
	}
	return int64(st.Bavail) * int64(st.Bsize)
}

// relocTarget is the target disk seen in the image's coordinates: bytes
// of moved partitions go to their new place, the tail of a shrunk
// partition goes to a spill file, bytes of the source's gaps and tail
// after the first moved partition go nowhere (reads give zeros).
type relocTarget struct {
	f         *os.File
	spill     *os.File
	spillFrom int64 // source offset of the spill's first byte
	spillEnd  int64
	maps      []relocMap
	dropFrom  int64
}

type relocMap struct{ src, end, dst int64 }

func newRelocTarget(f *os.File, plan *resizePlan) (*relocTarget, error) {
	r := &relocTarget{f: f, dropFrom: -1}
	for _, mv := range plan.moves {
		n := min(mv.Size, mv.NewSize)
		r.maps = append(r.maps, relocMap{src: mv.Start, end: mv.Start + n, dst: mv.NewStart})
		if r.dropFrom < 0 || mv.Start < r.dropFrom {
			r.dropFrom = mv.Start
		}
		if mv.NewSize < mv.Size {
			sp, err := os.CreateTemp("", "preboot-spill-*")
			if err != nil {
				return nil, fmt.Errorf("spill file: %w", err)
			}
			os.Remove(sp.Name()) // gone when closed
			if err := sp.Truncate(mv.Size - mv.NewSize); err != nil {
				sp.Close()
				return nil, fmt.Errorf("spill file: %w", err)
			}
			r.spill, r.spillFrom, r.spillEnd = sp, mv.Start+mv.NewSize, mv.Start+mv.Size
		}
	}
	if r.dropFrom < 0 {
		r.dropFrom = 1<<63 - 1
	}
	return r, nil
}

// place calls fn for every piece of [off, off+n) with where it goes:
// w (nil: nowhere) at offset at.
func (r *relocTarget) place(off int64, n int, fn func(w *os.File, at int64, lo, hi int) error) error {
	for done := 0; done < n; {
		o := off + int64(done)
		var w *os.File
		at, end := o, off+int64(n)
		found := false
		for _, m := range r.maps {
			if o >= m.src && o < m.end {
				w, at, end, found = r.f, m.dst+o-m.src, min(end, m.end), true
				break
			}
		}
		if !found && r.spill != nil && o >= r.spillFrom && o < r.spillEnd {
			w, at, end, found = r.spill, o-r.spillFrom, min(end, r.spillEnd), true
		}
		if !found {
			// Up to the next mapped start.
			for _, m := range r.maps {
				if m.src > o {
					end = min(end, m.src)
				}
			}
			if r.spill != nil && r.spillFrom > o {
				end = min(end, r.spillFrom)
			}
			if o < r.dropFrom {
				w, end = r.f, min(end, r.dropFrom)
			}
		}
		k := int(end - o)
		if err := fn(w, at, done, done+k); err != nil {
			return err
		}
		done += k
	}
	return nil
}

func (r *relocTarget) WriteAt(p []byte, off int64) (int, error) {
	err := r.place(off, len(p), func(w *os.File, at int64, lo, hi int) error {
		if w == nil {
			return nil
		}
		_, err := w.WriteAt(p[lo:hi], at)
		return err
	})
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

func (r *relocTarget) ReadAt(p []byte, off int64) (int, error) {
	err := r.place(off, len(p), func(w *os.File, at int64, lo, hi int) error {
		if w == nil {
			clear(p[lo:hi])
			return nil
		}
		_, err := w.ReadAt(p[lo:hi], at)
		return err
	})
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

func (r *relocTarget) Sync() error { return r.f.Sync() }

func (r *relocTarget) Close() error {
	if r.spill != nil {
		return r.spill.Close()
	}
	return nil
}

// finishResize runs after the data and the new table are on the disk:
// moved NTFS/FAT partitions learn their new start, the shrunk filesystem
// shrinks (through a device-mapper join of its new extent and the spill),
// the grown one grows. dev is the disk (block device or image file).
func finishResize(ctx context.Context, dev string, plan *resizePlan, rt *relocTarget, log *slog.Logger) error {
	for _, mv := range plan.moves {
		if mv.NewStart != mv.Start {
			if err := fixHiddenSectors(dev, mv, plan.table.SectorSize, log); err != nil {
				log.WarnContext(ctx, "boot sector of a moved partition not updated", "index", mv.Index, "err", err)
			}
		}
	}
	g := plan.grow
	if g == nil {
		return nil
	}
	mv := plan.move(g.Index)
	if mv == nil || mv.NewSize == mv.Size {
		return nil
	}
	if !plan.shrink && !canGrow(g.FSType) {
		log.WarnContext(ctx, "partition grown, its filesystem keeps its size", "index", g.Index, "fstype", g.FSType)
		return nil
	}
	defer blockdev.Flush(dev)
	if err := blockdev.Flush(dev); err != nil {
		return fmt.Errorf("flush %s: %w", dev, err)
	}
	part, err := blockdev.AttachLoop(dev, mv.NewStart, mv.NewSize, false)
	if err != nil {
		return err
	}
	defer part.Close()
	target := part.Path
	if plan.shrink {
		if rt == nil || rt.spill == nil {
			return errors.New("internal error: shrink without a spill file")
		}
		if err := rt.spill.Sync(); err != nil {
			return fmt.Errorf("spill file: %w", err)
		}
		sl, err := blockdev.AttachLoop(fmt.Sprintf("/proc/self/fd/%d", rt.spill.Fd()), 0, 0, false)
		if err != nil {
			return err
		}
		defer sl.Close()
		dm, err := blockdev.CreateLinear(fmt.Sprintf("preboot-shrink-%d-%d", os.Getpid(), time.Now().UnixNano()%1e6), []blockdev.Segment{
			{Major: part.Major, Minor: part.Minor, Offset: 0, Sectors: mv.NewSize / 512},
			{Major: sl.Major, Minor: sl.Minor, Offset: 0, Sectors: (mv.Size - mv.NewSize) / 512},
		})
		if err != nil {
			return err
		}
		defer dm.Remove()
		target = dm.Path
	}
	start := time.Now()
	if err := resizeFS(ctx, g.FSType, target, mv.NewSize, !plan.shrink); err != nil {
		return fmt.Errorf("%s partition %d to %s: %w", map[bool]string{true: "shrink", false: "grow"}[plan.shrink], g.Index, human(mv.NewSize), err)
	}
	log.InfoContext(ctx, "filesystem resized", "index", g.Index, "fstype", g.FSType, "from", mv.Size, "to", mv.NewSize,
		"shrunk", plan.shrink, "elapsed", time.Since(start).Round(time.Millisecond))
	return nil
}

// resizeFS resizes the filesystem on dev to size bytes.
func resizeFS(ctx context.Context, fstype, dev string, size int64, grow bool) error {
	switch {
	case isExt(fstype):
		// e2fsck exit 1: errors corrected; only ≥ 4 is a failure.
		if out, err := runTool(ctx, "", "e2fsck", "-fy", dev); err != nil && !exitBelow(err, 4) {
			return fmt.Errorf("e2fsck -fy: %w: %s", err, out)
		}
		if out, err := runTool(ctx, "", "resize2fs", dev, strconv.FormatInt(size/1024, 10)+"K"); err != nil {
			return fmt.Errorf("resize2fs: %w: %s", err, out)
		}
		return nil
	case fstype == "ntfs":
		// Answer the confirmation, then clear the dirty flag ntfsresize
		// sets, so Windows does not run chkdsk at its next boot.
		if out, err := runTool(ctx, "y\n", "ntfsresize", "--force", "--no-progress-bar", "--size", strconv.FormatInt(size, 10), dev); err != nil {
			return fmt.Errorf("ntfsresize: %w: %s", err, out)
		}
		if out, err := runTool(ctx, "", "ntfsfix", "-b", "-d", dev); err != nil {
			return fmt.Errorf("ntfsfix -b -d: %w: %s", err, out)
		}
		return nil
	case fstype == "xfs" || fstype == "btrfs":
		return mountedResize(ctx, fstype, dev, size, grow)
	}
	return fmt.Errorf("no resizer for %s (%s)", fstype, shrinkList)
}

// mountedResize grows XFS or grows/shrinks Btrfs through the kernel, as
// xfs_growfs and btrfs filesystem resize do: both only work mounted.
func mountedResize(ctx context.Context, fstype, dev string, size int64, grow bool) (err error) {
	dir, err := os.MkdirTemp("", "preboot-resize-*")
	if err != nil {
		return err
	}
	defer os.Remove(dir)
	if err := unix.Mount(dev, dir, fstype, 0, ""); err != nil {
		return fmt.Errorf("mount %s (%s): %w", dev, fstype, err)
	}
	defer func() {
		if uerr := unix.Unmount(dir, 0); uerr != nil && err == nil {
			err = fmt.Errorf("unmount %s: %w", dir, uerr)
		}
	}()
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if fstype == "xfs" {
		return xfsGrow(d, size)
	}
	return btrfsResize(d, size, grow)
}

// XFS_IOC_FSGEOMETRY_V1 (struct xfs_fsop_geom_v1, 112 bytes) and
// XFS_IOC_FSGROWFSDATA (struct xfs_growfs_data, 16 bytes).
const (
	xfsIocGeometryV1 = 0x80705864 // _IOR('X', 100, 112)
	xfsIocGrowData   = 0x4010586e // _IOW('X', 110, 16)
	btrfsIocResize   = 0x50009403 // _IOW(0x94, 3, struct btrfs_ioctl_vol_args: 4096)
)

func xfsGrow(d *os.File, size int64) error {
	var geo [112]byte
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, d.Fd(), xfsIocGeometryV1, uintptr(unsafe.Pointer(&geo[0]))); e != 0 {
		return fmt.Errorf("XFS_IOC_FSGEOMETRY: %w", e)
	}
	bs := int64(binary.LittleEndian.Uint32(geo[0:]))
	imaxpct := binary.LittleEndian.Uint32(geo[28:])
	cur := int64(binary.LittleEndian.Uint64(geo[32:]))
	if bs <= 0 {
		return errors.New("XFS geometry: block size 0")
	}
	nb := size / bs
	if nb < cur {
		return fmt.Errorf("XFS cannot shrink (%d → %d blocks)", cur, nb)
	}
	if nb == cur {
		return nil
	}
	var arg [16]byte
	binary.LittleEndian.PutUint64(arg[0:], uint64(nb))
	binary.LittleEndian.PutUint32(arg[8:], imaxpct)
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, d.Fd(), xfsIocGrowData, uintptr(unsafe.Pointer(&arg[0]))); e != 0 {
		return fmt.Errorf("XFS_IOC_FSGROWFSDATA to %d blocks: %w", nb, e)
	}
	return nil
}

func btrfsResize(d *os.File, size int64, grow bool) error {
	var arg [4096]byte
	s := strconv.FormatInt(size, 10)
	if grow {
		s = "max" // the device's size, rounded as the kernel likes it
	}
	copy(arg[8:], s) // devid 1 (single device)
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, d.Fd(), btrfsIocResize, uintptr(unsafe.Pointer(&arg[0]))); e != 0 {
		return fmt.Errorf("BTRFS_IOC_RESIZE to %d bytes: %w", size, e)
	}
	return nil
}

// fixHiddenSectors sets the "hidden sectors" field of a moved NTFS or FAT
// partition's boot sector (and NTFS's backup at the volume's end) to its
// new start: Windows' boot code reads it.
func fixHiddenSectors(dev string, mv disk.Move, ss int, log *slog.Logger) error {
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	bs := make([]byte, 512)
	if err := disk.ReadFull(f, bs, mv.NewStart); err != nil {
		return err
	}
	ntfs := string(bs[3:11]) == "NTFS    "
	fat := bs[510] == 0x55 && bs[511] == 0xaa && (string(bs[0x36:0x39]) == "FAT" || string(bs[0x52:0x57]) == "FAT32")
	if !ntfs && !fat {
		return nil
	}
	lba := uint32(mv.NewStart / int64(ss))
	put := func(off int64) error {
		b := make([]byte, 512)
		if err := disk.ReadFull(f, b, off); err != nil {
			return err
		}
		binary.LittleEndian.PutUint32(b[0x1c:], lba)
		_, err := f.WriteAt(b, off)
		return err
	}
	if err := put(mv.NewStart); err != nil {
		return err
	}
	if ntfs {
		bps := int64(binary.LittleEndian.Uint16(bs[0x0b:]))
		total := int64(binary.LittleEndian.Uint64(bs[0x28:]))
		if bps >= 512 && total > 0 && total*bps < mv.NewSize {
			b := make([]byte, 512)
			if disk.ReadFull(f, b, mv.NewStart+total*bps) == nil && string(b[3:11]) == "NTFS    " {
				if err := put(mv.NewStart + total*bps); err != nil {
					return err
				}
			}
		}
	}
	if fat && binary.LittleEndian.Uint16(bs[0x32:]) == 6 { // FAT32 backup boot sector
		if err := put(mv.NewStart + 6*int64(binary.LittleEndian.Uint16(bs[0x0b:]))); err != nil {
			return err
		}
	}
	log.Info("boot sector hidden sectors updated", "index", mv.Index, "start_lba", lba)
	return f.Sync()
}

func runTool(ctx context.Context, stdin, name string, args ...string) (string, error) {
	p, err := findTool(name)
	if err != nil {
		return "", fmt.Errorf("%s is not available in this environment: %w", name, err)
	}
	cmd := exec.CommandContext(ctx, p, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	s := strings.TrimSpace(string(out))
	if len(s) > 2000 {
		s = "…" + s[len(s)-2000:]
	}
	return s, err
}

func exitBelow(err error, code int) bool {
	var ee *exec.ExitError
	return errors.As(err, &ee) && ee.ExitCode() < code
}
