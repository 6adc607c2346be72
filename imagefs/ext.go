package imagefs

import (
	"encoding/binary"
	"fmt"
	"io"
	"io/fs"
	"time"
)

// ext2/3/4, read only: superblock, 32- and 64-bit group descriptors,
// inodes, extent trees and indirect blocks, linear and hashed (htree)
// directories (read linearly: an htree's index blocks look like empty
// entries), fast and slow symbolic links. Not read: inline data, META_BG
// descriptor layouts, encrypted files.

const (
	extMagic         = 0xEF53
	extIncompatType  = 0x2
	extIncompatMeta  = 0x10
	extIncompatExt   = 0x40
	extIncompat64    = 0x80
	extIncompatInl   = 0x8000
	extIncompatCrypt = 0x10000
	extFlExtents     = 0x80000
	extFlInline      = 0x10000000
	extFlEncrypt     = 0x800
	extRootIno       = 2
	// maxDirBytes bounds a directory read into memory.
	maxDirBytes = 64 << 20
)

type extFS struct {
	r           io.ReaderAt
	size        int64
	bs          int64
	blocks      uint64
	inodes      uint32
	ipg         uint32
	inodeSize   int64
	descSize    int64
	groups      uint32
	descStart   int64
	fileType    bool
	hugeFile    bool
	incompat    uint32
	firstDataBl uint32
}

type extNode struct {
	ino  uint32
	name string
	raw  []byte // the inode
}

func openExt(r io.ReaderAt, size int64) (*extFS, error) {
	sb := make([]byte, 1024)
	if _, err := r.ReadAt(sb, 1024); err != nil {
		return nil, fmt.Errorf("read superblock: %w", err)
	}
	le := binary.LittleEndian
	if le.Uint16(sb[0x38:]) != extMagic {
		return nil, fmt.Errorf("%w: no ext2/3/4 superblock magic", ErrCorrupt)
	}
	logBS := le.Uint32(sb[0x18:])
	if logBS > 6 {
		return nil, fmt.Errorf("%w: block size 2^(10+%d)", ErrCorrupt, logBS)
	}
	f := &extFS{r: r, size: size, bs: 1024 << logBS}
	f.inodes = le.Uint32(sb[0x00:])
	f.blocks = uint64(le.Uint32(sb[0x04:]))
	f.firstDataBl = le.Uint32(sb[0x14:])
	bpg := le.Uint32(sb[0x20:])
	f.ipg = le.Uint32(sb[0x28:])
	rev := le.Uint32(sb[0x4C:])
	f.inodeSize = 128
	if rev >= 1 {
		f.inodeSize = int64(le.Uint16(sb[0x58:]))
	}
	f.incompat = le.Uint32(sb[0x60:])
	f.hugeFile = le.Uint32(sb[0x64:])&0x8 != 0
	f.fileType = f.incompat&extIncompatType != 0
	f.descSize = 32
	if f.incompat&extIncompat64 != 0 {
		f.blocks |= uint64(le.Uint32(sb[0x150:])) << 32
		f.descSize = int64(le.Uint16(sb[0xFE:]))
		if f.descSize < 64 || f.descSize > 1024 || f.descSize&(f.descSize-1) != 0 {
			return nil, fmt.Errorf("%w: group descriptor size %d", ErrCorrupt, f.descSize)
		}
	}
	switch {
	case f.inodeSize < 128 || f.inodeSize > f.bs || f.inodeSize&(f.inodeSize-1) != 0:
		return nil, fmt.Errorf("%w: inode size %d", ErrCorrupt, f.inodeSize)
	case bpg == 0 || f.ipg == 0 || f.inodes == 0 || f.blocks == 0:
		return nil, fmt.Errorf("%w: empty geometry", ErrCorrupt)
	case f.blocks > uint64(size/f.bs)+1:
		return nil, fmt.Errorf("%w: %d blocks of %d bytes do not fit the %d-byte partition", ErrCorrupt, f.blocks, f.bs, size)
	case f.incompat&extIncompatMeta != 0:
		return nil, fmt.Errorf("%w: ext META_BG layout", ErrUnsupported)
	}
	f.groups = uint32((f.blocks - uint64(f.firstDataBl) + uint64(bpg) - 1) / uint64(bpg))
	if uint64(f.groups)*uint64(f.ipg) < uint64(f.inodes) {
		return nil, fmt.Errorf("%w: %d groups of %d inodes hold fewer than %d inodes", ErrCorrupt, f.groups, f.ipg, f.inodes)
	}
	f.descStart = (int64(f.firstDataBl) + 1) * f.bs
	return f, nil
}

