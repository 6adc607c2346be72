package disk

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"unicode/utf16"
)

func crc32IEEE(b []byte) uint32         { return crc32.ChecksumIEEE(b) }
func utf16Decode(u []uint16) []rune     { return utf16.Decode(u) }
func (t *Table) rawReader() io.ReaderAt { return &rawReader{t.Raw, t.DiskSize} }

// rawReader reads a disk made only of the table's raw regions (zeros elsewhere).
type rawReader struct {
	rr   []RawRegion
	size int64
}

func (r *rawReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off >= r.size {
		return 0, io.EOF
	}
	n := len(p)
	if int64(n) > r.size-off {
		n = int(r.size - off)
	}
	clear(p[:n])
	for _, g := range r.rr {
		lo, hi := max(off, g.Offset), min(off+int64(n), g.Offset+int64(len(g.Data)))
		if lo < hi {
			copy(p[lo-off:hi-off], g.Data[lo-g.Offset:hi-g.Offset])
		}
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// Needed returns the smallest disk size, in bytes, that holds every
// partition (and, for GPT, the backup table after them).
func (t *Table) Needed() int64 {
	ss := int64(t.SectorSize)
	var end int64
	for _, p := range t.Partitions {
		end = max(end, p.End())
	}
	switch t.Kind {
	case "none":
		return t.DiskSize
	case "gpt":
		entries := int64(16384)
		if _, l, err := parseGPT(t.rawReader(), t.DiskSize, t.SectorSize); err == nil {
			entries = int64(len(l.primEntries))
			end = max(end, int64(l.primary.firstUsable)*ss)
		}
		return roundUp(end, ss) + entries + ss
	}
	return roundUp(max(end, ss), ss)
}

func (t *Table) clone() *Table {
	c := *t
	c.Partitions = append([]Partition(nil), t.Partitions...)
	c.Raw = make([]RawRegion, len(t.Raw))
	for i, r := range t.Raw {
		c.Raw[i] = RawRegion{Offset: r.Offset, Data: append([]byte(nil), r.Data...)}
	}
	return &c
}

// ForDisk returns the table to write onto a disk of newSize bytes: the same
// table when the sizes match; for a larger disk the GPT backup header and
// entries move to the new end and the last usable LBA grows; with growLast
// the last partition grows to fill the disk. A disk too small for the
// partitions gives an error wrapping ErrTooSmall that says how much space
// they need; nothing is written by ForDisk.
func (t *Table) ForDisk(newSize int64, growLast bool) (*Table, error) {
	if t.SectorSize != 512 && t.SectorSize != 4096 {
		return nil, fmt.Errorf("unsupported sector size %d", t.SectorSize)
	}
	ss := int64(t.SectorSize)
	newSize = newSize / ss * ss
	if need := t.Needed(); newSize < need {
		return nil, fmt.Errorf("%w: the partitions need %d bytes (%s), the disk has %d bytes (%s)",
			ErrTooSmall, need, human(need), newSize, human(newSize))
	}
	if newSize == t.DiskSize && !growLast {
		return t.clone(), nil
	}
	switch t.Kind {
	case "none":
		c := t.clone()
		c.DiskSize = newSize
		return c, nil
	case "mbr":
		return t.mbrForDisk(newSize, growLast)
	case "gpt":
		return t.gptForDisk(newSize, growLast)
	}
	return nil, fmt.Errorf("unknown partition table kind %q", t.Kind)
}

func human(n int64) string {
	const u = "KMGTPE"
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	f, i := float64(n)/1024, 0
	for f >= 1024 && i < len(u)-1 {
		f /= 1024
		i++
	}
	return fmt.Sprintf("%.1f %ciB", f, u[i])
}

// at returns the writable bytes [off, off+n) inside one raw region.
func at(rr []RawRegion, off int64, n int) ([]byte, error) {
	for _, r := range rr {
		if off >= r.Offset && off+int64(n) <= r.Offset+int64(len(r.Data)) {
			return r.Data[off-r.Offset : off-r.Offset+int64(n)], nil
		}
	}
	return nil, fmt.Errorf("table structure at byte %d is not in the saved raw regions", off)
}

// chs encodes an LBA as a 3-byte CHS address with the usual 255/63 geometry.
func chs(lba uint32) [3]byte {
	const heads, spt = 255, 63
	c := lba / (heads * spt)
	if c > 1023 {
		return [3]byte{0xfe, 0xff, 0xff}
	}
	h := (lba / spt) % heads
	s := lba%spt + 1
	return [3]byte{byte(h), byte(s) | byte((c>>2)&0xc0), byte(c)}
}

// setMBRSize sets the sector count (and end CHS) of the entry at e, whose
// start LBA is absolute startLBA.
func setMBRSize(e []byte, startLBA, sectors uint32) {
	binary.LittleEndian.PutUint32(e[12:], sectors)
	c := chs(startLBA + sectors - 1)
	copy(e[5:8], c[:])
}

func (t *Table) mbrForDisk(newSize int64, growLast bool) (*Table, error) {
	c := t.clone()
	c.DiskSize = newSize
	l, _, err := parseMBR(c.rawReader(), t.DiskSize)
	if err != nil {
		return nil, fmt.Errorf("saved MBR: %w", err)
	}
	if growLast && len(l.parts) > 0 {
		newEnd := min(newSize, int64(0xffffffff)*512) / 512 * 512
		var maxEnd int64
		last, ext := -1, -1
		for i, p := range l.parts {
			if p.IsExtended() && l.ebrOf[i] < 0 {
				ext = i
			}
			if p.End() > maxEnd || (p.End() == maxEnd && p.IsExtended()) {
				maxEnd, last = p.End(), i
			}
		}
		grow := func(i int) error {
			e, err := at(c.Raw, l.entryOff[i], 16)
			if err != nil {
				return err
			}
			setMBRSize(e, uint32(l.parts[i].Start/512), uint32((newEnd-l.parts[i].Start)/512))
			return nil
		}
		if newEnd > maxEnd {
			if last == ext {
				// Grow the extended container and the logical partition that ends last in it.
				if err := grow(ext); err != nil {
					return nil, err
				}
				ll := -1
				for i := range l.parts {
					if l.ebrOf[i] >= 0 && (ll < 0 || l.parts[i].End() > l.parts[ll].End()) {
						ll = i
					}
				}
				if ll >= 0 && l.parts[ll].End() == maxEnd {
					if err := grow(ll); err != nil {
						return nil, err
					}
					if l.linkOff[ll] >= 0 {
						e, err := at(c.Raw, l.linkOff[ll], 16)
						if err != nil {
							return nil, err
						}
						setMBRSize(e, uint32(l.ebrOf[ll]/512), uint32((newEnd-l.ebrOf[ll])/512))
					}
				}
			} else if l.ebrOf[last] < 0 {
				if err := grow(last); err != nil {
					return nil, err
				}
			}
		}
	}
	l2, _, err := parseMBR(c.rawReader(), newSize)
	if err != nil {
		return nil, fmt.Errorf("adjusted MBR: %w", err)
	}
	c.Partitions = l2.parts
	return c, nil
}

func (t *Table) gptForDisk(newSize int64, growLast bool) (*Table, error) {
	return t.gptEdit(newSize, func(entries []byte, p *gptHeader, lastUsable uint64) error {
		if growLast {
			growLastGPT(entries, p, lastUsable)
		}
		return nil
	})
}

// growLastGPT extends the entry that ends last to lastUsable.
func growLastGPT(entries []byte, p *gptHeader, lastUsable uint64) {
	{
		best, bestEnd := -1, uint64(0)
		for i := uint32(0); i < p.numEntries; i++ {
			e := entries[int64(i)*int64(p.entrySize):]
			if AllZero(e[:16]) {
				continue
			}
			if end := binary.LittleEndian.Uint64(e[40:]); best < 0 || end > bestEnd {
				best, bestEnd = int(i), end
			}
		}
		if best >= 0 && bestEnd < lastUsable {
			binary.LittleEndian.PutUint64(entries[int64(best)*int64(p.entrySize)+40:], lastUsable)
		}
	}
}

// gptEdit lays the saved GPT out on a disk of newSize bytes (backup
// structures at the new end) after edit changed the entries.
func (t *Table) gptEdit(newSize int64, edit func(entries []byte, p *gptHeader, lastUsable uint64) error) (*Table, error) {
	_, l, err := parseGPT(t.rawReader(), t.DiskSize, t.SectorSize)
	if err != nil {
		return nil, fmt.Errorf("saved GPT: %w", err)
	}
	c := t.clone()
	c.DiskSize = newSize
	ss := l.ss
	sectors := uint64(newSize / ss)
	entrySectors := uint64(int64(len(l.primEntries)) / ss)
	bkHdr := sectors - 1
	bkEntries := bkHdr - entrySectors
	lastUsable := bkEntries - 1

	entries := append([]byte(nil), l.primEntries...)
	p := l.primary
	if err := edit(entries, p, lastUsable); err != nil {
		return nil, err
	}
	crc := crc32IEEE(entries[:p.entriesBytes])

	prim := *p
	prim.raw = append([]byte(nil), p.raw...)
	prim.altLBA, prim.lastUsable, prim.entriesCRC = bkHdr, lastUsable, crc
	prim.encode()
	bk := prim
	if l.backup != nil {
		bk.raw = append([]byte(nil), l.backup.raw...)
	} else {
		bk.raw = append([]byte(nil), prim.raw...)
	}
	bk.myLBA, bk.altLBA, bk.entryLBA = bkHdr, 1, bkEntries
	bk.encode()

	old := map[int64]bool{0: true, ss: true, int64(p.entryLBA) * ss: true}
	if l.backup != nil {
		old[int64(l.backup.entryLBA)*ss] = true
		old[int64(l.backup.myLBA)*ss] = true
	}
	var pmbr []byte
	var keep []RawRegion
	for _, r := range c.Raw {
		if r.Offset == 0 {
			pmbr = r.Data
		}
		if !old[r.Offset] {
			keep = append(keep, r)
		}
	}
	if pmbr == nil {
		pmbr = make([]byte, ss)
	}
	// The protective entry covers the whole disk (capped at 2^32-1 sectors)
	// when it did so before.
	oldFull := uint32(min(uint64(t.DiskSize/ss)-1, 0xffffffff))
	for i := 0; i < 4; i++ {
		e := pmbr[446+16*i : 446+16*i+16]
		if e[4] == 0xee && binary.LittleEndian.Uint32(e[8:]) == 1 && binary.LittleEndian.Uint32(e[12:]) == oldFull {
			setMBRSize(e, 1, uint32(min(sectors-1, 0xffffffff)))
		}
	}
	nl := &gptLayout{ss: ss, primary: &prim, backup: &bk, primEntries: entries, bkEntries: entries}
	c.Raw = append(nl.regions(pmbr), keep...)
	sortRaw(c.Raw)
	t2, _, err := parseGPT(c.rawReader(), newSize, t.SectorSize)
	if err != nil {
		return nil, fmt.Errorf("adjusted GPT: %w", err)
	}
	c.Partitions = t2.Partitions
	return c, nil
}

// WriteTable writes the table's raw regions. Call ForDisk first: it checks
// that the table fits and adjusts it to the disk. For an MBR table, a stale
// GPT header at LBA 1 (from the disk's previous life) is wiped unless the
// saved regions cover that sector.
func WriteTable(w io.WriterAt, t *Table) error {
	for _, r := range t.Raw {
		if r.Offset < 0 || r.Offset+int64(len(r.Data)) > t.DiskSize {
			return fmt.Errorf("table region at %d (+%d) is outside the %d-byte disk", r.Offset, len(r.Data), t.DiskSize)
		}
	}
	if t.Kind == "mbr" && t.DiskSize >= 1024 {
		covered := false
		for _, r := range t.Raw {
			if r.Offset < 1024 && r.Offset+int64(len(r.Data)) > 512 {
				covered = true
			}
		}
		for _, p := range t.Partitions {
			if p.Start < 1024 {
				covered = true
			}
		}
		if !covered {
			if _, err := w.WriteAt(make([]byte, 512), 512); err != nil {
				return fmt.Errorf("wipe stale GPT header: %w", err)
			}
		}
	}
	for _, r := range t.Raw {
		if _, err := w.WriteAt(r.Data, r.Offset); err != nil {
			return fmt.Errorf("write partition table at byte %d: %w", r.Offset, err)
		}
	}
	return nil
}
