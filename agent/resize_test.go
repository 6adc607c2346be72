package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/preboot/preboot/blockdev"
	"github.com/preboot/preboot/disk"
	"github.com/preboot/preboot/image"
)

// testLogger logs to t and fails the test on a warning.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tLogWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tLogWriter struct{ t *testing.T }

func (w tLogWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	if bytes.Contains(p, []byte("level=WARN")) || bytes.Contains(p, []byte("level=ERROR")) {
		w.t.Errorf("%s", p)
	} else {
		w.t.Logf("%s", p)
	}
	return len(p), nil
}

func mustRun(t *testing.T, stdin, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}

// partLoop attaches a loop device over partition n of the disk file.
func partLoop(t *testing.T, file string, n int) string {
	t.Helper()
	tab := readTable(t, file)
	for _, p := range tab.Partitions {
		if p.Index == n {
			l, err := blockdev.AttachLoop(file, p.Start, p.Size, false)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { l.Close() })
			return l.Path
		}
	}
	t.Fatalf("%s has no partition %d", file, n)
	return ""
}

func readTable(t *testing.T, file string) *disk.Table {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	tab, err := disk.ReadTable(f, fi.Size())
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

// withMounted mounts dev (fstype) read-write or read-only and runs fn in it.
func withMounted(t *testing.T, dev, fstype string, ro bool, fn func(dir string)) {
	t.Helper()
	dir := t.TempDir()
	var flags uintptr
	if ro {
		flags = unix.MS_RDONLY
	}
	if err := unix.Mount(dev, dir, fstype, flags, ""); err != nil {
		t.Fatalf("mount %s (%s): %v", dev, fstype, err)
	}
	defer func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	}()
	fn(dir)
}

func fileSums(t *testing.T, dir string) map[string]string {
	t.Helper()
	sums := map[string]string{}
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		h := sha256.Sum256(b)
		rel, _ := filepath.Rel(dir, p)
		sums[rel] = hex.EncodeToString(h[:])
		return nil
	})
	return sums
}

func writeTestFiles(t *testing.T, dir string, n int, size int) {
	t.Helper()
	for i := 0; i < n; i++ {
		b := bytes.Repeat([]byte(fmt.Sprintf("file %d of a resize test\n", i)), size/24+1)[:size]
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%03d.bin", i)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// layoutDisk makes a sparse disk file partitioned by an sfdisk script.
func layoutDisk(t *testing.T, dir, name string, size int64, script string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	makeFile(t, p, size)
	mustRun(t, script, "sfdisk", "-q", p)
	return p
}

func needResizeTools(t *testing.T, tools ...string) {
	t.Helper()
	needRoot(t)
	for _, tool := range tools {
		if _, err := findTool(tool); err != nil {
			t.Fatalf("%s not found (make deps-test installs it): %v", tool, err)
		}
	}
}

// TestRestoreGrowLinuxLayout: ESP, a large ext4 and a small ext4 after
// it. Onto a larger disk the large one grows to take the space, the
// small one moves to the end; both stay clean and keep their files.
func TestRestoreGrowLinuxLayout(t *testing.T) {
	needResizeTools(t, "sfdisk", "mkfs.ext4", "e2fsck", "resize2fs", "dumpe2fs", "mkfs.vfat")
	dir := t.TempDir()
	src := layoutDisk(t, dir, "src.img", 192*MiB, "label: gpt\nsize=8M, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B\nsize=120M, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\nsize=24M, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n")
	mustRun(t, "", "mkfs.vfat", "-F", "32", partLoop(t, src, 1))
	want := map[int]map[string]string{}
	for _, n := range []int{2, 3} {
		dev := partLoop(t, src, n)
		mustRun(t, "", "mkfs.ext4", "-q", "-F", dev)
		withMounted(t, dev, "ext4", false, func(d string) {
			writeTestFiles(t, d, 8*n, 300<<10)
			want[n] = fileSums(t, d)
		})
	}
	_, st := newRepo(t)
	ctx := context.Background()
	m, err := Capture(ctx, Options{Device: src, Image: "linux-layout", Store: st})
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "big.img")
	makeFile(t, dst, 320*MiB)
	if _, err := Restore(ctx, Options{Device: dst, Image: m.Name, Store: st, Logger: testLogger(t)}); err != nil {
		t.Fatal(err)
	}
	tab := readTable(t, dst)
	p2, p3 := tab.Partitions[1], tab.Partitions[2]
	if p3.Size != 24*MiB || p3.Start != p2.End() || 320*MiB-34*512-p3.End() >= disk.Align {
		t.Fatalf("p3 not moved to the end after a grown p2: %+v %+v", p2, p3)
	}
	for _, n := range []int{2, 3} {
		dev := partLoop(t, dst, n)
		mustRun(t, "", "e2fsck", "-fn", dev)
		if got := extBytes(t, dev); got != tab.Partitions[n-1].Size {
			t.Errorf("partition %d: filesystem of %d bytes in a %d-byte partition", n, got, tab.Partitions[n-1].Size)
		}
		withMounted(t, dev, "ext4", true, func(d string) {
			got := fileSums(t, d)
			for k, v := range want[n] {
				if got[k] != v {
					t.Errorf("partition %d: %s differs after the restore", n, k)
				}
			}
		})
	}
}

func extBytes(t *testing.T, dev string) int64 {
	t.Helper()
	out := mustRun(t, "", "dumpe2fs", "-h", dev)
	var count, bs int64
	for _, l := range strings.Split(out, "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		switch strings.TrimSpace(k) {
		case "Block count":
			count = n
		case "Block size":
			bs = n
		}
	}
	return count * bs
}

