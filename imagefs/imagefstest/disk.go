// Package imagefstest builds, for tests, a real GPT disk with ext4, ext2,
// FAT32, FAT16, FAT12 and NTFS partitions made by mkfs.ext4 -d, mkfs.ext2,
// mkfs.fat + mcopy and mkntfs + ntfscp, holding known files, and captures
// it with the real capture code (agent.BuildLayout + image.Capture).
package imagefstest

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/preboot/preboot/agent"
	"github.com/preboot/preboot/disk"
	"github.com/preboot/preboot/image"
)

// Partition is one filesystem of the test disk.
type Partition struct {
	Index  int
	FSType string // as fsmap names it
	// Files maps slash paths (from the root, no leading slash) to their
	// content; Dirs lists the directories made; Links maps symbolic
	// links to their targets.
	Files map[string][]byte
	Dirs  []string
	Links map[string]string
}

// Disk is the test disk.
type Disk struct {
	Path       string
	Size       int64
	Partitions []Partition
}

// Tools are the programs Build needs.
var Tools = []string{"sfdisk", "mkfs.ext4", "e2fsck", "debugfs", "mkfs.ext2", "mkfs.fat", "mcopy", "mmd", "mkntfs", "ntfscp"}

// Need skips t when a tool is missing.
func Need(t testing.TB) {
	t.Helper()
	for _, tool := range Tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (e2fsprogs, dosfstools, mtools, ntfs-3g, fdisk)", tool)
		}
	}
}

