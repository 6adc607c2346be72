package image

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestCaptureRestoreExt4(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	d := buildExt4Disk(t, dir, 1)
	repo := openRepo(t)
	m, p := capture(t, d.path, d.layout, repo, "ext4-base")
	if err := repo.Publish(ctx, m); err != nil {
		t.Fatal(err)
	}
	if p.Done != p.Total || p.Total != m.Sizes.Used || p.Transferred == 0 {
		t.Fatalf("final progress %+v, used %d", p, m.Sizes.Used)
	}
	if u := extentBytes(m.Partitions[0].Used); u >= m.Partitions[0].Size/2 {
		t.Fatalf("ext4 used %d of %d: free space was not skipped", u, m.Partitions[0].Size)
	}
	if err := repo.Verify(ctx, "ext4-base", 0); err != nil {
		t.Fatal(err)
	}
	got, err := repo.Manifest("ext4-base")
	if err != nil {
		t.Fatal(err)
	}

	// Restore onto a disk full of garbage: every used byte must be written.
	dstPath := filepath.Join(dir, "restored.img")
	dst := garbageFile(t, dstPath, m.Disk.Size)
	cw := newCounting(dst)
	var last Progress
	if err := Restore(ctx, cw, got, repo, RestoreOptions{TargetSize: m.Disk.Size, Progress: func(p Progress) { last = p }}); err != nil {
		t.Fatal(err)
	}
	if last.Done != last.Total || last.Written != cw.n {
		t.Fatalf("final progress %+v, counted %d bytes written", last, cw.n)
	}
	if cw.n != m.Sizes.Used {
		t.Fatalf("wrote %d bytes, used bytes are %d", cw.n, m.Sizes.Used)
	}
	src, err := os.Open(d.path)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	sameUsed(t, got, src, dst)
	checkExt4(t, dstPath, d)
}

