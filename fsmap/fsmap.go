// Package fsmap finds the blocks a filesystem uses, so imaging reads and
// stores only those. ext2/3/4, FAT12/16/32 and NTFS are read from their
// allocation bitmaps, XFS from its free-space B+trees, Btrfs from its
// chunk, device and free-space trees; an LVM2 physical volume is mapped
// through its logical volumes' own filesystems; swap keeps its header
// only. LUKS, BitLocker and anything unknown are mapped as "raw": every
// non-zero 64 KiB block.
//
// The rule that governs every reader: a block the filesystem needs must
// never be reported free (that would lose data on restore). When a
// filesystem's structures look inconsistent, Used falls back to "raw"
// instead of trusting them. Every count read from disk is bounded by the
// device size, so a lying superblock cannot cause huge allocations.
package fsmap

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sort"

	"github.com/preboot/preboot/disk"
)

// RawGranularity is the block size of the raw (zero-skipping) map.
const RawGranularity = 64 << 10

// errCorrupt marks filesystem structures that cannot be trusted; Used then
// falls back to raw.
var errCorrupt = errors.New("inconsistent filesystem structures")

func corrupt(format string, a ...any) error {
	return fmt.Errorf("%w: %s", errCorrupt, fmt.Sprintf(format, a...))
}

// Info is what Inspect learns about one partition.
type Info struct {
	// FSType is "ext2", "ext3", "ext4", "fat12", "fat16", "fat32", "ntfs",
	// "xfs", "btrfs", "lvm2", "swap", "luks", "bitlocker" or "raw".
	FSType string
	// Used are the byte extents the filesystem uses: sorted, merged,
	// relative to the partition start. Restore writes exactly these.
	Used []disk.Extent
	// Zero are extents inside Used whose contents are not worth keeping
	// (Windows' pagefile.sys, hiberfil.sys, swapfile.sys): the image holds
	// zeros there, the allocation stays.
	Zero []disk.Extent
	// Warnings are for the job log and the image: encrypted or unknown
	// data copied raw, structures the reader did not trust.
	Warnings []string
	// Unsafe is set when an image of the filesystem as it stands would
	// not work (a hibernated or dirty NTFS): capture refuses it unless
	// forced. The message says how to fix the source.
	Unsafe error
}

// Inspect maps the partition (r, size bytes): the filesystem, its used
// extents and what capture must know about it. Filesystems whose
// structures cannot be trusted are mapped raw, with a warning.
func Inspect(r io.ReaderAt, size int64) (Info, error) {
	info, err := detect(r, size)
	if err == nil || !errors.Is(err, errCorrupt) {
		return info, err
	}
	used, rerr := Raw(r, size)
	if rerr != nil {
		return Info{}, rerr
	}
	return Info{FSType: "raw", Used: used, Warnings: []string{
		fmt.Sprintf("%s structures not trusted (%v): copied raw (every non-zero block)", cmp.Or(info.FSType, "filesystem"), err)}}, nil
}

// Used returns the filesystem found in the partition (r, size bytes) and the
// byte extents it uses (Inspect without the rest).
func Used(r io.ReaderAt, size int64) (fstype string, used []disk.Extent, err error) {
	info, err := Inspect(r, size)
	return info.FSType, info.Used, err
}

// Detect is Used without the raw fallback: for a filesystem whose
// structures are inconsistent it returns the reason as an error.
func Detect(r io.ReaderAt, size int64) (string, []disk.Extent, error) {
	info, err := detect(r, size)
	return info.FSType, info.Used, err
}

// detect maps the partition; a filesystem it knows but does not trust
// gives an error wrapping errCorrupt (with FSType set).
func detect(r io.ReaderAt, size int64) (Info, error) {
	info, err := detectFS(r, size)
	if info.FSType != "" || err != nil {
		return info, err
	}
	ex, err := Raw(r, size)
	return Info{FSType: "raw", Used: ex}, err
}

