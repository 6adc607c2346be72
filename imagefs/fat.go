package imagefs

import (
	"encoding/binary"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"time"
	"unicode/utf16"
)

// FAT12/16/32, read only: the BIOS parameter block, the FAT's cluster
// chains, the fixed root directory of FAT12/16, long (VFAT) names with
// their checksum, the short names' lower-case flags. Names match without
// regard to case, as on FAT.

type fatFS struct {
	r        io.ReaderAt
	kind     string // fat12, fat16, fat32
	bps      int64  // bytes per sector
	cs       int64  // bytes per cluster
	fatOff   int64
	fatSize  int64 // bytes of one FAT
	rootOff  int64 // FAT12/16: fixed root directory
	rootLen  int64
	rootClus uint32 // FAT32
	dataOff  int64
	clusters uint32 // data clusters (numbered from 2)
}

type fatNode struct {
	name    string
	dir     bool
	root    bool
	cluster uint32
	size    int64
	attr    byte
	mtime   time.Time
}

func openFAT(r io.ReaderAt, size int64) (*fatFS, error) {
	b := make([]byte, 512)
	if _, err := r.ReadAt(b, 0); err != nil {
		return nil, fmt.Errorf("read boot sector: %w", err)
	}
	le := binary.LittleEndian
	f := &fatFS{r: r, bps: int64(le.Uint16(b[0x0B:]))}
	spc := int64(b[0x0D])
	reserved := int64(le.Uint16(b[0x0E:]))
	nfats := int64(b[0x10])
	rootEnts := int64(le.Uint16(b[0x11:]))
	total := int64(le.Uint16(b[0x13:]))
	if total == 0 {
		total = int64(le.Uint32(b[0x20:]))
	}
	fatSecs := int64(le.Uint16(b[0x16:]))
	if fatSecs == 0 {
		fatSecs = int64(le.Uint32(b[0x24:]))
	}
	switch {
	case f.bps < 512 || f.bps > 4096 || f.bps&(f.bps-1) != 0:
		return nil, fmt.Errorf("%w: FAT: %d bytes per sector", ErrCorrupt, f.bps)
	case spc == 0 || spc&(spc-1) != 0:
		return nil, fmt.Errorf("%w: FAT: %d sectors per cluster", ErrCorrupt, spc)
	case reserved == 0 || nfats == 0 || fatSecs == 0 || total == 0:
		return nil, fmt.Errorf("%w: FAT: empty geometry", ErrCorrupt)
	case total*f.bps > size:
		return nil, fmt.Errorf("%w: FAT: %d sectors do not fit the %d-byte partition", ErrCorrupt, total, size)
	}
	f.cs = spc * f.bps
	f.fatOff = reserved * f.bps
	f.fatSize = fatSecs * f.bps
	rootSecs := (rootEnts*32 + f.bps - 1) / f.bps
	f.rootOff = f.fatOff + nfats*f.fatSize
	f.rootLen = rootEnts * 32
	first := reserved + nfats*fatSecs + rootSecs
	if first >= total {
		return nil, fmt.Errorf("%w: FAT: no data area", ErrCorrupt)
	}
	f.dataOff = first * f.bps
	f.clusters = uint32((total - first) / spc)
	switch {
	case f.clusters < 4085:
		f.kind = "fat12"
	case f.clusters < 65525:
		f.kind = "fat16"
	default:
		f.kind = "fat32"
		f.rootClus = le.Uint32(b[0x2C:])
		if f.rootClus < 2 || f.rootClus >= f.clusters+2 {
			return nil, fmt.Errorf("%w: FAT32: root cluster %d", ErrCorrupt, f.rootClus)
		}
	}
	need := int64(f.clusters+2) * 3 / 2
	if f.kind == "fat16" {
		need = int64(f.clusters+2) * 2
	} else if f.kind == "fat32" {
		need = int64(f.clusters+2) * 4
	}
	if need > f.fatSize {
		return nil, fmt.Errorf("%w: FAT of %d bytes too small for %d clusters", ErrCorrupt, f.fatSize, f.clusters)
	}
	return f, nil
}

