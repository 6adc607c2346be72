package fsmap

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"github.com/preboot/preboot/disk"
)

// needRoot skips tests that loop-mount images when not root (CI is root).
func btrfsNeedRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("loop mounts need root")
	}
}

// mountBtrfs loop-mounts img at a fresh directory and returns it, with the
// unmount registered for cleanup in case the test stops early.
func mountBtrfs(t testing.TB, img string, opts string) string {
	t.Helper()
	dir := t.TempDir()
	run(t, "mount", "-t", "btrfs", "-o", "loop,"+opts, img, dir)
	mounted := true
	t.Cleanup(func() {
		if mounted {
			exec.Command("umount", dir).Run()
		}
	})
	return dir
}

// btrfsDump lists (from btrfs-progs, not our reader) the device extents and
// the allocated extents of the data block groups ("logical+length").
func btrfsDump(t testing.TB, img string) (dev []disk.Extent, data []disk.Extent) {
	t.Helper()
	re := regexp.MustCompile(`key \(1 DEV_EXTENT (\d+)\)[^\n]*\n[^\n]*\n[^\n]*length (\d+)`)
	for _, m := range re.FindAllStringSubmatch(run(t, "btrfs", "inspect-internal", "dump-tree", "-t", "dev", img), -1) {
		off, _ := strconv.ParseInt(m[1], 10, 64)
		n, _ := strconv.ParseInt(m[2], 10, 64)
		dev = append(dev, disk.Extent{Offset: off, Length: n})
	}
	re = regexp.MustCompile(`key \((\d+) EXTENT_ITEM (\d+)\)[^\n]*\n[^\n]*flags DATA`)
	for _, m := range re.FindAllStringSubmatch(run(t, "btrfs", "inspect-internal", "dump-tree", "-t", "extent", img), -1) {
		off, _ := strconv.ParseInt(m[1], 10, 64)
		n, _ := strconv.ParseInt(m[2], 10, 64)
		data = append(data, disk.Extent{Offset: off, Length: n})
	}
	if len(dev) == 0 {
		t.Fatal("dump-tree lists no dev extents")
	}
	return dev, data
}

// covered reports whether every byte of e is inside the sorted extents ex.
func covered(ex []disk.Extent, e disk.Extent) bool {
	return len(subtractSorted([]disk.Extent{e}, ex)) == 0
}

func btrfsPartcloneUsed(t testing.TB, img string) int64 {
	t.Helper()
	out, err := exec.Command("partclone.btrfs", "-c", "-s", img, "-O", os.DevNull).CombinedOutput()
	if err != nil {
		t.Logf("partclone.btrfs: %v", err)
		return -1
	}
	return grabInt(t, string(out), `Space in use:.*= (\d+) Blocks`) * grabInt(t, string(out), `Block size:\s+(\d+)`)
}

