package fsmap

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/preboot/preboot/disk"
)

// mkfsXFS makes an XFS filesystem on img. Debian 12's mkfs.xfs refuses
// filesystems under 300 MB unless it believes it runs under fstests.
func mkfsXFS(t testing.TB, img string, args ...string) {
	t.Helper()
	cmd := exec.Command("mkfs.xfs", append(append([]string{"-q", "-f"}, args...), img)...)
	cmd.Env = append(os.Environ(), "TEST_DIR=1", "TEST_DEV=1", "QA_CHECK_FS=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mkfs.xfs %v: %v\n%s", args, err, out)
	}
}

func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for loop mounts")
	}
}

// mountLoop mounts img on a new directory; the returned func unmounts it.
func mountLoop(t testing.TB, img string, opts string) (string, func()) {
	t.Helper()
	dir := t.TempDir()
	run(t, "mount", "-o", "loop,"+opts, img, dir)
	var once sync.Once
	umount := func() {
		once.Do(func() {
			run(t, "umount", dir)
			// A copy of the mount propagated into another mount namespace
			// can keep the filesystem alive after umount returns; it is
			// written back only when the loop device lets go of img.
			for i := 0; strings.TrimSpace(run(t, "losetup", "-j", img)) != ""; i++ {
				if i == 300 {
					t.Fatalf("%s still attached to a loop device after umount", img)
				}
				time.Sleep(100 * time.Millisecond)
			}
		})
	}
	t.Cleanup(func() { once.Do(func() { exec.Command("umount", dir).Run() }) })
	return dir, umount
}

// partcloneUsed is partclone's view of the used bytes (its ddrescue domain
// log: "+" ranges).
func partcloneUsed(t testing.TB, tool, img string) []disk.Extent {
	t.Helper()
	dom := filepath.Join(t.TempDir(), "domain")
	run(t, tool, "-q", "-D", "-s", img, "-O", dom, "-L", dom+".log")
	b, err := os.ReadFile(dom)
	if err != nil {
		t.Fatal(err)
	}
	var c collector
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) != 3 || f[2] != "+" {
			continue
		}
		off, err1 := strconv.ParseInt(f[0], 0, 64)
		n, err2 := strconv.ParseInt(f[1], 0, 64)
		if err1 != nil || err2 != nil {
			t.Fatalf("domain line %q", l)
		}
		c.add(off, n)
	}
	return c.result(1 << 62)
}

func xfsDBField(t testing.TB, img, cmd, field string) int64 {
	t.Helper()
	out := run(t, "xfs_db", "-r", "-c", cmd, "-c", "print "+field, img)
	return grabInt(t, out, `(?m)^`+field+` = (\d+)`)
}

// copyTree copies the regular files of src under dst.
func copyTree(t testing.TB, src, dst string) {
	t.Helper()
	filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		b, err := os.ReadFile(p)
		if err == nil {
			os.MkdirAll(filepath.Join(dst, filepath.Dir(rel)), 0o755)
			err = os.WriteFile(filepath.Join(dst, rel), b, 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
		return nil
	})
}