// checkExt4 extracts partition 1 of a restored disk, fscks it and compares
// every file with debugfs.
func checkExt4(t *testing.T, diskPath string, d testDisk) {
	t.Helper()
	p := d.layout.Partitions[0]
	all, err := os.ReadFile(diskPath)
	if err != nil {
		t.Fatal(err)
	}
	fsPath := diskPath + ".p1"
	if err := os.WriteFile(fsPath, all[p.Start:p.Start+p.Size], 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("e2fsck", "-fn", fsPath).CombinedOutput(); err != nil {
		t.Fatalf("e2fsck -fn on the restored filesystem: %v\n%s", err, out)
	}
	for name, want := range d.files {
		out := filepath.Join(t.TempDir(), name)
		if b, err := exec.Command("debugfs", "-R", "dump /"+name+" "+out, fsPath).CombinedOutput(); err != nil {
			t.Fatalf("debugfs dump %s: %v\n%s", name, err, b)
		}
		gotb, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		if sha(gotb) != sha(want) {
			t.Fatalf("file %s differs after restore (%d vs %d bytes)", name, len(gotb), len(want))
		}
	}
}

func TestDedupeAndShare(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	d := buildExt4Disk(t, dir, 2)
	repo := openRepo(t)
	m1, p1 := capture(t, d.path, d.layout, repo, "one")
	if err := repo.Publish(ctx, m1); err != nil {
		t.Fatal(err)
	}
	// Unchanged re-capture uploads nothing.
	m2, p2 := capture(t, d.path, d.layout, repo, "again")
	if p2.Transferred != 0 || m2.Sizes.Uploaded != 0 {
		t.Fatalf("re-capture uploaded %d chunks (%d bytes)", p2.Transferred, m2.Sizes.Uploaded)
	}
	if p1.Transferred == 0 {
		t.Fatal("first capture uploaded nothing")
	}
	// Change one 4 KiB block inside the raw partition: one new chunk.
	f, err := os.OpenFile(d.path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	raw := d.layout.Partitions[1]
	if _, err := f.WriteAt(bytes.Repeat([]byte{0xab}, 4096), raw.Start+3*mib+8192); err != nil {
		t.Fatal(err)
	}
	f.Close()
	m3, p3 := capture(t, d.path, d.layout, repo, "two")
	if p3.Transferred != 1 {
		t.Fatalf("capture after a one-block change uploaded %d chunks, want 1", p3.Transferred)
	}
	if err := repo.Publish(ctx, m3); err != nil {
		t.Fatal(err)
	}
	u, err := repo.Usage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(u.Images) != 2 {
		t.Fatalf("usage lists %d images", len(u.Images))
	}
	for _, iu := range u.Images {
		if iu.Shared == 0 || iu.Unique == 0 || iu.Stored != iu.Shared+iu.Unique {
			t.Fatalf("usage of %s: %+v", iu.Name, iu)
		}
	}
	if u.GarbageBytes != 0 {
		t.Fatalf("garbage %d", u.GarbageBytes)
	}

	// GC after removing "one" keeps the shared chunks of "two".
	if err := repo.Remove(ctx, "one"); err != nil {
		t.Fatal(err)
	}
	if err := repo.Remove(ctx, "one"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second remove: %v", err)
	}
	st, err := repo.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Removed != 1 {
		t.Fatalf("gc removed %d chunks, want 1 (the chunk only 'one' used): %+v", st.Removed, st)
	}
	if err := repo.Verify(ctx, "two", 0); err != nil {
		t.Fatal(err)
	}
	names, err := repo.List()
	if err != nil || len(names) != 1 || names[0] != "two" {
		t.Fatalf("list %v %v", names, err)
	}
}

func TestDeltaRestore(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	d := buildExt4Disk(t, dir, 3)
	repo := openRepo(t)
	m, _ := capture(t, d.path, d.layout, repo, "delta")
	if err := repo.Publish(ctx, m); err != nil {
		t.Fatal(err)
	}
	origData, err := os.ReadFile(d.path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(d.path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cw := newCounting(f)
	var last Progress
	opts := RestoreOptions{TargetSize: m.Disk.Size, Current: f, Progress: func(p Progress) { last = p }}
	if err := Restore(ctx, cw, m, repo, opts); err != nil {
		t.Fatal(err)
	}
	if cw.n != 0 || last.Transferred != 0 {
		t.Fatalf("delta restore onto the identical disk wrote %d bytes, fetched %d chunks", cw.n, last.Transferred)
	}
	// Damage one used block of the filesystem and one zero window: only
	// those windows are written.
	p1 := d.layout.Partitions[0]
	blk := m.Partitions[0].Used[len(m.Partitions[0].Used)-1]
	if _, err := f.WriteAt(bytes.Repeat([]byte{1}, 4096), p1.Start+blk.Offset); err != nil {
		t.Fatal(err)
	}
	zeroWin := int64(-1)
	for _, c := range m.Partitions[1].Chunks {
		if c.Zero {
			zeroWin = c.Offset
			break
		}
	}
	if zeroWin < 0 {
		t.Fatal("raw partition has no zero window")
	}
	if _, err := f.WriteAt([]byte("junk"), m.Partitions[1].Start+zeroWin+100); err != nil {
		t.Fatal(err)
	}
	cw = newCounting(f)
	if err := Restore(ctx, cw, m, repo, opts); err != nil {
		t.Fatal(err)
	}
	if last.Transferred != 1 || cw.n == 0 || cw.n > 2*m.ChunkSize {
		t.Fatalf("delta restore after damage: fetched %d, wrote %d bytes", last.Transferred, cw.n)
	}
	sameUsed(t, m, bytes.NewReader(origData), f)
	checkExt4(t, d.path, d)
}

func TestExportImport(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	d := buildExt4Disk(t, dir, 4)
	repo := openRepo(t)
	m, _ := capture(t, d.path, d.layout, repo, "exp")
	if err := repo.Publish(ctx, m); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := repo.Export(ctx, "exp", &buf); err != nil {
		t.Fatal(err)
	}
	archive := buf.Bytes()
	tarList := exec.Command("tar", "-tf", "-")
	tarList.Stdin = bytes.NewReader(archive)
	if out, err := tarList.Output(); err != nil || !strings.HasPrefix(string(out), "manifest.json\nchunks/") {
		t.Fatalf("tar -t: %v %.100q", err, out)
	}

	other := openRepo(t)
	m2, err := other.Import(ctx, bytes.NewReader(archive), "")
	if err != nil {
		t.Fatal(err)
	}
	if m2.Name != "exp" {
		t.Fatalf("imported as %q", m2.Name)
	}
	if err := other.Verify(ctx, "exp", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Import(ctx, bytes.NewReader(archive), ""); !errors.Is(err, ErrExists) {
		t.Fatalf("re-import: %v", err)
	}
	dstPath := filepath.Join(dir, "from-import.img")
	dst := garbageFile(t, dstPath, m.Disk.Size)
	if err := Restore(ctx, dst, m2, other, RestoreOptions{TargetSize: m.Disk.Size}); err != nil {
		t.Fatal(err)
	}
	checkExt4(t, dstPath, d)

	// A corrupted archive is refused and publishes nothing.
	bad := bytes.Clone(archive)
	i := bytes.Index(bad, []byte("chunks/"))
	bad[i+2048] ^= 0xff // inside the first chunk's data (after its 1.5 KiB PAX/ustar headers)
	third := openRepo(t)
	if _, err := third.Import(ctx, bytes.NewReader(bad), "bad"); err == nil {
		t.Fatal("import of a corrupted archive succeeded")
	}
	if names, _ := third.List(); len(names) != 0 {
		t.Fatalf("corrupted import published %v", names)
	}
	// Truncated archive: refused.
	if _, err := third.Import(ctx, bytes.NewReader(archive[:len(archive)/2]), "half"); err == nil {
		t.Fatal("import of a truncated archive succeeded")
	}
	if names, _ := third.List(); len(names) != 0 {
		t.Fatalf("truncated import published %v", names)
	}
}
