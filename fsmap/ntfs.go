package fsmap

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/preboot/preboot/disk"
)

// ErrNTFSDirty and ErrNTFSHibernated are wrapped by Info.Unsafe for an NTFS
// volume whose image would not work as it stands.
var (
	ErrNTFSDirty      = errors.New("NTFS volume is marked dirty")
	ErrNTFSHibernated = errors.New("NTFS volume holds a hibernated Windows")
)

// NTFS metadata constants.
const (
	ntfsRecVolume     = 3 // $Volume
	ntfsRecRoot       = 5 // the root directory
	ntfsRecBitmap     = 6 // $Bitmap
	ntfsAttrList      = 0x20
	ntfsAttrFileName  = 0x30
	ntfsAttrVolInfo   = 0x70
	ntfsAttrData      = 0x80
	ntfsVolumeIsDirty = 0x0001
	ntfsNamespaceDOS  = 2
	// ntfsMaxCandidates bounds the root entries kept per special name.
	ntfsMaxCandidates = 4
)

// ntfsVol is what the boot sector says about the volume.
type ntfsVol struct {
	bps, cs      int64 // bytes per sector, per cluster
	totalSec     int64
	clusters     int64
	mftLCN       int64
	rec          int64 // MFT record size
	size         int64 // partition size
	volumeLength int64 // totalSec*bps
}

func ntfsBoot(size int64, b []byte) (*ntfsVol, error) {
	bps := int64(binary.LittleEndian.Uint16(b[0x0b:]))
	if bps < 256 || bps > 4096 || bps&(bps-1) != 0 {
		return nil, corrupt("ntfs: %d bytes per sector", bps)
	}
	spc := int64(b[0x0d])
	if spc > 0x80 {
		if 256-spc > 12 {
			return nil, corrupt("ntfs: sectors per cluster byte %#x", b[0x0d])
		}
		spc = 1 << (256 - spc)
	}
	if spc == 0 || spc&(spc-1) != 0 {
		return nil, corrupt("ntfs: %d sectors per cluster", spc)
	}
	v := &ntfsVol{bps: bps, cs: bps * spc, size: size}
	v.totalSec = int64(binary.LittleEndian.Uint64(b[0x28:]))
	if v.totalSec <= 0 || v.totalSec > size/bps {
		return nil, corrupt("ntfs: %d sectors in a %d-byte partition", v.totalSec, size)
	}
	v.volumeLength = v.totalSec * bps
	v.clusters = v.totalSec / spc
	v.mftLCN = int64(binary.LittleEndian.Uint64(b[0x30:]))
	recRaw := int8(b[0x40])
	switch {
	case recRaw > 0:
		v.rec = int64(recRaw) * v.cs
	case recRaw < 0 && recRaw >= -16:
		v.rec = 1 << uint(-recRaw)
	}
	if v.rec < 512 || v.rec > 64<<10 || v.rec&(v.rec-1) != 0 {
		return nil, corrupt("ntfs: MFT record size %d", v.rec)
	}
	if v.mftLCN <= 0 || v.mftLCN >= v.clusters {
		return nil, corrupt("ntfs: $MFT at cluster %d of %d", v.mftLCN, v.clusters)
	}
	return v, nil
}

// readFixedRecord reads MFT record n from the start of the $MFT (the first
// records are contiguous) and applies its fixups.
func (v *ntfsVol) readFixedRecord(r io.ReaderAt, n int64) ([]byte, error) {
	off := v.mftLCN*v.cs + n*v.rec
	if off+v.rec > v.volumeLength {
		return nil, corrupt("ntfs: MFT record %d beyond the volume", n)
	}
	m := make([]byte, v.rec)
	if err := disk.ReadFull(r, m, off); err != nil {
		return nil, err
	}
	if err := ntfsFixup(m); err != nil {
		return nil, fmt.Errorf("MFT record %d: %w", n, err)
	}
	return m, nil
}

