package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/preboot/preboot/blockdev"
	"github.com/preboot/preboot/disk"
	"github.com/preboot/preboot/image"
)

const MiB = 1 << 20

func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := findTool(tool); err != nil {
			t.Skipf("%s not installed (Debian: e2fsprogs dosfstools mtools fdisk gdisk)", tool)
		}
	}
}

func run(t *testing.T, stdin string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func makeFile(t *testing.T, path string, size int64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// testFiles is the content put into both filesystems: name → data.
func testFiles(seed uint64) map[string][]byte {
	r := rand.New(rand.NewPCG(seed, 1))
	rnd := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return b
	}
	return map[string][]byte{
		"hello.txt":   []byte("hello from preboot\n"),
		"big.bin":     rnd(3*MiB + 12345),
		"medium.bin":  rnd(700 << 10),
		"sub/a.txt":   bytes.Repeat([]byte("compressible line\n"), 5000),
		"sub/rnd.bin": rnd(64 << 10),
	}
}

func writeTree(t *testing.T, dir string, files map[string][]byte) {
	t.Helper()
	for name, data := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

type testDisk struct {
	path    string
	size    int64
	kind    string
	fat     [2]int64 // start, size of partition 1 (FAT, bootable)
	ext     [2]int64 // partition 2 (ext4)
	files   map[string][]byte
	bootMBR []byte // bytes 0..439 (MBR only)
	grub    []byte // fake core.img at sector 1 (MBR only)
}

// buildDisk makes a disk-image file: partition 1 FAT16 (bootable on MBR),
// partition 2 ext4 up to the end, both holding testFiles; on MBR also boot
// code in sector 0 and a fake GRUB core.img after it.
func buildDisk(t *testing.T, dir, kind string, size int64) *testDisk {
	t.Helper()
	needTools(t, "sfdisk", "mkfs.ext4", "mkfs.fat", "mcopy", "e2fsck", "fsck.fat", "debugfs")
	d := &testDisk{path: filepath.Join(dir, kind+".img"), size: size, kind: kind, files: testFiles(7)}
	makeFile(t, d.path, size)
	var script string
	if kind == "mbr" {
		script = "label: dos\nstart=2048, size=32768, type=6, bootable\nstart=34816, type=83\n"
	} else {
		script = "label: gpt\nstart=2048, size=32768, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7\nstart=34816, type=0FC63DAF-8379-4772-8475-0DE4C7BC3AC1\n"
	}
	run(t, script, "sfdisk", "-q", d.path)
	f, err := os.OpenFile(d.path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tbl, err := disk.ReadTable(f, size)
	if err != nil {
		t.Fatal(err)
	}
	if tbl.Kind != kind || len(tbl.Partitions) != 2 {
		t.Fatalf("table %s with %d partitions", tbl.Kind, len(tbl.Partitions))
	}
	d.fat = [2]int64{tbl.Partitions[0].Start, tbl.Partitions[0].Size}
	d.ext = [2]int64{tbl.Partitions[1].Start, tbl.Partitions[1].Size}

	src := filepath.Join(dir, "tree-"+kind)
	writeTree(t, src, d.files)
	fatImg := filepath.Join(dir, kind+"-p1.img")
	run(t, "", "mkfs.fat", "-F", "16", "-C", fatImg, fmt.Sprint(d.fat[1]/1024))
	args := []string{"-i", fatImg, "-s"}
	for _, e := range mustReadDir(t, src) {
		args = append(args, filepath.Join(src, e))
	}
	run(t, "", "mcopy", append(args, "::/")...)
	extImg := filepath.Join(dir, kind+"-p2.img")
	run(t, "", "mkfs.ext4", "-q", "-F", "-d", src, extImg, fmt.Sprintf("%dk", d.ext[1]/1024))
	copyInto(t, f, fatImg, d.fat[0])
	copyInto(t, f, extImg, d.ext[0])
	if kind == "mbr" {
		r := rand.New(rand.NewPCG(3, 3))
		d.bootMBR = make([]byte, 440)
		d.grub = make([]byte, 60<<10)
		for i := range d.bootMBR {
			d.bootMBR[i] = byte(r.Uint32())
		}
		for i := range d.grub {
			d.grub[i] = byte(r.Uint32())
		}
		if _, err := f.WriteAt(d.bootMBR, 0); err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt(d.grub, 512); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

func mustReadDir(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out
}

func copyInto(t *testing.T, f *os.File, src string, off int64) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// extract copies [off, off+n) of path to a new file.
func extract(t *testing.T, path string, off, n int64) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), fmt.Sprintf("part-%d.img", off))
	if err := os.WriteFile(out, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return out
}

func sum(b []byte) string { h := sha256.Sum256(b); return hex.EncodeToString(h[:]) }

func fileSum(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sum(b)
}

// checkDisk verifies both filesystems of a restored disk: fsck clean and
// every file with the right content; partition 2 may have grown.
func checkDisk(t *testing.T, d *testDisk, path string) {
	t.Helper()
	fatImg := extract(t, path, d.fat[0], d.fat[1])
	run(t, "", "fsck.fat", "-n", fatImg)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := f.Stat()
	tbl, err := disk.ReadTable(f, fi.Size())
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	extImg := extract(t, path, tbl.Partitions[1].Start, tbl.Partitions[1].Size)
	run(t, "", "e2fsck", "-fn", extImg)
	outDir := t.TempDir()
	for name, want := range d.files {
		mf := filepath.Join(outDir, "fat-"+strings.ReplaceAll(name, "/", "_"))
		run(t, "", "mcopy", "-n", "-i", fatImg, "::/"+name, mf)
		ef := filepath.Join(outDir, "ext-"+strings.ReplaceAll(name, "/", "_"))
		run(t, "", "debugfs", "-R", fmt.Sprintf("dump /%s %s", name, ef), extImg)
		for _, p := range []string{mf, ef} {
			if got := fileSum(t, p); got != sum(want) {
				t.Errorf("%s: checksum %s, want %s", p, got, sum(want))
			}
		}
	}
}

func readAt(t *testing.T, path string, off int64, n int) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return b
}

func newRepo(t *testing.T) (*image.Repo, Store) {
	t.Helper()
	r, err := image.OpenRepo(filepath.Join(t.TempDir(), "repo"), image.RepoOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return r, LocalRepo(r)
}

type progressLog struct{ last image.Progress }

func (p *progressLog) fn(pr image.Progress) { p.last = pr }

func TestCaptureRestore(t *testing.T) {
	for _, kind := range []string{"mbr", "gpt"} {
		t.Run(kind, func(t *testing.T) {
			dir := t.TempDir()
			ctx := context.Background()
			d := buildDisk(t, dir, kind, 64*MiB)
			// The source has its own identity; the image must not carry it.
			if err := WriteImageSafe(d.path, &ImageSafe{DeviceID: "source-device", Hostname: "src"}); err != nil {
				t.Fatal(err)
			}
			srcSum := fileSum(t, d.path)
			repo, st := newRepo(t)
			var pl progressLog
			m, err := Capture(ctx, Options{Device: d.path, Image: "img-" + kind, Store: st,
				Source: map[string]string{"hostname": "src"}, Progress: pl.fn})
			if err != nil {
				t.Fatal(err)
			}
			if fileSum(t, d.path) != srcSum {
				t.Fatal("capture changed the source")
			}
			if len(m.Partitions) != 2 || m.Partitions[0].FSType != "fat16" || m.Partitions[1].FSType != "ext4" {
				t.Fatalf("partitions: %+v", m.Partitions)
			}
			if m.Sizes.Used >= 40*MiB || m.Sizes.Uploaded == 0 {
				t.Errorf("sizes %+v: want only used blocks", m.Sizes)
			}
			if err := repo.Verify(ctx, m.Name, 0); err != nil {
				t.Fatal(err)
			}
			if got, err := repo.List(); err != nil || len(got) != 1 {
				t.Fatalf("repo list %v %v", got, err)
			}

			// An unchanged re-capture uploads nothing, even with a new
			// identity on the disk.
			if err := WriteImageSafe(d.path, &ImageSafe{DeviceID: "renamed-device"}); err != nil {
				t.Fatal(err)
			}
			pl = progressLog{}
			m2, err := Capture(ctx, Options{Device: d.path, Image: "img-" + kind + "-2", Store: st, Progress: pl.fn})
			if err != nil {
				t.Fatal(err)
			}
			if m2.Sizes.Uploaded != 0 {
				t.Errorf("unchanged re-capture uploaded %d bytes", m2.Sizes.Uploaded)
			}

			t.Run("same-size", func(t *testing.T) {
				dst := filepath.Join(t.TempDir(), "dst.img")
				makeFile(t, dst, 64*MiB)
				var first progressLog
				if _, err := Restore(ctx, Options{Device: dst, Image: m.Name, Store: st, Progress: first.fn}); err != nil {
					t.Fatal(err)
				}
				if first.last.Transferred == 0 || first.last.Written == 0 {
					t.Errorf("restore onto a blank disk: progress %+v", first.last)
				}
				checkDisk(t, d, dst)
				checkTable(t, kind, dst)
				if kind == "mbr" {
					if !bytes.Equal(readAt(t, dst, 0, 440), d.bootMBR) {
						t.Error("MBR boot code not restored")
					}
					if !bytes.Equal(readAt(t, dst, 512, len(d.grub)), d.grub) {
						t.Error("post-MBR gap (core.img) not restored")
					}
				}
				rec, err := ReadImageSafe(dst)
				if err != nil {
					t.Fatal(err)
				}
				if rec.DeviceID != "" || rec.LastImage != m.Name {
					t.Errorf("blank target record %+v: want no identity, last image %s", rec, m.Name)
				}
				var pl progressLog
				if _, err := Restore(ctx, Options{Device: dst, Image: m.Name, Store: st, Progress: pl.fn}); err != nil {
					t.Fatal(err)
				}
				if pl.last.Transferred != 0 || pl.last.Written != 0 {
					t.Errorf("delta restore onto an identical disk fetched %d chunks, wrote %d bytes",
						pl.last.Transferred, pl.last.Written)
				}
				// Both filesystems and the gaps are byte-identical to the
				// source outside free space: compare the partition table dumps.
				if a, b := run(t, "", "sfdisk", "-d", d.path), run(t, "", "sfdisk", "-d", dst); stripPath(a, d.path) != stripPath(b, dst) {
					t.Errorf("tables differ:\n%s\n%s", a, b)
				}
			})

			t.Run("larger", func(t *testing.T) {
				dst := filepath.Join(t.TempDir(), "dst.img")
				makeFile(t, dst, 96*MiB)
				if err := WriteImageSafe(dst, &ImageSafe{DeviceID: "target-7", Hostname: "lab7",
					Network: &NetworkSettings{Mode: "static", Address: "192.0.2.7/24"}}); err != nil {
					t.Fatal(err)
				}
				if _, err := Restore(ctx, Options{Device: dst, Image: m.Name, Store: st}); err != nil {
					t.Fatal(err)
				}
				checkDisk(t, d, dst)
				checkTable(t, kind, dst)
				f, _ := os.Open(dst)
				tbl, err := disk.ReadTable(f, 96*MiB)
				f.Close()
				if err != nil {
					t.Fatal(err)
				}
				end := tbl.Partitions[1].End()
				if kind == "mbr" && end != 96*MiB || kind == "gpt" && end != 96*MiB-33*512 {
					t.Errorf("last partition ends at %d, want the disk end (%d)", end, int64(96*MiB))
				}
				rec, err := ReadImageSafe(dst)
				if err != nil {
					t.Fatal(err)
				}
				if rec.DeviceID != "target-7" || rec.Hostname != "lab7" || rec.Network == nil ||
					rec.Network.Address != "192.0.2.7/24" || rec.LastImage != m.Name {
					t.Errorf("image-safe data after restore: %+v", rec)
				}

				// Delta: restoring again fetches only the head window,
				// whose partition table differs from the image's, and the
				// windows growing the filesystem changed (its superblock
				// and group descriptors, the last group's bitmaps).
				var pl progressLog
				if _, err := Restore(ctx, Options{Device: dst, Image: m.Name, Store: st, Progress: pl.fn}); err != nil {
					t.Fatal(err)
				}
				if pl.last.Transferred > 6 {
					t.Errorf("delta restore fetched %d of %d chunks, want ≤ 6", pl.last.Transferred, pl.last.ChunksTotal)
				}
				checkDisk(t, d, dst)
			})

			t.Run("smaller", func(t *testing.T) {
				dst := filepath.Join(t.TempDir(), "dst.img")
				if err := os.WriteFile(dst, bytes.Repeat([]byte("keep me!"), 48*MiB/8), 0o644); err != nil {
					t.Fatal(err)
				}
				before := fileSum(t, dst)
				_, err := Restore(ctx, Options{Device: dst, Image: m.Name, Store: st})
				// The data in use fits: the agent shrinks partition 2, which
				// needs device-mapper; without it (this host) it refuses too.
				if !errors.Is(err, image.ErrTargetTooSmall) && !errors.Is(err, blockdev.ErrNoDM) {
					t.Fatalf("restore onto a smaller disk: %v, want ErrTargetTooSmall or ErrNoDM", err)
				}
				if !strings.Contains(err.Error(), "67108864") || !strings.Contains(err.Error(), "50331648") {
					t.Errorf("error does not give both sizes: %v", err)
				}
				if fileSum(t, dst) != before {
					t.Error("refused restore changed the target")
				}
			})
		})
	}
}

func stripPath(s, p string) string { return strings.ReplaceAll(s, p, "DISK") }

func checkTable(t *testing.T, kind, path string) {
	t.Helper()
	if kind == "mbr" {
		run(t, "", "sfdisk", "--verify", path)
		return
	}
	needTools(t, "sgdisk")
	out := run(t, "", "sgdisk", "-v", path)
	if !strings.Contains(out, "No problems found") {
		t.Errorf("sgdisk -v %s:\n%s", path, out)
	}
}