// TestXFS fills real XFS filesystems through a loop mount, deletes every
// third file to fragment the free space, and checks the map against
// partclone's and xfs_db's counts and by a restore: only the used extents
// copied onto zeros must check clean with xfs_repair and hold every file.
func TestXFS(t *testing.T) {
	need(t, "mkfs.xfs", "xfs_db", "xfs_repair", "partclone.xfs", "mount")
	needRoot(t)
	cases := []struct {
		name string
		size int64
		args []string
	}{
		{"v5-4k", 320 << 20, nil},
		{"v5-1k-rmapbt", 320 << 20, []string{"-b", "size=1024", "-m", "rmapbt=1"}},
		{"v5-16ag-4ksect", 400 << 20, []string{"-d", "agcount=16", "-s", "size=4096"}},
		{"v5-small", 32 << 20, []string{"-m", "reflink=0,finobt=0"}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			files := tree(t, int64(10+i), 600)
			img := sparse(t, t.TempDir(), tc.size)
			mkfsXFS(t, img, tc.args...)
			mnt, umount := mountLoop(t, img, "")
			copyTree(t, files, mnt)
			run(t, "sync", "-f", mnt) // allocate before deleting
			// Delete every third small file on both sides: holes in the
			// free space all over the AGs.
			n := 0
			filepath.Walk(files, func(p string, fi os.FileInfo, err error) error {
				if err == nil && !fi.IsDir() && strings.HasPrefix(fi.Name(), "s") {
					if n++; n%3 == 0 {
						rel, _ := filepath.Rel(files, p)
						if err := os.Remove(filepath.Join(mnt, rel)); err != nil {
							t.Fatal(err)
						}
						os.Remove(p)
					}
				}
				return nil
			})
			run(t, "sync", "-f", mnt)
			more := tree(t, int64(20+i), 50)
			copyTree(t, more, filepath.Join(mnt, "more"))
			umount()

			typ, ex := usedOf(t, img)
			if typ != "xfs" {
				t.Fatalf("type %s", typ)
			}
			pc := partcloneUsed(t, "partclone.xfs", img)
			if missing := subtract(pc, ex); len(missing) > 0 {
				t.Fatalf("partclone uses %d bytes we call free: %v", total(missing), head(missing))
			}
			if extra := subtract(ex, pc); len(extra) > 0 {
				t.Errorf("we copy %d bytes partclone calls free: %v", total(extra), head(extra))
			}
			bs := xfsDBField(t, img, "sb 0", "blocksize")
			dblocks := xfsDBField(t, img, "sb 0", "dblocks")
			fdblocks := xfsDBField(t, img, "sb 0", "fdblocks")
			// Used = not free in the bnobt nor on the free lists; the
			// superblock also counts free-space btree blocks as free.
			if u := total(ex) / bs; u < dblocks-fdblocks || u > dblocks-fdblocks+dblocks/100 {
				t.Errorf("%d blocks used, dblocks-fdblocks = %d", u, dblocks-fdblocks)
			}
			frees := grabInt(t, run(t, "xfs_db", "-r", "-c", "freesp -s", img), `total free extents (\d+)`)
			if frees < 50 {
				t.Errorf("only %d free extents: the test did not fragment the free space", frees)
			}

			cp := copyUsed(t, img, ex)
			run(t, "xfs_repair", "-n", cp)
			got, _ := mountLoop(t, cp, "ro")
			sameTree(t, files, got)
			sameTree(t, more, filepath.Join(got, "more"))
			t.Logf("%d extents, %d KiB used of %d MiB, %d free extents", len(ex), total(ex)>>10, tc.size>>20, frees)
		})
	}
}

// TestXFSv4 maps a v4 (no CRC) filesystem. The host kernel no longer
// mounts v4, so mkfs.xfs fills it from a prototype file.
func TestXFSv4(t *testing.T) {
	need(t, "mkfs.xfs", "xfs_repair", "partclone.xfs")
	files := tree(t, 30, 100)
	var proto strings.Builder
	proto.WriteString("/dev/null\n0 0\nd--755 0 0\n")
	ents, _ := os.ReadDir(files)
	for _, e := range ents {
		if !e.IsDir() {
			fmt.Fprintf(&proto, "%s ---644 0 0 %s\n", e.Name(), filepath.Join(files, e.Name()))
		}
	}
	proto.WriteString("$\n")
	pf := filepath.Join(t.TempDir(), "proto")
	os.WriteFile(pf, []byte(proto.String()), 0o644)
	img := sparse(t, t.TempDir(), 64<<20)
	mkfsXFS(t, img, "-m", "crc=0", "-b", "size=2048", "-p", pf)
	typ, ex := usedOf(t, img)
	if typ != "xfs" {
		t.Fatalf("type %s", typ)
	}
	pc := partcloneUsed(t, "partclone.xfs", img)
	if missing := subtract(pc, ex); len(missing) > 0 {
		t.Fatalf("partclone uses %d bytes we call free: %v", total(missing), head(missing))
	}
	if total(ex) != total(pc) {
		t.Errorf("%d bytes used, partclone %d", total(ex), total(pc))
	}
	run(t, "xfs_repair", "-n", copyUsed(t, img, ex))
}

// xfsDBWrite changes a field with xfs_db in expert mode, past its
// verifiers (it still rewrites CRCs).
func xfsDBWrite(t testing.TB, img, obj, field, val string) {
	t.Helper()
	run(t, "xfs_db", "-x", "-c", obj, "-c", "write -d "+field+" "+val, img)
	out := run(t, "xfs_db", "-r", "-c", obj, "-c", "print "+field, img)
	got := regexp.MustCompile(`(?m)^` + field + ` = (\S+)$`).FindStringSubmatch(out)
	want, _ := strconv.ParseUint(val, 0, 64)
	if got == nil || got[1] != fmt.Sprint(want) && got[1] != fmt.Sprintf("%#x", want) {
		t.Fatalf("xfs_db did not write %s %s: %v", field, val, got)
	}
}

