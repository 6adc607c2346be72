package agent

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/preboot/preboot/disk"
)

// TestRestoreBlockDevice restores onto a loop device (root only): the
// block-device paths (BLKGETSIZE64, BLKRRPART, fsync) run for real.
func TestRestoreBlockDevice(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	d := buildDisk(t, dir, "gpt", 64*MiB)
	_, st := newRepo(t)
	ctx := context.Background()
	m, err := Capture(ctx, Options{Device: d.path, Image: "loop-img", Store: st})
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "target.img")
	makeFile(t, dst, 80*MiB)
	loop := attachLoop(t, dst)

	f, err := os.Open(loop)
	if err != nil {
		t.Fatal(err)
	}
	size, err := deviceSize(f)
	f.Close()
	if err != nil || size != 80*MiB {
		t.Fatalf("BLKGETSIZE64 %s = %d, %v", loop, size, err)
	}
	if _, err := Restore(ctx, Options{Device: loop, Image: m.Name, Store: st}); err != nil {
		t.Fatal(err)
	}
	detachLoop(t, loop)
	checkDisk(t, d, dst)
	checkTable(t, "gpt", dst)
	f, _ = os.Open(dst)
	tbl, err := disk.ReadTable(f, 80*MiB)
	f.Close()
	if err != nil || tbl.Partitions[1].End() != 80*MiB-33*512 {
		t.Fatalf("table after restore: %+v %v", tbl, err)
	}
	if rec, err := ReadImageSafe(dst); err != nil || rec.LastImage != "loop-img" {
		t.Errorf("image-safe %+v %v", rec, err)
	}
}

// needRoot skips tests that need loop devices or mounts.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for loop devices")
	}
	needTools(t, "losetup")
}

// attachLoop attaches file to a free loop device, detached at cleanup
// (or earlier by detachLoop).
func attachLoop(t *testing.T, file string) string {
	t.Helper()
	out, err := exec.Command("losetup", "--find", "--show", file).CombinedOutput()
	if err != nil {
		t.Skipf("losetup: %v: %s", err, out)
	}
	loop := strings.TrimSpace(string(out))
	t.Cleanup(func() { _ = exec.Command("losetup", "-d", loop).Run() })
	return loop
}

func detachLoop(t *testing.T, loop string) {
	t.Helper()
	if out, err := exec.Command("losetup", "-d", loop).CombinedOutput(); err != nil {
		t.Fatalf("losetup -d %s: %v: %s", loop, err, out)
	}
}