func (f *extFS) readBlock(blk uint64, p []byte) error {
	if blk >= f.blocks {
		return fmt.Errorf("%w: block %d beyond the filesystem's %d", ErrCorrupt, blk, f.blocks)
	}
	if _, err := f.r.ReadAt(p, int64(blk)*f.bs); err != nil {
		return fmt.Errorf("read block %d: %w", blk, err)
	}
	return nil
}

func (f *extFS) inode(ino uint32, name string) (*extNode, error) {
	if ino == 0 || ino > f.inodes {
		return nil, fmt.Errorf("%w: inode %d out of range", ErrCorrupt, ino)
	}
	g := (ino - 1) / f.ipg
	idx := int64((ino - 1) % f.ipg)
	d := make([]byte, f.descSize)
	if _, err := f.r.ReadAt(d, f.descStart+int64(g)*f.descSize); err != nil {
		return nil, fmt.Errorf("read group descriptor %d: %w", g, err)
	}
	le := binary.LittleEndian
	table := uint64(le.Uint32(d[0x8:]))
	if f.descSize >= 64 {
		table |= uint64(le.Uint32(d[0x28:])) << 32
	}
	if table == 0 || table >= f.blocks {
		return nil, fmt.Errorf("%w: group %d: inode table at block %d", ErrCorrupt, g, table)
	}
	raw := make([]byte, f.inodeSize)
	if _, err := f.r.ReadAt(raw, int64(table)*f.bs+idx*f.inodeSize); err != nil {
		return nil, fmt.Errorf("read inode %d: %w", ino, err)
	}
	return &extNode{ino: ino, name: name, raw: raw}, nil
}

func (n *extNode) mode() uint16  { return binary.LittleEndian.Uint16(n.raw[0:]) }
func (n *extNode) flags() uint32 { return binary.LittleEndian.Uint32(n.raw[0x20:]) }
func (n *extNode) size() int64 {
	return int64(uint64(binary.LittleEndian.Uint32(n.raw[0x4:])) | uint64(binary.LittleEndian.Uint32(n.raw[0x6C:]))<<32)
}

func (f *extFS) root() (node, error) { return f.inode(extRootIno, "/") }

func (f *extFS) stat(nd node) (Entry, error) {
	n := nd.(*extNode)
	le := binary.LittleEndian
	m := n.mode()
	perm := fs.FileMode(m & 0o777)
	if m&0o4000 != 0 {
		perm |= fs.ModeSetuid
	}
	if m&0o2000 != 0 {
		perm |= fs.ModeSetgid
	}
	if m&0o1000 != 0 {
		perm |= fs.ModeSticky
	}
	switch m & 0xF000 {
	case 0x4000:
		perm |= fs.ModeDir
	case 0x8000:
	case 0xA000:
		perm |= fs.ModeSymlink
	case 0x2000:
		perm |= fs.ModeDevice | fs.ModeCharDevice
	case 0x6000:
		perm |= fs.ModeDevice
	case 0x1000:
		perm |= fs.ModeNamedPipe
	case 0xC000:
		perm |= fs.ModeSocket
	default:
		perm |= fs.ModeIrregular
	}
	sec := int64(int32(le.Uint32(n.raw[0x10:])))
	var nsec int64
	if f.inodeSize > 128 {
		extra := int64(le.Uint16(n.raw[0x80:]))
		if 128+extra >= 0x8C {
			x := le.Uint32(n.raw[0x88:])
			sec += int64(x&3) << 32
			nsec = int64(x >> 2)
		}
	}
	e := Entry{Name: n.name, Size: n.size(), Mode: perm, ModTime: time.Unix(sec, nsec%1e9).UTC()}
	if perm&fs.ModeSymlink != 0 {
		t, err := f.readlink(n)
		if err != nil {
			return e, err
		}
		e.Target = t
	}
	return e, nil
}