// ntfsInspect maps an NTFS volume (its $Bitmap) and checks what capture must
// know: a dirty or hibernated volume is Unsafe, and the clusters of the root
// directory's pagefile.sys, swapfile.sys and (when Windows is not
// hibernated) hiberfil.sys are Zero.
func ntfsInspect(r io.ReaderAt, size int64, b []byte) (Info, error) {
	info := Info{FSType: "ntfs"}
	v, err := ntfsBoot(size, b)
	if err != nil {
		return info, err
	}
	used, err := v.used(r)
	if err != nil {
		return info, err
	}
	info.Used = used
	var unsafe []error
	dirty, err := v.dirty(r)
	if err != nil {
		return info, err
	}
	if dirty {
		unsafe = append(unsafe, fmt.Errorf("%w (Windows was not shut down cleanly, or Fast Startup / a pending chkdsk left it so): "+
			"boot Windows and shut it down with `shutdown /s /t 0` after disabling Fast Startup (`powercfg /h off`), "+
			"or run `chkdsk /f`; capture with --force to take it anyway", ErrNTFSDirty))
	}
	sp, err := v.specialFiles(r)
	if err != nil {
		return info, err
	}
	info.Warnings = sp.warnings
	if sp.hibernated != "" {
		unsafe = append(unsafe, fmt.Errorf("%w (hiberfil.sys starts with %q: Windows hibernated, or shut down with Fast Startup, "+
			"and will resume from that saved session; an image of it would not boot cleanly and could lose data): "+
			"boot Windows, turn hibernation and Fast Startup off with `powercfg /h off`, shut down with `shutdown /s /t 0`; "+
			"capture with --force to take it anyway", ErrNTFSHibernated, sp.hibernated))
	}
	info.Unsafe = errors.Join(unsafe...)
	var c collector
	for _, e := range sp.zero {
		c.add(e.Offset, e.Length)
	}
	info.Zero = subtractExtents(intersectExtents(c.result(size), used), sp.keep)
	return info, nil
}

// used maps the volume from its $Bitmap (MFT record 6), read directly:
// boot sector → $MFT → record 6 → unnamed $DATA runlist.
func (v *ntfsVol) used(r io.ReaderAt) ([]disk.Extent, error) {
	cs, clusters := v.cs, v.clusters
	mrec, err := v.readFixedRecord(r, ntfsRecBitmap)
	if err != nil {
		return nil, err
	}
	data, err := ntfsUnnamedData(mrec)
	if err != nil {
		return nil, err
	}
	need := (clusters + 7) / 8
	var c collector
	addBits := func(bm []byte, firstCluster int64) {
		bitRuns(bm, min(int64(len(bm))*8, clusters-firstCluster), func(s, n int64) {
			c.add((firstCluster+s)*cs, n*cs)
		})
	}
	if data.resident != nil {
		if int64(len(data.resident)) < need {
			return nil, corrupt("ntfs: $Bitmap of %d bytes for %d clusters", len(data.resident), clusters)
		}
		addBits(data.resident, 0)
	} else {
		if data.size < need {
			return nil, corrupt("ntfs: $Bitmap of %d bytes for %d clusters", data.size, clusters)
		}
		runs, err := ntfsRuns(data.runlist, clusters)
		if err != nil {
			return nil, err
		}
		buf := make([]byte, 1<<20)
		var pos int64 // byte position in $Bitmap
		for _, run := range runs {
			for k := int64(0); k < run.n*cs && pos < need; {
				n := min(int64(len(buf)), run.n*cs-k, need-pos)
				if run.lcn < 0 {
					clear(buf[:n])
				} else if err := disk.ReadFull(r, buf[:n], run.lcn*cs+k); err != nil {
					return nil, err
				}
				addBits(buf[:n], pos*8)
				pos += n
				k += n
			}
		}
		if pos < need {
			return nil, corrupt("ntfs: $Bitmap runlist covers %d of %d bytes", pos, need)
		}
	}
	c.add(0, v.bps) // boot sector (cluster 0 is in the bitmap too)
	// The backup boot sector sits just after the volume, in the partition's last sector.
	c.add(v.volumeLength, v.bps)
	c.add(v.size/v.bps*v.bps-v.bps, v.bps)
	return c.result(v.size), nil
}

