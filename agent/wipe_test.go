package agent

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// dataFile makes a file of size bytes of pseudo-random data (one random
// MiB repeated, each copy marked with its number, so no byte is left out
// and no two MiBs are equal).
func dataFile(t *testing.T, path string, size int64, seed uint64) {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 5))
	block := make([]byte, MiB)
	for i := 0; i < len(block); i += 8 {
		binary.LittleEndian.PutUint64(block[i:], r.Uint64()|1)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for off := int64(0); off < size; off += MiB {
		binary.LittleEndian.PutUint64(block, uint64(off)|1<<63)
		if _, err := f.WriteAt(block[:min(MiB, size-off)], off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// checkZero fails unless the file reads as zeros and keeps its size.
func checkZero(t *testing.T, path string, size int64) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(b)) != size {
		t.Fatalf("%s: %d bytes after the wipe, want %d", path, len(b), size)
	}
	if i := bytes.IndexFunc(b, func(r rune) bool { return r != 0 }); i >= 0 {
		t.Fatalf("%s: non-zero byte at %d after the wipe", path, i)
	}
}

type wipeProgressLog struct {
	mu   sync.Mutex
	all  []WipeProgress
	last WipeProgress
}

func (p *wipeProgressLog) fn(w WipeProgress) {
	p.mu.Lock()
	p.all = append(p.all, w)
	p.last = w
	p.mu.Unlock()
}

func TestWipeFiles(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")
	const sa, sb = 9*MiB + 4096, 3 * MiB
	for _, mode := range []string{WipeZero, WipeDiscard} {
		t.Run(mode, func(t *testing.T) {
			dataFile(t, a, sa, 1)
			dataFile(t, b, sb, 2)
			var pl wipeProgressLog
			if err := Wipe(ctx, WipeOptions{Disks: []string{a, b}, Mode: mode, Progress: pl.fn}); err != nil {
				t.Fatal(err)
			}
			checkZero(t, a, sa)
			checkZero(t, b, sb)
			if pl.last.Done != sa+sb || pl.last.Total != sa+sb || pl.last.Disk != b {
				t.Errorf("last progress %+v, want %d of %d bytes on %s", pl.last, sa+sb, sa+sb, b)
			}
		})
	}
	// The same disk twice, a bad mode, a missing disk: nothing is wiped.
	dataFile(t, a, sa, 3)
	before := fileSum(t, a)
	for _, o := range []WipeOptions{
		{Disks: []string{a, a}},
		{Disks: []string{a}, Mode: "shred"},
		{Disks: []string{a, filepath.Join(dir, "missing")}},
	} {
		if err := Wipe(ctx, o); err == nil {
			t.Errorf("%+v: no error", o)
		}
	}
	if fileSum(t, a) != before {
		t.Error("a refused wipe changed the disk")
	}
}

// TestWipeDefaultDisks: with no disk list every fixed disk is wiped, not
// the removable ones (a machine described by a fake /sys and /dev).
func TestWipeDefaultDisks(t *testing.T) {
	root := t.TempDir()
	sys, dev, proc := filepath.Join(root, "sys"), filepath.Join(root, "dev"), filepath.Join(root, "proc")
	writeFiles(t, sys, map[string]string{
		"block/vda/size": "8192", "block/vda/removable": "0",
		"block/vdb/size": "4096", "block/vdb/removable": "0",
		"block/sdz/size": "4096", "block/sdz/removable": "1",
		"block/loop3/size": "4096",
	})
	writeFiles(t, proc, map[string]string{"self/mountinfo": "22 27 0:21 / /proc rw - proc proc rw"})
	if err := os.MkdirAll(dev, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, n := range []string{"vda", "vdb", "sdz", "loop3"} {
		dataFile(t, filepath.Join(dev, n), 2*MiB, uint64(i))
	}
	usb := fileSum(t, filepath.Join(dev, "sdz"))
	loop := fileSum(t, filepath.Join(dev, "loop3"))
	var pl wipeProgressLog
	if err := wipe(context.Background(), WipeOptions{Progress: pl.fn}, hostRoots{sys: sys, proc: proc, dev: dev}); err != nil {
		t.Fatal(err)
	}
	checkZero(t, filepath.Join(dev, "vda"), 2*MiB)
	checkZero(t, filepath.Join(dev, "vdb"), 2*MiB)
	if fileSum(t, filepath.Join(dev, "sdz")) != usb || fileSum(t, filepath.Join(dev, "loop3")) != loop {
		t.Error("a removable disk or a loop device was wiped")
	}
	if pl.last.Total != 4*MiB {
		t.Errorf("progress total %d, want two disks", pl.last.Total)
	}
	// No fixed disk at all.
	empty := t.TempDir()
	if err := wipe(context.Background(), WipeOptions{}, hostRoots{sys: empty, proc: proc, dev: dev}); err == nil ||
		!strings.Contains(err.Error(), "no fixed disk") {
		t.Errorf("no disks: %v", err)
	}
	// Unreadable mount table: refuse rather than guess.
	if err := wipe(context.Background(), WipeOptions{}, hostRoots{sys: sys, proc: empty, dev: dev}); err == nil {
		t.Error("wiped without knowing what is mounted")
	}
}

// TestWipeBlockDevice zeroes and discards loop devices (root only):
// BLKZEROOUT and BLKDISCARD for real.
func TestWipeBlockDevice(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	for _, mode := range []string{WipeZero, WipeDiscard} {
		t.Run(mode, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "disk.img")
			const size = 24 * MiB
			dataFile(t, file, size, 9)
			loop := attachLoop(t, file)
			var pl wipeProgressLog
			var logs lockedBuffer
			log := slog.New(slog.NewTextHandler(&logs, nil))
			if err := Wipe(ctx, WipeOptions{Disks: []string{loop}, Mode: mode, Progress: pl.fn, Logger: log}); err != nil {
				t.Fatal(err)
			}
			detachLoop(t, loop)
			checkZero(t, file, size)
			// The kernel did it (the ioctl), not the write fallback.
			want := map[string]string{WipeZero: "how=BLKZEROOUT", WipeDiscard: "how=BLKDISCARD"}[mode]
			if !strings.Contains(logs.String(), want) {
				t.Errorf("log lacks %q:\n%s", want, logs.String())
			}
			if pl.last.Done != size || pl.last.Total != size {
				t.Errorf("last progress %+v", pl.last)
			}
		})
	}
}