func (f *extFS) readlink(nd node) (string, error) {
	n := nd.(*extNode)
	size := n.size()
	if size > 4096 || size < 0 {
		return "", fmt.Errorf("%w: symbolic link %s of %d bytes", ErrCorrupt, n.name, size)
	}
	if size < 60 && n.flags()&(extFlExtents|extFlInline) == 0 {
		return string(n.raw[0x28 : 0x28+size]), nil
	}
	r, sz, err := f.open(n)
	if err != nil {
		return "", err
	}
	b := make([]byte, sz)
	if _, err := r.ReadAt(b, 0); err != nil && err != io.EOF {
		return "", err
	}
	return string(b), nil
}

// run maps count logical blocks from logical to physical (0: a hole or
// unwritten extent, reads as zeros).
type run struct {
	logical, physical, count uint64
}

// extFile reads a file through its block runs.
type extFile struct {
	f    *extFS
	runs []run // sorted by logical
	size int64
}

func (f *extFS) open(nd node) (io.ReaderAt, int64, error) {
	n := nd.(*extNode)
	fl := n.flags()
	if fl&extFlInline != 0 {
		return nil, 0, fmt.Errorf("%w: inline data (ext4 inline_data)", ErrUnsupported)
	}
	if fl&extFlEncrypt != 0 {
		return nil, 0, fmt.Errorf("%w: encrypted file", ErrUnsupported)
	}
	size := n.size()
	if size < 0 {
		return nil, 0, fmt.Errorf("%w: inode %d: size %d", ErrCorrupt, n.ino, size)
	}
	nblocks := uint64((size + f.bs - 1) / f.bs)
	var runs []run
	var err error
	if fl&extFlExtents != 0 {
		budget := f.blocks // tree blocks read: a sound tree has fewer
		runs, err = f.extents(n.raw[0x28:0x28+60], 0, nblocks, &budget)
	} else {
		runs, err = f.indirect(n.raw[0x28:0x28+60], nblocks)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("inode %d: %w", n.ino, err)
	}
	return &extFile{f: f, runs: runs, size: size}, size, nil
}

// extents flattens an extent tree node into runs; nblocks bounds the
// logical blocks that matter.
func (f *extFS) extents(b []byte, depth int, nblocks uint64, budget *uint64) ([]run, error) {
	le := binary.LittleEndian
	if len(b) < 12 || le.Uint16(b[0:]) != 0xF30A {
		return nil, fmt.Errorf("%w: bad extent header", ErrCorrupt)
	}
	entries := int(le.Uint16(b[2:]))
	d := int(le.Uint16(b[6:]))
	if 12+12*entries > len(b) || depth > 5 || d > 5 {
		return nil, fmt.Errorf("%w: extent node with %d entries, depth %d", ErrCorrupt, entries, d)
	}
	var out []run
	for i := range entries {
		e := b[12+12*i:]
		if d == 0 {
			lblk := uint64(le.Uint32(e[0:]))
			n := uint64(le.Uint16(e[4:]))
			phys := uint64(le.Uint16(e[6:]))<<32 | uint64(le.Uint32(e[8:]))
			if n > 32768 { // unwritten: reads as zeros
				n -= 32768
				phys = 0
			}
			if lblk >= nblocks {
				continue
			}
			if phys != 0 && phys+n > f.blocks {
				return nil, fmt.Errorf("%w: extent at block %d+%d beyond the filesystem", ErrCorrupt, phys, n)
			}
			out = append(out, run{logical: lblk, physical: phys, count: n})
			continue
		}
		leaf := uint64(le.Uint16(e[8:]))<<32 | uint64(le.Uint32(e[4:]))
		if *budget == 0 {
			return nil, fmt.Errorf("%w: extent tree reads more blocks than the filesystem has", ErrCorrupt)
		}
		*budget--
		blk := make([]byte, f.bs)
		if err := f.readBlock(leaf, blk); err != nil {
			return nil, err
		}
		sub, err := f.extents(blk, depth+1, nblocks, budget)
		if err != nil {
			return nil, err
		}
		out = append(out, sub...)
		if len(out) > 1<<22 {
			return nil, fmt.Errorf("%w: too many extents", ErrCorrupt)
		}
	}
	return out, nil
}