// dirty reads the VOLUME_IS_DIRTY flag of $Volume's $VOLUME_INFORMATION.
func (v *ntfsVol) dirty(r io.ReaderAt) (bool, error) {
	m, err := v.readFixedRecord(r, ntfsRecVolume)
	if err != nil {
		return false, err
	}
	var flags uint16
	found := false
	err = ntfsAttrs(m, func(a *ntfsAttr) bool {
		if a.typ == ntfsAttrVolInfo && !a.nonResident && len(a.value) >= 12 {
			flags, found = binary.LittleEndian.Uint16(a.value[10:]), true
			return false
		}
		return true
	})
	if err != nil {
		return false, err
	}
	if !found {
		return false, corrupt("ntfs: $Volume has no $VOLUME_INFORMATION")
	}
	return flags&ntfsVolumeIsDirty != 0, nil
}

// ntfsSpecial is what the MFT scan found about Windows' paging files.
type ntfsSpecial struct {
	zero       []disk.Extent // clusters whose contents need not be kept
	keep       []disk.Extent // the $MFT itself: never zeroed, whatever a runlist says
	hibernated string        // hiberfil.sys's signature when Windows is hibernated
	warnings   []string
}

// ntfsSpecialNames are the root-directory files whose contents Windows
// rebuilds: their clusters are captured as zeros.
var ntfsSpecialNames = [...]string{"pagefile.sys", "swapfile.sys", "hiberfil.sys"}

// ntfsCandidate is an in-use base MFT record with a root-directory name of
// ntfsSpecialNames.
type ntfsCandidate struct {
	rec      int64
	runs     []ntfsRun // clusters of its unnamed $DATA, when complete in the base record
	complete bool      // runs are the whole allocation (no attribute list, VCN 0..end)
	header   []byte    // first bytes of the data; nil when unknown
	problem  string    // why runs or header are not known
}

// specialFiles scans the MFT (bounded by its own $DATA) for the root
// directory's pagefile.sys, swapfile.sys and hiberfil.sys. A record that
// does not parse is skipped; a file whose clusters are not certain is not
// zeroed.
func (v *ntfsVol) specialFiles(r io.ReaderAt) (*ntfsSpecial, error) {
	sp := &ntfsSpecial{}
	m0, err := v.readFixedRecord(r, 0)
	if err != nil {
		return nil, err
	}
	mft, err := ntfsUnnamedData(m0)
	if err != nil {
		return nil, fmt.Errorf("$MFT: %w", err)
	}
	if mft.resident != nil {
		return nil, corrupt("ntfs: resident $MFT data")
	}
	runs, err := ntfsRuns(mft.runlist, v.clusters)
	if err != nil {
		return nil, fmt.Errorf("$MFT: %w", err)
	}
	var mapped int64
	for _, run := range runs {
		if run.lcn < 0 {
			return nil, corrupt("ntfs: sparse $MFT")
		}
		sp.keep = append(sp.keep, disk.Extent{Offset: run.lcn * v.cs, Length: run.n * v.cs})
		mapped += run.n * v.cs
	}
	sp.keep = append(sp.keep, disk.Extent{Offset: 0, Length: v.cs}) // boot sector
	sp.keep = mergeExtents(sp.keep)
	nrec := min(mft.size, mapped) / v.rec
	if mft.size > mapped {
		sp.warnings = append(sp.warnings, fmt.Sprintf(
			"ntfs: the $MFT continues beyond its base record (%d of %d records mapped): pagefile.sys/hiberfil.sys searched in the mapped part only", nrec, mft.size/v.rec))
	}

	cands := make([][]ntfsCandidate, len(ntfsSpecialNames))
	var overflow [len(ntfsSpecialNames)]bool
	unreadable := 0
	mr := &ntfsRunReader{r: r, runs: runs, cs: v.cs}
	buf := make([]byte, max(v.rec, 1<<20/v.rec*v.rec))
	for recNo := int64(0); recNo < nrec; {
		n := min(int64(len(buf)), (nrec-recNo)*v.rec)
		if err := mr.read(buf[:n], recNo*v.rec); err != nil {
			return nil, err
		}
		for o := int64(0); o < n; o, recNo = o+v.rec, recNo+1 {
			m := buf[o : o+v.rec]
			// In-use ("flags" bit 0) base records (no base reference) only.
			if string(m[:4]) != "FILE" || binary.LittleEndian.Uint16(m[0x16:])&1 == 0 ||
				binary.LittleEndian.Uint64(m[0x20:]) != 0 {
				continue
			}
			if err := ntfsFixup(m); err != nil {
				unreadable++
				continue
			}
			idx, cand, err := v.candidate(r, m, recNo)
			if err != nil {
				if !errors.Is(err, errCorrupt) {
					return nil, err
				}
				unreadable++
				continue
			}
			if idx < 0 {
				continue
			}
			if len(cands[idx]) >= ntfsMaxCandidates {
				overflow[idx] = true
				continue
			}
			cands[idx] = append(cands[idx], cand)
		}
	}
	if unreadable > 0 {
		sp.warnings = append(sp.warnings, fmt.Sprintf(
			"ntfs: %d in-use MFT records could not be parsed: pagefile.sys/hiberfil.sys may have been missed", unreadable))
	}
	for i, name := range ntfsSpecialNames {
		cc := cands[i]
		if len(cc) == 0 {
			continue
		}
		isHiber := name == "hiberfil.sys"
		if isHiber {
			for _, c := range cc {
				if h := c.header; h != nil && ntfsHibernated(h) {
					sp.hibernated = string(h[:4])
				} else if h == nil {
					sp.warnings = append(sp.warnings, fmt.Sprintf(
						"ntfs: hiberfil.sys (MFT record %d): %s: hibernation not checked", c.rec, c.problem))
				}
			}
			if sp.hibernated != "" {
				continue // kept as is: the volume is Unsafe anyway
			}
		}
		if len(cc) > 1 || overflow[i] {
			sp.warnings = append(sp.warnings, fmt.Sprintf(
				"ntfs: %d root-directory entries named %s (case-insensitively): none stored as zeros", len(cc), name))
			continue
		}
		c := cc[0]
		if isHiber && c.header == nil {
			continue // not checked, so not zeroed (warned above)
		}
		if !c.complete {
			sp.warnings = append(sp.warnings, fmt.Sprintf("ntfs: %s (MFT record %d): %s: copied as is", name, c.rec, c.problem))
			continue
		}
		for _, run := range c.runs {
			if run.lcn >= 0 {
				sp.zero = append(sp.zero, disk.Extent{Offset: run.lcn * v.cs, Length: run.n * v.cs})
			}
		}
	}
	return sp, nil
}