// TestRestoreGrowWindowsLayout: ESP, MSR, NTFS C:, NTFS Recovery after
// C:. Onto a larger disk C: grows (ntfsresize, dirty flag cleared), the
// Recovery partition moves to the end and its boot sector learns its new
// start; every file reads back the same.
func TestRestoreGrowWindowsLayout(t *testing.T) {
	needResizeTools(t, "sfdisk", "mkntfs", "ntfscp", "ntfscat", "ntfsresize", "ntfsfix", "ntfsinfo")
	dir := t.TempDir()
	src := layoutDisk(t, dir, "win.img", 160*MiB, winLayout)
	files := map[int][]string{}
	srcTab := readTable(t, src)
	for _, n := range []int{3, 4} {
		dev := partLoop(t, src, n)
		mustRun(t, "", "mkntfs", "-F", "-f", "-q", "-p", strconv.FormatInt(srcTab.Partitions[n-1].Start/512, 10), "-L", "vol"+strconv.Itoa(n), dev)
		for i := 0; i < 3*n; i++ {
			f := filepath.Join(dir, fmt.Sprintf("p%d-%d.txt", n, i))
			os.WriteFile(f, bytes.Repeat([]byte(f), 20000), 0o644)
			mustRun(t, "", "ntfscp", "-f", dev, f, filepath.Base(f))
			files[n] = append(files[n], f)
		}
	}
	_, st := newRepo(t)
	ctx := context.Background()
	m, err := Capture(ctx, Options{Device: src, Image: "win-layout", Store: st})
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "big.img")
	makeFile(t, dst, 256*MiB)
	if _, err := Restore(ctx, Options{Device: dst, Image: m.Name, Store: st, Logger: testLogger(t)}); err != nil {
		t.Fatal(err)
	}
	tab := readTable(t, dst)
	c, rec := tab.Partitions[2], tab.Partitions[3]
	if c.Size <= 100*MiB || rec.Start != c.End() || rec.Size != 24*MiB {
		t.Fatalf("C: %+v did not grow or Recovery %+v did not move after it", c, rec)
	}
	for _, n := range []int{3, 4} {
		p := tab.Partitions[n-1]
		dev := partLoop(t, dst, n)
		if out := mustRun(t, "", "ntfsfix", "-n", dev); strings.Contains(out, "dirty") && !strings.Contains(out, "not dirty") {
			t.Errorf("partition %d: %s", n, out)
		}
		bs := make([]byte, 512)
		f, _ := os.Open(dst)
		f.ReadAt(bs, p.Start)
		f.Close()
		if hid := int64(bs[0x1c]) | int64(bs[0x1d])<<8 | int64(bs[0x1e])<<16 | int64(bs[0x1f])<<24; hid != p.Start/512 {
			t.Errorf("partition %d: hidden sectors %d, starts at sector %d", n, hid, p.Start/512)
		}
		info := mustRun(t, "", "ntfsinfo", "-m", dev)
		if n == 3 && !strings.Contains(info, "Volume Size in Clusters") {
			t.Logf("ntfsinfo: %s", info)
		}
		for _, fn := range files[n] {
			want, _ := os.ReadFile(fn)
			got := mustRun(t, "", "ntfscat", dev, filepath.Base(fn))
			if got != string(want) {
				t.Errorf("partition %d: %s differs", n, filepath.Base(fn))
			}
		}
	}
	// C: fills its partition (ntfsresize keeps the last sector for the
	// backup boot sector and counts whole clusters).
	out := mustRun(t, "", "ntfsresize", "--info", "--force", "--no-progress-bar", partLoop(t, dst, 3))
	var vol int64
	for _, l := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(l, "Current volume size: "); ok {
			vol, _ = strconv.ParseInt(strings.Fields(v)[0], 10, 64)
		}
	}
	if vol > c.Size || vol < c.Size-8192 {
		t.Errorf("C: holds a %d-byte volume in a %d-byte partition: not grown: %s", vol, c.Size, out)
	}
}