func TestBtrfs(t *testing.T) {
	need(t, "mkfs.btrfs", "btrfs")
	btrfsNeedRoot(t)
	files := tree(t, 5, 60)
	cases := []struct {
		name  string
		size  int64
		args  []string
		mount bool // fill through the kernel; else mkfs --rootdir
	}{
		{"dup-fst", 384 << 20, nil, true},
		{"single-fst", 384 << 20, []string{"-m", "single"}, true},
		{"nodesize4k", 256 << 20, []string{"-n", "4096"}, true},
		{"rootdir-no-fst", 256 << 20, []string{"-R", "^free-space-tree"}, false},
		{"sha256", 256 << 20, []string{"--csum", "sha256"}, true},
		{"blake2", 256 << 20, []string{"--csum", "blake2"}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			img := sparse(t, t.TempDir(), tc.size)
			args := append([]string{"-q", "-f"}, tc.args...)
			if !tc.mount {
				args = append(args, "--rootdir", files)
			}
			run(t, "mkfs.btrfs", append(args, img)...)
			if tc.mount {
				dir := mountBtrfs(t, img, "")
				run(t, "cp", "-a", files+"/.", dir)
				// Fill, then free: space the free-space tree must give back.
				for i := range 4 {
					b := make([]byte, 5<<20+i*4096)
					for j := range b {
						b[j] = byte(i + j%251)
					}
					os.WriteFile(filepath.Join(dir, fmt.Sprintf("gone%d", i)), b, 0o644)
				}
				run(t, "sync")
				for i := range 4 {
					if i%2 == 0 {
						os.Remove(filepath.Join(dir, fmt.Sprintf("gone%d", i)))
					}
				}
				run(t, "umount", dir)
			}
			f, err := os.Open(img)
			if err != nil {
				t.Fatal(err)
			}
			info, err := Inspect(f, tc.size)
			f.Close()
			if err != nil {
				t.Fatal(err)
			}
			if info.FSType != "btrfs" {
				t.Fatalf("type %s, warnings %v", info.FSType, info.Warnings)
			}
			checkSorted(t, info.Used, tc.size)
			for _, w := range info.Warnings {
				t.Logf("warning: %s", w)
			}

			// What btrfs-progs says is allocated must be in our map: every
			// device extent whole at the allocation level, and every data
			// extent (on each copy) after the refinement.
			dev, data := btrfsDump(t, img)
			fs := btrfsOpen(t, img, tc.size)
			var alloc int64
			for _, d := range dev {
				alloc += d.Length
				c := fs.chunkAt(fs.physToChunk(d.Offset))
				if c == nil {
					t.Fatalf("dev extent %+v in no chunk we read", d)
				}
				if c.typ&btrfsBGData == 0 && !covered(info.Used, d) {
					t.Errorf("metadata dev extent %+v not in the map", d)
				}
			}
			for _, e := range data {
				c := fs.chunkAt(e.Offset)
				if c == nil {
					t.Fatalf("data extent %+v in no chunk", e)
				}
				for _, s := range c.stripes {
					p := disk.Extent{Offset: s.phys + e.Offset - c.logical, Length: e.Length}
					if !covered(info.Used, p) {
						t.Errorf("data extent %+v (physical %+v) not in the map", e, p)
					}
				}
			}

			// The decisive check: only our extents, restored onto zeros,
			// give a filesystem btrfs check accepts with the same files.
			cp := copyUsed(t, img, info.Used)
			run(t, "btrfs", "check", "--readonly", cp)
			sameTree(t, files, mountBtrfs(t, cp, "ro"))

			t.Logf("btrfs %s: %d extents, %d KiB used, %d KiB allocated, partclone.btrfs %d KiB",
				tc.name, len(info.Used), total(info.Used)>>10, alloc>>10, btrfsPartcloneUsed(t, img)>>10)
			if tc.mount && total(info.Used) >= alloc+1<<20 {
				t.Errorf("the free-space tree refined nothing: %d bytes used of %d allocated", total(info.Used), alloc)
			}
		})
	}
}

// btrfsOpen parses img's superblock and chunks (for the test's mapping).
func btrfsOpen(t testing.TB, img string, size int64) *btrfsFS {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	sb := make([]byte, btrfsSuperSize)
	if err := disk.ReadFull(f, sb, btrfsSuperOff); err != nil {
		t.Fatal(err)
	}
	fs := &btrfsFS{r: f, size: size, verifyCsum: true}
	if err := fs.parseSuper(sb); err != nil {
		t.Fatal(err)
	}
	if err := fs.readChunks(sb); err != nil {
		t.Fatal(err)
	}
	return fs
}

// physToChunk returns the logical address of the chunk with a stripe at phys.
func (fs *btrfsFS) physToChunk(phys int64) int64 {
	for _, c := range fs.chunks {
		for _, s := range c.stripes {
			if s.phys == phys {
				return c.logical
			}
		}
	}
	return -1
}

