package fsmap

import (
	"encoding/binary"
	"io"

	"github.com/preboot/preboot/disk"
)

// ntfsUsed maps an NTFS volume from its $Bitmap (MFT record 6), read
// directly: boot sector → $MFT → record 6 → unnamed $DATA runlist.
func ntfsUsed(r io.ReaderAt, size int64, b []byte) ([]disk.Extent, error) {
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
	cs := bps * spc
	totalSec := int64(binary.LittleEndian.Uint64(b[0x28:]))
	if totalSec <= 0 || totalSec > size/bps {
		return nil, corrupt("ntfs: %d sectors in a %d-byte partition", totalSec, size)
	}
	clusters := totalSec / spc
	mftLCN := int64(binary.LittleEndian.Uint64(b[0x30:]))
	recRaw := int8(b[0x40])
	var rec int64
	switch {
	case recRaw > 0:
		rec = int64(recRaw) * cs
	case recRaw < 0 && recRaw >= -16:
		rec = 1 << uint(-recRaw)
	}
	if rec < 512 || rec > 64<<10 || rec&(rec-1) != 0 {
		return nil, corrupt("ntfs: MFT record size %d", rec)
	}
	if mftLCN <= 0 || mftLCN >= clusters {
		return nil, corrupt("ntfs: $MFT at cluster %d of %d", mftLCN, clusters)
	}
	recOff := mftLCN*cs + 6*rec
	if recOff+rec > totalSec*bps {
		return nil, corrupt("ntfs: $Bitmap record beyond the volume")
	}
	mrec := make([]byte, rec)
	if err := disk.ReadFull(r, mrec, recOff); err != nil {
		return nil, err
	}
	data, err := ntfsDataAttr(mrec)
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
	c.add(0, bps) // boot sector (cluster 0 is in the bitmap too)
	// The backup boot sector sits just after the volume, in the partition's last sector.
	c.add(totalSec*bps, bps)
	c.add(size/bps*bps-bps, bps)
	return c.result(size), nil
}

type ntfsData struct {
	resident []byte
	runlist  []byte
	size     int64
}

// ntfsDataAttr applies the update-sequence fixups to an MFT record and
// returns its unnamed $DATA attribute.
func ntfsDataAttr(m []byte) (*ntfsData, error) {
	if string(m[:4]) != "FILE" {
		return nil, corrupt("ntfs: $Bitmap MFT record has no FILE signature")
	}
	usaOff := int(binary.LittleEndian.Uint16(m[4:]))
	usaCnt := int(binary.LittleEndian.Uint16(m[6:]))
	if usaCnt < 2 || usaOff+2*usaCnt > len(m) || (usaCnt-1)*512 > len(m) {
		return nil, corrupt("ntfs: update sequence %d@%d", usaCnt, usaOff)
	}
	for i := 1; i < usaCnt; i++ {
		p := i*512 - 2
		if m[p] != m[usaOff] || m[p+1] != m[usaOff+1] {
			return nil, corrupt("ntfs: torn MFT record (sector %d)", i)
		}
		m[p], m[p+1] = m[usaOff+2*i], m[usaOff+2*i+1]
	}
	used := min(int(binary.LittleEndian.Uint32(m[0x18:])), len(m))
	off := int(binary.LittleEndian.Uint16(m[0x14:]))
	for off+16 <= used {
		typ := binary.LittleEndian.Uint32(m[off:])
		if typ == 0xffffffff {
			break
		}
		alen := int(binary.LittleEndian.Uint32(m[off+4:]))
		if alen < 16 || alen%8 != 0 || off+alen > used {
			return nil, corrupt("ntfs: attribute of length %d", alen)
		}
		a := m[off : off+alen]
		if typ == 0x80 && a[9] == 0 {
			if a[8] == 0 { // resident
				if alen < 24 {
					return nil, corrupt("ntfs: short resident attribute")
				}
				vl := int(binary.LittleEndian.Uint32(a[0x10:]))
				vo := int(binary.LittleEndian.Uint16(a[0x14:]))
				if vo+vl > alen {
					return nil, corrupt("ntfs: resident value beyond its attribute")
				}
				return &ntfsData{resident: a[vo : vo+vl]}, nil
			}
			if alen < 0x40 {
				return nil, corrupt("ntfs: short non-resident attribute")
			}
			if binary.LittleEndian.Uint64(a[0x10:]) != 0 {
				return nil, corrupt("ntfs: $Bitmap data split over records")
			}
			ro := int(binary.LittleEndian.Uint16(a[0x20:]))
			if ro >= alen {
				return nil, corrupt("ntfs: runlist beyond its attribute")
			}
			return &ntfsData{runlist: a[ro:], size: int64(binary.LittleEndian.Uint64(a[0x30:]) & (1<<62 - 1))}, nil
		}
		off += alen
	}
	return nil, corrupt("ntfs: $Bitmap has no unnamed $DATA attribute")
}

type ntfsRun struct{ lcn, n int64 } // lcn < 0: sparse

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