// next returns the FAT entry of cluster c.
func (f *fatFS) next(c uint32) (uint32, error) {
	le := binary.LittleEndian
	var b [4]byte
	switch f.kind {
	case "fat12":
		off := int64(c) + int64(c)/2
		if _, err := f.r.ReadAt(b[:2], f.fatOff+off); err != nil {
			return 0, fmt.Errorf("read FAT: %w", err)
		}
		v := uint32(le.Uint16(b[:]))
		if c&1 == 1 {
			v >>= 4
		}
		v &= 0xFFF
		if v >= 0xFF7 {
			v |= 0x0FFFF000
		}
		return v, nil
	case "fat16":
		if _, err := f.r.ReadAt(b[:2], f.fatOff+int64(c)*2); err != nil {
			return 0, fmt.Errorf("read FAT: %w", err)
		}
		v := uint32(le.Uint16(b[:]))
		if v >= 0xFFF7 {
			v |= 0x0FFF0000
		}
		return v, nil
	default:
		if _, err := f.r.ReadAt(b[:], f.fatOff+int64(c)*4); err != nil {
			return 0, fmt.Errorf("read FAT: %w", err)
		}
		return le.Uint32(b[:]) & 0x0FFFFFFF, nil
	}
}

// chain returns the clusters of the chain starting at c, at most limit.
func (f *fatFS) chain(c uint32, limit int64) ([]uint32, error) {
	var out []uint32
	for c >= 2 && c < 0x0FFFFFF7 && int64(len(out)) < limit {
		if c >= f.clusters+2 {
			return nil, fmt.Errorf("%w: FAT: cluster %d beyond the %d data clusters", ErrCorrupt, c, f.clusters)
		}
		if int64(len(out)) > int64(f.clusters) {
			return nil, fmt.Errorf("%w: FAT: cluster chain loops", ErrCorrupt)
		}
		out = append(out, c)
		n, err := f.next(c)
		if err != nil {
			return nil, err
		}
		c = n
	}
	if c == 0x0FFFFFF7 {
		return nil, fmt.Errorf("%w: FAT: chain reaches a bad cluster", ErrCorrupt)
	}
	return out, nil
}

type fatFile struct {
	f        *fatFS
	clusters []uint32
	size     int64
}

func (x *fatFile) ReadAt(p []byte, off int64) (int, error) {
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
	n := 0
	for n < len(p) {
		pos := off + int64(n)
		ci := pos / x.f.cs
		in := pos % x.f.cs
		if ci >= int64(len(x.clusters)) {
			return n, fmt.Errorf("%w: FAT: file of %d bytes has a chain of %d clusters", ErrCorrupt, x.size, len(x.clusters))
		}
		l := min(int64(len(p)-n), x.f.cs-in)
		if _, err := x.f.r.ReadAt(p[n:n+int(l)], x.f.dataOff+int64(x.clusters[ci]-2)*x.f.cs+in); err != nil {
			return n, err
		}
		n += int(l)
	}
	if n < want {
		return n, io.EOF
	}
	return n, nil
}

func (f *fatFS) root() (node, error) {
	return &fatNode{name: "/", dir: true, root: true, cluster: f.rootClus}, nil
}

func (f *fatFS) stat(nd node) (Entry, error) {
	n := nd.(*fatNode)
	mode := fs.FileMode(0o644)
	if n.attr&0x01 != 0 { // read only
		mode = 0o444
	}
	if n.dir {
		mode = fs.ModeDir | 0o755
	}
	size := n.size
	if n.dir {
		size = 0
	}
	return Entry{Name: n.name, Size: size, Mode: mode, ModTime: n.mtime}, nil
}

func (f *fatFS) readlink(node) (string, error) { return "", fmt.Errorf("FAT has no symbolic links") }

func (f *fatFS) open(nd node) (io.ReaderAt, int64, error) {
	n := nd.(*fatNode)
	if n.size > 0xFFFFFFFF {
		return nil, 0, fmt.Errorf("%w: FAT file of %d bytes", ErrCorrupt, n.size)
	}
	cl, err := f.chain(n.cluster, (n.size+f.cs-1)/f.cs)
	if err != nil {
		return nil, 0, err
	}
	if int64(len(cl))*f.cs < n.size {
		return nil, 0, fmt.Errorf("%w: FAT: %s has %d bytes but a chain of %d clusters", ErrCorrupt, n.name, n.size, len(cl))
	}
	return &fatFile{f: f, clusters: cl, size: n.size}, n.size, nil
}