// ntfsHibernated reports whether a hiberfil.sys header is that of a saved
// session: "hibr"/"HIBR" (ntfs-3g's ntfs_volume_check_hiberfile), or
// "rstr"/"RSTR" (a resume in progress, the session is still there).
// Zeros and "wake" (resumed) are fine.
func ntfsHibernated(h []byte) bool {
	if len(h) < 4 {
		return false
	}
	switch string(h[:4]) {
	case "hibr", "HIBR", "rstr", "RSTR":
		return true
	}
	return false
}

// candidate checks whether the (fixed-up, in-use, base) MFT record m holds
// one of ntfsSpecialNames in the root directory: it returns the name's
// index (-1 for none) and what the record says about its unnamed $DATA.
func (v *ntfsVol) candidate(r io.ReaderAt, m []byte, recNo int64) (int, ntfsCandidate, error) {
	c := ntfsCandidate{rec: recNo}
	if binary.LittleEndian.Uint16(m[0x16:])&2 != 0 {
		return -1, c, nil // a directory
	}
	idx := -1
	hasList := false
	var data []*ntfsAttr
	err := ntfsAttrs(m, func(a *ntfsAttr) bool {
		switch a.typ {
		case ntfsAttrList:
			hasList = true
		case ntfsAttrFileName:
			if i := ntfsRootName(a); i >= 0 {
				idx = i
			}
		case ntfsAttrData:
			if a.nameLen == 0 {
				d := *a
				data = append(data, &d)
			}
		}
		return len(data) <= 16
	})
	if err != nil || idx < 0 {
		return -1, c, err
	}
	var first *ntfsAttr // the extent from VCN 0
	for _, d := range data {
		if !d.nonResident || d.lowVCN == 0 {
			if first != nil {
				c.problem = "two unnamed $DATA attributes start at VCN 0"
				return idx, c, nil
			}
			first = d
		}
	}
	if first == nil {
		c.problem = "its data is described in other MFT records (attribute list)"
		if !hasList {
			c.problem = "no unnamed $DATA attribute"
		}
		return idx, c, nil
	}
	// The header (first 4 bytes), as ntfs-3g reads it.
	switch {
	case first.flags&0x4001 != 0: // compressed or encrypted
		c.problem = "compressed or encrypted data"
	case !first.nonResident:
		c.header = make([]byte, 4)
		copy(c.header, first.value)
	case first.dataSize < 4 || first.initSize < 4:
		c.header = make([]byte, 4) // reads as zeros
	default:
		runs, err := ntfsRuns(first.runlist, v.clusters)
		if err != nil {
			c.problem = err.Error()
			return idx, c, nil
		}
		c.header = make([]byte, 4)
		if len(runs) > 0 && runs[0].lcn >= 0 {
			if err := disk.ReadFull(r, c.header, runs[0].lcn*v.cs); err != nil {
				return -1, c, err
			}
		}
	}
	if c.problem != "" {
		return idx, c, nil
	}
	if hasList {
		c.problem = "an attribute list may hold more of its data"
		return idx, c, nil
	}
	if !first.nonResident {
		c.complete = true // no clusters
		return idx, c, nil
	}
	// The base record must map the whole allocation: extents from VCN 0,
	// contiguous, ending at the allocated size.
	var next int64
	for {
		var d *ntfsAttr
		for _, x := range data {
			if x.nonResident && x.lowVCN == next {
				d = x
				break
			}
		}
		if d == nil {
			break
		}
		runs, err := ntfsRuns(d.runlist, v.clusters)
		if err != nil {
			c.problem = err.Error()
			return idx, c, nil
		}
		var n int64
		for _, run := range runs {
			n += run.n
		}
		if n == 0 || d.highVCN != d.lowVCN+n-1 {
			c.problem = fmt.Sprintf("its runlist maps %d clusters for VCNs %d-%d", n, d.lowVCN, d.highVCN)
			return idx, c, nil
		}
		c.runs = append(c.runs, runs...)
		next += n
		if len(c.runs) > 1<<16 {
			c.problem = "too many runs"
			return idx, c, nil
		}
	}
	if next*v.cs < first.allocSize {
		c.problem = fmt.Sprintf("its base record maps %d of %d bytes", next*v.cs, first.allocSize)
		c.runs = nil
		return idx, c, nil
	}
	c.complete = true
	return idx, c, nil
}