// TestBtrfsRefuses: what the reader must not trust goes raw.
func TestBtrfsRefuses(t *testing.T) {
	need(t, "mkfs.btrfs")
	dir := t.TempDir()
	const size = 128 << 20
	img := sparse(t, dir, size)
	run(t, "mkfs.btrfs", "-q", "-f", img)
	orig, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	resum := func(b []byte) { le.PutUint32(b, crc32.Checksum(b[32:], crc32c)) }
	sbOf := func(b []byte) []byte { return b[btrfsSuperOff : btrfsSuperOff+btrfsSuperSize] }
	cases := []struct {
		name string
		edit func(b []byte)
		want string
	}{
		{"two-devices", func(b []byte) { le.PutUint64(sbOf(b)[0x88:], 2); resum(sbOf(b)) }, "2 devices"},
		{"raid56-flag", func(b []byte) { le.PutUint64(sbOf(b)[0xbc:], le.Uint64(sbOf(b)[0xbc:])|1<<7); resum(sbOf(b)) }, "incompat"},
		{"zoned-flag", func(b []byte) { le.PutUint64(sbOf(b)[0xbc:], le.Uint64(sbOf(b)[0xbc:])|1<<12); resum(sbOf(b)) }, "incompat"},
		{"xxhash", func(b []byte) { le.PutUint16(sbOf(b)[0xc4:], 1); resum(sbOf(b)) }, "checksum type"},
		{"bad-super-csum", func(b []byte) { sbOf(b)[0x100]++ }, "superblock checksum"},
		{"truncated", func(b []byte) { le.PutUint64(sbOf(b)[0xd1:], size*2); resum(sbOf(b)) }, "partition"},
		{"bad-chunk-root", func(b []byte) {
			// Flip a byte in every copy of the chunk root block.
			f := &btrfsFS{size: size}
			root := int64(le.Uint64(sbOf(b)[0x58:]))
			f.sectorsize, f.devBytes, f.devid = 4096, size, le.Uint64(sbOf(b)[0xc9:])
			n, _ := f.parseChunkArray(sbOf(b))
			for _, c := range n {
				if root >= c.logical && root < c.end() {
					for _, s := range c.stripes {
						b[s.phys+root-c.logical+200]++
					}
				}
			}
		}, "checksum"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := append([]byte(nil), orig...)
			tc.edit(b)
			o := &overlay{size: size, rr: []region{{0, b}}}
			typ, _, err := Detect(o, size)
			if !errors.Is(err, errCorrupt) || !regexp.MustCompile(tc.want).MatchString(err.Error()) {
				t.Fatalf("Detect: %s, %v; want errCorrupt with %q", typ, err, tc.want)
			}
			if tc.name != "two-devices" {
				return // the raw fallback is the same for all (and slow under -race)
			}
			info, err := Inspect(o, size)
			if err != nil || info.FSType != "raw" || len(info.Warnings) == 0 {
				t.Fatalf("Inspect: %+v, %v; want raw with a warning", info.FSType, err)
			}
		})
	}
}

// parseChunkArray decodes the sys_chunk_array (test helper).
func (fs *btrfsFS) parseChunkArray(sb []byte) ([]*btrfsChunk, error) {
	arr := sb[0x32b : 0x32b+binary.LittleEndian.Uint32(sb[0xa0:])]
	var out []*btrfsChunk
	for len(arr) >= 17 {
		c, sz, err := fs.parseChunk(btrfsKeyAt(arr).offset, arr[17:])
		if err != nil {
			return out, err
		}
		out = append(out, c)
		arr = arr[17+sz:]
	}
	return out, nil
}