// indirect maps the classic i_block array: 12 direct blocks, then single,
// double and triple indirect blocks.
func (f *extFS) indirect(iblock []byte, nblocks uint64) ([]run, error) {
	le := binary.LittleEndian
	var out []run
	var logical uint64
	// A sound file maps at most as many blocks as the filesystem has and
	// reads fewer indirect blocks: a corrupt one that repeats a block
	// stops there instead of walking 2^30 pointers.
	budget := 2 * f.blocks
	add := func(phys uint64) error {
		if phys >= f.blocks {
			return fmt.Errorf("%w: block %d beyond the filesystem", ErrCorrupt, phys)
		}
		if phys != 0 {
			if budget == 0 {
				return fmt.Errorf("%w: indirect blocks map more than the filesystem holds", ErrCorrupt)
			}
			budget--
			if n := len(out); n > 0 && out[n-1].physical != 0 && out[n-1].logical+out[n-1].count == logical && out[n-1].physical+out[n-1].count == phys {
				out[n-1].count++
			} else {
				out = append(out, run{logical: logical, physical: phys, count: 1})
			}
		}
		logical++
		return nil
	}
	per := uint64(f.bs / 4)
	var walk func(blk uint64, level int) error
	walk = func(blk uint64, level int) error {
		span := uint64(1)
		for range level {
			span *= per
		}
		if blk == 0 { // a hole
			logical += span * per
			return nil
		}
		if budget == 0 {
			return fmt.Errorf("%w: indirect blocks map more than the filesystem holds", ErrCorrupt)
		}
		budget--
		b := make([]byte, f.bs)
		if err := f.readBlock(blk, b); err != nil {
			return err
		}
		for i := uint64(0); i < per && logical < nblocks; i++ {
			p := uint64(le.Uint32(b[4*i:]))
			if level == 0 {
				if err := add(p); err != nil {
					return err
				}
				continue
			}
			if err := walk(p, level-1); err != nil {
				return err
			}
		}
		return nil
	}
	for i := 0; i < 12 && logical < nblocks; i++ {
		if err := add(uint64(le.Uint32(iblock[4*i:]))); err != nil {
			return nil, err
		}
	}
	for level := range 3 {
		if logical >= nblocks {
			break
		}
		if err := walk(uint64(le.Uint32(iblock[48+4*level:])), level); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (x *extFile) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("negative offset %d", off)
	}
	if off >= x.size {
		return 0, io.EOF
	}
	want := len(p)
	if int64(len(p)) > x.size-off {
		p = p[:x.size-off]
	}
	bs := x.f.bs
	n := 0
	for n < len(p) {
		pos := off + int64(n)
		lblk := uint64(pos / bs)
		in := pos % bs
		// Find the run holding lblk (runs are few; binary search).
		lo, hi := 0, len(x.runs)
		for lo < hi {
			m := (lo + hi) / 2
			if x.runs[m].logical+x.runs[m].count <= lblk {
				lo = m + 1
			} else {
				hi = m
			}
		}
		var chunk int64
		if lo < len(x.runs) && x.runs[lo].logical <= lblk {
			r := x.runs[lo]
			chunk = min(int64(len(p)-n), int64(r.logical+r.count-lblk)*bs-in)
			if r.physical == 0 {
				clear(p[n : n+int(chunk)])
			} else if _, err := x.f.r.ReadAt(p[n:n+int(chunk)], int64(r.physical+lblk-r.logical)*bs+in); err != nil {
				return n, err
			}
		} else { // a hole up to the next run
			end := int64(len(p) - n)
			if lo < len(x.runs) {
				end = min(end, int64(x.runs[lo].logical)*bs-pos)
			}
			chunk = end
			clear(p[n : n+int(chunk)])
		}
		n += int(chunk)
	}
	if n < want {
		return n, io.EOF
	}
	return n, nil
}

