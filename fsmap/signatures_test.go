package fsmap

import (
	"bytes"
	"encoding/binary"
	"math/rand"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/preboot/preboot/disk"
)

// writeAt patches img.
func writeAt(t testing.TB, img string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func randBytes(n int, seed int64) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

// Swap keeps its header page only; made by mkswap, for every page size.
func TestSwap(t *testing.T) {
	need(t, "mkswap", "blkid")
	for _, ps := range []int64{4096, 65536} {
		img := sparse(t, t.TempDir(), 16<<20)
		writeAt(t, img, 1<<20, randBytes(64<<10, 1)) // swapped-out pages
		run(t, "mkswap", "-q", "-p", strconv.FormatInt(ps, 10), "-L", "preboot", img)
		info, err := Inspect(openT(t, img), 16<<20)
		if err != nil || info.FSType != "swap" || !equalExtents(info.Used, []disk.Extent{{Offset: 0, Length: ps}}) {
			t.Fatalf("page size %d: %+v %v", ps, info, err)
		}
		// The header alone is a valid swap area with the same label.
		cp := copyUsed(t, img, info.Used)
		if out := run(t, "blkid", "-p", "-o", "value", "-s", "LABEL", cp); strings.TrimSpace(out) != "preboot" {
			t.Errorf("page size %d: copy reads as %q", ps, out)
		}
	}
}

// A swap area holding a hibernation image is kept whole and unsafe to capture.
func TestSwapHibernated(t *testing.T) {
	need(t, "mkswap")
	img := sparse(t, t.TempDir(), 8<<20)
	run(t, "mkswap", "-q", img)
	writeAt(t, img, 4096-10, []byte("S1SUSPEND\x00"))
	writeAt(t, img, 3<<20, randBytes(1000, 2))
	info, err := Inspect(openT(t, img), 8<<20)
	if err != nil || info.FSType != "swap" || info.Unsafe == nil || len(info.Warnings) == 0 {
		t.Fatalf("%+v %v", info, err)
	}
	raw, _ := Raw(openT(t, img), 8<<20)
	if !equalExtents(info.Used, raw) {
		t.Fatalf("used %v, raw %v", info.Used, raw)
	}
}

// A SWAPSPACE2 signature without the version-1 header is not trusted as swap.
func TestSwapBadVersion(t *testing.T) {
	img := sparse(t, t.TempDir(), 1<<20)
	writeAt(t, img, 4096-10, []byte("SWAPSPACE2"))
	writeAt(t, img, 1024, []byte{7, 0, 0, 0})
	writeAt(t, img, 512<<10, []byte{1})
	if info, err := Inspect(openT(t, img), 1<<20); err != nil || info.FSType != "raw" {
		t.Fatalf("%+v %v", info, err)
	}
}

// LUKS: cryptsetup is not installed here, so the headers are made by hand
// (LUKS1 and LUKS2 binary headers: magic, big-endian version).
func TestLUKS(t *testing.T) {
	for _, v := range []uint16{1, 2} {
		img := sparse(t, t.TempDir(), 4<<20)
		hdr := append([]byte("LUKS\xba\xbe"), byte(v>>8), byte(v))
		hdr = append(hdr, []byte("aes\x00")...)
		writeAt(t, img, 0, hdr)
		writeAt(t, img, 2<<20, randBytes(300<<10, 3)) // ciphertext
		info, err := Inspect(openT(t, img), 4<<20)
		if err != nil || info.FSType != "luks" || len(info.Warnings) != 1 || !strings.Contains(info.Warnings[0], "LUKS") {
			t.Fatalf("v%d: %+v %v", v, info, err)
		}
		raw, _ := Raw(openT(t, img), 4<<20)
		if !equalExtents(info.Used, raw) {
			t.Fatalf("v%d: used %v, raw %v", v, info.Used, raw)
		}
	}
}

// BitLocker: a hand-made volume header ("-FVE-FS-" at 3) over what looks
// like NTFS, and a BitLocker To Go volume whose decoy FAT (made by
// mkfs.fat) says nothing about the encrypted data.
func TestBitLocker(t *testing.T) {
	need(t, "mkfs.fat")
	t.Run("fve", func(t *testing.T) {
		img := sparse(t, t.TempDir(), 8<<20)
		bs := make([]byte, 512)
		copy(bs, "\xeb\x58\x90-FVE-FS-")
		binary.LittleEndian.PutUint16(bs[11:], 512)
		bs[510], bs[511] = 0x55, 0xaa
		writeAt(t, img, 0, bs)
		writeAt(t, img, 5<<20, randBytes(100<<10, 4))
		info, err := Inspect(openT(t, img), 8<<20)
		if err != nil || info.FSType != "bitlocker" || len(info.Warnings) != 1 || !strings.Contains(info.Warnings[0], "recovery key") {
			t.Fatalf("%+v %v", info, err)
		}
		raw, _ := Raw(openT(t, img), 8<<20)
		if !equalExtents(info.Used, raw) {
			t.Fatalf("used %v, raw %v", info.Used, raw)
		}
	})
	t.Run("to-go", func(t *testing.T) {
		img := sparse(t, t.TempDir(), 64<<20)
		run(t, "mkfs.fat", "-F", "32", "-s", "1", img)
		if typ, _ := usedOf(t, img); typ != "fat32" {
			t.Fatalf("decoy is %s", typ)
		}
		writeAt(t, img, 3, []byte("MSWIN4.1"))
		fve := int64(20 << 20)
		off := binary.LittleEndian.AppendUint64(nil, uint64(fve))
		writeAt(t, img, 440, off)
		writeAt(t, img, fve, []byte(bitLockerFVE))
		writeAt(t, img, 25<<20, randBytes(64<<10, 5)) // ciphertext where the FAT says free
		info, err := Inspect(openT(t, img), 64<<20)
		if err != nil || info.FSType != "bitlocker" {
			t.Fatalf("%+v %v", info, err)
		}
		if !covers(info.Used, 25<<20, 64<<10) || !covers(info.Used, fve, 8) {
			t.Fatalf("used %v misses the encrypted data", info.Used)
		}
		// Without the FVE metadata it is the plain FAT it says it is.
		writeAt(t, img, fve, bytes.Repeat([]byte{0}, 8))
		if typ, _ := usedOf(t, img); typ != "fat32" {
			t.Fatalf("plain MSWIN4.1 FAT mapped as %s", typ)
		}
	})
}

func covers(ex []disk.Extent, off, n int64) bool {
	for _, e := range ex {
		if e.Offset <= off && off+n <= e.End() {
			return true
		}
	}
	return false
}