// ntfsRootName returns the index in ntfsSpecialNames of a $FILE_NAME whose
// parent is the root directory (not in the DOS namespace, which only
// aliases a long name), compared case-insensitively; -1 otherwise.
func ntfsRootName(a *ntfsAttr) int {
	fn := a.value
	if a.nonResident || len(fn) < 0x42 {
		return -1
	}
	if binary.LittleEndian.Uint64(fn)&(1<<48-1) != ntfsRecRoot || fn[0x41] == ntfsNamespaceDOS {
		return -1
	}
	n := int(fn[0x40])
	if 0x42+2*n > len(fn) {
		return -1
	}
	for i, want := range ntfsSpecialNames {
		if n != len(want) {
			continue
		}
		ok := true
		for j := 0; j < n && ok; j++ {
			u := binary.LittleEndian.Uint16(fn[0x42+2*j:])
			if u >= 'A' && u <= 'Z' {
				u += 'a' - 'A'
			}
			ok = u == uint16(want[j])
		}
		if ok {
			return i
		}
	}
	return -1
}

type ntfsData struct {
	resident []byte
	runlist  []byte
	size     int64
}

// ntfsDataAttr applies the update-sequence fixups to an MFT record and
// returns its unnamed $DATA attribute.
func ntfsDataAttr(m []byte) (*ntfsData, error) {
	if err := ntfsFixup(m); err != nil {
		return nil, err
	}
	return ntfsUnnamedData(m)
}