const winLayout = "label: gpt\nsize=8M, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B\nsize=8M, type=E3C9E316-0B5C-4DB8-817D-F92DF00215AE\nsize=100M, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7\nsize=24M, type=DE94BBA4-06D1-4D40-A16A-BFD50179D6AC\n"

// TestRestoreGrowMounted grows XFS and Btrfs through the kernel (both
// only grow mounted).
func TestRestoreGrowMounted(t *testing.T) {
	for _, tc := range []struct {
		fstype string
		mkfs   []string
		size   int64
	}{
		{"xfs", []string{"mkfs.xfs", "-q", "-f"}, 320 * MiB},
		{"btrfs", []string{"mkfs.btrfs", "-q", "-f"}, 272 * MiB}, // the kernel resizes btrfs only at ≥ 256 MiB
	} {
		t.Run(tc.fstype, func(t *testing.T) {
			needResizeTools(t, "sfdisk", tc.mkfs[0])
			dir := t.TempDir()
			src := layoutDisk(t, dir, "src.img", tc.size+2*MiB, "label: gpt\ntype=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n")
			dev := partLoop(t, src, 1)
			mustRun(t, "", tc.mkfs[0], append(tc.mkfs[1:], dev)...)
			var want map[string]string
			withMounted(t, dev, tc.fstype, false, func(d string) {
				writeTestFiles(t, d, 10, 500<<10)
				want = fileSums(t, d)
			})
			_, st := newRepo(t)
			ctx := context.Background()
			m, err := Capture(ctx, Options{Device: src, Image: "grow-" + tc.fstype, Store: st})
			if err != nil {
				t.Fatal(err)
			}
			if m.Partitions[0].FSType != tc.fstype {
				t.Fatalf("captured as %s", m.Partitions[0].FSType)
			}
			dst := filepath.Join(dir, "big.img")
			makeFile(t, dst, tc.size*3/2)
			if _, err := Restore(ctx, Options{Device: dst, Image: m.Name, Store: st, Logger: testLogger(t)}); err != nil {
				t.Fatal(err)
			}
			p := readTable(t, dst).Partitions[0]
			dev = partLoop(t, dst, 1)
			withMounted(t, dev, tc.fstype, true, func(d string) {
				var sf unix.Statfs_t
				unix.Statfs(d, &sf)
				if total := int64(sf.Blocks) * sf.Bsize; total < p.Size*85/100 {
					t.Errorf("%s: %d bytes after the restore into a %d-byte partition: not grown", tc.fstype, total, p.Size)
				}
				got := fileSums(t, d)
				for k, v := range want {
					if got[k] != v {
						t.Errorf("%s differs", k)
					}
				}
			})
		})
	}
}

// TestRestoreSmallerRefusals: what cannot shrink is refused before
// anything is written, with the sizes.
func TestRestoreSmallerRefusals(t *testing.T) {
	needResizeTools(t, "sfdisk", "mkfs.xfs", "mkfs.ext4")
	dir := t.TempDir()
	src := layoutDisk(t, dir, "xfs.img", 340*MiB, "label: gpt\ntype=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n")
	mustRun(t, "", "mkfs.xfs", "-q", "-f", partLoop(t, src, 1))
	_, st := newRepo(t)
	ctx := context.Background()
	m, err := Capture(ctx, Options{Device: src, Image: "xfs-small", Store: st})
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "small.img")
	makeFile(t, dst, 200*MiB)
	_, err = Restore(ctx, Options{Device: dst, Image: m.Name, Store: st})
	if !errors.Is(err, image.ErrTargetTooSmall) && (err == nil || !strings.Contains(err.Error(), "cannot shrink")) {
		t.Fatalf("XFS onto a smaller disk: %v", err)
	}
	if err == nil || !strings.Contains(err.Error(), "nothing was written") || !strings.Contains(err.Error(), "xfs") {
		t.Errorf("refusal does not say what and why: %v", err)
	}
	if b, _ := os.ReadFile(dst); !disk.AllZero(b) {
		t.Error("the refused restore wrote to the disk")
	}
	// ext4 with more data in use than the smaller disk can hold.
	src2 := layoutDisk(t, dir, "full.img", 128*MiB, "label: gpt\ntype=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n")
	dev := partLoop(t, src2, 1)
	mustRun(t, "", "mkfs.ext4", "-q", "-F", dev)
	withMounted(t, dev, "ext4", false, func(d string) { writeTestFiles(t, d, 90, 1<<20) })
	m2, err := Capture(ctx, Options{Device: src2, Image: "ext-full", Store: st})
	if err != nil {
		t.Fatal(err)
	}
	dst2 := filepath.Join(dir, "small2.img")
	makeFile(t, dst2, 64*MiB)
	_, err = Restore(ctx, Options{Device: dst2, Image: m2.Name, Store: st})
	if err == nil || !strings.Contains(err.Error(), "in use") || !strings.Contains(err.Error(), "nothing was written") {
		t.Fatalf("ext4 too full for the smaller disk: %v", err)
	}
}
