package fsmap

import (
	"bytes"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/preboot/preboot/disk"
)

// need fails the test when a tool is missing (the Makefile installs them).
func need(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: install Debian packages e2fsprogs dosfstools mtools ntfs-3g (make deps-test)", tool)
		}
	}
}

func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}

func sparse(t testing.TB, dir string, size int64) string {
	t.Helper()
	f, err := os.CreateTemp(dir, "fs-*.img")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	return f.Name()
}

// tree writes a deterministic set of files (sizes chosen to straddle block
// boundaries, a few MiB-sized ones to span groups, many small ones).
func tree(t testing.TB, seed int64, nsmall int) string {
	t.Helper()
	dir := t.TempDir()
	rnd := rand.New(rand.NewSource(seed))
	write := func(name string, n int) {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		b := make([]byte, n)
		rnd.Read(b)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for i, n := range []int{0, 1, 511, 513, 4095, 4097, 65537, 1 << 20, 3<<20 + 17} {
		write(fmt.Sprintf("f%d.bin", i), n)
	}
	for i := 0; i < nsmall; i++ {
		write(fmt.Sprintf("dir%d/s%d.txt", i%7, i), rnd.Intn(9000))
	}
	return dir
}

func usedOf(t testing.TB, path string) (string, []disk.Extent) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	typ, ex, err := Used(f, st.Size())
	if err != nil {
		t.Fatalf("Used(%s): %v", path, err)
	}
	checkSorted(t, ex, st.Size())
	return typ, ex
}

func checkSorted(t testing.TB, ex []disk.Extent, size int64) {
	t.Helper()
	for i, e := range ex {
		if e.Length <= 0 || e.Offset < 0 || e.End() > size {
			t.Fatalf("extent %d %+v out of range", i, e)
		}
		if i > 0 && e.Offset <= ex[i-1].End() {
			t.Fatalf("extents %d,%d not sorted/merged: %+v %+v", i-1, i, ex[i-1], e)
		}
	}
}

func total(ex []disk.Extent) (n int64) {
	for _, e := range ex {
		n += e.Length
	}
	return n
}