// dirBytes reads a whole directory.
func (f *fatFS) dirBytes(n *fatNode) ([]byte, error) {
	if n.root && f.kind != "fat32" {
		b := make([]byte, f.rootLen)
		if _, err := f.r.ReadAt(b, f.rootOff); err != nil {
			return nil, fmt.Errorf("read root directory: %w", err)
		}
		return b, nil
	}
	cl, err := f.chain(n.cluster, maxDirBytes/f.cs)
	if err != nil {
		return nil, err
	}
	b := make([]byte, int64(len(cl))*f.cs)
	x := &fatFile{f: f, clusters: cl, size: int64(len(b))}
	if _, err := x.ReadAt(b, 0); err != nil && err != io.EOF {
		return nil, err
	}
	return b, nil
}

// entries parses a directory.
func (f *fatFS) entries(dir *fatNode) ([]*fatNode, error) {
	if !dir.dir {
		return nil, ErrNotDir
	}
	b, err := f.dirBytes(dir)
	if err != nil {
		return nil, err
	}
	le := binary.LittleEndian
	var out []*fatNode
	var lfn []uint16
	var lfnSum byte
	lfnNext := 0 // the sequence number expected next, 0: none pending
	for off := 0; off+32 <= len(b); off += 32 {
		e := b[off : off+32]
		if e[0] == 0 {
			break
		}
		if e[0] == 0xE5 {
			lfnNext = 0
			continue
		}
		attr := e[11]
		if attr&0x3F == 0x0F { // long name piece
			seq := int(e[0] & 0x1F)
			if e[0]&0x40 != 0 {
				lfn = make([]uint16, 13*seq)
				lfnSum = e[13]
				lfnNext = seq
			}
			if seq == 0 || seq != lfnNext || e[13] != lfnSum || len(lfn) < 13*seq {
				lfnNext = 0
				continue
			}
			part := lfn[13*(seq-1):]
			for i, o := range []int{1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30} {
				part[i] = le.Uint16(e[o:])
			}
			lfnNext = seq - 1
			if lfnNext == 0 {
				lfnNext = -1 // complete: the short entry follows
			}
			continue
		}
		if attr&0x08 != 0 { // volume label
			lfnNext = 0
			continue
		}
		name := ""
		if lfnNext == -1 && lfnSum == shortSum(e[:11]) {
			u := lfn
			for i, c := range u {
				if c == 0 {
					u = u[:i]
					break
				}
			}
			name = string(utf16.Decode(u))
		}
		lfnNext = 0
		if name == "" {
			name = shortName(e)
		}
		if name == "." || name == ".." || name == "" {
			continue
		}
		cl := uint32(le.Uint16(e[26:]))
		if f.kind == "fat32" {
			cl |= uint32(le.Uint16(e[20:])) << 16
		}
		out = append(out, &fatNode{
			name: name, dir: attr&0x10 != 0, cluster: cl, attr: attr,
			size:  int64(le.Uint32(e[28:])),
			mtime: fatTime(le.Uint16(e[24:]), le.Uint16(e[22:])),
		})
	}
	return out, nil
}

func shortSum(name []byte) byte {
	var s byte
	for _, c := range name {
		s = (s>>1 | s<<7) + c
	}
	return s
}

func shortName(e []byte) string {
	base := strings.TrimRight(string(e[0:8]), " ")
	ext := strings.TrimRight(string(e[8:11]), " ")
	if base != "" && base[0] == 0x05 {
		base = "\xe5" + base[1:]
	}
	if e[12]&0x08 != 0 {
		base = strings.ToLower(base)
	}
	if e[12]&0x10 != 0 {
		ext = strings.ToLower(ext)
	}
	if ext == "" {
		return base
	}
	return base + "." + ext
}

func fatTime(date, tm uint16) time.Time {
	if date == 0 {
		return time.Time{}
	}
	return time.Date(1980+int(date>>9), time.Month(date>>5&0xF), int(date&0x1F),
		int(tm>>11), int(tm>>5&0x3F), int(tm&0x1F)*2, 0, time.UTC)
}

func (f *fatFS) lookup(dir node, name string) (node, error) {
	es, err := f.entries(dir.(*fatNode))
	if err != nil {
		return nil, err
	}
	for _, e := range es {
		if strings.EqualFold(e.name, name) {
			return e, nil
		}
	}
	return nil, ErrNotExist
}

func (f *fatFS) list(dir node) ([]Entry, error) {
	es, err := f.entries(dir.(*fatNode))
	if err != nil {
		return nil, err
	}
	out := make([]Entry, 0, len(es))
	for _, e := range es {
		s, _ := f.stat(e)
		out = append(out, s)
	}
	return out, nil
}
