package fsmap

import (
	"encoding/binary"
	"io"

	"github.com/preboot/preboot/disk"
)

// ext2/3/4 feature bits used here.
const (
	extCompatHasJournal   = 0x4
	extCompatSparseSuper2 = 0x200
	extIncompatRecover    = 0x4
	extIncompatExtents    = 0x40
	extIncompatMetaBG     = 0x10
	extIncompat64Bit      = 0x80
	extIncompatFlexBG     = 0x200
	extRoCompatSparse     = 0x1
	extRoCompatHugeFile   = 0x8
	extRoCompatGDTCsum    = 0x10
	extRoCompatBigalloc   = 0x200
	extRoCompatMetaCsum   = 0x400
	extBGBlockUninit      = 0x2
)

type extFS struct {
	bs, ratio               int64 // block size, blocks per cluster
	blocks, firstData       int64
	bpg, cpg, ipg           int64
	inodeSize               int64
	groups                  int64
	descSize, descPerBlock  int64
	descBlocks, resGDT      int64
	metaBG                  bool
	firstMetaBG             int64
	sparse, sparse2         bool
	backupBG                [2]int64
	csum                    bool
	compat, incompat, rocom uint32
}

func extType(compat, incompat, rocompat uint32) string {
	switch {
	case incompat&^uint32(0x2|0x4|0x8|0x10) != 0 || rocompat&^uint32(0x1|0x2|0x4) != 0:
		// extents, 64bit, flex_bg, huge_file, dir_nlink, extra_isize, csums…
		return "ext4"
	case compat&extCompatHasJournal != 0:
		return "ext3"
	}
	return "ext2"
}

func parseExtSuper(sb []byte, size int64) (*extFS, error) {
	u32 := func(o int) uint32 { return binary.LittleEndian.Uint32(sb[o:]) }
	u16 := func(o int) uint16 { return binary.LittleEndian.Uint16(sb[o:]) }
	fs := &extFS{compat: u32(0x5c), incompat: u32(0x60), rocom: u32(0x64)}
	// Not cleanly unmounted, or with a journal still to replay: the on-disk
	// bitmaps may miss blocks in use (the journal holds their allocation).
	if state := u16(0x3a); state&1 == 0 || fs.incompat&extIncompatRecover != 0 {
		return nil, corrupt("ext: not cleanly unmounted (state %#x, needs_recovery %v); run e2fsck first",
			state, fs.incompat&extIncompatRecover != 0)
	}
	logBS := u32(0x18)
	if logBS > 6 {
		return nil, corrupt("ext: block size 1024<<%d", logBS)
	}
	fs.bs = 1024 << logBS
	fs.blocks = int64(u32(0x4))
	if fs.incompat&extIncompat64Bit != 0 {
		fs.blocks |= int64(u32(0x150)) << 32
	}
	fs.firstData = int64(u32(0x14))
	fs.bpg = int64(u32(0x20))
	fs.ipg = int64(u32(0x28))
	fs.ratio = 1
	fs.cpg = fs.bpg
	if fs.rocom&extRoCompatBigalloc != 0 {
		logC := u32(0x1c)
		if logC < logBS || logC-logBS > 16 {
			return nil, corrupt("ext: cluster size 1024<<%d", logC)
		}
		fs.ratio = 1 << (logC - logBS)
		fs.cpg = int64(u32(0x24))
		fs.bpg = fs.cpg * fs.ratio
	}
	if fs.blocks <= 0 || fs.blocks > size/fs.bs {
		return nil, corrupt("ext: %d blocks of %d bytes in a %d-byte partition", fs.blocks, fs.bs, size)
	}
	if fs.cpg <= 0 || fs.cpg > 8*fs.bs || fs.bpg <= 0 {
		return nil, corrupt("ext: %d clusters per group", fs.cpg)
	}
	if fs.firstData >= fs.blocks || fs.firstData > 1 || (fs.ratio > 1 && fs.firstData != 0) {
		return nil, corrupt("ext: first data block %d", fs.firstData)
	}
	fs.inodeSize = 128
	if u32(0x4c) >= 1 {
		fs.inodeSize = int64(u16(0x58))
	}
	if fs.inodeSize < 128 || fs.inodeSize > fs.bs || fs.inodeSize&(fs.inodeSize-1) != 0 {
		return nil, corrupt("ext: inode size %d", fs.inodeSize)
	}
	if fs.ipg <= 0 || fs.ipg*fs.inodeSize > fs.bpg*fs.bs {
		return nil, corrupt("ext: %d inodes per group", fs.ipg)
	}
	fs.groups = (fs.blocks - fs.firstData + fs.bpg - 1) / fs.bpg
	fs.descSize = 32
	if fs.incompat&extIncompat64Bit != 0 {
		fs.descSize = int64(u16(0xfe))
		if fs.descSize < 64 || fs.descSize > 1024 || fs.descSize&(fs.descSize-1) != 0 {
			return nil, corrupt("ext: descriptor size %d", fs.descSize)
		}
	}
	fs.descPerBlock = fs.bs / fs.descSize
	fs.descBlocks = (fs.groups + fs.descPerBlock - 1) / fs.descPerBlock
	fs.resGDT = int64(u16(0xce))
	fs.metaBG = fs.incompat&extIncompatMetaBG != 0
	fs.firstMetaBG = int64(u32(0x104))
	fs.sparse = fs.rocom&extRoCompatSparse != 0
	fs.sparse2 = fs.compat&extCompatSparseSuper2 != 0
	fs.backupBG = [2]int64{int64(u32(0x24c)), int64(u32(0x250))}
	fs.csum = fs.rocom&(extRoCompatGDTCsum|extRoCompatMetaCsum) != 0
	return fs, nil
}