// detectFS maps the filesystems Inspect knows; FSType "" when there is none.
func detectFS(r io.ReaderAt, size int64) (Info, error) {
	head := make([]byte, 4096)
	n, err := r.ReadAt(head[:min(int64(len(head)), max(size, 0))], 0)
	if err != nil && err != io.EOF {
		return Info{}, fmt.Errorf("read filesystem header: %w", err)
	}
	head = head[:n]
	// Encrypted volumes first: a BitLocker To Go volume shows a decoy FAT.
	if isLUKS(head) {
		return luksInfo(r, size, head)
	}
	if ok, err := isBitLocker(r, size, head); ok || err != nil {
		if err != nil {
			return Info{}, err
		}
		return bitLockerInfo(r, size)
	}
	switch {
	case len(head) >= 512 && string(head[:4]) == "XFSB":
		ex, err := xfsUsed(r, size, head)
		return Info{FSType: "xfs", Used: ex}, err
	case len(head) >= 2048 && binary.LittleEndian.Uint16(head[1024+0x38:]) == 0xef53:
		typ, ex, err := extUsed(r, size, head[1024:2048])
		return Info{FSType: typ, Used: ex}, err
	case len(head) >= 512 && string(head[3:11]) == "NTFS    ":
		return ntfsInspect(r, size, head[:512])
	case len(head) >= 512 && isFAT(head):
		typ, ex, err := fatUsed(r, size, head[:512])
		return Info{FSType: typ, Used: ex}, err
	case isLVM2(head):
		return lvmInspect(r, size, head)
	}
	if ok, err := isBtrfs(r, size); ok || err != nil {
		if err != nil {
			return Info{}, err
		}
		return btrfsInspect(r, size)
	}
	// Swap last: its signature sits at the end of a page that filesystems
	// made over an old swap area may not have overwritten.
	return swapInfo(r, size, head)
}

// Raw maps every RawGranularity block of the partition that holds a non-zero byte.
func Raw(r io.ReaderAt, size int64) ([]disk.Extent, error) {
	var c collector
	buf := make([]byte, 16*RawGranularity)
	for off := int64(0); off < size; off += int64(len(buf)) {
		n := int(min(int64(len(buf)), size-off))
		if err := disk.ReadFull(r, buf[:n], off); err != nil {
			return nil, err
		}
		for b := 0; b < n; b += RawGranularity {
			e := min(b+RawGranularity, n)
			if !disk.AllZero(buf[b:e]) {
				c.add(off+int64(b), int64(e-b))
			}
		}
	}
	return c.result(size), nil
}

// collector gathers extents; adjacent additions in ascending order merge on
// the fly, anything else is sorted and merged by result.
type collector struct {
	ex     []disk.Extent
	sorted bool
	init   bool
}

func (c *collector) add(off, n int64) {
	if n <= 0 {
		return
	}
	if !c.init {
		c.sorted, c.init = true, true
	}
	if k := len(c.ex) - 1; k >= 0 {
		last := &c.ex[k]
		if off >= last.Offset && off <= last.End() {
			if end := off + n; end > last.End() {
				last.Length = end - last.Offset
			}
			return
		}
		if off < last.Offset {
			c.sorted = false
		}
	}
	c.ex = append(c.ex, disk.Extent{Offset: off, Length: n})
}

// result returns the sorted, merged extents clipped to [0, limit).
func (c *collector) result(limit int64) []disk.Extent {
	ex := c.ex
	if !c.sorted {
		sort.Slice(ex, func(i, j int) bool { return ex[i].Offset < ex[j].Offset })
	}
	out := ex[:0]
	for _, e := range ex {
		if e.Offset < 0 {
			e.Length += e.Offset
			e.Offset = 0
		}
		if e.End() > limit {
			e.Length = limit - e.Offset
		}
		if e.Length <= 0 {
			continue
		}
		if k := len(out) - 1; k >= 0 && e.Offset <= out[k].End() {
			if e.End() > out[k].End() {
				out[k].Length = e.End() - out[k].Offset
			}
			continue
		}
		out = append(out, e)
	}
	return out
}

// bitRuns calls fn for every run of set bits among the first nbits of bm
// (bit i is bm[i/8]>>(i%8)&1, little-endian bit order as ext, NTFS use).
func bitRuns(bm []byte, nbits int64, fn func(start, n int64)) {
	nbits = min(nbits, int64(len(bm))*8)
	runStart := int64(-1)
	for i := int64(0); i < nbits; {
		if i%8 == 0 && i+8 <= nbits {
			switch bm[i/8] {
			case 0x00:
				if runStart >= 0 {
					fn(runStart, i-runStart)
					runStart = -1
				}
				i += 8
				continue
			case 0xff:
				if runStart < 0 {
					runStart = i
				}
				i += 8
				continue
			}
		}
		if bm[i/8]>>(i%8)&1 != 0 {
			if runStart < 0 {
				runStart = i
			}
		} else if runStart >= 0 {
			fn(runStart, i-runStart)
			runStart = -1
		}
		i++
	}
	if runStart >= 0 {
		fn(runStart, nbits-runStart)
	}
}