// copyUsed copies only the used extents of src into a zero-filled file of
// the same size: what a restore writes.
func copyUsed(t testing.TB, src string, ex []disk.Extent) string {
	t.Helper()
	st, _ := os.Stat(src)
	dst := sparse(t, filepath.Dir(src), st.Size())
	in, _ := os.Open(src)
	defer in.Close()
	out, _ := os.OpenFile(dst, os.O_RDWR, 0)
	defer out.Close()
	for _, e := range ex {
		if _, err := io.Copy(io.NewOffsetWriter(out, e.Offset), io.NewSectionReader(in, e.Offset, e.Length)); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// sameTree compares two directory trees file by file.
func sameTree(t testing.TB, want, got string) {
	t.Helper()
	n := 0
	filepath.Walk(want, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(want, p)
		a, _ := os.ReadFile(p)
		b, err := os.ReadFile(filepath.Join(got, rel))
		if err != nil || !bytes.Equal(a, b) {
			t.Errorf("file %s differs after the round trip (%v)", rel, err)
		}
		n++
		return nil
	})
	if n == 0 {
		t.Fatal("no files compared")
	}
}

// extentsOfBlocks turns a set of block numbers into byte extents.
func toExtents(blocks []int64, bs int64) []disk.Extent {
	sort.Slice(blocks, func(i, j int) bool { return blocks[i] < blocks[j] })
	var c collector
	for _, b := range blocks {
		c.add(b*bs, bs)
	}
	return c.result(1 << 62)
}

var freeRe = regexp.MustCompile(`(?m)^  Free blocks: (.*)$`)

// dumpe2fsUsed is e2fsprogs' own view: every block not listed free.
func dumpe2fsUsed(t testing.TB, img string) ([]disk.Extent, int64) {
	t.Helper()
	out := run(t, "dumpe2fs", img)
	field := func(name string) int64 {
		m := regexp.MustCompile(`(?m)^` + name + `:\s+(\d+)`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("dumpe2fs: no %s", name)
		}
		v, _ := strconv.ParseInt(m[1], 10, 64)
		return v
	}
	blocks, bs := field("Block count"), field("Block size")
	ratio := int64(1)
	if strings.Contains(out, "\nCluster size:") {
		ratio = field("Cluster size") / bs // bigalloc: ranges name clusters by their first block
	}
	free := make([]bool, blocks)
	for _, m := range freeRe.FindAllStringSubmatch(out, -1) {
		for _, r := range strings.Split(m[1], ",") {
			r = strings.TrimSpace(r)
			if r == "" {
				continue
			}
			a, b, ok := strings.Cut(r, "-")
			lo, _ := strconv.ParseInt(a, 10, 64)
			hi := lo
			if ok {
				hi, _ = strconv.ParseInt(b, 10, 64)
			}
			for x := lo; x <= min(hi+ratio-1, blocks-1); x++ {
				free[x] = true
			}
		}
	}
	var used []int64
	for b := int64(0); b < blocks; b++ {
		if !free[b] {
			used = append(used, b)
		}
	}
	return toExtents(used, bs), bs
}

func TestExt(t *testing.T) {
	need(t, "mkfs.ext4", "dumpe2fs", "debugfs", "e2fsck")
	files := tree(t, 1, 300)
	cases := []struct {
		name, typ string
		size      int64
		args      []string
	}{
		{"ext2-1k", "ext2", 24 << 20, []string{"-t", "ext2", "-b", "1024"}},
		{"ext3-2k", "ext3", 24 << 20, []string{"-t", "ext3", "-b", "2048"}},
		{"ext4", "ext4", 64 << 20, []string{"-t", "ext4"}},
		{"ext4-64bit-noflex", "ext4", 64 << 20, []string{"-t", "ext4", "-O", "64bit,^flex_bg"}},
		{"ext4-manygroups-1k", "ext4", 48 << 20, []string{"-t", "ext4", "-b", "1024", "-g", "1024", "-O", "64bit"}},
		{"ext4-metabg", "ext4", 64 << 20, []string{"-t", "ext4", "-b", "1024", "-g", "2048", "-O", "meta_bg,^resize_inode"}},
		{"ext4-uninitbg", "ext4", 64 << 20, []string{"-t", "ext4", "-O", "^metadata_csum,uninit_bg"}},
		{"ext4-bigalloc", "ext4", 64 << 20, []string{"-t", "ext4", "-O", "bigalloc", "-C", "16384"}},
		{"ext4-sparse2", "ext4", 64 << 20, []string{"-t", "ext4", "-b", "1024", "-O", "sparse_super2", "-E", "num_backup_sb=1"}},
		{"ext4-nosparse", "ext4", 32 << 20, []string{"-t", "ext4", "-b", "1024", "-O", "^sparse_super,^resize_inode"}},
		{"ext4-bigalloc-metabg-1k", "ext4", 32 << 20, []string{"-t", "ext4", "-b", "1024", "-g", "2048", "-C", "4096", "-O", "bigalloc,meta_bg,^resize_inode"}},
		{"ext4-64k", "ext4", 128 << 20, []string{"-t", "ext4", "-b", "65536"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			img := sparse(t, t.TempDir(), tc.size)
			args := append([]string{"-q", "-F", "-d", files}, tc.args...)
			run(t, "mke2fs", append(args, img)...)
			// Punch holes and fragment: delete files, then write new ones.
			cmds := "rm /f4.bin\nrm /f6.bin\nrm /f7.bin\nrm /dir3/s3.txt\nwrite " + filepath.Join(files, "f8.bin") + " /again8\n" +
				"write " + filepath.Join(files, "f7.bin") + " /again7\n"
			cmdFile := filepath.Join(t.TempDir(), "cmds")
			os.WriteFile(cmdFile, []byte(cmds), 0o644)
			run(t, "debugfs", "-w", "-f", cmdFile, img)
			typ, ex := usedOf(t, img)
			if typ != tc.typ {
				t.Fatalf("type %s, want %s", typ, tc.typ)
			}
			want, bs := dumpe2fsUsed(t, img)
			if !equalExtents(ex, want) {
				missing := subtract(want, ex)
				extra := subtract(ex, want)
				if len(missing) > 0 {
					t.Errorf("used blocks reported free (data loss!): %v", head(missing))
				}
				t.Logf("extra (harmless) extents: %v", head(extra))
			}
			t.Logf("%s: block size %d, %d extents, %d KiB used", typ, bs, len(ex), total(ex)>>10)
			cp := copyUsed(t, img, ex)
			run(t, "e2fsck", "-fn", cp)
			orig, out := t.TempDir(), t.TempDir()
			run(t, "debugfs", "-R", "rdump / "+orig, img)
			run(t, "debugfs", "-R", "rdump / "+out, cp)
			sameTree(t, orig, out)
			if _, err := os.Stat(filepath.Join(out, "again8")); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func equalExtents(a, b []disk.Extent) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// subtract returns the parts of a not covered by b.
func subtract(a, b []disk.Extent) []disk.Extent {
	var out []disk.Extent
	j := 0
	for _, e := range a {
		pos := e.Offset
		for j < len(b) && b[j].End() <= pos {
			j++
		}
		for k := j; k < len(b) && b[k].Offset < e.End(); k++ {
			if b[k].Offset > pos {
				out = append(out, disk.Extent{Offset: pos, Length: b[k].Offset - pos})
			}
			pos = max(pos, b[k].End())
		}
		if pos < e.End() {
			out = append(out, disk.Extent{Offset: pos, Length: e.End() - pos})
		}
	}
	return out
}

func head(ex []disk.Extent) []disk.Extent {
	if len(ex) > 10 {
		return ex[:10]
	}
	return ex
}

var fsckFatRe = regexp.MustCompile(`(\d+) files, (\d+)/(\d+) clusters`)

func TestFAT(t *testing.T) {
	need(t, "mkfs.fat", "fsck.fat", "mcopy", "mdel")
	files := tree(t, 2, 120)
	cases := []struct {
		typ  string
		size int64
		args []string
	}{
		{"fat12", 15 << 20, []string{"-F", "12", "-s", "8"}},
		{"fat16", 48 << 20, []string{"-F", "16", "-s", "2"}},
		{"fat32", 64 << 20, []string{"-F", "32", "-s", "1"}},
		{"fat32", 300 << 20, []string{"-F", "32", "-S", "4096", "-s", "1"}},
	}
	for _, tc := range cases {
		t.Run(tc.typ+"-"+strings.Join(tc.args, ""), func(t *testing.T) {
			t.Parallel()
			img := sparse(t, t.TempDir(), tc.size)
			run(t, "mkfs.fat", append(tc.args, img)...)
			ents, _ := os.ReadDir(files)
			args := []string{"-s", "-i", img}
			for _, e := range ents {
				args = append(args, filepath.Join(files, e.Name()))
			}
			// Fragment: copy, delete a few, copy again so files interleave.
			run(t, "mcopy", append(append([]string(nil), args...), "::/")...)
			run(t, "mdel", "-i", img, "::/f4.bin", "::/f6.bin")
			run(t, "mmd", "-i", img, "::/again")
			run(t, "mcopy", append(append([]string(nil), args...), "::/again/")...)
			run(t, "mdel", "-i", img, "::/f7.bin")
			os.Setenv("MTOOLS_SKIP_CHECK", "1")

			typ, ex := usedOf(t, img)
			if typ != tc.typ {
				t.Fatalf("type %s, want %s", typ, tc.typ)
			}
			out := run(t, "fsck.fat", "-n", "-v", img)
			m := fsckFatRe.FindStringSubmatch(out)
			if m == nil {
				t.Fatalf("fsck.fat: %s", out)
			}
			usedClusters, _ := strconv.ParseInt(m[2], 10, 64)
			// Our count: bytes after the metadata area / cluster size.
			f, _ := os.Open(img)
			bs := make([]byte, 512)
			f.ReadAt(bs, 0)
			f.Close()
			bps, spc := int64(bs[11])|int64(bs[12])<<8, int64(bs[13])
			meta := ex[0].Length // reserved + FATs + root dir, always the first extent
			_ = meta
			var dataBytes int64
			dataStart := fatDataStart(bs)
			for _, e := range ex {
				if e.End() > dataStart {
					dataBytes += e.End() - max(e.Offset, dataStart)
				}
			}
			if got := dataBytes / (bps * spc); got != usedClusters {
				t.Errorf("%d used clusters, fsck.fat says %d", got, usedClusters)
			}
			cp := copyUsed(t, img, ex)
			run(t, "fsck.fat", "-n", cp)
			dir := t.TempDir()
			run(t, "mcopy", "-s", "-i", cp, "::/again", dir)
			again := filepath.Join(dir, "again")
			sameTree(t, files, again)
			t.Logf("%s: %d extents, %d KiB used of %d MiB", typ, len(ex), total(ex)>>10, tc.size>>20)
		})
	}
}

func fatDataStart(b []byte) int64 {
	u16 := func(o int) int64 { return int64(b[o]) | int64(b[o+1])<<8 }
	fatSz := u16(0x16)
	if fatSz == 0 {
		fatSz = u16(0x24) | u16(0x26)<<16
	}
	bps := u16(0x0b)
	return (u16(0x0e) + int64(b[0x10])*fatSz + (u16(0x11)*32+bps-1)/bps) * bps
}

func TestNTFS(t *testing.T) {
	need(t, "mkfs.ntfs", "ntfscp", "ntfscat", "ntfsfix", "ntfsinfo")
	files := tree(t, 3, 40)
	cases := []struct {
		name string
		size int64
		args []string
	}{
		{"4k", 64 << 20, nil},
		{"512", 32 << 20, []string{"-c", "512"}},
		{"64k", 256 << 20, []string{"-c", "65536"}},
		{"big-bitmap", 2 << 30, nil}, // 512 Ki clusters: a 64 KiB non-resident $Bitmap
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			img := sparse(t, t.TempDir(), tc.size)
			run(t, "mkfs.ntfs", append(append([]string{"-F", "-Q", "-q"}, tc.args...), img)...)
			var names []string
			filepath.Walk(files, func(p string, fi os.FileInfo, err error) error {
				if err == nil && !fi.IsDir() && filepath.Dir(p) == files {
					names = append(names, fi.Name())
					run(t, "ntfscp", "-q", img, p, "/"+fi.Name())
				}
				return nil
			})
			typ, ex := usedOf(t, img)
			if typ != "ntfs" {
				t.Fatalf("type %s", typ)
			}
			info := run(t, "ntfsinfo", "-m", img)
			cs := grabInt(t, info, `Cluster Size: (\d+)`)
			vol := grabInt(t, info, `Volume Size in Clusters: (\d+)`)
			free := grabInt(t, run(t, "ntfscluster", "-i", img), `bytes of free space\s*: (\d+)`)
			var inVol int64
			for _, e := range ex {
				inVol += max(0, min(e.End(), vol*cs)-e.Offset)
			}
			if inVol/cs != vol-free/cs {
				t.Errorf("%d used clusters, ntfs-3g says %d", inVol/cs, vol-free/cs)
			}
			cp := copyUsed(t, img, ex)
			run(t, "ntfsfix", "-n", cp)
			for _, n := range names {
				want, _ := os.ReadFile(filepath.Join(files, n))
				got, err := exec.Command("ntfscat", cp, "/"+n).Output()
				if err != nil || !bytes.Equal(want, got) {
					t.Errorf("%s differs after the round trip (%v)", n, err)
				}
			}
			t.Logf("ntfs: %d extents, %d KiB used", len(ex), total(ex)>>10)
		})
	}
}

func grabInt(t testing.TB, s, re string) int64 {
	t.Helper()
	m := regexp.MustCompile(re).FindStringSubmatch(s)
	if m == nil {
		t.Fatalf("no %q in %s", re, s)
	}
	v, _ := strconv.ParseInt(m[1], 10, 64)
	return v
}

func TestRawZeroSkip(t *testing.T) {
	img := sparse(t, t.TempDir(), 1<<20+1000)
	f, _ := os.OpenFile(img, os.O_RDWR, 0)
	f.WriteAt([]byte{1}, 70000)              // block 1
	f.WriteAt([]byte{1}, 3*RawGranularity)   // block 3
	f.WriteAt([]byte{1}, 4*RawGranularity-1) // end of block 3 (merges)
	f.WriteAt([]byte{2}, 1<<20+999)          // the short last block
	f.Close()
	typ, ex := usedOf(t, img)
	want := []disk.Extent{{Offset: RawGranularity, Length: RawGranularity},
		{Offset: 3 * RawGranularity, Length: RawGranularity}, {Offset: 1 << 20, Length: 1000}}
	if typ != "raw" || !equalExtents(ex, want) {
		t.Fatalf("%s %v, want raw %v", typ, ex, want)
	}
}

// A filesystem with a journal to replay maps raw: its bitmaps can miss blocks.
func TestExtNeedsRecoveryFallsBack(t *testing.T) {
	need(t, "mkfs.ext4", "debugfs")
	for _, set := range []string{"ssv state 0", "feature needs_recovery"} {
		img := sparse(t, t.TempDir(), 16<<20)
		run(t, "mkfs.ext4", "-q", "-F", img)
		run(t, "debugfs", "-w", "-R", set, img)
		if typ, _ := usedOf(t, img); typ != "raw" {
			t.Errorf("%s: mapped as %s", set, typ)
		}
	}
}

// A superblock that lies about its size falls back to raw instead of trusting it.
func TestLyingSuperblockFallsBack(t *testing.T) {
	need(t, "mkfs.ext4")
	img := sparse(t, t.TempDir(), 8<<20)
	run(t, "mkfs.ext4", "-q", "-F", img)
	f, _ := os.OpenFile(img, os.O_RDWR, 0)
	f.WriteAt([]byte{0xff, 0xff, 0xff, 0x7f}, 1024+4) // s_blocks_count_lo
	f.Close()
	typ, ex := usedOf(t, img)
	if typ != "raw" || len(ex) == 0 {
		t.Fatalf("%s %v", typ, ex)
	}
	fi, _ := os.Open(img)
	defer fi.Close()
	if _, _, err := Detect(fi, 8<<20); err == nil {
		t.Fatal("Detect trusted a lying superblock")
	}
}

// BenchmarkUsedExt4 maps a 1 GiB ext4 filesystem (the image package reads
// this before every capture).
func BenchmarkUsedExt4(b *testing.B) {
	need(b, "mke2fs")
	img := sparse(b, b.TempDir(), 1<<30)
	run(b, "mke2fs", "-q", "-F", "-t", "ext4", "-d", tree(b, 9, 200), img)
	f, err := os.Open(img)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	b.ResetTimer()
	for b.Loop() {
		if typ, _, err := Used(f, 1<<30); err != nil || typ != "ext4" {
			b.Fatal(typ, err)
		}
	}
}
