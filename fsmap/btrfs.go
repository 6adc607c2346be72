package fsmap

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"slices"

	"golang.org/x/crypto/blake2b"

	"github.com/preboot/preboot/disk"
)

// Btrfs is mapped at two levels, both read from the trees directly:
//
//  1. Allocation: the first MiB, every superblock mirror on the device and
//     every allocated device extent (the dev tree's DEV_EXTENT items,
//     cross-checked against the chunk tree's stripes). Whatever btrfs
//     keeps lives in a chunk, so this level never drops anything.
//  2. Refinement: with a valid free-space tree, the free ranges of DATA
//     block groups (mirror profiles only: single, DUP, RAID1*) are removed
//     again, on every copy. Metadata and system chunks stay whole.
//
// Anything unusual (several devices, RAID5/6, zoned, extent-tree-v2, a
// raid stripe tree, unknown incompat flags, a checksum type we cannot
// verify, a bad checksum, cycles, deep trees) is refused with errCorrupt:
// Inspect then copies the partition raw. A free-space tree that does not
// add up only costs the refinement (a warning; chunks copied whole).

const (
	btrfsSuperOff  = 64 << 10
	btrfsSuperSize = 4096
	btrfsMagic     = "_BHRfS_M"

	btrfsHeaderSize = 101
	btrfsItemSize   = 25 // key + offset + size
	btrfsPtrSize    = 33 // key + blockptr + generation
	btrfsMaxLevel   = 7  // BTRFS_MAX_LEVEL 8: levels 0..7

	btrfsChunkItemKey      = 228
	btrfsDevExtentKey      = 204
	btrfsRootItemKey       = 132
	btrfsBlockGroupItemKey = 192
	btrfsFSInfoKey         = 198
	btrfsFSExtentKey       = 199
	btrfsFSBitmapKey       = 200

	btrfsExtentTreeID     = 2
	btrfsDevTreeID        = 4
	btrfsFreeSpaceTreeID  = 10
	btrfsBlockGroupTreeID = 11

	btrfsBGData     = 1 << 0
	btrfsBGSystem   = 1 << 1
	btrfsBGMetadata = 1 << 2
	btrfsBGRAID0    = 1 << 3
	btrfsBGRAID1    = 1 << 4
	btrfsBGDUP      = 1 << 5
	btrfsBGRAID10   = 1 << 6
	btrfsBGRAID5    = 1 << 7
	btrfsBGRAID6    = 1 << 8
	btrfsBGRAID1C3  = 1 << 9
	btrfsBGRAID1C4  = 1 << 10
	btrfsBGProfiles = btrfsBGRAID0 | btrfsBGRAID1 | btrfsBGDUP | btrfsBGRAID10 | btrfsBGRAID5 | btrfsBGRAID6 | btrfsBGRAID1C3 | btrfsBGRAID1C4
	btrfsBGTypes    = btrfsBGData | btrfsBGSystem | btrfsBGMetadata

	btrfsROFreeSpaceTree      = 1 << 0
	btrfsROFreeSpaceTreeValid = 1 << 1
	btrfsROVerity             = 1 << 2
	btrfsROBlockGroupTree     = 1 << 3
	btrfsROKnown              = btrfsROFreeSpaceTree | btrfsROFreeSpaceTreeValid | btrfsROVerity | btrfsROBlockGroupTree

	btrfsIncompatMetadataUUID = 1 << 10
	// Known incompat flags that do not change how chunks map or how
	// space is accounted: mixed backref, default subvol, mixed groups,
	// lzo, zstd, big metadata, extended iref, skinny metadata, no holes,
	// metadata uuid, raid1c34, simple quota. Refused: raid56 (1<<7),
	// zoned (1<<12), extent tree v2 (1<<13), raid stripe tree (1<<14)
	// and anything unknown.
	btrfsIncompatOK = 1<<0 | 1<<1 | 1<<2 | 1<<3 | 1<<4 | 1<<5 | 1<<6 | 1<<8 | 1<<9 | 1<<10 | 1<<11 | 1<<16

	btrfsFSUsingBitmaps = 1 << 0

	// Bounds against hostile metadata.
	btrfsMaxStripes = 256
	btrfsMaxChunks  = 1 << 20
)

// btrfsMirrors are the superblock copies (BTRFS_SUPER_MIRROR_MAX = 3).
var btrfsMirrors = [...]int64{64 << 10, 64 << 20, 256 << 30}

type btrfsKey struct {
	objectid uint64
	typ      uint8
	offset   uint64
}