// ntfsUnnamedData returns the unnamed $DATA attribute of a fixed-up MFT
// record, which must start at VCN 0.
func ntfsUnnamedData(m []byte) (*ntfsData, error) {
	var d *ntfsData
	var derr error
	err := ntfsAttrs(m, func(a *ntfsAttr) bool {
		if a.typ != ntfsAttrData || a.nameLen != 0 {
			return true
		}
		switch {
		case !a.nonResident:
			d = &ntfsData{resident: a.value}
		case a.lowVCN != 0:
			derr = corrupt("ntfs: $DATA split over records")
		default:
			d = &ntfsData{runlist: a.runlist, size: a.dataSize}
		}
		return false
	})
	if err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, derr
	}
	if d == nil {
		return nil, corrupt("ntfs: no unnamed $DATA attribute")
	}
	return d, nil
}

// ntfsFixup checks the FILE signature and applies the update sequence
// array of an MFT record in place.
func ntfsFixup(m []byte) error {
	if len(m) < 0x30 || string(m[:4]) != "FILE" {
		return corrupt("ntfs: MFT record has no FILE signature")
	}
	usaOff := int(binary.LittleEndian.Uint16(m[4:]))
	usaCnt := int(binary.LittleEndian.Uint16(m[6:]))
	if usaCnt < 2 || usaOff+2*usaCnt > len(m) || (usaCnt-1)*512 > len(m) {
		return corrupt("ntfs: update sequence %d@%d", usaCnt, usaOff)
	}
	for i := 1; i < usaCnt; i++ {
		p := i*512 - 2
		if m[p] != m[usaOff] || m[p+1] != m[usaOff+1] {
			return corrupt("ntfs: torn MFT record (sector %d)", i)
		}
		m[p], m[p+1] = m[usaOff+2*i], m[usaOff+2*i+1]
	}
	return nil
}

// ntfsAttr is one attribute of an MFT record; its slices alias the record.
type ntfsAttr struct {
	typ         uint32
	nonResident bool
	nameLen     int
	flags       uint16
	value       []byte // resident
	// non-resident
	runlist                       []byte
	lowVCN, highVCN               int64
	allocSize, dataSize, initSize int64
}

// ntfsAttrs calls fn for each attribute of a fixed-up MFT record until fn
// returns false. Every offset is checked against the record.
func ntfsAttrs(m []byte, fn func(a *ntfsAttr) bool) error {
	used := min(int(binary.LittleEndian.Uint32(m[0x18:])), len(m))
	off := int(binary.LittleEndian.Uint16(m[0x14:]))
	if off < 0x18 {
		return corrupt("ntfs: attributes at offset %d", off)
	}
	for off+16 <= used {
		typ := binary.LittleEndian.Uint32(m[off:])
		if typ == 0xffffffff {
			return nil
		}
		alen := int(binary.LittleEndian.Uint32(m[off+4:]))
		if alen < 16 || alen%8 != 0 || alen > used-off {
			return corrupt("ntfs: attribute of length %d", alen)
		}
		a := m[off : off+alen]
		at := &ntfsAttr{typ: typ, nonResident: a[8] != 0, nameLen: int(a[9]), flags: binary.LittleEndian.Uint16(a[0x0c:])}
		if at.nameLen > 0 && int(binary.LittleEndian.Uint16(a[0x0a:]))+2*at.nameLen > alen {
			return corrupt("ntfs: attribute name beyond its attribute")
		}
		if !at.nonResident {
			if alen < 24 {
				return corrupt("ntfs: short resident attribute")
			}
			vl := int(binary.LittleEndian.Uint32(a[0x10:]))
			vo := int(binary.LittleEndian.Uint16(a[0x14:]))
			if vl < 0 || vo > alen || vl > alen-vo {
				return corrupt("ntfs: resident value beyond its attribute")
			}
			at.value = a[vo : vo+vl]
		} else {
			if alen < 0x40 {
				return corrupt("ntfs: short non-resident attribute")
			}
			ro := int(binary.LittleEndian.Uint16(a[0x20:]))
			if ro >= alen {
				return corrupt("ntfs: runlist beyond its attribute")
			}
			at.runlist = a[ro:]
			const mask = 1<<62 - 1 // keeps sizes non-negative
			at.lowVCN = int64(binary.LittleEndian.Uint64(a[0x10:]) & mask)
			at.highVCN = int64(binary.LittleEndian.Uint64(a[0x18:]) & mask)
			at.allocSize = int64(binary.LittleEndian.Uint64(a[0x28:]) & mask)
			at.dataSize = int64(binary.LittleEndian.Uint64(a[0x30:]) & mask)
			at.initSize = int64(binary.LittleEndian.Uint64(a[0x38:]) & mask)
		}
		if !fn(at) {
			return nil
		}
		off += alen
	}
	return nil
}

