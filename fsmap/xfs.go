package fsmap

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"io"
	"sort"

	"github.com/preboot/preboot/disk"
)

// XFS: every block is used except the free extents of each allocation
// group's by-block-number free-space B+tree (bnobt) and the blocks on the
// AG free list (AGFL), as partclone does. What the reader cannot parse
// counts as used, so a reader bug copies too much, never too little.
// Refused (errCorrupt, so Inspect maps raw): a log that does not end in an
// unmount record (after a crash the AGFs on disk are stale, and the lazy
// superblock counters may agree with them), an external log or realtime
// section, NEEDSREPAIR, METADIR or unknown incompat features, log incompat
// features, free sums that disagree with agf_freeblks or (with the free
// lists and btree blocks) with sb_fdblocks, free extents out of order or
// over the AG headers or the bnobt's own blocks, btrees deeper than 9,
// cycles, and more btree blocks than the filesystem has. v5 (CRC)
// filesystems have the CRCs, UUIDs, owners and locations of the
// superblock, AGFs, AGFLs and bnobt blocks verified.

const (
	xfsMaxLevels   = 9 // deeper than any real free-space btree
	xfsNullAGBlock = 0xffffffff

	xfsIncompatFtype     = 1 << 0
	xfsIncompatSpinodes  = 1 << 1
	xfsIncompatMetaUUID  = 1 << 2
	xfsIncompatBigtime   = 1 << 3
	xfsIncompatNrext64   = 1 << 5
	xfsIncompatExchRange = 1 << 6
	xfsIncompatParent    = 1 << 7
	// Known incompat features that do not change AG headers or the bnobt.
	// NEEDSREPAIR (1<<4), METADIR (1<<8) and anything newer are refused.
	xfsIncompatKnown = xfsIncompatFtype | xfsIncompatSpinodes | xfsIncompatMetaUUID |
		xfsIncompatBigtime | xfsIncompatNrext64 | xfsIncompatExchRange | xfsIncompatParent
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// xfsCRCOK checks a v5 metadata CRC: crc32c of b with the 4-byte field at
// off taken as zero, stored little-endian.
func xfsCRCOK(b []byte, off int) bool {
	if off+4 > len(b) {
		return false
	}
	want := binary.LittleEndian.Uint32(b[off:])
	c := crc32.Update(0, castagnoli, b[:off])
	c = crc32.Update(c, castagnoli, []byte{0, 0, 0, 0})
	c = crc32.Update(c, castagnoli, b[off+4:])
	return c == want
}

type xfsSB struct {
	blockSize, sectSize int64
	dblocks             uint64
	agBlocks, agCount   uint32
	fdblocks            uint64
	v5                  bool
	uuid                []byte // the UUID metadata blocks carry (sb_meta_uuid with META_UUID)
}

func parseXFSSuper(sb []byte, size int64) (*xfsSB, error) {
	be := binary.BigEndian
	if len(sb) < 512 || string(sb[:4]) != "XFSB" {
		return nil, corrupt("xfs: no superblock")
	}
	s := &xfsSB{
		blockSize: int64(be.Uint32(sb[4:])),
		dblocks:   be.Uint64(sb[8:]),
		agBlocks:  be.Uint32(sb[84:]),
		agCount:   be.Uint32(sb[88:]),
		sectSize:  int64(be.Uint16(sb[102:])),
		fdblocks:  be.Uint64(sb[144:]),
	}
	version := be.Uint16(sb[100:]) & 0xf
	switch version {
	case 4:
	case 5:
		s.v5 = true
	default:
		return nil, corrupt("xfs: superblock version %d", version)
	}
	if s.blockSize < 512 || s.blockSize > 65536 || s.blockSize&(s.blockSize-1) != 0 ||
		int64(1)<<sb[120] != s.blockSize {
		return nil, corrupt("xfs: block size %d", s.blockSize)
	}
	if s.sectSize < 512 || s.sectSize > 32768 || s.sectSize&(s.sectSize-1) != 0 ||
		int64(1)<<sb[121] != s.sectSize || s.sectSize > s.blockSize {
		return nil, corrupt("xfs: sector size %d", s.sectSize)
	}
	if sb[126] != 0 {
		return nil, corrupt("xfs: mkfs did not finish (sb_inprogress)")
	}
	if rblocks := be.Uint64(sb[16:]); rblocks != 0 {
		return nil, corrupt("xfs: realtime section (%d blocks) is not supported", rblocks)
	}
	if be.Uint64(sb[48:]) == 0 {
		return nil, corrupt("xfs: external log is not supported")
	}
	if s.agCount == 0 || s.agBlocks < 8 || s.dblocks == 0 ||
		s.dblocks > uint64(s.agCount)*uint64(s.agBlocks) ||
		s.dblocks <= uint64(s.agCount-1)*uint64(s.agBlocks) {
		return nil, corrupt("xfs: %d AGs of %d blocks for %d blocks", s.agCount, s.agBlocks, s.dblocks)
	}
	if s.dblocks > uint64(max(size, 0)/s.blockSize) {
		return nil, corrupt("xfs: %d blocks of %d bytes do not fit in %d bytes", s.dblocks, s.blockSize, size)
	}
	if 4*s.sectSize > int64(s.agBlocks)*s.blockSize {
		return nil, corrupt("xfs: AG of %d blocks too small for its headers", s.agBlocks)
	}
	if s.fdblocks > s.dblocks {
		return nil, corrupt("xfs: %d free blocks of %d", s.fdblocks, s.dblocks)
	}
	s.uuid = sb[32:48]
	if s.v5 {
		if int64(len(sb)) < s.sectSize || !xfsCRCOK(sb[:s.sectSize], 224) {
			return nil, corrupt("xfs: superblock CRC mismatch")
		}
		if inc := be.Uint32(sb[216:]); inc&^xfsIncompatKnown != 0 {
			return nil, corrupt("xfs: unknown or unsafe incompat features %#x", inc&^xfsIncompatKnown)
		} else if inc&xfsIncompatMetaUUID != 0 {
			s.uuid = sb[248:264]
		}
		if li := be.Uint32(sb[220:]); li != 0 {
			return nil, corrupt("xfs: log incompat features %#x set: the log is not clean", li)
		}
	}
	return s, nil
}

// xfsUsed maps an XFS filesystem; head holds at least the first 512 bytes.
func xfsUsed(r io.ReaderAt, size int64, head []byte) ([]disk.Extent, error) {
	sb := head
	if len(sb) < 512 {
		return nil, corrupt("xfs: short superblock")
	}
	s, err := parseXFSSuper(sb, size)
	if err != nil {
		return nil, err
	}
	if int64(len(sb)) < s.sectSize {
		sb = make([]byte, s.sectSize)
		if err := disk.ReadFull(r, sb, 0); err != nil {
			return nil, err
		}
		if s, err = parseXFSSuper(sb, size); err != nil {
			return nil, err
		}
	}
	if err := xfsLogClean(r, s, binary.BigEndian.Uint64(sb[48:]), binary.BigEndian.Uint32(sb[96:]), sb[124]); err != nil {
		return nil, err
	}
	w := &xfsWalker{r: r, s: s, blk: make([]byte, s.blockSize),
		budget: int64(s.dblocks)}
	var c collector
	var fd uint64
	for ag := uint32(0); ag < s.agCount; ag++ {
		n, err := w.ag(ag, &c)
		if err != nil {
			return nil, err
		}
		fd += n
	}
	if fd != s.fdblocks {
		return nil, corrupt("xfs: the AGs count %d free blocks, the superblock %d (not cleanly unmounted?)", fd, s.fdblocks)
	}
	return c.result(int64(s.dblocks) * s.blockSize), nil
}

type xfsWalker struct {
	r      io.ReaderAt
	s      *xfsSB
	blk    []byte
	budget int64 // btree blocks left to read over the whole filesystem
}

type xfsRun struct{ start, n uint32 }

// ag maps the used blocks of allocation group agno into c and returns what
// it contributes to sb_fdblocks (free + free list + btree blocks).
func (w *xfsWalker) ag(agno uint32, c *collector) (uint64, error) {
	be := binary.BigEndian
	s := w.s
	agStart := int64(agno) * int64(s.agBlocks) // in blocks
	agLen := uint32(min(uint64(s.agBlocks), s.dblocks-uint64(agStart)))
	base := agStart * s.blockSize
	hdr := make([]byte, 2*s.sectSize)
	if err := disk.ReadFull(w.r, hdr, base+s.sectSize); err != nil { // AGF, AGI
		return 0, err
	}
	agf := hdr[:s.sectSize]
	if string(agf[:4]) != "XAGF" || be.Uint32(agf[4:]) != 1 || be.Uint32(agf[8:]) != agno {
		return 0, corrupt("xfs: AG %d: bad AGF header", agno)
	}
	if s.v5 && (!bytes.Equal(agf[64:80], s.uuid) || !xfsCRCOK(agf, 216)) {
		return 0, corrupt("xfs: AG %d: AGF UUID or CRC mismatch", agno)
	}
	if l := be.Uint32(agf[12:]); l != agLen {
		return 0, corrupt("xfs: AG %d: length %d, want %d", agno, l, agLen)
	}
	root, levels := be.Uint32(agf[16:]), be.Uint32(agf[28:])
	flfirst, fllast, flcount := be.Uint32(agf[40:]), be.Uint32(agf[44:]), be.Uint32(agf[48:])
	freeblks, btreeblks := be.Uint32(agf[52:]), be.Uint32(agf[60:])
	if levels < 1 || levels > xfsMaxLevels {
		return 0, corrupt("xfs: AG %d: bnobt of %d levels", agno, levels)
	}
	// The first blocks hold the superblock, AGF, AGI and AGFL sectors.
	hdrBlocks := uint32((4*s.sectSize + s.blockSize - 1) / s.blockSize)

	var free []xfsRun
	var sum uint64
	visited := map[uint32]bool{}
	var walk func(bno, level uint32) error
	lastEnd := int64(-1)
	walk = func(bno, level uint32) error {
		if bno < hdrBlocks || bno >= agLen {
			return corrupt("xfs: AG %d: bnobt block %d out of range", agno, bno)
		}
		if visited[bno] {
			return corrupt("xfs: AG %d: bnobt block %d visited twice", agno, bno)
		}
		visited[bno] = true
		if w.budget--; w.budget < 0 {
			return corrupt("xfs: too many btree blocks")
		}
		b := w.blk
		if err := disk.ReadFull(w.r, b, (agStart+int64(bno))*s.blockSize); err != nil {
			return err
		}
		hl := 16
		magic := "ABTB"
		if s.v5 {
			hl, magic = 56, "AB3B"
		}
		if string(b[:4]) != magic || uint32(be.Uint16(b[4:])) != level {
			return corrupt("xfs: AG %d: block %d is not a level-%d bnobt block", agno, bno, level)
		}
		if s.v5 {
			daddr := uint64(agStart+int64(bno)) * uint64(s.blockSize/512)
			if be.Uint64(b[16:]) != daddr || !bytes.Equal(b[32:48], s.uuid) ||
				be.Uint32(b[48:]) != agno || !xfsCRCOK(b, 52) {
				return corrupt("xfs: AG %d: bnobt block %d: location, UUID, owner or CRC mismatch", agno, bno)
			}
		}
		nrec := int(be.Uint16(b[6:]))
		if level == 0 {
			if nrec > (len(b)-hl)/8 {
				return corrupt("xfs: AG %d: bnobt leaf %d holds %d records", agno, bno, nrec)
			}
			for i := 0; i < nrec; i++ {
				st, n := be.Uint32(b[hl+8*i:]), be.Uint32(b[hl+8*i+4:])
				if n == 0 || st < hdrBlocks || uint64(st)+uint64(n) > uint64(agLen) || int64(st) < lastEnd {
					return corrupt("xfs: AG %d: free extent %d+%d out of order or range", agno, st, n)
				}
				lastEnd = int64(st) + int64(n)
				sum += uint64(n)
				if k := len(free) - 1; k >= 0 && free[k].start+free[k].n == st {
					free[k].n += n
				} else {
					free = append(free, xfsRun{st, n})
				}
			}
			return nil
		}
		maxrecs := (len(b) - hl) / 12
		if nrec == 0 || nrec > maxrecs {
			return corrupt("xfs: AG %d: bnobt node %d holds %d keys", agno, bno, nrec)
		}
		ptrs := make([]uint32, nrec) // b is reused by the children
		for i := range ptrs {
			ptrs[i] = be.Uint32(b[hl+8*maxrecs+4*i:])
		}
		for _, p := range ptrs {
			if err := walk(p, level-1); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(root, levels-1); err != nil {
		return 0, err
	}
	if sum != uint64(freeblks) {
		return 0, corrupt("xfs: AG %d: bnobt holds %d free blocks, AGF says %d", agno, sum, freeblks)
	}

	// The free list: a ring of flcount entries from flfirst to fllast.
	agfl := make([]byte, s.sectSize)
	if err := disk.ReadFull(w.r, agfl, base+3*s.sectSize); err != nil {
		return 0, err
	}
	off := 0
	var fl []uint32
	if s.v5 {
		if string(agfl[:4]) != "XAFL" || be.Uint32(agfl[4:]) != agno ||
			!bytes.Equal(agfl[8:24], s.uuid) || !xfsCRCOK(agfl, 32) {
			return 0, corrupt("xfs: AG %d: bad AGFL header or CRC", agno)
		}
		off = 36
	}
	slots := uint32((len(agfl) - off) / 4)
	if flcount > 0 {
		if flfirst >= slots || fllast >= slots {
			return 0, corrupt("xfs: AG %d: free list %d..%d of %d slots", agno, flfirst, fllast, slots)
		}
		span := fllast - flfirst + 1
		if fllast < flfirst {
			span = slots - flfirst + fllast + 1
		}
		if span != flcount {
			return 0, corrupt("xfs: AG %d: free list %d..%d holds %d, AGF says %d", agno, flfirst, fllast, span, flcount)
		}
		for i := uint32(0); i < flcount; i++ {
			bno := be.Uint32(agfl[off+4*int((flfirst+i)%slots):])
			if bno == xfsNullAGBlock || bno < hdrBlocks || bno >= agLen {
				return 0, corrupt("xfs: AG %d: free list block %d out of range", agno, bno)
			}
			fl = append(fl, bno)
		}
	}
	// Neither the free list nor the bnobt's own blocks may lie in a free
	// extent, and the free list holds each block once.
	inFree := func(bno uint32) bool {
		i := sort.Search(len(free), func(i int) bool { return free[i].start+free[i].n > bno })
		return i < len(free) && free[i].start <= bno
	}
	for bno := range visited {
		if inFree(bno) {
			return 0, corrupt("xfs: AG %d: bnobt block %d is free", agno, bno)
		}
	}
	sort.Slice(fl, func(i, j int) bool { return fl[i] < fl[j] })
	for i, bno := range fl {
		if inFree(bno) || (i > 0 && fl[i-1] == bno) {
			return 0, corrupt("xfs: AG %d: free list block %d is also free or listed twice", agno, bno)
		}
	}
	for _, bno := range fl {
		free = append(free, xfsRun{bno, 1})
	}

	sort.Slice(free, func(i, j int) bool { return free[i].start < free[j].start })
	next := uint32(0) // first block not yet mapped
	for _, f := range free {
		if f.start > next {
			c.add((agStart+int64(next))*s.blockSize, int64(f.start-next)*s.blockSize)
		}
		next = max(next, f.start+f.n)
	}
	if next < agLen {
		c.add((agStart+int64(next))*s.blockSize, int64(agLen-next)*s.blockSize)
	}
	return uint64(freeblks) + uint64(flcount) + uint64(btreeblks), nil
}

// xfsLogClean reports whether the internal log ends with an unmount record
// (a clean unmount), following the kernel's xlog_find_head and
// xlog_check_unmount_rec conservatively: the head is where the cycle
// number stamped in every 512-byte log block drops; the record just before
// it must be a lone unmount record ending exactly at the head, and the
// blocks around the head must be stamped consistently. Anything else
// (a log to replay, torn writes, a format this reader does not know)
// returns an error wrapping errCorrupt. The superblock counters cannot
// show a dirty log: after a crash they may agree with stale AGFs.
func xfsLogClean(r io.ReaderAt, s *xfsSB, logstart uint64, logblocks uint32, agblklog uint8) error {
	be := binary.BigEndian
	if agblklog > 31 {
		return corrupt("xfs: agblklog %d", agblklog)
	}
	agno, agbno := logstart>>agblklog, logstart&(1<<agblklog-1)
	start := agno*uint64(s.agBlocks) + agbno
	if agno >= uint64(s.agCount) || agbno >= uint64(s.agBlocks) || logblocks == 0 ||
		start+uint64(logblocks) > s.dblocks {
		return corrupt("xfs: log at %d+%d outside the filesystem", logstart, logblocks)
	}
	base := int64(start) * s.blockSize
	n := int64(logblocks) * s.blockSize / 512 // log blocks of 512 bytes
	bb := make([]byte, 512)
	read := func(b int64) ([]byte, error) {
		return bb, disk.ReadFull(r, bb, base+b*512)
	}
	cycle := func(b int64) (uint32, error) {
		p, err := read(b)
		if err != nil {
			return 0, err
		}
		if be.Uint32(p) == 0xfeedbabe {
			return be.Uint32(p[4:]), nil
		}
		return be.Uint32(p), nil
	}
	first, err := cycle(0)
	if err != nil {
		return err
	}
	last, err := cycle(n - 1)
	if err != nil {
		return err
	}
	head := n // the log has wrapped exactly: the head is at its end
	if first != last {
		if last+1 != first {
			return corrupt("xfs: log cycles %d..%d", first, last)
		}
		lo, hi := int64(0), n-1 // cycle(lo) == first, cycle(hi) == last
		for hi-lo > 1 {
			mid := lo + (hi-lo)/2
			c, err := cycle(mid)
			if err != nil {
				return err
			}
			if c == first {
				lo = mid
			} else {
				hi = mid
			}
		}
		head = hi
	}
	// Around the head: the newest writes may have left holes (up to
	// eight in-core logs of 256 KiB), so check the stamps of a window.
	const window = 8 * 512
	win := make([]byte, 512*min(window, n))
	check := func(from, to int64, want uint32, eq bool) error {
		w := win[:512*(to-from)]
		if err := disk.ReadFull(r, w, base+from*512); err != nil {
			return err
		}
		for i := 0; i < len(w); i += 512 {
			c := be.Uint32(w[i:])
			if c == 0xfeedbabe {
				c = be.Uint32(w[i+4:])
			}
			if (c == want) != eq {
				return corrupt("xfs: log block %d has cycle %d next to the head at %d: the log is not clean", from+int64(i/512), c, head)
			}
		}
		return nil
	}
	if err := check(max(0, head-window), head, first, true); err != nil {
		return err
	}
	if head < n {
		if err := check(head, min(head+window, n), first, false); err != nil {
			return err
		}
	}
	// The last record header before the head.
	rec := int64(-1)
	for i := int64(1); i <= min(window, n); i++ {
		b := ((head-i)%n + n) % n
		p, err := read(b)
		if err != nil {
			return err
		}
		if be.Uint32(p) == 0xfeedbabe {
			rec = b
			break
		}
	}
	if rec < 0 {
		return corrupt("xfs: no log record before the head at %d", head)
	}
	p, _ := read(rec)
	hlen, ops, version, hsize := int64(be.Uint32(p[12:])), be.Uint32(p[40:]), be.Uint32(p[8:]), int64(be.Uint32(p[320:]))
	hblks := int64(1)
	if version&2 != 0 && hsize > 32768 {
		hblks = (hsize + 32767) / 32768
	}
	if hlen <= 0 || hlen > 1<<20 || ops != 1 || (rec+hblks+(hlen+511)/512)%n != head%n {
		return corrupt("xfs: the last log record (block %d, %d ops, %d bytes) does not end at the head %d: the log is not clean", rec, ops, hlen, head)
	}
	op, err := read((rec + hblks) % n)
	if err != nil {
		return err
	}
	if op[8] != 0xaa || op[9]&0x20 == 0 { // XFS_LOG client, XLOG_UNMOUNT_TRANS
		return corrupt("xfs: the last log record is not an unmount record: the log is not clean")
	}
	return nil
}
