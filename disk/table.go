package disk

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sort"
)

// Table is a disk's partition table, parsed and raw.
type Table struct {
	Kind       string      `json:"kind"` // "gpt", "mbr", "none"
	SectorSize int         `json:"sector_size"`
	DiskSize   int64       `json:"disk_size"` // bytes
	DiskID     string      `json:"disk_id,omitempty"`
	Partitions []Partition `json:"partitions"` // in table order
	// Raw holds the byte regions that make up the table, saved verbatim so a
	// restore reproduces it exactly on a same-size disk: MBR sector 0 (boot
	// code included) and the EBR chain of logical partitions; for GPT the
	// protective MBR, the primary header and entries, the backup entries and
	// header at the disk end. The non-zero parts of the gap between the table
	// and the first partition (where boot loaders such as GRUB's core.img
	// live) are kept as well, so a restored disk stays bootable.
	Raw []RawRegion `json:"raw,omitempty"`
}

// RawRegion is a byte range of the disk kept verbatim.
type RawRegion struct {
	Offset int64  `json:"offset"`
	Data   []byte `json:"data"`
}

// Partition is one entry of a partition table. For Kind "none" (a
// filesystem directly on the disk) Partitions holds one pseudo-partition
// with Index 0 that covers the whole disk.
type Partition struct {
	Index    int    `json:"index"` // 1-based as Linux numbers them; logical MBR partitions from 5
	Start    int64  `json:"start"` // bytes
	Size     int64  `json:"size"`  // bytes
	Type     string `json:"type"`  // GPT type GUID (lower case) or MBR type as "0x83"
	UUID     string `json:"uuid,omitempty"`
	Name     string `json:"name,omitempty"`
	Bootable bool   `json:"bootable,omitempty"`
	Attrs    uint64 `json:"attrs,omitempty"`
}

// End is the first byte after the partition.
func (p Partition) End() int64 { return p.Start + p.Size }

// IsExtended reports whether p is an MBR extended partition: a container of
// logical partitions with no filesystem of its own. Its EBRs are part of
// Table.Raw; capture must not read the container as data.
func (p Partition) IsExtended() bool {
	switch p.Type {
	case "0x05", "0x0f", "0x85":
		return true
	}
	return false
}

// ErrTooSmall is wrapped by the error ForDisk returns when the partitions do
// not fit on the target disk.
var ErrTooSmall = errors.New("disk too small")

const (
	maxGap         = 16 << 20 // boot-loader gap kept at most
	maxLogical     = 128      // EBR chain length bound
	gptSig         = "EFI PART"
	maxGPTEntries  = 4096
	maxGPTEntryLen = 4096
)

// ReadTable reads the partition table of a disk of size bytes.
func ReadTable(r io.ReaderAt, size int64) (*Table, error) {
	if size < 512 {
		return nil, fmt.Errorf("disk of %d bytes is too small for a partition table", size)
	}
	s0 := make([]byte, 512)
	if err := ReadFull(r, s0, 0); err != nil {
		return nil, fmt.Errorf("read sector 0: %w", err)
	}
	if s0[510] == 0x55 && s0[511] == 0xaa && hasProtective(s0) {
		for _, ss := range []int{512, 4096} {
			if int64(ss)*3 > size {
				continue
			}
			t, err := readGPT(r, size, ss)
			if err == nil {
				return t, nil
			}
			if !errors.Is(err, errNoGPT) {
				return nil, err
			}
		}
	}
	if s0[510] == 0x55 && s0[511] == 0xaa {
		// As Linux does: valid boot indicators make it an MBR. A FAT or NTFS
		// boot sector whose code happens to look like entries is told apart by
		// "partitions" that do not fit on the disk.
		t, err := readMBR(r, size)
		if err == nil && !(looksLikeBootSector(s0) && t.Needed() > size) {
			return t, nil
		}
		if err != nil && !errors.Is(err, errNoMBR) {
			return nil, err
		}
	}
	return &Table{Kind: "none", SectorSize: 512, DiskSize: size,
		Partitions: []Partition{{Index: 0, Start: 0, Size: size}}}, nil
}

var (
	errNoGPT = errors.New("no GPT")
	errNoMBR = errors.New("no valid MBR")
)

// ReadFull reads exactly len(b) bytes at off; a short read is an error
// wrapping io.ErrUnexpectedEOF.
func ReadFull(r io.ReaderAt, b []byte, off int64) error {
	n, err := r.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("read %d bytes at %d: %w", len(b), off, err)
}

