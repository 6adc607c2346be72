package efiboot

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf16"
)

// FS is a read-only view of a FAT12/16/32 filesystem (an EFI System
// Partition) read straight from the partition bytes. It reads directories
// only; every lookup is bounded by the filesystem's own geometry.
type FS struct {
	r          io.ReaderAt
	size       int64
	fatType    int // 12, 16 or 32
	bps        int64
	clusterLen int64
	fatOff     int64 // first FAT
	fatLen     int64 // bytes of one FAT
	rootOff    int64 // FAT12/16 fixed root directory
	rootLen    int64
	rootClus   uint32 // FAT32 root directory cluster
	dataOff    int64
	clusters   uint32 // number of data clusters
}

// DirEntry is one entry of a FAT directory.
type DirEntry struct {
	Name    string // long name when present, else the 8.3 name
	Short   string // the 8.3 name, e.g. "BOOTX64.EFI"
	IsDir   bool
	Size    uint32
	Cluster uint32
}

// Bounds against hostile or corrupt filesystems.
const (
	maxDirEntries = 1 << 14 // entries read per directory
	maxDepth      = 16      // path components per lookup
)

// ErrNotFAT is wrapped by OpenFS when the boot sector is not a FAT one.
var ErrNotFAT = errors.New("not a FAT filesystem")

// ErrNotExist is wrapped when a path is not on the filesystem.
var ErrNotExist = errors.New("no such file or directory")

// OpenFS reads the boot sector of a FAT filesystem of size bytes.
func OpenFS(r io.ReaderAt, size int64) (*FS, error) {
	bs := make([]byte, 512)
	if size < 512 {
		return nil, fmt.Errorf("%w: %d bytes", ErrNotFAT, size)
	}
	if n, err := r.ReadAt(bs, 0); n != len(bs) {
		return nil, fmt.Errorf("read FAT boot sector: %w", cmpErr(err))
	}
	if bs[510] != 0x55 || bs[511] != 0xaa {
		return nil, fmt.Errorf("%w: no 55 AA signature", ErrNotFAT)
	}
	bps := int64(binary.LittleEndian.Uint16(bs[11:]))
	spc := int64(bs[13])
	reserved := int64(binary.LittleEndian.Uint16(bs[14:]))
	nfats := int64(bs[16])
	rootEnts := int64(binary.LittleEndian.Uint16(bs[17:]))
	total := int64(binary.LittleEndian.Uint16(bs[19:]))
	if total == 0 {
		total = int64(binary.LittleEndian.Uint32(bs[32:]))
	}
	fatSz := int64(binary.LittleEndian.Uint16(bs[22:]))
	if fatSz == 0 {
		fatSz = int64(binary.LittleEndian.Uint32(bs[36:]))
	}
	switch {
	case bps < 512 || bps > 4096 || bps&(bps-1) != 0:
		return nil, fmt.Errorf("%w: %d bytes per sector", ErrNotFAT, bps)
	case spc == 0 || spc&(spc-1) != 0:
		return nil, fmt.Errorf("%w: %d sectors per cluster", ErrNotFAT, spc)
	case reserved == 0 || nfats == 0 || fatSz == 0 || total == 0:
		return nil, fmt.Errorf("%w: zero reserved sectors, FATs, FAT size or total sectors", ErrNotFAT)
	}
	fs := &FS{r: r, size: size, bps: bps, clusterLen: bps * spc}
	fs.fatOff = reserved * bps
	fs.fatLen = fatSz * bps
	fs.rootOff = fs.fatOff + nfats*fs.fatLen
	fs.rootLen = rootEnts * 32
	rootSecs := (fs.rootLen + bps - 1) / bps
	firstData := reserved + nfats*fatSz + rootSecs
	if firstData >= total {
		return nil, fmt.Errorf("%w: metadata (%d sectors) fills the volume (%d sectors)", ErrNotFAT, firstData, total)
	}
	fs.dataOff = firstData * bps
	nclus := (total - firstData) / spc
	switch {
	case nclus < 4085:
		fs.fatType = 12
	case nclus < 65525:
		fs.fatType = 16
	default:
		fs.fatType = 32
		if rootEnts != 0 {
			return nil, fmt.Errorf("%w: FAT32 with a fixed root directory", ErrNotFAT)
		}
		fs.rootClus = binary.LittleEndian.Uint32(bs[44:]) & 0x0fffffff
	}
	if nclus > 0x0ffffff5 {
		return nil, fmt.Errorf("%w: %d clusters", ErrNotFAT, nclus)
	}
	fs.clusters = uint32(nclus)
	// The FAT must map every cluster.
	if need := (int64(fs.clusters) + 2) * int64(fs.fatType) / 8; fs.fatLen < need {
		return nil, fmt.Errorf("%w: FAT of %d bytes for %d clusters", ErrNotFAT, fs.fatLen, fs.clusters)
	}
	if fs.fatType == 32 && !fs.validCluster(fs.rootClus) {
		return nil, fmt.Errorf("%w: root cluster %d out of range", ErrNotFAT, fs.rootClus)
	}
	return fs, nil
}