// Filesystems the reader must not trust map raw, with a warning.
func TestXFSRefusals(t *testing.T) {
	need(t, "mkfs.xfs", "xfs_db")
	mk := func(t *testing.T, args ...string) string {
		img := sparse(t, t.TempDir(), 32<<20)
		mkfsXFS(t, img, args...)
		return img
	}
	corruptByte := func(off int64) func(t *testing.T, img string) {
		return func(t *testing.T, img string) {
			f, _ := os.OpenFile(img, os.O_RDWR, 0)
			defer f.Close()
			b := []byte{0}
			f.ReadAt(b, off)
			b[0] ^= 0x40
			f.WriteAt(b, off)
		}
	}
	cases := []struct {
		name  string
		setup func(t *testing.T, img string)
	}{
		{"stale-fdblocks", func(t *testing.T, img string) { xfsDBWrite(t, img, "sb 0", "fdblocks", "1000") }},
		{"agf-freeblks", func(t *testing.T, img string) { xfsDBWrite(t, img, "agf 0", "freeblks", "17") }},
		{"unknown-incompat", func(t *testing.T, img string) {
			xfsDBWrite(t, img, "sb 0", "features_incompat", "0x8000000b")
		}},
		{"log-incompat", func(t *testing.T, img string) { xfsDBWrite(t, img, "sb 0", "features_log_incompat", "1") }},
		{"agf-crc", corruptByte(512 + 56)}, // agf_longest: only the CRC notices
		{"bnobt-crc", func(t *testing.T, img string) {
			root := xfsDBField(t, img, "agf 0", "bnoroot")
			corruptByte(root*4096+100)(t, img)
		}},
		{"bnobt-cycle", func(t *testing.T, img string) {
			// A v4 filesystem (no CRCs) whose bnobt root points at itself:
			// made a level-1 node with one pointer back to the root.
			root := xfsDBField(t, img, "agf 0", "bnoroot")
			xfsDBWrite(t, img, "agf 0", "bnolevel", "2")
			f, _ := os.OpenFile(img, os.O_RDWR, 0)
			defer f.Close()
			blk := make([]byte, 4096)
			f.ReadAt(blk, root*4096)
			binary.BigEndian.PutUint16(blk[4:], 1) // level
			binary.BigEndian.PutUint16(blk[6:], 1) // numrecs
			maxrecs := (4096 - 16) / 12
			binary.BigEndian.PutUint32(blk[16+8*maxrecs:], uint32(root))
			f.WriteAt(blk, root*4096)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var img string
			if tc.name == "bnobt-cycle" {
				img = mk(t, "-m", "crc=0")
			} else {
				img = mk(t)
			}
			if _, _, err := Detect(openT(t, img), 32<<20); err != nil {
				t.Fatalf("before: %v", err)
			}
			tc.setup(t, img)
			_, _, err := Detect(openT(t, img), 32<<20)
			if !errors.Is(err, errCorrupt) {
				t.Fatalf("Detect: %v, want errCorrupt", err)
			}
			info, err := Inspect(openT(t, img), 32<<20)
			if err != nil || info.FSType != "raw" || len(info.Warnings) != 1 || !strings.Contains(info.Warnings[0], "xfs") {
				t.Fatalf("Inspect: %+v %v", info, err)
			}
			t.Logf("%v", info.Warnings[0])
		})
	}
	// An external log or a realtime section: the filesystem is not all here.
	for _, args := range [][]string{{"-l", "logdev="}, {"-r", "rtdev="}} {
		other := sparse(t, t.TempDir(), 32<<20)
		img := mk(t, args[0], args[1]+other)
		if _, _, err := Detect(openT(t, img), 32<<20); !errors.Is(err, errCorrupt) {
			t.Errorf("%v: %v, want errCorrupt", args, err)
		}
	}
}

func openT(t testing.TB, path string) *os.File {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// readRecorder remembers which sectors were read.
type readRecorder struct {
	r    io.ReaderAt
	read map[int64]bool
}

func (rr *readRecorder) ReadAt(p []byte, off int64) (int, error) {
	for s := off &^ 511; s < off+int64(len(p)); s += 512 {
		rr.read[s] = true
	}
	return rr.r.ReadAt(p, off)
}

func FuzzXFS(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		o := decodeOverlay(data)
		head := make([]byte, 4096)
		n, _ := o.ReadAt(head, 0)
		ex, err := xfsUsed(o, o.size, head[:n])
		if err != nil && !errors.Is(err, errCorrupt) {
			t.Fatalf("reading an in-memory disk: %v", err)
		}
		checkSorted(t, ex, o.size)
	})
}