func btrfsKeyAt(b []byte) btrfsKey {
	return btrfsKey{binary.LittleEndian.Uint64(b), b[8], binary.LittleEndian.Uint64(b[9:])}
}

func (k btrfsKey) cmp(o btrfsKey) int {
	switch {
	case k.objectid != o.objectid:
		return cmpU64(k.objectid, o.objectid)
	case k.typ != o.typ:
		return cmpU64(uint64(k.typ), uint64(o.typ))
	}
	return cmpU64(k.offset, o.offset)
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

type btrfsStripe struct {
	devid uint64
	phys  int64
}

type btrfsChunk struct {
	logical   int64
	length    int64
	typ       uint64
	stripeLen int64
	subStr    int
	stripes   []btrfsStripe
	devLen    int64 // bytes each stripe occupies on its device
}

func (c *btrfsChunk) end() int64 { return c.logical + c.length }

// mirrored reports a profile whose every stripe holds the whole chunk.
func (c *btrfsChunk) mirrored() bool { return c.typ&(btrfsBGRAID0|btrfsBGRAID10) == 0 }

type btrfsFS struct {
	r          io.ReaderAt
	size       int64
	verifyCsum bool // off only in fuzzing, to reach the tree parsers

	fsid       []byte
	devid      uint64
	devBytes   int64 // dev_item.total_bytes
	devUsed    int64 // dev_item.bytes_used
	sectorsize int64
	nodesize   int64
	csumType   uint16
	compatRO   uint64
	incompat   uint64
	root       int64
	rootLevel  int
	chunkRoot  int64
	chunkLevel int
	logRoot    int64

	chunks []*btrfsChunk // sorted by logical, non-overlapping
	reads  int           // node reads so far
	budget int           // node read limit
	buf    []byte
}

// isBtrfs reports a btrfs superblock magic at 64 KiB.
func isBtrfs(r io.ReaderAt, size int64) (bool, error) {
	if size < btrfsSuperOff+btrfsSuperSize {
		return false, nil
	}
	var m [8]byte
	if err := disk.ReadFull(r, m[:], btrfsSuperOff+0x40); err != nil {
		return false, fmt.Errorf("read btrfs superblock: %w", err)
	}
	return string(m[:]) == btrfsMagic, nil
}

// btrfsInspect maps a btrfs filesystem (see the top of this file).
func btrfsInspect(r io.ReaderAt, size int64) (Info, error) {
	sb := make([]byte, btrfsSuperSize)
	if err := disk.ReadFull(r, sb, btrfsSuperOff); err != nil {
		return Info{}, fmt.Errorf("read btrfs superblock: %w", err)
	}
	fs := &btrfsFS{r: r, size: size, verifyCsum: true}
	return fs.used(sb)
}

func (fs *btrfsFS) used(sb []byte) (Info, error) {
	info := Info{FSType: "btrfs"}
	if err := fs.parseSuper(sb); err != nil {
		return info, err
	}
	if err := fs.readChunks(sb); err != nil {
		return info, err
	}
	roots, err := fs.readRoots()
	if err != nil {
		return info, err
	}
	dev, ok := roots[btrfsDevTreeID]
	if !ok {
		return info, corrupt("btrfs: no dev tree")
	}
	alloc, err := fs.devExtents(dev)
	if err != nil {
		return info, err
	}
	used := alloc
	if free, warn := fs.refine(roots); warn != "" {
		info.Warnings = append(info.Warnings, warn)
	} else {
		used = subtractSorted(alloc, free)
	}
	var c collector
	c.add(0, 1<<20) // btrfs never allocates the first MiB; boot code lives there
	for _, m := range btrfsMirrors {
		c.add(m, btrfsSuperSize)
	}
	for _, e := range used {
		c.add(e.Offset, e.Length)
	}
	c.sorted = false
	info.Used = c.result(fs.size)
	return info, nil
}

func (fs *btrfsFS) parseSuper(sb []byte) error {
	le := binary.LittleEndian
	if len(sb) < btrfsSuperSize || string(sb[0x40:0x48]) != btrfsMagic {
		return corrupt("btrfs: no superblock")
	}
	fs.csumType = le.Uint16(sb[0xc4:])
	if err := fs.checkCsum(sb, "superblock"); err != nil {
		return err
	}
	if le.Uint64(sb[0x30:]) != btrfsSuperOff {
		return corrupt("btrfs: superblock says it is at %d", le.Uint64(sb[0x30:]))
	}
	fs.incompat = le.Uint64(sb[0xbc:])
	fs.compatRO = le.Uint64(sb[0xb4:])
	if bad := fs.incompat &^ btrfsIncompatOK; bad != 0 {
		return corrupt("btrfs: incompat features %#x not supported", bad)
	}
	if n := le.Uint64(sb[0x88:]); n != 1 {
		return corrupt("btrfs: %d devices (only single-device filesystems are mapped)", n)
	}
	fs.sectorsize = int64(le.Uint32(sb[0x90:]))
	fs.nodesize = int64(le.Uint32(sb[0x94:]))
	if !pow2In(fs.sectorsize, 4096, 64<<10) || !pow2In(fs.nodesize, fs.sectorsize, 64<<10) {
		return corrupt("btrfs: sector size %d, node size %d", fs.sectorsize, fs.nodesize)
	}
	fs.fsid = sb[0x20:0x30]
	if fs.incompat&btrfsIncompatMetadataUUID != 0 {
		fs.fsid = sb[0x23b:0x24b]
	}
	fs.root = int64(le.Uint64(sb[0x50:]))
	fs.chunkRoot = int64(le.Uint64(sb[0x58:]))
	fs.logRoot = int64(le.Uint64(sb[0x60:]))
	fs.rootLevel = int(sb[0xc6])
	fs.chunkLevel = int(sb[0xc7])
	fs.devid = le.Uint64(sb[0xc9:])
	fs.devBytes = int64(le.Uint64(sb[0xd1:]))
	fs.devUsed = int64(le.Uint64(sb[0xd9:]))
	if fs.devBytes <= 0 || fs.devBytes > fs.size {
		return corrupt("btrfs: device of %d bytes in a %d-byte partition", fs.devBytes, fs.size)
	}
	if fs.devUsed < 0 || fs.devUsed > fs.devBytes {
		return corrupt("btrfs: %d bytes used of %d", fs.devUsed, fs.devBytes)
	}
	// Every node is read at most a few times (root-item and block group
	// look-ups descend from the root again); the device bounds the count.
	fs.budget = int(min(fs.size/fs.nodesize*4+1024, 1<<24))
	fs.buf = make([]byte, fs.nodesize)
	return nil
}

func pow2In(v, lo, hi int64) bool { return v >= lo && v <= hi && v&(v-1) == 0 }

var crc32c = crc32.MakeTable(crc32.Castagnoli)

// checkCsum verifies b's checksum (the first 32 bytes cover the rest).
func (fs *btrfsFS) checkCsum(b []byte, what string) error {
	var sum []byte
	switch fs.csumType {
	case 0:
		sum = binary.LittleEndian.AppendUint32(nil, crc32.Checksum(b[32:], crc32c))
	case 2:
		s := sha256.Sum256(b[32:])
		sum = s[:]
	case 3:
		s := blake2b.Sum256(b[32:])
		sum = s[:]
	default: // 1 = xxhash64: not verified, so not trusted
		return corrupt("btrfs: checksum type %d not supported", fs.csumType)
	}
	if fs.verifyCsum && !bytes.Equal(b[:len(sum)], sum) {
		return corrupt("btrfs: bad %s checksum", what)
	}
	return nil
}

// parseChunk decodes a CHUNK_ITEM (key offset = logical address).
func (fs *btrfsFS) parseChunk(logical uint64, b []byte) (*btrfsChunk, int, error) {
	le := binary.LittleEndian
	if len(b) < 48+32 {
		return nil, 0, corrupt("btrfs: short chunk item")
	}
	c := &btrfsChunk{
		logical:   int64(logical),
		length:    int64(le.Uint64(b)),
		stripeLen: int64(le.Uint64(b[16:])),
		typ:       le.Uint64(b[24:]),
		subStr:    int(le.Uint16(b[46:])),
	}
	n := int(le.Uint16(b[44:]))
	sz := 48 + 32*n
	switch {
	case n < 1 || n > btrfsMaxStripes || sz > len(b):
		return nil, 0, corrupt("btrfs: chunk with %d stripes in %d bytes", n, len(b))
	case c.logical < 0 || c.length <= 0 || c.length%fs.sectorsize != 0 || c.logical > 1<<62-c.length:
		return nil, 0, corrupt("btrfs: chunk %d+%d", logical, c.length)
	case c.stripeLen <= 0 || c.stripeLen > 1<<30 || c.stripeLen&(c.stripeLen-1) != 0:
		return nil, 0, corrupt("btrfs: stripe length %d", c.stripeLen)
	case c.typ&btrfsBGTypes == 0 || c.typ&^(btrfsBGTypes|btrfsBGProfiles) != 0:
		return nil, 0, corrupt("btrfs: chunk type %#x", c.typ)
	}
	prof := c.typ & btrfsBGProfiles
	if prof&(prof-1) != 0 || prof&(btrfsBGRAID5|btrfsBGRAID6) != 0 {
		return nil, 0, corrupt("btrfs: chunk profile %#x not supported", prof)
	}
	want := map[uint64]int{0: 1, btrfsBGDUP: 2, btrfsBGRAID1: 2, btrfsBGRAID1C3: 3, btrfsBGRAID1C4: 4}
	switch prof {
	case btrfsBGRAID0:
		c.devLen = c.length / int64(n)
		if c.length%int64(n) != 0 {
			return nil, 0, corrupt("btrfs: raid0 chunk of %d bytes on %d stripes", c.length, n)
		}
	case btrfsBGRAID10:
		if c.subStr != 2 || n%2 != 0 || c.length%int64(n/2) != 0 {
			return nil, 0, corrupt("btrfs: raid10 chunk with %d stripes, %d sub stripes", n, c.subStr)
		}
		c.devLen = c.length / int64(n/2)
	default:
		if n != want[prof] {
			return nil, 0, corrupt("btrfs: profile %#x with %d stripes", prof, n)
		}
		c.devLen = c.length
	}
	for i := range n {
		s := b[48+32*i:]
		st := btrfsStripe{devid: le.Uint64(s), phys: int64(le.Uint64(s[8:]))}
		if st.devid != fs.devid {
			return nil, 0, corrupt("btrfs: chunk %d on device %d (this is device %d)", logical, st.devid, fs.devid)
		}
		if st.phys < 0 || st.phys > fs.devBytes-c.devLen {
			return nil, 0, corrupt("btrfs: chunk %d stripe at %d+%d beyond the device", logical, st.phys, c.devLen)
		}
		c.stripes = append(c.stripes, st)
	}
	return c, sz, nil
}

// addChunk inserts c into the sorted chunk map; an identical chunk (the
// system chunks are in both the superblock and the chunk tree) is fine,
// an overlapping one is not.
func (fs *btrfsFS) addChunk(c *btrfsChunk) error {
	i, found := slices.BinarySearchFunc(fs.chunks, c.logical, func(x *btrfsChunk, l int64) int { return cmpU64(uint64(x.logical), uint64(l)) })
	if found {
		o := fs.chunks[i]
		if o.length != c.length || o.typ != c.typ || !slices.Equal(o.stripes, c.stripes) {
			return corrupt("btrfs: two different chunks at %d", c.logical)
		}
		return nil
	}
	if (i > 0 && fs.chunks[i-1].end() > c.logical) || (i < len(fs.chunks) && c.end() > fs.chunks[i].logical) {
		return corrupt("btrfs: chunk %d+%d overlaps another", c.logical, c.length)
	}
	if len(fs.chunks) >= btrfsMaxChunks {
		return corrupt("btrfs: more than %d chunks", btrfsMaxChunks)
	}
	fs.chunks = slices.Insert(fs.chunks, i, c)
	return nil
}

// overlapsChunk reports whether any chunk meets [start, start+n).
func (fs *btrfsFS) overlapsChunk(start, n int64) bool {
	if fs.chunkAt(start) != nil {
		return true
	}
	i, _ := slices.BinarySearchFunc(fs.chunks, start, func(x *btrfsChunk, l int64) int { return cmpU64(uint64(x.logical), uint64(l)) })
	return i < len(fs.chunks) && fs.chunks[i].logical < start+n
}

func (fs *btrfsFS) chunkAt(logical int64) *btrfsChunk {
	i, found := slices.BinarySearchFunc(fs.chunks, logical, func(x *btrfsChunk, l int64) int { return cmpU64(uint64(x.logical), uint64(l)) })
	if !found {
		i--
	}
	if i < 0 || i >= len(fs.chunks) || logical >= fs.chunks[i].end() {
		return nil
	}
	return fs.chunks[i]
}

// readChunks bootstraps from sys_chunk_array, then reads the chunk tree.
func (fs *btrfsFS) readChunks(sb []byte) error {
	n := int(binary.LittleEndian.Uint32(sb[0xa0:]))
	if n > 2048 {
		return corrupt("btrfs: sys_chunk_array of %d bytes", n)
	}
	arr := sb[0x32b : 0x32b+n]
	for len(arr) > 0 {
		if len(arr) < 17 {
			return corrupt("btrfs: truncated sys_chunk_array")
		}
		k := btrfsKeyAt(arr)
		if k.typ != btrfsChunkItemKey {
			return corrupt("btrfs: key type %d in sys_chunk_array", k.typ)
		}
		c, sz, err := fs.parseChunk(k.offset, arr[17:])
		if err != nil {
			return err
		}
		if err := fs.addChunk(c); err != nil {
			return err
		}
		arr = arr[17+sz:]
	}
	if len(fs.chunks) == 0 {
		return corrupt("btrfs: empty sys_chunk_array")
	}
	return fs.walk(fs.chunkRoot, fs.chunkLevel, btrfsKey{0, btrfsChunkItemKey, 0}, btrfsKey{^uint64(0), btrfsChunkItemKey, ^uint64(0)},
		func(k btrfsKey, data []byte) error {
			if k.typ != btrfsChunkItemKey {
				return nil
			}
			c, _, err := fs.parseChunk(k.offset, data)
			if err != nil {
				return err
			}
			return fs.addChunk(c)
		})
}

type btrfsRoot struct {
	bytenr int64
	level  int
}

// readRoots finds the trees this reader needs in the root tree.
func (fs *btrfsFS) readRoots() (map[uint64]btrfsRoot, error) {
	roots := map[uint64]btrfsRoot{}
	err := fs.walk(fs.root, fs.rootLevel, btrfsKey{btrfsExtentTreeID, 0, 0}, btrfsKey{btrfsBlockGroupTreeID, 255, ^uint64(0)},
		func(k btrfsKey, data []byte) error {
			if k.typ != btrfsRootItemKey || k.offset != 0 {
				return nil
			}
			if len(data) < 239 {
				return corrupt("btrfs: root item of %d bytes", len(data))
			}
			roots[k.objectid] = btrfsRoot{int64(binary.LittleEndian.Uint64(data[176:])), int(data[238])}
			return nil
		})
	return roots, err
}

// devExtents returns this device's allocated extents (sorted, merged),
// each checked against the chunk stripe it belongs to.
func (fs *btrfsFS) devExtents(dev btrfsRoot) ([]disk.Extent, error) {
	stripes := map[int64]int64{} // physical → length, from the chunk tree
	for _, c := range fs.chunks {
		for _, s := range c.stripes {
			if _, dup := stripes[s.phys]; dup {
				return nil, corrupt("btrfs: two chunk stripes at %d", s.phys)
			}
			stripes[s.phys] = c.devLen
		}
	}
	var ex []disk.Extent
	var sum, prevEnd int64
	le := binary.LittleEndian
	err := fs.walk(dev.bytenr, dev.level, btrfsKey{fs.devid, btrfsDevExtentKey, 0}, btrfsKey{fs.devid, btrfsDevExtentKey, ^uint64(0)},
		func(k btrfsKey, data []byte) error {
			if k.objectid != fs.devid || k.typ != btrfsDevExtentKey {
				return nil
			}
			if len(data) < 32 {
				return corrupt("btrfs: dev extent item of %d bytes", len(data))
			}
			off, n := int64(k.offset), int64(le.Uint64(data[24:]))
			chunk := fs.chunkAt(int64(le.Uint64(data[16:])))
			if off < 0 || n <= 0 || off < prevEnd || off > fs.devBytes-n {
				return corrupt("btrfs: dev extent %d+%d", k.offset, n)
			}
			if l, ok := stripes[off]; !ok || l != n || chunk == nil || int64(le.Uint64(data[16:])) != chunk.logical {
				return corrupt("btrfs: dev extent %d+%d has no matching chunk stripe", off, n)
			}
			delete(stripes, off)
			prevEnd = off + n
			sum += n
			ex = append(ex, disk.Extent{Offset: off, Length: n})
			return nil
		})
	if err != nil {
		return nil, err
	}
	if len(stripes) != 0 {
		return nil, corrupt("btrfs: %d chunk stripes without a dev extent", len(stripes))
	}
	if sum != fs.devUsed {
		return nil, corrupt("btrfs: dev extents hold %d bytes, the device item says %d", sum, fs.devUsed)
	}
	return ex, nil
}

// refine returns the physical free ranges of the data chunks (sorted,
// merged) from the free-space tree, or a warning why it cannot.
func (fs *btrfsFS) refine(roots map[uint64]btrfsRoot) ([]disk.Extent, string) {
	const need = btrfsROFreeSpaceTree | btrfsROFreeSpaceTreeValid
	switch {
	case fs.compatRO&need != need:
		return nil, "" // no free-space tree: allocated chunks copied whole
	case fs.compatRO&^btrfsROKnown != 0:
		return nil, fmt.Sprintf("btrfs: unknown compat_ro features %#x: allocated chunks copied whole", fs.compatRO&^btrfsROKnown)
	case fs.logRoot != 0:
		return nil, "btrfs: a log tree is pending (not cleanly unmounted): allocated chunks copied whole"
	}
	free, err := fs.freeSpace(roots)
	if err != nil {
		return nil, fmt.Sprintf("free-space tree not trusted (%v): allocated chunks copied whole", err)
	}
	return free, ""
}

// btrfsBG is one block group's free space as the free-space tree says.
type btrfsBG struct {
	chunk   *btrfsChunk // nil for a stale entry of a removed chunk
	start   int64
	length  int64
	count   uint32 // extent_count of FREE_SPACE_INFO
	bitmaps bool
	free    []disk.Extent // logical, sorted, merged
	freeSum int64
	end     int64 // end of the last range seen (keys ascend)
}

func (fs *btrfsFS) freeSpace(roots map[uint64]btrfsRoot) ([]disk.Extent, error) {
	fst, ok := roots[btrfsFreeSpaceTreeID]
	if !ok {
		return nil, corrupt("no free-space tree root")
	}
	var bgs []*btrfsBG
	var cur *btrfsBG
	addFree := func(off, n int64) {
		if k := len(cur.free) - 1; k >= 0 && cur.free[k].End() == off {
			cur.free[k].Length += n
		} else {
			cur.free = append(cur.free, disk.Extent{Offset: off, Length: n})
		}
		cur.freeSum += n
	}
	le := binary.LittleEndian
	err := fs.walk(fst.bytenr, fst.level, btrfsKey{}, btrfsKey{^uint64(0), 255, ^uint64(0)}, func(k btrfsKey, data []byte) error {
		start, n := int64(k.objectid), int64(k.offset)
		switch k.typ {
		case btrfsFSInfoKey:
			if start < 0 || n <= 0 || start > 1<<62-n || len(data) < 8 || (cur != nil && start < cur.end) {
				return corrupt("free space info %d+%d", start, n)
			}
			c := fs.chunkAt(start)
			if c == nil || c.logical != start || c.length != n {
				// mkfs.btrfs (6.2 at least) leaves the infos of its
				// temporary chunks behind: harmless when they overlap
				// no chunk (nothing is subtracted there).
				if fs.overlapsChunk(start, n) {
					return corrupt("free space info %d+%d does not match its chunk", start, n)
				}
				c = nil
			}
			cur = &btrfsBG{chunk: c, start: start, length: n, count: le.Uint32(data), bitmaps: le.Uint32(data[4:])&btrfsFSUsingBitmaps != 0, end: start}
			bgs = append(bgs, cur)
		case btrfsFSExtentKey, btrfsFSBitmapKey:
			if cur == nil || start < cur.end || n <= 0 || start%fs.sectorsize != 0 || n%fs.sectorsize != 0 || n > cur.start+cur.length-start {
				return corrupt("free space %d+%d outside its block group", start, n)
			}
			cur.end = start + n
			if (k.typ == btrfsFSBitmapKey) != cur.bitmaps {
				return corrupt("free space item type %d in a block group with bitmaps=%v", k.typ, cur.bitmaps)
			}
			if k.typ == btrfsFSExtentKey {
				addFree(start, n)
				return nil
			}
			bits := n / fs.sectorsize
			if int64(len(data)) != (bits+7)/8 {
				return corrupt("free space bitmap of %d bytes for %d sectors", len(data), bits)
			}
			bitRuns(data, bits, func(s, m int64) { addFree(start+s*fs.sectorsize, m*fs.sectorsize) })
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var out []disk.Extent
	for _, bg := range bgs {
		if uint64(len(bg.free)) != uint64(bg.count) {
			return nil, corrupt("block group %d: %d free extents, the info says %d", bg.start, len(bg.free), bg.count)
		}
		c := bg.chunk
		if c == nil || c.typ&btrfsBGTypes != btrfsBGData || !c.mirrored() {
			continue // metadata, system, mixed and striped chunks stay whole
		}
		used, err := fs.bgUsed(roots, c)
		if err != nil {
			return nil, err
		}
		if bg.freeSum > c.length-used {
			return nil, corrupt("block group %d: %d bytes free and %d used of %d", c.logical, bg.freeSum, used, c.length)
		}
		for _, s := range c.stripes {
			for _, f := range bg.free {
				out = append(out, disk.Extent{Offset: s.phys + f.Offset - c.logical, Length: f.Length})
			}
		}
	}
	slices.SortFunc(out, func(a, b disk.Extent) int { return cmpU64(uint64(a.Offset), uint64(b.Offset)) })
	return out, nil
}

// bgUsed reads the block group item's used bytes (extent tree, or block
// group tree with that feature): a cross-check of the free-space tree.
func (fs *btrfsFS) bgUsed(roots map[uint64]btrfsRoot, c *btrfsChunk) (int64, error) {
	id := uint64(btrfsExtentTreeID)
	if fs.compatRO&btrfsROBlockGroupTree != 0 {
		id = btrfsBlockGroupTreeID
	}
	root, ok := roots[id]
	if !ok {
		return 0, corrupt("no tree %d for block group items", id)
	}
	key := btrfsKey{uint64(c.logical), btrfsBlockGroupItemKey, uint64(c.length)}
	used := int64(-1)
	err := fs.walk(root.bytenr, root.level, key, key, func(k btrfsKey, data []byte) error {
		if k != key {
			return nil
		}
		if len(data) < 24 {
			return corrupt("block group item of %d bytes", len(data))
		}
		used = int64(binary.LittleEndian.Uint64(data))
		if fl := binary.LittleEndian.Uint64(data[16:]); fl != c.typ {
			return corrupt("block group %d flags %#x, chunk type %#x", c.logical, fl, c.typ)
		}
		return nil
	})
	switch {
	case err != nil:
		return 0, err
	case used < 0 || used > c.length:
		return 0, corrupt("block group %d: %d bytes used of %d", c.logical, used, c.length)
	}
	return used, nil
}

// readNode reads and verifies the tree block at logical, from the first
// copy that checks out.
func (fs *btrfsFS) readNode(logical int64, level int) ([]byte, error) {
	if fs.reads >= fs.budget {
		return nil, corrupt("btrfs: more than %d tree block reads", fs.budget)
	}
	fs.reads++
	c := fs.chunkAt(logical)
	if c == nil || logical > c.end()-fs.nodesize || c.typ&(btrfsBGSystem|btrfsBGMetadata) == 0 {
		return nil, corrupt("btrfs: tree block %d in no metadata chunk", logical)
	}
	off := logical - c.logical
	var phys []int64
	if c.mirrored() {
		for _, s := range c.stripes {
			phys = append(phys, s.phys+off)
		}
	} else {
		nr, in := off/c.stripeLen, off%c.stripeLen
		if in+fs.nodesize > c.stripeLen {
			return nil, corrupt("btrfs: tree block %d crosses a stripe", logical)
		}
		if c.typ&btrfsBGRAID0 != 0 {
			n := int64(len(c.stripes))
			phys = append(phys, c.stripes[nr%n].phys+nr/n*c.stripeLen+in)
		} else {
			f := int64(len(c.stripes) / c.subStr)
			for m := range int64(c.subStr) {
				phys = append(phys, c.stripes[nr%f*int64(c.subStr)+m].phys+nr/f*c.stripeLen+in)
			}
		}
	}
	var firstErr error
	for _, p := range phys {
		if p < 0 || p > fs.size-fs.nodesize {
			firstErr = cmpOr(firstErr, corrupt("btrfs: tree block %d at %d beyond the partition", logical, p))
			continue
		}
		b := fs.buf
		if err := disk.ReadFull(fs.r, b, p); err != nil {
			return nil, fmt.Errorf("btrfs: read tree block %d: %w", logical, err)
		}
		if err := fs.checkNode(b, logical, level); err != nil {
			firstErr = cmpOr(firstErr, err)
			continue
		}
		return b, nil
	}
	return nil, firstErr
}

func cmpOr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

func (fs *btrfsFS) checkNode(b []byte, logical int64, level int) error {
	le := binary.LittleEndian
	if err := fs.checkCsum(b, fmt.Sprintf("tree block %d", logical)); err != nil {
		return err
	}
	switch {
	case int64(le.Uint64(b[0x30:])) != logical:
		return corrupt("btrfs: tree block %d says it is %d", logical, le.Uint64(b[0x30:]))
	case !bytes.Equal(b[0x20:0x30], fs.fsid):
		return corrupt("btrfs: tree block %d of another filesystem", logical)
	case int(b[0x64]) != level:
		return corrupt("btrfs: tree block %d at level %d, expected %d", logical, b[0x64], level)
	}
	n := int64(le.Uint32(b[0x60:]))
	per := int64(btrfsItemSize)
	if level > 0 {
		per = btrfsPtrSize
	}
	if n > (fs.nodesize-btrfsHeaderSize)/per || (level > 0 && n == 0) {
		return corrupt("btrfs: tree block %d with %d items", logical, n)
	}
	return nil
}

// walk visits, in key order, the leaf items with lo <= key <= hi of the
// tree rooted at (root, level), descending only into subtrees that can hold
// such keys. Nodes are verified; each is visited at most once per walk.
func (fs *btrfsFS) walk(root int64, level int, lo, hi btrfsKey, fn func(btrfsKey, []byte) error) error {
	if level < 0 || level > btrfsMaxLevel {
		return corrupt("btrfs: tree root at level %d", level)
	}
	seen := map[int64]bool{}
	return fs.walkNode(root, level, lo, hi, nil, seen, fn)
}

// walkNode: parentKey is the key the parent's pointer carries (the node's
// first key must equal it), nil for the root.
func (fs *btrfsFS) walkNode(logical int64, level int, lo, hi btrfsKey, parentKey *btrfsKey, seen map[int64]bool, fn func(btrfsKey, []byte) error) error {
	if seen[logical] {
		return corrupt("btrfs: tree block %d reached twice", logical)
	}
	seen[logical] = true
	b, err := fs.readNode(logical, level)
	if err != nil {
		return err
	}
	le := binary.LittleEndian
	n := int(le.Uint32(b[0x60:]))
	body := b[btrfsHeaderSize:]
	if level == 0 {
		// Copy: fn may run a walk of its own, which reuses fs.buf.
		leaf := slices.Clone(body)
		var prev btrfsKey
		dataEnd := len(leaf)
		for i := range n {
			it := leaf[i*btrfsItemSize:]
			k := btrfsKeyAt(it)
			if i == 0 && parentKey != nil && k != *parentKey {
				return corrupt("btrfs: tree block %d starts with another key than its parent says", logical)
			}
			if i > 0 && k.cmp(prev) <= 0 {
				return corrupt("btrfs: tree block %d keys out of order", logical)
			}
			prev = k
			off, sz := int(le.Uint32(it[17:])), int(le.Uint32(it[21:]))
			if off < n*btrfsItemSize || sz > dataEnd || off > dataEnd-sz {
				return corrupt("btrfs: tree block %d item %d data at %d+%d", logical, i, off, sz)
			}
			dataEnd = off // item data is packed from the end, in item order
			if k.cmp(lo) < 0 || k.cmp(hi) > 0 {
				continue
			}
			if err := fn(k, leaf[off:off+sz]); err != nil {
				return err
			}
		}
		return nil
	}
	type ptr struct {
		key btrfsKey
		at  int64
	}
	ptrs := make([]ptr, n)
	for i := range n {
		p := body[i*btrfsPtrSize:]
		ptrs[i] = ptr{btrfsKeyAt(p), int64(le.Uint64(p[17:]))}
		if i == 0 && parentKey != nil && ptrs[0].key != *parentKey {
			return corrupt("btrfs: tree block %d starts with another key than its parent says", logical)
		}
		if i > 0 && ptrs[i].key.cmp(ptrs[i-1].key) <= 0 {
			return corrupt("btrfs: tree block %d keys out of order", logical)
		}
	}
	for i, p := range ptrs {
		// Child i holds keys in [p.key, next key): skip it unless that
		// range meets [lo, hi].
		if p.key.cmp(hi) > 0 {
			break
		}
		if i+1 < n && ptrs[i+1].key.cmp(lo) <= 0 {
			continue
		}
		if err := fs.walkNode(p.at, level-1, lo, hi, &p.key, seen, fn); err != nil {
			return err
		}
	}
	return nil
}

// subtractSorted returns a minus b; both sorted by offset (b may overlap
// itself), the result sorted.
func subtractSorted(a, b []disk.Extent) []disk.Extent {
	var out []disk.Extent
	j := 0
	for _, e := range a {
		pos, end := e.Offset, e.End()
		for j < len(b) && b[j].End() <= pos {
			j++
		}
		for k := j; k < len(b) && b[k].Offset < end; k++ {
			if b[k].Offset > pos {
				out = append(out, disk.Extent{Offset: pos, Length: b[k].Offset - pos})
			}
			pos = max(pos, b[k].End())
		}
		if pos < end {
			out = append(out, disk.Extent{Offset: pos, Length: end - pos})
		}
	}
	return out
}