func cmpErr(err error) error {
	if err == nil || err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// Type is 12, 16 or 32.
func (fs *FS) Type() int { return fs.fatType }

func (fs *FS) validCluster(c uint32) bool { return c >= 2 && c < fs.clusters+2 }

// next returns the FAT entry of cluster c.
func (fs *FS) next(c uint32) (uint32, error) {
	var off int64
	var n int
	switch fs.fatType {
	case 12:
		off, n = int64(c)+int64(c)/2, 2
	case 16:
		off, n = int64(c)*2, 2
	default:
		off, n = int64(c)*4, 4
	}
	b := make([]byte, 4)
	if got, err := fs.r.ReadAt(b[:n], fs.fatOff+off); got != n {
		return 0, fmt.Errorf("read FAT entry %d: %w", c, cmpErr(err))
	}
	switch fs.fatType {
	case 12:
		v := uint32(binary.LittleEndian.Uint16(b))
		if c&1 == 1 {
			v >>= 4
		}
		return v & 0xfff, nil
	case 16:
		return uint32(binary.LittleEndian.Uint16(b)), nil
	default:
		return binary.LittleEndian.Uint32(b) & 0x0fffffff, nil
	}
}

func (fs *FS) isEOC(v uint32) bool {
	switch fs.fatType {
	case 12:
		return v >= 0xff8
	case 16:
		return v >= 0xfff8
	default:
		return v >= 0x0ffffff8
	}
}

// readChain reads the directory that starts at cluster c. The chain is at
// most as long as the filesystem has clusters, and no cluster may repeat.
func (fs *FS) readChain(c uint32, fn func([]byte) (bool, error)) error {
	seen := make(map[uint32]bool)
	buf := make([]byte, fs.clusterLen)
	for {
		if !fs.validCluster(c) {
			return fmt.Errorf("directory cluster %d out of range", c)
		}
		if seen[c] {
			return fmt.Errorf("cluster chain loops at %d", c)
		}
		seen[c] = true
		off := fs.dataOff + int64(c-2)*fs.clusterLen
		if n, err := fs.r.ReadAt(buf, off); n != len(buf) {
			return fmt.Errorf("read cluster %d: %w", c, cmpErr(err))
		}
		if done, err := fn(buf); done || err != nil {
			return err
		}
		nx, err := fs.next(c)
		if err != nil {
			return err
		}
		if fs.isEOC(nx) {
			return nil
		}
		c = nx
	}
}

// ReadDir lists the directory at a backslash (or slash) path; "" or "\" is
// the root. Lookups ignore case, as firmware does.
func (fs *FS) ReadDir(path string) ([]DirEntry, error) {
	comps := splitPath(path)
	if len(comps) > maxDepth {
		return nil, fmt.Errorf("%s: more than %d components", path, maxDepth)
	}
	ents, err := fs.readDir(0)
	if err != nil {
		return nil, fmt.Errorf("read root directory: %w", err)
	}
	for i, c := range comps {
		e, ok := find(ents, c)
		if !ok || !e.IsDir {
			return nil, fmt.Errorf("%s: %w", `\`+strings.Join(comps[:i+1], `\`), ErrNotExist)
		}
		if e.Cluster == 0 { // ".." to the root
			ents, err = fs.readDir(0)
		} else {
			ents, err = fs.readDir(e.Cluster)
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", `\`+strings.Join(comps[:i+1], `\`), err)
		}
	}
	return ents, nil
}

// ReadDirOf lists the subdirectory e of a directory already read.
func (fs *FS) ReadDirOf(e DirEntry) ([]DirEntry, error) {
	if !e.IsDir {
		return nil, fmt.Errorf("%s: not a directory", e.Name)
	}
	return fs.readDir(e.Cluster) // cluster 0: ".." of a top directory, the root
}

// Stat looks a path up; the returned entry's Name is the name as stored.
func (fs *FS) Stat(path string) (DirEntry, error) {
	comps := splitPath(path)
	if len(comps) == 0 {
		return DirEntry{Name: `\`, IsDir: true}, nil
	}
	dir, err := fs.ReadDir(strings.Join(comps[:len(comps)-1], `\`))
	if err != nil {
		return DirEntry{}, err
	}
	e, ok := find(dir, comps[len(comps)-1])
	if !ok {
		return DirEntry{}, fmt.Errorf("%s: %w", path, ErrNotExist)
	}
	return e, nil
}

func splitPath(p string) []string {
	var out []string
	for _, c := range strings.FieldsFunc(p, func(r rune) bool { return r == '\\' || r == '/' }) {
		if c != "." {
			out = append(out, c)
		}
	}
	return out
}

// Find returns the entry of ents called name, ignoring case.
func Find(ents []DirEntry, name string) (DirEntry, bool) { return find(ents, name) }

func find(ents []DirEntry, name string) (DirEntry, bool) {
	for _, e := range ents {
		if strings.EqualFold(e.Name, name) || strings.EqualFold(e.Short, name) {
			return e, true
		}
	}
	return DirEntry{}, false
}

// readDir reads the directory at cluster c (0: the root).
func (fs *FS) readDir(c uint32) ([]DirEntry, error) {
	var (
		ents []DirEntry
		lfn  lfnState
		n    int
	)
	parse := func(buf []byte) (bool, error) {
		for i := 0; i+32 <= len(buf); i += 32 {
			n++
			if n > maxDirEntries {
				return true, fmt.Errorf("more than %d directory entries", maxDirEntries)
			}
			d := buf[i : i+32]
			if d[0] == 0 {
				return true, nil
			}
			if d[0] == 0xe5 {
				lfn.reset()
				continue
			}
			attr := d[11]
			if attr&0x3f == 0x0f {
				lfn.add(d)
				continue
			}
			if attr&0x08 != 0 { // volume label
				lfn.reset()
				continue
			}
			short := shortName(d)
			e := DirEntry{
				Short:   short,
				Name:    short,
				IsDir:   attr&0x10 != 0,
				Size:    binary.LittleEndian.Uint32(d[28:]),
				Cluster: uint32(binary.LittleEndian.Uint16(d[26:])),
			}
			if fs.fatType == 32 {
				e.Cluster |= uint32(binary.LittleEndian.Uint16(d[20:])) << 16
			}
			if long, ok := lfn.name(lfnChecksum(d[:11])); ok {
				e.Name = long
			} else {
				e.Name = caseShort(d)
			}
			lfn.reset()
			if short == "." || short == ".." {
				continue
			}
			ents = append(ents, e)
		}
		return false, nil
	}
	var err error
	if c == 0 && fs.fatType != 32 {
		if fs.rootLen == 0 {
			return nil, nil
		}
		if fs.rootOff+fs.rootLen > fs.size {
			return nil, fmt.Errorf("root directory beyond the volume end")
		}
		buf := make([]byte, fs.rootLen)
		if got, rerr := fs.r.ReadAt(buf, fs.rootOff); got != len(buf) {
			return nil, fmt.Errorf("read root directory: %w", cmpErr(rerr))
		}
		_, err = parse(buf)
	} else {
		if c == 0 {
			c = fs.rootClus
		}
		err = fs.readChain(c, parse)
	}
	return ents, err
}

// shortName is the 8.3 name as stored, "NAME.EXT".
func shortName(d []byte) string {
	b := string(trimSpace(d[0:8]))
	if d[0] == 0x05 {
		b = "\xe5" + b[1:]
	}
	if e := string(trimSpace(d[8:11])); e != "" {
		return b + "." + e
	}
	return b
}

// caseShort applies the Windows NT lower-case flags (byte 12) to the 8.3 name.
func caseShort(d []byte) string {
	b := string(trimSpace(d[0:8]))
	e := string(trimSpace(d[8:11]))
	if d[12]&0x08 != 0 {
		b = strings.ToLower(b)
	}
	if d[12]&0x10 != 0 {
		e = strings.ToLower(e)
	}
	if e != "" {
		return b + "." + e
	}
	return b
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && b[len(b)-1] == ' ' {
		b = b[:len(b)-1]
	}
	return b
}

func lfnChecksum(n []byte) byte {
	var s byte
	for _, c := range n {
		s = (s>>1 | s<<7) + c
	}
	return s
}

// lfnState gathers the long-name entries that precede a short entry.
type lfnState struct {
	parts [20][13]uint16 // at most 20 entries of 13 characters (255 chars)
	have  uint32         // bit i: part i+1 present
	count int            // number of parts announced by the last-part flag
	sum   byte
}

func (l *lfnState) reset() { *l = lfnState{} }

func (l *lfnState) add(d []byte) {
	seq := int(d[0] & 0x1f)
	if seq == 0 || seq > len(l.parts) {
		l.reset()
		return
	}
	if d[0]&0x40 != 0 {
		l.reset()
		l.count, l.sum = seq, d[13]
	} else if l.count == 0 || d[13] != l.sum || seq >= l.count {
		l.reset()
		return
	}
	var p [13]uint16
	idx := 0
	for _, r := range [][2]int{{1, 11}, {14, 26}, {28, 32}} {
		for o := r[0]; o < r[1]; o += 2 {
			p[idx] = binary.LittleEndian.Uint16(d[o:])
			idx++
		}
	}
	l.parts[seq-1] = p
	l.have |= 1 << (seq - 1)
}

// name returns the assembled long name when all parts are present and the
// checksum matches the short entry.
func (l *lfnState) name(sum byte) (string, bool) {
	if l.count == 0 || l.sum != sum || l.have != (1<<l.count)-1 {
		return "", false
	}
	var u []uint16
loop:
	for i := 0; i < l.count; i++ {
		for _, c := range l.parts[i] {
			if c == 0 || c == 0xffff {
				break loop
			}
			u = append(u, c)
		}
	}
	if len(u) == 0 {
		return "", false
	}
	return string(utf16.Decode(u)), true
}