// TestWriteXFSFuzzSeeds regenerates testdata/fuzz/FuzzXFS from filesystems
// made with mkfs.xfs, keeping only the sectors the reader reads:
// go test -run TestWriteXFSFuzzSeeds ./fsmap/ -update-seeds
func TestWriteXFSFuzzSeeds(t *testing.T) {
	if !*updateSeeds {
		return
	}
	need(t, "mkfs.xfs")
	dir := filepath.Join("testdata", "fuzz", "FuzzXFS")
	os.MkdirAll(dir, 0o755)
	// Files from a prototype: a mounted filesystem's log is megabytes of
	// records the log check reads.
	var proto strings.Builder
	proto.WriteString("/dev/null\n0 0\nd--755 0 0\n")
	src := t.TempDir()
	for i := 0; i < 40; i++ {
		p := filepath.Join(src, fmt.Sprint(i))
		os.WriteFile(p, make([]byte, 1024*(1+i%5)), 0o644)
		fmt.Fprintf(&proto, "f%d ---644 0 0 %s\n", i, p)
	}
	proto.WriteString("$\n")
	pf := filepath.Join(t.TempDir(), "proto")
	os.WriteFile(pf, []byte(proto.String()), 0o644)
	for _, s := range []struct {
		name string
		size int64
		args []string
	}{
		{"v5-4k", 16 << 20, nil},
		{"v5-1k-2ag", 40 << 20, []string{"-b", "size=1024", "-d", "agcount=2"}},
		{"v4-1k-2ag", 40 << 20, []string{"-m", "crc=0", "-b", "size=1024", "-d", "agcount=2"}},
	} {
		img := sparse(t, t.TempDir(), s.size)
		mkfsXFS(t, img, append(s.args, "-p", pf)...)
		rec := &readRecorder{r: openT(t, img), read: map[int64]bool{}}
		b, err := os.ReadFile(img)
		if err != nil {
			t.Fatal(err)
		}
		typ, ex, err := Detect(rec, int64(len(b)))
		if err != nil || typ != "xfs" {
			t.Fatalf("%s: %s %v", s.name, typ, err)
		}
		enc := encodeTrimmed(b, func(off int64) bool { return rec.read[off] })
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", enc)
		if len(body) > 64<<10 {
			t.Errorf("seed %s is %d bytes", s.name, len(body))
		}
		if err := os.WriteFile(filepath.Join(dir, s.name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		// The overlay alone maps the same.
		o := decodeOverlay(enc)
		_, ex2, err := Detect(o, o.size)
		if err != nil || !equalExtents(ex, ex2) {
			t.Errorf("%s: overlay maps %v (%v)", s.name, head(ex2), err)
		}
		t.Logf("%s: %d bytes, %d extents", s.name, len(body), len(ex))
	}
}

func slicesContains(ss []string, sub string) bool {
	for _, s := range ss {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

// A filesystem shut down without a clean unmount has a log to replay: its
// AGFs and superblock counters can agree and still be stale.
func TestXFSDirtyLog(t *testing.T) {
	need(t, "mkfs.xfs", "xfs_io", "xfs_repair", "mount")
	needRoot(t)
	img := sparse(t, t.TempDir(), 64<<20)
	mkfsXFS(t, img)
	mnt, umount := mountLoop(t, img, "")
	copyTree(t, tree(t, 40, 50), mnt)
	run(t, "xfs_io", "-x", "-c", "shutdown -f", mnt) // flush the log, then stop
	umount()
	if out, err := exec.Command("xfs_repair", "-n", img).CombinedOutput(); !strings.Contains(string(out), "metadata changes in a log") {
		t.Fatalf("xfs_repair does not see a dirty log (%v):\n%s", err, out)
	}
	_, _, err := Detect(openT(t, img), 64<<20)
	if !errors.Is(err, errCorrupt) || !strings.Contains(err.Error(), "log") {
		t.Fatalf("Detect: %v, want a dirty log refused", err)
	}
	t.Log(err)
}

// encodeTrimmed is encodeOverlay with each kept sector trimmed to its
// non-zero bytes (XFS log blocks hold little more than a cycle number).
func encodeTrimmed(img []byte, keep func(off int64) bool) []byte {
	out := binary.LittleEndian.AppendUint64(nil, uint64(len(img)))
	for s := 0; s < len(img); s += 512 {
		sec := img[s:min(s+512, len(img))]
		if disk.AllZero(sec) || !keep(int64(s)) {
			continue
		}
		lo, hi := 0, len(sec)
		for sec[lo] == 0 {
			lo++
		}
		for sec[hi-1] == 0 {
			hi--
		}
		out = binary.LittleEndian.AppendUint32(out, uint32(s+lo))
		out = binary.LittleEndian.AppendUint16(out, uint16(hi-lo))
		out = append(out, sec[lo:hi]...)
	}
	return out
}
