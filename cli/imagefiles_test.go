package cli

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/preboot/preboot/image"
	"github.com/preboot/preboot/image/httpstore"
	"github.com/preboot/preboot/imagefs/imagefstest"
)

// TestImageExplorerCommands runs ls, cat, cp and diff against the real
// image handler serving an image of real ext4, ext2, FAT and NTFS
// filesystems captured with the real capture code.
func TestImageExplorerCommands(t *testing.T) {
	imagefstest.Need(t)
	dir := t.TempDir()
	d := imagefstest.Build(t, dir)
	repo, err := image.OpenRepo(filepath.Join(dir, "repo"), image.RepoOptions{GCGrace: -1})
	if err != nil {
		t.Fatal(err)
	}
	m := imagefstest.Capture(t.Context(), t, d, repo, "lab", 256<<10)
	h := &httpstore.Handler{Repo: repo}
	mux := http.NewServeMux()
	for _, p := range h.Prefixes() {
		mux.Handle(p, h)
	}
	srv := httptest.NewServer(mux)
	defer srv.Close()
	run := func(args ...string) string {
		t.Helper()
		out, err := runImage(t, srv.URL, nil, args...)
		if err != nil {
			t.Fatalf("image %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	fails := func(want string, args ...string) {
		t.Helper()
		out, err := runImage(t, srv.URL, nil, args...)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("image %s: %v (%s), want an error with %q", strings.Join(args, " "), err, out, want)
		}
	}

	out := run("ls", "lab")
	for _, w := range []string{"PARTITION", "ext4", "ext2", "fat32", "fat16", "fat12", "ntfs"} {
		if !strings.Contains(out, w) {
			t.Errorf("ls lab: no %q in\n%s", w, out)
		}
	}
	out = run("ls", "lab:1:/")
	for _, w := range []string{"big.bin", "link -> etc/hostname", "many/", "drwxr-xr-x", "-rw-r-----"} {
		if !strings.Contains(out, w) {
			t.Errorf("ls lab:1:/: no %q in\n%s", w, out)
		}
	}
	if out := run("ls", "-b", "lab:1:/big.bin"); !strings.Contains(out, "5243003") || strings.Count(out, "\n") != 1 {
		t.Errorf("ls of a file: %s", out)
	}
	if out := run("ls", "lab@1:6"); !strings.Contains(out, "pagefile.dat") {
		t.Errorf("ls lab@1:6: %s", out)
	}
	if out := run("cat", "lab:1:/etc/hostname"); out != "lab-pc\n" {
		t.Errorf("cat: %q", out)
	}
	if out := run("cat", "lab:3:/efi/debian/GRUB.CFG"); out != "search --fs-uuid\n" {
		t.Errorf("cat fat32: %q", out)
	}
	fails("has 6 partitions", "cat", "lab:/etc/hostname")
	fails("escapes the filesystem root", "cat", "lab:1:/../../etc/passwd")
	fails("escapes the filesystem root", "cat", "lab:1:/evil")
	fails("is a directory", "cat", "lab:1:/etc")
	fails("no partition 9", "ls", "lab:9:/")
	fails("PARTITION a number", "ls", "lab:x:/")

	// cp: a directory tree (an htree of 400 files), a file into a
	// directory, a file to a new name.
	dest := t.TempDir()
	run("cp", "lab:1:/etc", filepath.Join(dest, "etc-copy"))
	if b, err := os.ReadFile(filepath.Join(dest, "etc-copy", "deep", "er", "file.txt")); err != nil || string(b) != "deep file\n" {
		t.Errorf("cp -r etc: %q %v", b, err)
	}
	if l, err := os.Readlink(filepath.Join(dest, "etc-copy", "up")); err != nil || l != "../big.bin" {
		t.Errorf("cp -r etc: link up: %q %v", l, err)
	}
	run("cp", "lab:1:/many", dest)
	ents, err := os.ReadDir(filepath.Join(dest, "many"))
	if err != nil || len(ents) != 400 {
		t.Fatalf("cp many: %d entries, %v", len(ents), err)
	}
	for name, want := range d.Partitions[0].Files {
		if rest, ok := strings.CutPrefix(name, "many/"); ok {
			if b, err := os.ReadFile(filepath.Join(dest, "many", rest)); err != nil || !bytes.Equal(b, want) {
				t.Fatalf("cp many: %s: %v", rest, err)
			}
		}
	}
	run("cp", "lab:6:/pagefile.dat", dest)
	if b, _ := os.ReadFile(filepath.Join(dest, "pagefile.dat")); !bytes.Equal(b, d.Partitions[5].Files["pagefile.dat"]) {
		t.Error("cp ntfs pagefile.dat: content differs")
	}
	run("cp", "lab:1:/link", filepath.Join(dest, "hostname"))
	if fi, err := os.Lstat(filepath.Join(dest, "hostname")); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("cp of a link to a file: %v %v", fi, err)
	}
	run("cp", "lab:1:/etc", filepath.Join(dest, "etc-copy")) // into it, as cp -r
	if _, err := os.Stat(filepath.Join(dest, "etc-copy", "etc", "hostname")); err != nil {
		t.Errorf("cp -r into an existing directory: %v", err)
	}
	fails("exists", "cp", "lab:1:/etc", filepath.Join(dest, "etc-copy"))

	// A corrupt chunk under big.bin: cp fails naming it and leaves
	// nothing behind.
	corruptChunkOf(t, repo, m, d)
	out2 := t.TempDir()
	fails("corrupt chunk", "cp", "lab:1:/big.bin", filepath.Join(out2, "big.bin"))
	if ents, _ := os.ReadDir(out2); len(ents) != 0 {
		t.Errorf("a failed cp left %v", ents)
	}
	fails("", "cp", "lab:1:/", filepath.Join(out2, "root"))
	if ents, _ := os.ReadDir(out2); len(ents) != 0 {
		t.Errorf("a failed cp -r left %v", ents)
	}

	// diff: one argument compares the previous version with the current.
	fails("no version before", "diff", "lab")
	imagefstest.Capture(t.Context(), t, d, repo, "lab", 256<<10)
	out = run("diff", "lab@1", "lab@2")
	if !strings.Contains(out, "partition 1") || !strings.Contains(out, "hold the same data") {
		t.Errorf("diff: %s", out)
	}
}

// corruptChunkOf replaces the chunk holding big.bin's middle with a valid
// zstd frame of other content.
func corruptChunkOf(t *testing.T, repo *image.Repo, m *image.Manifest, d *imagefstest.Disk) {
	t.Helper()
	a := m.Partition(1)
	want := d.Partitions[0].Files["big.bin"][2<<20 : 2<<20+4096]
	dec, _ := zstd.NewReader(nil)
	defer dec.Close()
	enc, _ := zstd.NewWriter(nil)
	defer enc.Close()
	for _, c := range a.Chunks {
		if c.Zero {
			continue
		}
		p := filepath.Join(repo.Root(), "chunks", c.Hash.String()[:2], c.Hash.String())
		frame, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := dec.DecodeAll(frame, nil)
		if err != nil {
			t.Fatal(err)
		}
		if i := bytes.Index(raw, want); i >= 0 {
			raw[i] ^= 0xFF
			if err := os.WriteFile(p, enc.EncodeAll(raw, nil), 0o644); err != nil {
				t.Fatal(err)
			}
			return
		}
	}
	t.Fatal("no chunk holds big.bin at 2 MiB")
}