func TestSubtractSorted(t *testing.T) {
	ex := func(v ...int64) (out []disk.Extent) {
		for i := 0; i < len(v); i += 2 {
			out = append(out, disk.Extent{Offset: v[i], Length: v[i+1]})
		}
		return out
	}
	got := subtractSorted(ex(0, 100, 200, 100, 400, 50), ex(10, 10, 15, 10, 90, 120, 250, 10, 400, 50))
	want := ex(0, 10, 25, 65, 210, 40, 260, 40)
	if !equalExtents(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

// recorder notes which sectors a reader reads (to keep fuzz seeds small).
type recorder struct {
	r    *overlay
	read map[int64]bool
}

func (rc *recorder) ReadAt(p []byte, off int64) (int, error) {
	for s := off &^ 511; s < off+int64(len(p)); s += 512 {
		rc.read[s] = true
	}
	return rc.r.ReadAt(p, off)
}

// TestWriteBtrfsFuzzSeeds regenerates testdata/fuzz/FuzzBtrfs from real
// mkfs.btrfs filesystems, keeping only the sectors the reader reads:
// go test -run TestWriteBtrfsFuzzSeeds ./fsmap/ -update-seeds
func TestWriteBtrfsFuzzSeeds(t *testing.T) {
	if !*updateSeeds {
		return
	}
	need(t, "mkfs.btrfs")
	dir := filepath.Join("testdata", "fuzz", "FuzzBtrfs")
	os.MkdirAll(dir, 0o755)
	small := t.TempDir()
	os.WriteFile(filepath.Join(small, "hello.txt"), []byte("hello, preboot\n"), 0o644)
	os.WriteFile(filepath.Join(small, "two.bin"), make([]byte, 300000), 0o644)
	seeds := []struct {
		name string
		args []string
	}{
		// DUP metadata needs 114 MiB, more than the overlay holds.
		{"single-16k", []string{"-m", "single"}},
		{"single-4k-rootdir", []string{"-n", "4096", "-m", "single", "--rootdir", small}},
		{"no-fst-4k", []string{"-n", "4096", "-m", "single", "-R", "^free-space-tree"}},
		{"mixed-4k", []string{"-n", "4096", "--mixed", "--rootdir", small}},
	}
	const size = maxFuzzSize - 1 // 64 MiB: the largest the overlay holds
	for _, s := range seeds {
		img := sparse(t, t.TempDir(), size)
		run(t, "mkfs.btrfs", append(append([]string{"-q", "-f"}, s.args...), img)...)
		b, err := os.ReadFile(img)
		if err != nil {
			t.Fatal(err)
		}
		rc := &recorder{r: &overlay{size: size, rr: []region{{0, b}}}, read: map[int64]bool{}}
		info, err := Inspect(rc, size)
		if err != nil || info.FSType != "btrfs" {
			t.Fatalf("%s: %s %v %v", s.name, info.FSType, err, info.Warnings)
		}
		// Raw would read everything; btrfs reads the superblock and trees.
		enc := encodeOverlay(b, func(off int64) bool { return rc.read[off] && off >= 64<<10 })
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", enc)
		if len(body) > 64<<10 {
			t.Errorf("seed %s is %d bytes", s.name, len(body))
			continue
		}
		if err := os.WriteFile(filepath.Join(dir, s.name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		o := decodeOverlay(enc)
		again, err := Inspect(o, o.size)
		if err != nil || again.FSType != "btrfs" || !equalExtents(again.Used, info.Used) {
			t.Errorf("seed %s does not map as the image does: %s %v %v", s.name, again.FSType, err, again.Warnings)
		}
		t.Logf("%s: %d bytes, %d KiB used", s.name, len(body), total(info.Used)>>10)
	}
}

// FuzzBtrfs runs the btrfs reader on sparse images; a second pass skips
// checksum verification so mutations reach the tree parsers.
func FuzzBtrfs(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		o := decodeOverlay(data)
		if o.size < btrfsSuperOff+btrfsSuperSize {
			return
		}
		sb := make([]byte, btrfsSuperSize)
		o.ReadAt(sb, btrfsSuperOff)
		for _, verify := range []bool{true, false} {
			fs := &btrfsFS{r: o, size: o.size, verifyCsum: verify}
			info, err := fs.used(sb)
			if err != nil && !errors.Is(err, errCorrupt) {
				t.Fatalf("reading an in-memory disk: %v", err)
			}
			if err == nil {
				checkSorted(t, info.Used, o.size)
			}
		}
	})
}