// dirents calls fn for every live entry of directory n, reading its
// mapped blocks one at a time (holes hold no entries).
func (f *extFS) dirents(n *extNode, fn func(ino uint32, name string) bool) error {
	if n.mode()&0xF000 != 0x4000 {
		return ErrNotDir
	}
	r, size, err := f.open(n)
	if err != nil {
		return err
	}
	if size > maxDirBytes {
		return fmt.Errorf("%w: directory of %d bytes", ErrCorrupt, size)
	}
	x := r.(*extFile)
	var mapped uint64
	for _, rn := range x.runs {
		if rn.physical != 0 {
			mapped += rn.count
		}
	}
	if mapped > f.blocks {
		return fmt.Errorf("%w: directory inode %d maps %d blocks", ErrCorrupt, n.ino, mapped)
	}
	le := binary.LittleEndian
	b := make([]byte, f.bs)
	nblocks := uint64((size + f.bs - 1) / f.bs)
	for _, rn := range x.runs {
		if rn.physical == 0 {
			continue
		}
		for i := uint64(0); i < rn.count && rn.logical+i < nblocks; i++ {
			if err := f.readBlock(rn.physical+i, b); err != nil {
				return err
			}
			blockEnd := min(f.bs, size-int64(rn.logical+i)*f.bs)
			for off := int64(0); off+8 <= blockEnd; {
				ino := le.Uint32(b[off:])
				rl := int64(le.Uint16(b[off+4:]))
				nl := int64(b[off+6])
				if !f.fileType {
					nl = int64(le.Uint16(b[off+6:]))
				}
				if rl < 8 || off+rl > blockEnd || rl%4 != 0 {
					return fmt.Errorf("%w: directory inode %d: bad entry in block %d", ErrCorrupt, n.ino, rn.logical+i)
				}
				if ino != 0 && nl > 0 && 8+nl <= rl {
					name := string(b[off+8 : off+8+nl])
					if name != "." && name != ".." {
						if !fn(ino, name) {
							return nil
						}
					}
				}
				off += rl
			}
		}
	}
	return nil
}

func (f *extFS) lookup(dir node, name string) (node, error) {
	d := dir.(*extNode)
	var found uint32
	if err := f.dirents(d, func(ino uint32, n string) bool {
		if n == name {
			found = ino
			return false
		}
		return true
	}); err != nil {
		return nil, err
	}
	if found == 0 {
		return nil, ErrNotExist
	}
	return f.inode(found, name)
}

func (f *extFS) list(dir node) ([]Entry, error) {
	d := dir.(*extNode)
	var out []Entry
	var ierr error
	err := f.dirents(d, func(ino uint32, name string) bool {
		n, err := f.inode(ino, name)
		if err != nil {
			ierr = err
			return false
		}
		e, err := f.stat(n)
		if err != nil {
			ierr = err
			return false
		}
		out = append(out, e)
		return true
	})
	if err == nil {
		err = ierr
	}
	return out, err
}