func hasProtective(s0 []byte) bool {
	for i := 0; i < 4; i++ {
		if s0[446+16*i+4] == 0xee {
			return true
		}
	}
	return false
}

// looksLikeBootSector reports whether sector 0 is a FAT or NTFS boot sector
// (a filesystem on the whole disk, which also ends in 55 AA).
func looksLikeBootSector(s0 []byte) bool {
	if s0[0] != 0xeb && s0[0] != 0xe9 {
		return false
	}
	if string(s0[3:11]) == "NTFS    " || string(s0[3:11]) == "EXFAT   " {
		return true
	}
	bps := binary.LittleEndian.Uint16(s0[11:])
	if bps < 512 || bps > 4096 || bps&(bps-1) != 0 {
		return false
	}
	return bytes.HasPrefix(s0[54:], []byte("FAT1")) || bytes.HasPrefix(s0[54:], []byte("FAT ")) ||
		bytes.HasPrefix(s0[82:], []byte("FAT32"))
}

// ---- MBR ----

type mbrEntry struct {
	status   byte
	typ      byte
	lbaStart uint32
	sectors  uint32
}

func parseMBREntry(b []byte) mbrEntry {
	return mbrEntry{status: b[0], typ: b[4],
		lbaStart: binary.LittleEndian.Uint32(b[8:]), sectors: binary.LittleEndian.Uint32(b[12:])}
}

func isExtendedType(t byte) bool { return t == 0x05 || t == 0x0f || t == 0x85 }

// mbrLayout is a parsed MBR with the byte offsets of every entry, so ForDisk
// can patch entries in the raw sectors.
type mbrLayout struct {
	parts    []Partition
	entryOff []int64 // absolute offset of the 16-byte entry describing parts[i]
	ebrOf    []int64 // for logical partitions: the offset of their EBR; else -1
	linkOff  []int64 // for logical partitions: the entry in the previous EBR that links to their EBR; else -1
	ebrs     []int64 // offsets of all EBR sectors
	extStart int64   // extended partition start (bytes), -1 if none
}

func parseMBR(r io.ReaderAt, size int64) (*mbrLayout, []byte, error) {
	const ss = 512
	s0 := make([]byte, ss)
	if err := ReadFull(r, s0, 0); err != nil {
		return nil, nil, err
	}
	l := &mbrLayout{extStart: -1}
	nonEmpty := 0
	for i := 0; i < 4; i++ {
		e := parseMBREntry(s0[446+16*i:])
		if e.status != 0 && e.status != 0x80 {
			return nil, nil, errNoMBR
		}
		if e.typ == 0 || e.sectors == 0 {
			continue
		}
		if e.lbaStart == 0 {
			return nil, nil, errNoMBR
		}
		nonEmpty++
		p := Partition{Index: i + 1, Start: int64(e.lbaStart) * ss, Size: int64(e.sectors) * ss,
			Type: fmt.Sprintf("0x%02x", e.typ), Bootable: e.status == 0x80}
		l.parts = append(l.parts, p)
		l.entryOff = append(l.entryOff, int64(446+16*i))
		l.ebrOf = append(l.ebrOf, -1)
		l.linkOff = append(l.linkOff, -1)
		if isExtendedType(e.typ) && l.extStart < 0 {
			l.extStart = p.Start
		}
	}
	if nonEmpty == 0 {
		return nil, nil, errNoMBR
	}
	if l.extStart >= 0 {
		if err := l.walkEBRs(r, size); err != nil {
			return nil, nil, err
		}
	}
	return l, s0, nil
}

func (l *mbrLayout) walkEBRs(r io.ReaderAt, size int64) error {
	const ss = 512
	ebr := l.extStart
	link := int64(-1)
	seen := map[int64]bool{}
	buf := make([]byte, ss)
	for n := 0; n < maxLogical; n++ {
		if ebr+ss > size || seen[ebr] {
			break
		}
		seen[ebr] = true
		if err := ReadFull(r, buf, ebr); err != nil {
			return fmt.Errorf("read EBR at %d: %w", ebr, err)
		}
		if buf[510] != 0x55 || buf[511] != 0xaa {
			break
		}
		l.ebrs = append(l.ebrs, ebr)
		e := parseMBREntry(buf[446:])
		if e.typ != 0 && e.sectors != 0 {
			l.parts = append(l.parts, Partition{Index: 5 + n, Start: ebr + int64(e.lbaStart)*ss,
				Size: int64(e.sectors) * ss, Type: fmt.Sprintf("0x%02x", e.typ), Bootable: e.status == 0x80})
			l.entryOff = append(l.entryOff, ebr+446)
			l.ebrOf = append(l.ebrOf, ebr)
			l.linkOff = append(l.linkOff, link)
		}
		next := parseMBREntry(buf[446+16:])
		if next.typ == 0 || next.lbaStart == 0 {
			break
		}
		link = ebr + 446 + 16
		ebr = l.extStart + int64(next.lbaStart)*ss
	}
	return nil
}