func isPow(g, b int64) bool {
	for g > 1 && g%b == 0 {
		g /= b
	}
	return g == 1
}

// hasSuper reports whether group g holds a superblock backup (and, without
// meta_bg, a copy of the group descriptor table).
func (fs *extFS) hasSuper(g int64) bool {
	switch {
	case g == 0:
		return true
	case fs.sparse2:
		return g == fs.backupBG[0] || g == fs.backupBG[1]
	case !fs.sparse || g == 1:
		return true
	case g%2 == 0:
		return false
	}
	return isPow(g, 3) || isPow(g, 5) || isPow(g, 7)
}

func (fs *extFS) groupFirst(g int64) int64 { return fs.firstData + g*fs.bpg }

// superBlock is the block of group g's superblock (copy): the group's first
// block, except with 1 KiB blocks and bigalloc, where group 0 starts at
// block 0 but the superblock still sits at byte 1024.
func (fs *extFS) superBlock(g int64) int64 {
	b := fs.groupFirst(g)
	if b == 0 && fs.bs == 1024 {
		b = 1
	}
	return b
}

// descLoc returns the block holding the primary copy of descriptor block i
// (as e2fsprogs' ext2fs_descriptor_block_loc2).
func (fs *extFS) descLoc(i int64) int64 {
	if !fs.metaBG || i < fs.firstMetaBG {
		return fs.superBlock(0) + 1 + i
	}
	g := i * fs.descPerBlock
	b := fs.superBlock(g)
	if fs.hasSuper(g) {
		b++
	}
	return b
}

// superAndGDT adds group g's superblock backup and descriptor blocks.
func (fs *extFS) superAndGDT(g int64, add func(block, n int64)) {
	first := fs.superBlock(g)
	oldDesc := fs.descBlocks + fs.resGDT
	if fs.metaBG {
		oldDesc = min(fs.firstMetaBG, fs.bpg)
	}
	hs := fs.hasSuper(g)
	if hs {
		if g == 0 {
			add(0, first+1) // boot block (1 KiB blocks) and superblock
		} else {
			add(first, 1)
		}
		if oldDesc > 0 {
			add(first+1, oldDesc)
		}
	}
	if fs.metaBG {
		mg := g / fs.descPerBlock
		idx := g % fs.descPerBlock
		if mg >= fs.firstMetaBG && (idx == 0 || idx == 1 || idx == fs.descPerBlock-1) {
			b := first
			if hs {
				b++
			}
			add(b, 1)
		}
	}
}

func extUsed(r io.ReaderAt, size int64, sb []byte) (string, []disk.Extent, error) {
	fs, err := parseExtSuper(sb, size)
	if err != nil {
		return "", nil, err
	}
	fstype := extType(fs.compat, fs.incompat, fs.rocom)
	var c collector
	limit := fs.blocks * fs.bs
	add := func(block, n int64) {
		if block < 0 || n <= 0 || block >= fs.blocks {
			return
		}
		c.add(block*fs.bs, min(n, fs.blocks-block)*fs.bs)
	}
	itBlocks := (fs.ipg*fs.inodeSize + fs.bs - 1) / fs.bs
	desc := make([]byte, fs.bs)
	bitmap := make([]byte, fs.bs)
	curDesc := int64(-1)
	for g := int64(0); g < fs.groups; g++ {
		fs.superAndGDT(g, add)
		if di := g / fs.descPerBlock; di != curDesc {
			loc := fs.descLoc(di)
			if loc >= fs.blocks {
				return "", nil, corrupt("ext: descriptor block %d beyond the filesystem", loc)
			}
			if err := disk.ReadFull(r, desc, loc*fs.bs); err != nil {
				return "", nil, err
			}
			curDesc = di
		}
		d := desc[(g%fs.descPerBlock)*fs.descSize:]
		u32 := func(lo, hi int) int64 {
			v := int64(binary.LittleEndian.Uint32(d[lo:]))
			if fs.descSize >= 64 {
				v |= int64(binary.LittleEndian.Uint32(d[hi:])) << 32
			}
			return v
		}
		bbm, ibm, itab := u32(0x0, 0x20), u32(0x4, 0x24), u32(0x8, 0x28)
		flags := binary.LittleEndian.Uint16(d[0x12:])
		if bbm >= fs.blocks || ibm >= fs.blocks || itab+itBlocks > fs.blocks || bbm < fs.firstData {
			return "", nil, corrupt("ext: group %d metadata beyond the filesystem", g)
		}
		add(bbm, 1)
		add(ibm, 1)
		add(itab, itBlocks)
		if fs.csum && flags&extBGBlockUninit != 0 {
			// No bitmap on disk: the group holds only the metadata above.
			continue
		}
		if err := disk.ReadFull(r, bitmap, bbm*fs.bs); err != nil {
			return "", nil, err
		}
		first := fs.groupFirst(g)
		nbits := min(fs.cpg, (fs.blocks-first+fs.ratio-1)/fs.ratio)
		bitRuns(bitmap, nbits, func(s, n int64) { add(first+s*fs.ratio, n*fs.ratio) })
	}
	return fstype, c.result(limit), nil
}
