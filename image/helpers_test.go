package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/preboot/preboot/disk"
)

const mib = 1 << 20

// countingWriter records every write to an underlying WriterAt.
type countingWriter struct {
	w      io.WriterAt
	mu     sync.Mutex
	n      int64
	writes int
	maxEnd int64
	minOff int64
}

func newCounting(w io.WriterAt) *countingWriter { return &countingWriter{w: w, minOff: -1} }

func (c *countingWriter) WriteAt(p []byte, off int64) (int, error) {
	c.mu.Lock()
	c.n += int64(len(p))
	c.writes++
	c.maxEnd = max(c.maxEnd, off+int64(len(p)))
	if c.minOff < 0 || off < c.minOff {
		c.minOff = off
	}
	c.mu.Unlock()
	return c.w.WriteAt(p, off)
}

func openRepo(t testing.TB) *Repo {
	t.Helper()
	r, err := OpenRepo(t.TempDir(), RepoOptions{GCGrace: -1})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// ext4Disk builds a disk image file: boot code in sector 0, garbage in the
// post-MBR gap like GRUB's core.img, an ext4 filesystem made with
// mkfs.ext4 -d at 1 MiB, and a raw partition with a few data blocks. It
// returns the path, the layout (ext4 used blocks from dumpe2fs) and the
// files put into the filesystem.
type testDisk struct {
	path   string
	layout Layout
	files  map[string][]byte
}

func buildExt4Disk(t testing.TB, dir string, seed uint64) testDisk {
	t.Helper()
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("mkfs.ext4 not installed (e2fsprogs)")
	}
	rng := rand.New(rand.NewPCG(seed, 1))
	src := filepath.Join(dir, "src")
	files := map[string][]byte{}
	for i := range 12 {
		var b []byte
		switch i % 3 {
		case 0: // incompressible
			b = make([]byte, 300<<10+i*4096)
			for j := range b {
				b[j] = byte(rng.Uint32())
			}
		case 1: // text
			b = []byte(strings.Repeat("preboot imaging test line "+strconv.Itoa(i)+"\n", 20000))
		case 2: // zeros inside a file: used blocks that are zero
			b = make([]byte, 256<<10)
		}
		name := "f" + strconv.Itoa(i)
		files[name] = b
		if err := os.MkdirAll(src, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(src, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	fsImg := filepath.Join(dir, "fs.img")
	const fsSize = 40 * mib
	if err := os.WriteFile(fsImg, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(fsImg, fsSize); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-b", "4096", "-E", "root_owner=0:0", "-d", src, fsImg).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	used := ext4Used(t, fsImg, fsSize)
	fsData, err := os.ReadFile(fsImg)
	if err != nil {
		t.Fatal(err)
	}

	const diskSize = 64 * mib
	img := make([]byte, diskSize)
	for i := range 446 { // boot code
		img[i] = byte(rng.Uint32())
	}
	img[510], img[511] = 0x55, 0xaa
	for i := 512; i < 512+40<<10; i++ { // "core.img" in the post-MBR gap
		img[i] = byte(i * 7)
	}
	copy(img[mib:], fsData)
	rawStart := int64(mib + fsSize)
	rawSize := int64(16 * mib)
	for i := rawStart + 3*mib; i < rawStart+3*mib+100<<10; i++ {
		img[i] = byte(rng.Uint32())
	}
	path := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(path, img, 0o644); err != nil {
		t.Fatal(err)
	}
	parts := []Area{
		{Index: 1, Start: mib, Size: fsSize, FSType: "ext4", Used: used},
		{Index: 2, Start: rawStart, Size: rawSize, FSType: "raw"}, // nil Used: whole, zero-skip
	}
	return testDisk{
		path:   path,
		files:  files,
		layout: Layout{DiskSize: diskSize, Table: []byte(`{"kind":"mbr"}`), Partitions: parts, Regions: Gaps(diskSize, parts)},
	}
}

var freeRE = regexp.MustCompile(`^\s+Free blocks: (.*)$`)

// ext4Used derives the used extents of an ext4 image from dumpe2fs's free
// block lists (an independent reader of the block bitmaps).
func ext4Used(t testing.TB, img string, size int64) []disk.Extent {
	t.Helper()
	out, err := exec.Command("dumpe2fs", img).Output()
	if err != nil {
		t.Fatalf("dumpe2fs: %v", err)
	}
	const bs = 4096
	nblocks := size / bs
	free := make([]bool, nblocks)
	for _, line := range strings.Split(string(out), "\n") {
		m := freeRE.FindStringSubmatch(line)
		if m == nil || strings.TrimSpace(m[1]) == "" {
			continue
		}
		for _, r := range strings.Split(m[1], ",") {
			r = strings.TrimSpace(r)
			a, b, ok := strings.Cut(r, "-")
			lo, _ := strconv.ParseInt(a, 10, 64)
			hi := lo
			if ok {
				hi, _ = strconv.ParseInt(b, 10, 64)
			}
			for i := lo; i <= hi && i < nblocks; i++ {
				free[i] = true
			}
		}
	}
	var used []disk.Extent
	for i := int64(0); i < nblocks; i++ {
		if !free[i] {
			used = append(used, disk.Extent{Offset: i * bs, Length: bs})
		}
	}
	used = NormalizeExtents(used)
	if len(used) == 0 || extentBytes(used) == size {
		t.Fatalf("dumpe2fs parse: %d used extents, %d bytes", len(used), extentBytes(used))
	}
	return used
}

// garbageFile creates a file of size bytes full of pseudo-random data, so
// a restore that forgets a used byte is caught.
func garbageFile(t testing.TB, path string, size int64) *os.File {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	rng := rand.New(rand.NewPCG(99, 7))
	buf := make([]byte, mib)
	for i := 0; i < len(buf); i += 8 {
		v := rng.Uint64()
		for k := range 8 {
			buf[i+k] = byte(v >> (8 * k))
		}
	}
	for off := int64(0); off < size; off += mib {
		buf[0]++ // MiBs differ a little
		if _, err := f.WriteAt(buf[:min(mib, size-off)], off); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// sameUsed checks that every used byte of m matches between a and b.
func sameUsed(t testing.TB, m *Manifest, a, b io.ReaderAt) {
	t.Helper()
	for _, ar := range m.Areas() {
		for _, e := range ar.Used {
			x := make([]byte, e.Length)
			y := make([]byte, e.Length)
			if _, err := a.ReadAt(x, ar.Start+e.Offset); err != nil {
				t.Fatal(err)
			}
			if _, err := b.ReadAt(y, ar.Start+e.Offset); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(x, y) {
				t.Fatalf("%s: used extent [%d,+%d) differs after restore", ar.Label(), e.Offset, e.Length)
			}
		}
	}
}

func sha(b []byte) [32]byte { return sha256.Sum256(b) }

func capture(t testing.TB, path string, l Layout, store ChunkStore, name string) (*Manifest, Progress) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var last Progress
	m, err := Capture(context.Background(), f, l, store, CaptureOptions{Name: name, Progress: func(p Progress) { last = p }})
	if err != nil {
		t.Fatal(err)
	}
	return m, last
}