func readMBR(r io.ReaderAt, size int64) (*Table, error) {
	l, s0, err := parseMBR(r, size)
	if err != nil {
		return nil, err
	}
	t := &Table{Kind: "mbr", SectorSize: 512, DiskSize: size,
		DiskID:     fmt.Sprintf("0x%08x", binary.LittleEndian.Uint32(s0[440:])),
		Partitions: l.parts}
	t.Raw = append(t.Raw, RawRegion{Offset: 0, Data: s0})
	for _, e := range l.ebrs {
		b := make([]byte, 512)
		if err := ReadFull(r, b, e); err != nil {
			return nil, err
		}
		t.Raw = append(t.Raw, RawRegion{Offset: e, Data: b})
	}
	gap, err := gapRegions(r, 512, t.firstStart(size))
	if err != nil {
		return nil, err
	}
	t.Raw = append(t.Raw, gap...)
	sortRaw(t.Raw)
	return t, nil
}

func (t *Table) firstStart(size int64) int64 {
	first := size
	for _, p := range t.Partitions {
		if p.Start < first && p.Size > 0 {
			first = p.Start
		}
	}
	return first
}

// gapRegions returns the non-zero runs of sectors in [from, to), limited to
// maxGap bytes: the boot-loader area before the first partition. Runs closer
// than 8 sectors apart are joined.
func gapRegions(r io.ReaderAt, from, to int64) ([]RawRegion, error) {
	to = min(to, from+maxGap)
	var out []RawRegion
	var run []byte
	runStart, lastNonZero := int64(-1), int64(-1)
	flush := func() {
		if runStart >= 0 {
			out = append(out, RawRegion{Offset: runStart, Data: run[:lastNonZero-runStart]})
			runStart, run = -1, nil
		}
	}
	buf := make([]byte, 64<<10)
	for off := from; off+512 <= to; off += int64(len(buf)) {
		n := int(min(int64(len(buf)), to-off)) / 512 * 512
		m, err := r.ReadAt(buf[:n], off)
		if err != nil && err != io.EOF {
			return nil, fmt.Errorf("read boot-loader gap: %w", err)
		}
		for s := 0; s+512 <= m; s += 512 {
			pos := off + int64(s)
			sec := buf[s : s+512]
			zero := AllZero(sec)
			if runStart >= 0 && zero && pos-lastNonZero >= 8*512 {
				flush()
			}
			if zero && runStart < 0 {
				continue
			}
			if runStart < 0 {
				runStart = pos
			}
			run = append(run, sec...)
			if !zero {
				lastNonZero = pos + 512
			}
		}
		if m < n {
			break
		}
	}
	flush()
	return out, nil
}