// TestWipeRefusesBlockDevices: a disk the system has mounted, a disk
// without discard support (for discard), a removable disk. Nothing of any
// listed disk is written.
func TestWipeRefusesBlockDevices(t *testing.T) {
	needRoot(t)
	needTools(t, "mkfs.ext4", "mount", "umount")
	ctx := context.Background()
	dir := t.TempDir()
	good := filepath.Join(dir, "good.img")
	dataFile(t, good, 8*MiB, 1)
	goodLoop := attachLoop(t, good)
	goodSum := fileSum(t, good)

	// Mounted: the running system uses it.
	mounted := filepath.Join(dir, "mounted.img")
	makeFile(t, mounted, 16*MiB)
	run(t, "", "mkfs.ext4", "-q", "-F", mounted)
	mLoop := attachLoop(t, mounted)
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", mLoop, mnt).CombinedOutput(); err != nil {
		t.Skipf("mount: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", mnt).Run() })
	if err := os.WriteFile(filepath.Join(mnt, "keep"), []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := Wipe(ctx, WipeOptions{Disks: []string{goodLoop, mLoop}})
	if !errors.Is(err, ErrWipeRefused) || !strings.Contains(err.Error(), "mounted") || !strings.Contains(err.Error(), "nothing was wiped") {
		t.Errorf("mounted disk: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(mnt, "keep")); err != nil || string(b) != "keep me" {
		t.Errorf("mounted filesystem damaged: %q %v", b, err)
	}

	// No discard support: a loop device backed by a ramfs file.
	ram := filepath.Join(dir, "ramfs")
	if err := os.Mkdir(ram, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "ramfs", "preboot-ramfs", ram).CombinedOutput(); err != nil {
		t.Skipf("mount ramfs: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", ram).Run() })
	nod := filepath.Join(ram, "nodiscard.img")
	dataFile(t, nod, 4*MiB, 2)
	nodSum := fileSum(t, nod)
	nLoop := attachLoop(t, nod)
	err = Wipe(ctx, WipeOptions{Disks: []string{goodLoop, nLoop}, Mode: WipeDiscard})
	if !errors.Is(err, ErrWipeRefused) || !strings.Contains(err.Error(), "does not support discard") ||
		!strings.Contains(err.Error(), "use mode zero") {
		t.Errorf("discard without support: %v", err)
	}
	// Zeroing it works.
	if err := Wipe(ctx, WipeOptions{Disks: []string{nLoop}, Mode: WipeZero}); err != nil {
		t.Errorf("zero a disk without discard support: %v", err)
	}
	detachLoop(t, nLoop)
	if fileSum(t, nod) == nodSum {
		t.Error("zero wipe left the ramfs-backed disk as it was")
	}
	checkZero(t, nod, 4*MiB)

	// Removable, as sysfs says (a /sys whose entry for the device says so).
	fi, err := os.Stat(goodLoop)
	if err != nil {
		t.Fatal(err)
	}
	rdev := uint64(fi.Sys().(*syscall.Stat_t).Rdev)
	root := t.TempDir()
	sys, proc := filepath.Join(root, "sys"), filepath.Join(root, "proc")
	writeFiles(t, sys, map[string]string{"devices/virtual/block/usb0/removable": "1", "devices/virtual/block/usb0/size": "16384"})
	writeFiles(t, proc, map[string]string{"self/mountinfo": ""})
	if err := os.MkdirAll(filepath.Join(sys, "dev/block"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../../devices/virtual/block/usb0", filepath.Join(sys, "dev/block", fmt.Sprintf("%d:%d", devMajor(rdev), devMinor(rdev)))); err != nil {
		t.Fatal(err)
	}
	err = wipe(ctx, WipeOptions{Disks: []string{goodLoop}}, hostRoots{sys: sys, proc: proc, dev: "/dev"})
	if !errors.Is(err, ErrWipeRefused) || !strings.Contains(err.Error(), "removable") {
		t.Errorf("removable disk: %v", err)
	}

	detachLoop(t, goodLoop)
	if fileSum(t, good) != goodSum {
		t.Error("a refused wipe changed another disk of the list")
	}
}

// lockedBuffer is a bytes.Buffer safe for concurrent writers.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
