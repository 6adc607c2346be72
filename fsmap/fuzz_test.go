package fsmap

import (
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/preboot/preboot/disk"
)

// The fuzz inputs describe a sparse partition, so small corpus files can hold
// real filesystem metadata: 8 bytes size (clipped to maxFuzzSize), then
// records of 4 bytes offset, 2 bytes length, data. Zeros elsewhere.
const maxFuzzSize = 64<<20 + 1

type region struct {
	off  int64
	data []byte
}

type overlay struct {
	size int64
	rr   []region
}

func decodeOverlay(b []byte) *overlay {
	o := &overlay{}
	if len(b) < 8 {
		return o
	}
	o.size = int64(binary.LittleEndian.Uint64(b) % maxFuzzSize)
	b = b[8:]
	for len(b) >= 6 {
		off := int64(binary.LittleEndian.Uint32(b))
		n := min(int(binary.LittleEndian.Uint16(b[4:])), len(b)-6)
		o.rr = append(o.rr, region{off, b[6 : 6+n]})
		b = b[6+n:]
	}
	return o
}

func (o *overlay) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off >= o.size {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), o.size-off))
	clear(p[:n])
	for _, g := range o.rr {
		lo, hi := max(off, g.off), min(off+int64(n), g.off+int64(len(g.data)))
		if lo < hi {
			copy(p[lo-off:hi-off], g.data[lo-g.off:hi-g.off])
		}
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func FuzzUsed(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		// The filesystem readers only: the raw fallback is a plain scan
		// (TestRawZeroSkip) and would only slow the fuzzer down.
		o := decodeOverlay(data)
		info, err := detectFS(o, o.size)
		if err != nil && !errors.Is(err, errCorrupt) {
			t.Fatalf("reading an in-memory disk: %v", err)
		}
		checkSorted(t, info.Used, o.size)
		checkSorted(t, info.Zero, o.size)
	})
}

// encodeOverlay keeps the sectors of img that keep(sectorOffset) selects
// and that are not all zero.
func encodeOverlay(img []byte, keep func(off int64) bool) []byte {
	out := binary.LittleEndian.AppendUint64(nil, uint64(len(img)))
	for s := 0; s < len(img); s += 512 {
		sec := img[s:min(s+512, len(img))]
		if disk.AllZero(sec) || !keep(int64(s)) {
			continue
		}
		out = binary.LittleEndian.AppendUint32(out, uint32(s))
		out = binary.LittleEndian.AppendUint16(out, uint16(len(sec)))
		out = append(out, sec...)
	}
	return out
}

var updateSeeds = flag.Bool("update-seeds", false, "rewrite testdata/fuzz seed corpora from images made with the real tools")

// TestWriteFuzzSeeds regenerates testdata/fuzz/FuzzUsed from filesystems
// made with the real tools: go test -run TestWriteFuzzSeeds ./fsmap/ -update-seeds
func TestWriteFuzzSeeds(t *testing.T) {
	if !*updateSeeds {
		return // the corpus is checked in; -update-seeds rewrites it
	}
	need(t, "mke2fs", "mkfs.fat", "mkfs.ntfs", "mcopy")
	dir := filepath.Join("testdata", "fuzz", "FuzzUsed")
	os.MkdirAll(dir, 0o755)
	small := t.TempDir()
	os.WriteFile(filepath.Join(small, "hello.txt"), []byte("hello, preboot\n"), 0o644)
	os.WriteFile(filepath.Join(small, "two.txt"), make([]byte, 9000), 0o644)
	all := func(int64) bool { return true }
	type seed struct {
		name string
		size int64
		mk   func(img string)
	}
	seeds := []seed{
		{"ext2-1k", 2 << 20, func(img string) {
			run(t, "mke2fs", "-q", "-F", "-t", "ext2", "-b", "1024", "-N", "32", "-I", "128", "-d", small, img)
		}},
		{"ext4-64bit", 8 << 20, func(img string) {
			run(t, "mke2fs", "-q", "-F", "-t", "ext4", "-O", "64bit,^has_journal,^resize_inode", "-N", "32", "-d", small, img)
		}},
		{"ext4-bigalloc-metabg", 8 << 20, func(img string) {
			run(t, "mke2fs", "-q", "-F", "-t", "ext4", "-b", "1024", "-g", "1024", "-O", "bigalloc,meta_bg,^resize_inode,^has_journal", "-C", "4096", "-N", "64", img)
		}},
		{"fat12", 1 << 20, func(img string) {
			run(t, "mkfs.fat", "-F", "12", img)
			run(t, "mcopy", "-i", img, filepath.Join(small, "hello.txt"), filepath.Join(small, "two.txt"), "::/")
		}},
		{"fat16", 16 << 20, func(img string) {
			run(t, "mkfs.fat", "-F", "16", img)
			run(t, "mcopy", "-i", img, filepath.Join(small, "hello.txt"), "::/")
		}},
		{"fat32", 34 << 20, func(img string) {
			run(t, "mkfs.fat", "-F", "32", "-s", "1", img)
			run(t, "mcopy", "-i", img, filepath.Join(small, "hello.txt"), "::/")
		}},
		{"ntfs", 8 << 20, func(img string) {
			run(t, "mkfs.ntfs", "-F", "-Q", "-q", img)
		}},
	}
	for _, s := range seeds {
		img := sparse(t, t.TempDir(), s.size)
		s.mk(img)
		b, err := os.ReadFile(img)
		if err != nil {
			t.Fatal(err)
		}
		keep := all
		if s.name == "ntfs" {
			keep = ntfsSeedSectors(t, b)
		}
		if s.size > maxFuzzSize {
			keep = func(off int64) bool { return off < 1<<20 }
		}
		enc := encodeOverlay(b, keep)
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", enc)
		if len(body) > 100<<10 {
			t.Errorf("seed %s is %d bytes", s.name, len(body))
		}
		if err := os.WriteFile(filepath.Join(dir, s.name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		typ, _, err := Detect(decodeOverlay(enc), min(s.size, maxFuzzSize-1))
		t.Logf("%s: %d bytes, detected %s (%v)", s.name, len(body), typ, err)
	}
}

// ntfsSeedSectors selects what the NTFS reader reads: the boot sector,
// MFT record 6 and the $Bitmap clusters.
func ntfsSeedSectors(t *testing.T, b []byte) func(int64) bool {
	bps := int64(binary.LittleEndian.Uint16(b[0x0b:]))
	cs := bps * int64(b[0x0d])
	mft := int64(binary.LittleEndian.Uint64(b[0x30:])) * cs
	rec := int64(1) << uint(-int8(b[0x40]))
	r6 := mft + 6*rec
	m := append([]byte(nil), b[r6:r6+rec]...)
	d, err := ntfsDataAttr(m)
	if err != nil {
		t.Fatal(err)
	}
	runs, err := ntfsRuns(d.runlist, int64(len(b))/cs)
	if err != nil {
		t.Fatal(err)
	}
	return func(off int64) bool {
		if off < bps || (off >= r6 && off < r6+rec) {
			return true
		}
		for _, r := range runs {
			if off >= r.lcn*cs && off < (r.lcn+r.n)*cs {
				return true
			}
		}
		return false
	}
}