type ntfsRun struct{ lcn, n int64 } // lcn < 0: sparse

// ntfsRunReader reads an attribute's data (non-sparse runs) by byte offset.
type ntfsRunReader struct {
	r    io.ReaderAt
	runs []ntfsRun
	cs   int64
}

// read fills p from data offset off; the runs must cover it.
func (rr *ntfsRunReader) read(p []byte, off int64) error {
	var start int64 // data offset of the current run
	for _, run := range rr.runs {
		if len(p) == 0 {
			return nil
		}
		end := start + run.n*rr.cs
		if off < end {
			n := min(int64(len(p)), end-off)
			if run.lcn < 0 {
				clear(p[:n])
			} else if err := disk.ReadFull(rr.r, p[:n], run.lcn*rr.cs+off-start); err != nil {
				return err
			}
			p, off = p[n:], off+n
		}
		start = end
	}
	if len(p) > 0 {
		return corrupt("ntfs: read beyond the runlist")
	}
	return nil
}

func ntfsRuns(rl []byte, clusters int64) ([]ntfsRun, error) {
	var runs []ntfsRun
	var lcn, total int64
	for len(rl) > 0 && rl[0] != 0 {
		h := rl[0]
		ls, os := int(h&0xf), int(h>>4)
		if ls == 0 || ls > 8 || os > 8 || 1+ls+os > len(rl) {
			return nil, corrupt("ntfs: bad runlist header %#x", h)
		}
		var n int64
		for i := ls - 1; i >= 0; i-- {
			n = n<<8 | int64(rl[1+i])
		}
		if n <= 0 || n > clusters || total+n > clusters {
			return nil, corrupt("ntfs: run of %d clusters", n)
		}
		total += n
		if os == 0 {
			runs = append(runs, ntfsRun{lcn: -1, n: n})
		} else {
			var d int64
			for i := os - 1; i >= 0; i-- {
				d = d<<8 | int64(rl[1+ls+i])
			}
			if os < 8 && rl[ls+os]&0x80 != 0 { // sign-extend
				d -= 1 << (8 * uint(os))
			}
			lcn += d
			if lcn < 0 || lcn+n > clusters {
				return nil, corrupt("ntfs: run at cluster %d+%d outside the volume", lcn, n)
			}
			runs = append(runs, ntfsRun{lcn: lcn, n: n})
		}
		rl = rl[1+ls+os:]
	}
	return runs, nil
}

// mergeExtents sorts and merges extents (no clipping).
func mergeExtents(ex []disk.Extent) []disk.Extent {
	c := collector{}
	for _, e := range ex {
		c.add(e.Offset, e.Length)
	}
	// collector.add only merges in order; result sorts and merges the rest.
	return c.result(1<<63 - 1)
}

// intersectExtents returns a ∩ b, both sorted and merged.
func intersectExtents(a, b []disk.Extent) []disk.Extent {
	var out []disk.Extent
	for i, j := 0, 0; i < len(a) && j < len(b); {
		lo, hi := max(a[i].Offset, b[j].Offset), min(a[i].End(), b[j].End())
		if lo < hi {
			out = append(out, disk.Extent{Offset: lo, Length: hi - lo})
		}
		if a[i].End() < b[j].End() {
			i++
		} else {
			j++
		}
	}
	return out
}

// subtractExtents returns a minus b, both sorted and merged.
func subtractExtents(a, b []disk.Extent) []disk.Extent {
	var out []disk.Extent
	j := 0
	for _, e := range a {
		cur := e.Offset
		for j < len(b) && b[j].End() <= cur {
			j++
		}
		for k := j; k < len(b) && b[k].Offset < e.End(); k++ {
			if b[k].Offset > cur {
				out = append(out, disk.Extent{Offset: cur, Length: b[k].Offset - cur})
			}
			cur = max(cur, b[k].End())
		}
		if cur < e.End() {
			out = append(out, disk.Extent{Offset: cur, Length: e.End() - cur})
		}
	}
	return out
}