func run(t testing.TB, name string, args ...string) {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

func random(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

func writeTree(t testing.TB, root string, files map[string][]byte, dirs []string, links map[string]string) {
	t.Helper()
	for _, d := range dirs {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for p, b := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, b, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	for p, target := range links {
		if err := os.Symlink(target, filepath.Join(root, p)); err != nil {
			t.Fatal(err)
		}
	}
}

// Build makes the disk in dir.
func Build(t testing.TB, dir string) *Disk {
	t.Helper()
	Need(t)
	rng := rand.New(rand.NewPCG(13, 3))
	d := &Disk{Path: filepath.Join(dir, "disk.img"), Size: 128 << 20}

	// ext4: a directory of many files (an htree), a large file (extents,
	// several chunks), symbolic links relative, absolute and escaping.
	ext4 := Partition{Index: 1, FSType: "ext4", Files: map[string][]byte{
		"big.bin":              random(rng, 5<<20+123),
		"etc/hostname":         []byte("lab-pc\n"),
		"etc/deep/er/file.txt": []byte("deep file\n"),
		"empty":                {},
	}, Dirs: []string{"etc", "etc/deep", "etc/deep/er", "many"}, Links: map[string]string{
		"link":          "etc/hostname",
		"abs":           "/etc/deep/er/file.txt",
		"etc/up":        "../big.bin",
		"evil":          "../../../etc/passwd",
		"etc/deep/loop": "loop",
	}}
	for i := range 400 {
		ext4.Files[fmt.Sprintf("many/file-with-a-long-name-%04d.txt", i)] = fmt.Appendf(nil, "file %d\n", i)
	}
	// ext2 with 1 KiB blocks: indirect, double indirect blocks.
	ext2 := Partition{Index: 2, FSType: "ext2", Files: map[string][]byte{
		"indirect.bin": random(rng, 1<<20+4567),
		"small.txt":    []byte("small\n"),
	}, Dirs: []string{"d"}, Links: map[string]string{"d/l": "../small.txt"}}
	// FAT: long mixed-case names, a short one, nested directories.
	fatFiles := func() map[string][]byte {
		return map[string][]byte{
			"EFI/BOOT/BOOTX64.EFI":                   random(rng, 300<<10+1),
			"EFI/debian/grub.cfg":                    []byte("search --fs-uuid\n"),
			"A Long Mixed-Case Name With Spaces.txt": []byte("long name\n"),
			"readme.md":                              []byte("# readme\n"),
		}
	}
	fatDirs := []string{"EFI", "EFI/BOOT", "EFI/debian"}
	fat32 := Partition{Index: 3, FSType: "fat32", Files: fatFiles(), Dirs: fatDirs}
	fat16 := Partition{Index: 4, FSType: "fat16", Files: fatFiles(), Dirs: fatDirs}
	fat12 := Partition{Index: 5, FSType: "fat12", Files: map[string][]byte{"boot.ini": []byte("[boot loader]\n"), "Sub Dir/Notes.TXT": random(rng, 9000)}, Dirs: []string{"Sub Dir"}}
	ntfs := Partition{Index: 6, FSType: "ntfs", Files: map[string][]byte{
		"Windows.txt":  []byte("resident\n"),
		"pagefile.dat": random(rng, 3<<20+77),
	}}
	d.Partitions = []Partition{ext4, ext2, fat32, fat16, fat12, ntfs}

	f, err := os.Create(d.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(d.Size); err != nil {
		t.Fatal(err)
	}
	run(t, "sh", "-c", "printf 'label: gpt\\nsize=24M\\nsize=8M\\nsize=40M\\nsize=16M\\nsize=4M\\nsize=16M, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7\\n' | sfdisk -q "+d.Path)
	tab, err := disk.ReadTable(f, d.Size)
	if err != nil {
		t.Fatal(err)
	}
	if len(tab.Partitions) != 6 {
		t.Fatalf("sfdisk made %d partitions", len(tab.Partitions))
	}
	for i, p := range d.Partitions {
		img := filepath.Join(dir, fmt.Sprintf("p%d.img", p.Index))
		tp := tab.Partitions[i]
		if err := os.WriteFile(img, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(img, tp.Size); err != nil {
			t.Fatal(err)
		}
		src := filepath.Join(dir, fmt.Sprintf("src%d", p.Index))
		writeTree(t, src, p.Files, p.Dirs, p.Links)
		switch p.FSType {
		case "ext4":
			run(t, "mkfs.ext4", "-q", "-F", "-d", src, img)
			// mkfs -d writes linear directories: e2fsck -D indexes the
			// large one (an htree), which debugfs confirms.
			run(t, "sh", "-c", `e2fsck -fyD "$0" >/dev/null; [ $? -le 1 ]`, img)
			if out, _ := exec.Command("debugfs", "-R", "htree /many", img).CombinedOutput(); !strings.Contains(string(out), "Root node dump") {
				t.Fatalf("/many is not an htree directory: %s", out)
			}
		case "ext2":
			run(t, "mkfs.ext2", "-q", "-F", "-b", "1024", "-d", src, img)
		case "fat32", "fat16", "fat12":
			args := []string{"-F", strings.TrimPrefix(p.FSType, "fat")}
			if p.FSType == "fat32" {
				args = append(args, "-s", "1")
			}
			run(t, "mkfs.fat", append(args, img)...)
			for _, dd := range p.Dirs {
				run(t, "mmd", "-i", img, "::/"+dd)
			}
			for name := range p.Files {
				run(t, "mcopy", "-i", img, filepath.Join(src, name), "::/"+name)
			}
		case "ntfs":
			run(t, "mkntfs", "-F", "-Q", "-q", img)
			for name := range p.Files {
				run(t, "ntfscp", "-q", img, filepath.Join(src, name), "/"+name)
			}
		}
		in, err := os.Open(img)
		if err != nil {
			t.Fatal(err)
		}
		_, err = io.Copy(io.NewOffsetWriter(f, tp.Start), in)
		in.Close()
		if err != nil {
			t.Fatal(err)
		}
		os.Remove(img)
	}
	return d
}

// Capture captures the disk as image name into repo with the real capture
// code, in chunks of chunkSize bytes, and publishes it.
func Capture(ctx context.Context, t testing.TB, d *Disk, repo *image.Repo, name string, chunkSize int64) *image.Manifest {
	t.Helper()
	f, err := os.Open(d.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	layout, _, err := agent.BuildLayout(ctx, f, d.Size, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	m, err := image.Capture(ctx, f, layout, repo, image.CaptureOptions{Name: name, ChunkSize: chunkSize})
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.Publish(ctx, m); err != nil {
		t.Fatal(err)
	}
	for _, p := range d.Partitions {
		a := m.Partition(p.Index)
		if a == nil || a.FSType != p.FSType {
			t.Fatalf("partition %d captured as %+v, want %s", p.Index, a, p.FSType)
		}
	}
	return m
}