// AllZero reports whether b holds only zero bytes.
func AllZero(b []byte) bool {
	for len(b) >= 8 {
		if binary.LittleEndian.Uint64(b) != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func sortRaw(rr []RawRegion) {
	sort.SliceStable(rr, func(i, j int) bool { return rr[i].Offset < rr[j].Offset })
}

// ---- GPT ----

type gptHeader struct {
	raw          []byte // the header sector
	myLBA        uint64
	altLBA       uint64
	firstUsable  uint64
	lastUsable   uint64
	diskGUID     [16]byte
	entryLBA     uint64
	numEntries   uint32
	entrySize    uint32
	entriesCRC   uint32
	headerSize   uint32
	entriesBytes int64
}

func parseGPTHeader(b []byte) (*gptHeader, error) {
	if string(b[:8]) != gptSig {
		return nil, errNoGPT
	}
	h := &gptHeader{raw: b}
	h.headerSize = binary.LittleEndian.Uint32(b[12:])
	if h.headerSize < 92 || int(h.headerSize) > len(b) {
		return nil, fmt.Errorf("GPT header size %d: %w", h.headerSize, errNoGPT)
	}
	want := binary.LittleEndian.Uint32(b[16:])
	if gptHeaderCRC(b[:h.headerSize]) != want {
		return nil, fmt.Errorf("GPT header CRC mismatch: %w", errNoGPT)
	}
	h.myLBA = binary.LittleEndian.Uint64(b[24:])
	h.altLBA = binary.LittleEndian.Uint64(b[32:])
	h.firstUsable = binary.LittleEndian.Uint64(b[40:])
	h.lastUsable = binary.LittleEndian.Uint64(b[48:])
	copy(h.diskGUID[:], b[56:72])
	h.entryLBA = binary.LittleEndian.Uint64(b[72:])
	h.numEntries = binary.LittleEndian.Uint32(b[80:])
	h.entrySize = binary.LittleEndian.Uint32(b[84:])
	h.entriesCRC = binary.LittleEndian.Uint32(b[88:])
	if h.numEntries == 0 || h.numEntries > maxGPTEntries || h.entrySize < 128 ||
		h.entrySize > maxGPTEntryLen || h.entrySize%8 != 0 {
		return nil, fmt.Errorf("GPT entry array %d×%d: %w", h.numEntries, h.entrySize, errNoGPT)
	}
	h.entriesBytes = int64(h.numEntries) * int64(h.entrySize)
	return h, nil
}

func gptHeaderCRC(hdr []byte) uint32 {
	c := append([]byte(nil), hdr...)
	binary.LittleEndian.PutUint32(c[16:], 0)
	return crc32IEEE(c)
}

func roundUp(n, m int64) int64 { return (n + m - 1) / m * m }

func readGPT(r io.ReaderAt, size int64, ss int) (*Table, error) {
	t, _, err := parseGPT(r, size, ss)
	return t, err
}

// gptLayout locates the GPT structures of a parsed table.
type gptLayout struct {
	ss                     int64
	primary, backup        *gptHeader
	primEntries, bkEntries []byte
}

func parseGPT(r io.ReaderAt, size int64, ss int) (*Table, *gptLayout, error) {
	ss64 := int64(ss)
	sectors := size / ss64
	readHdr := func(lba uint64) (*gptHeader, error) {
		if lba == 0 || lba >= uint64(sectors) {
			return nil, errNoGPT
		}
		b := make([]byte, ss)
		if err := ReadFull(r, b, int64(lba)*ss64); err != nil {
			return nil, fmt.Errorf("read GPT header: %w", err)
		}
		return parseGPTHeader(b)
	}
	readEntries := func(h *gptHeader) ([]byte, error) {
		n := roundUp(h.entriesBytes, ss64)
		if h.entryLBA >= uint64(sectors) || int64(h.entryLBA)*ss64+n > size {
			return nil, fmt.Errorf("GPT entries beyond the disk: %w", errNoGPT)
		}
		b := make([]byte, n)
		if err := ReadFull(r, b, int64(h.entryLBA)*ss64); err != nil {
			return nil, fmt.Errorf("read GPT entries: %w", err)
		}
		if crc32IEEE(b[:h.entriesBytes]) != h.entriesCRC {
			return nil, fmt.Errorf("GPT entries CRC mismatch: %w", errNoGPT)
		}
		return b, nil
	}
	l := &gptLayout{ss: ss64}
	var perr, berr error
	l.primary, perr = readHdr(1)
	if perr == nil && l.primary.myLBA == 1 {
		l.primEntries, perr = readEntries(l.primary)
	} else if perr == nil {
		perr = errNoGPT
	}
	// The backup header: where the primary says, else the last sector.
	bl := uint64(sectors - 1)
	if perr == nil && l.primary.altLBA > 1 && l.primary.altLBA < uint64(sectors) {
		bl = l.primary.altLBA
	}
	l.backup, berr = readHdr(bl)
	if berr == nil && l.backup.myLBA == bl {
		l.bkEntries, berr = readEntries(l.backup)
	} else if berr == nil {
		berr = errNoGPT
	}
	if berr != nil {
		l.backup, l.bkEntries = nil, nil
		if perr == nil {
			// Backup damaged: rebuild it from the primary so the restored table is whole.
			l.backup = backupFromPrimary(l.primary, uint64(sectors), uint64(int64(len(l.primEntries))/ss64))
			if l.backup != nil {
				l.bkEntries = l.primEntries
			}
		}
	}
	h, entries := l.primary, l.primEntries
	if perr != nil {
		if berr != nil {
			return nil, nil, perr
		}
		// Primary damaged: rebuild it from the backup so the restored table is whole.
		h, entries = l.backup, l.bkEntries
		l.primary = primaryFromBackup(l.backup, ss64)
		l.primEntries = l.bkEntries
	}
	t := &Table{Kind: "gpt", SectorSize: ss, DiskSize: size, DiskID: guidString(h.diskGUID[:])}
	for i := uint32(0); i < h.numEntries; i++ {
		e := entries[int64(i)*int64(h.entrySize):]
		if AllZero(e[:16]) {
			continue
		}
		first := binary.LittleEndian.Uint64(e[32:])
		last := binary.LittleEndian.Uint64(e[40:])
		if last < first || last >= uint64(sectors)*4 {
			return nil, nil, fmt.Errorf("GPT entry %d: bad range %d-%d: %w", i+1, first, last, errNoGPT)
		}
		t.Partitions = append(t.Partitions, Partition{
			Index: int(i) + 1, Start: int64(first) * ss64, Size: int64(last-first+1) * ss64,
			Type: guidString(e[0:16]), UUID: guidString(e[16:32]),
			Attrs: binary.LittleEndian.Uint64(e[48:]), Name: utf16Name(e[56:128]),
		})
	}
	pmbr := make([]byte, ss)
	if err := ReadFull(r, pmbr, 0); err != nil {
		return nil, nil, err
	}
	t.Raw = l.regions(pmbr)
	primEnd := int64(l.primary.entryLBA)*ss64 + int64(len(l.primEntries))
	if primEnd < 2*ss64 {
		primEnd = 2 * ss64
	}
	gap, err := gapRegions(r, primEnd, t.firstStart(size))
	if err != nil {
		return nil, nil, err
	}
	t.Raw = append(t.Raw, gap...)
	sortRaw(t.Raw)
	return t, l, nil
}

// regions lists the GPT structures as raw regions (protective MBR first).
func (l *gptLayout) regions(pmbr []byte) []RawRegion {
	rr := []RawRegion{
		{Offset: 0, Data: pmbr},
		{Offset: l.ss, Data: l.primary.raw},
		{Offset: int64(l.primary.entryLBA) * l.ss, Data: l.primEntries},
	}
	if l.backup != nil {
		rr = append(rr,
			RawRegion{Offset: int64(l.backup.entryLBA) * l.ss, Data: l.bkEntries},
			RawRegion{Offset: int64(l.backup.myLBA) * l.ss, Data: l.backup.raw})
	}
	return rr
}

func primaryFromBackup(b *gptHeader, ss int64) *gptHeader {
	p := *b
	p.raw = append([]byte(nil), b.raw...)
	p.myLBA, p.altLBA = 1, b.myLBA
	p.entryLBA = 2
	p.encode()
	return &p
}

func backupFromPrimary(p *gptHeader, sectors, entrySectors uint64) *gptHeader {
	b := *p
	b.raw = append([]byte(nil), p.raw...)
	b.myLBA = p.altLBA
	if b.myLBA <= p.lastUsable || b.myLBA >= sectors {
		b.myLBA = sectors - 1
	}
	if b.myLBA < entrySectors+3 {
		return nil
	}
	b.altLBA = 1
	b.entryLBA = b.myLBA - entrySectors
	b.encode()
	return &b
}

// encode writes the header fields back into raw and recomputes its CRC.
func (h *gptHeader) encode() {
	b := h.raw
	binary.LittleEndian.PutUint64(b[24:], h.myLBA)
	binary.LittleEndian.PutUint64(b[32:], h.altLBA)
	binary.LittleEndian.PutUint64(b[40:], h.firstUsable)
	binary.LittleEndian.PutUint64(b[48:], h.lastUsable)
	binary.LittleEndian.PutUint64(b[72:], h.entryLBA)
	binary.LittleEndian.PutUint32(b[88:], h.entriesCRC)
	binary.LittleEndian.PutUint32(b[16:], gptHeaderCRC(b[:h.headerSize]))
}

func guidString(b []byte) string {
	return fmt.Sprintf("%08x-%04x-%04x-%x-%x",
		binary.LittleEndian.Uint32(b[0:]), binary.LittleEndian.Uint16(b[4:]),
		binary.LittleEndian.Uint16(b[6:]), b[8:10], b[10:16])
}

func utf16Name(b []byte) string {
	var u []uint16
	for i := 0; i+1 < len(b); i += 2 {
		c := binary.LittleEndian.Uint16(b[i:])
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	return string(utf16Decode(u))
}
