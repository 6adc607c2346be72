package fsmap

import (
	"bytes"
	"encoding/binary"
	"io"

	"github.com/preboot/preboot/disk"
)

func isFAT(b []byte) bool {
	if b[0] != 0xeb && b[0] != 0xe9 {
		return false
	}
	if b[510] != 0x55 || b[511] != 0xaa {
		return false
	}
	bps := binary.LittleEndian.Uint16(b[0x0b:])
	spc := b[0x0d]
	return bps >= 512 && bps <= 4096 && bps&(bps-1) == 0 && spc != 0 && spc&(spc-1) == 0 &&
		binary.LittleEndian.Uint16(b[0x0e:]) != 0 && b[0x10] != 0 &&
		(bytes.HasPrefix(b[0x36:], []byte("FAT")) || bytes.HasPrefix(b[0x52:], []byte("FAT32")))
}

func fatUsed(r io.ReaderAt, size int64, b []byte) (string, []disk.Extent, error) {
	u16 := func(o int) int64 { return int64(binary.LittleEndian.Uint16(b[o:])) }
	u32 := func(o int) int64 { return int64(binary.LittleEndian.Uint32(b[o:])) }
	bps, spc := u16(0x0b), int64(b[0x0d])
	reserved, nfats, rootEnt := u16(0x0e), int64(b[0x10]), u16(0x11)
	total := u16(0x13)
	if total == 0 {
		total = u32(0x20)
	}
	fatSz := u16(0x16)
	if fatSz == 0 {
		fatSz = u32(0x24)
	}
	if total*bps > size || total == 0 {
		return "", nil, corrupt("fat: %d sectors of %d bytes in a %d-byte partition", total, bps, size)
	}
	rootSecs := (rootEnt*32 + bps - 1) / bps
	dataStart := reserved + nfats*fatSz + rootSecs
	if fatSz == 0 || dataStart >= total {
		return "", nil, corrupt("fat: data area starts at sector %d of %d", dataStart, total)
	}
	clusters := (total - dataStart) / spc
	var fstype string
	var bits int64
	switch {
	case clusters < 4085:
		fstype, bits = "fat12", 12
	case clusters < 65525:
		fstype, bits = "fat16", 16
	default:
		fstype, bits = "fat32", 32
		if rootEnt != 0 || u16(0x16) != 0 {
			return "", nil, corrupt("fat32 with a fixed root directory")
		}
	}
	if (clusters+2)*bits > fatSz*bps*8 {
		return "", nil, corrupt("%s: %d clusters do not fit a %d-sector FAT", fstype, clusters, fatSz)
	}
	var c collector
	c.add(0, dataStart*bps)
	// A cluster is used when any FAT copy says so (a superset if the copies
	// disagree), except clusters marked bad.
	used := make([]byte, (clusters+2+7)/8)
	const chunk = 3 << 18 // a multiple of 3 and 4 bytes: whole FAT12/16/32 entries
	buf := make([]byte, chunk)
	fatBytes := (clusters + 2) * bits / 8
	if bits == 12 {
		fatBytes = ((clusters+2)*3 + 1) / 2
	}
	fatBytes = min(fatBytes, fatSz*bps)
	for f := int64(0); f < nfats; f++ {
		base := (reserved + f*fatSz) * bps
		for off := int64(0); off < fatBytes; off += chunk {
			n := min(chunk, fatBytes-off)
			if err := disk.ReadFull(r, buf[:n], base+off); err != nil {
				return "", nil, err
			}
			first := off * 8 / bits // chunks hold whole entries
			p := buf[:n]
			entries := n * 8 / bits
			for i := int64(0); i < entries && first+i < clusters+2; i++ {
				cl := first + i
				var v, bad uint32
				switch bits {
				case 12:
					o := i * 3 / 2
					if o+2 > n {
						continue
					}
					v = uint32(binary.LittleEndian.Uint16(p[o:]))
					if i%2 == 1 {
						v >>= 4
					}
					v, bad = v&0xfff, 0xff7
				case 16:
					v, bad = uint32(binary.LittleEndian.Uint16(p[i*2:])), 0xfff7
				default:
					v, bad = binary.LittleEndian.Uint32(p[i*4:])&0x0fffffff, 0x0ffffff7
				}
				if cl >= 2 && v != 0 && v != bad {
					used[cl/8] |= 1 << (cl % 8)
				}
			}
		}
	}
	cb := spc * bps
	bitRuns(used, clusters+2, func(s, n int64) {
		c.add(dataStart*bps+(s-2)*cb, n*cb)
	})
	return fstype, c.result(total * bps), nil
}
