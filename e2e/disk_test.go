package e2e

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// The imaging scenarios' source disk: a 512 MiB raw image with an MBR
// (syslinux's mbr.bin) and three primary partitions:
//
//	p1  1 MiB  +64 MiB  ext4 (1 KiB blocks), bootable: extlinux, the lab's
//	                    Debian kernel and a busybox initrd whose /init prints
//	                    osMarker on ttyS0 and powers off
//	p2         +96 MiB  FAT32 with known files
//	p3         rest     ext4 (4 KiB blocks) with known files: a few MiB of
//	                    random data and small files
//
// It is built once (as root: losetup -P, mkfs, mount, extlinux --install)
// and cached in e2e/cache keyed by srcDiskVersion and the kernel version.
// Every file's content is a pure function of its name, so the expected
// checksums are recomputed instead of stored.
const (
	srcDiskVersion = "v1" // bump when the layout or the contents change
	srcDiskSize    = 512 << 20
	osMarker       = "PREBOOT-RESTORED-OS" // + " " + sourceDisk.ID
	mib            = 1 << 20
	sectorsPerMiB  = mib / 512
	syslinuxMBR    = "/usr/lib/syslinux/mbr/mbr.bin"
	extlinuxBin    = "extlinux"
)

// Partition layout in MiB.
const (
	p1Start, p1Size = 1, 64
	p2Start, p2Size = p1Start + p1Size, 96
	p3Start         = p2Start + p2Size
)

// sourceDisk is the cached source disk.
type sourceDisk struct {
	Path string // raw image; never written by tests (QEMU opens it snapshot=on)
	ID   string // printed after osMarker by the disk's OS
}

// knownFile is a file the source disk holds on partition Part.
type knownFile struct {
	Part int
	Path string // relative to the partition's root
	Data []byte
}

func (f knownFile) sum() string {
	s := sha256.Sum256(f.Data)
	return hex.EncodeToString(s[:])
}

// fileData returns n deterministic pseudo-random bytes for name.
func fileData(name string, n int) []byte {
	seed := sha256.Sum256([]byte("preboot-e2e-srcdisk-" + srcDiskVersion + "/" + name))
	r := rand.NewChaCha8(seed)
	b := make([]byte, n)
	_, _ = r.Read(b) // ChaCha8.Read never fails
	return b
}

// knownFiles are the data files of p2 (FAT32) and p3 (ext4).
func knownFiles() []knownFile {
	text := func(s string) []byte { return []byte(s + "\n") }
	return []knownFile{
		{2, "README.TXT", text("Preboot VM lab source disk " + srcDiskVersion + ": FAT32 data partition")},
		{2, "DATA/RANDOM.BIN", fileData("p2/random", 1536*1024+123)},
		{2, "DATA/SUB/SMALL.TXT", text("a small file in a FAT subdirectory")},
		{2, "EMPTY.TXT", nil},
		{3, "readme.txt", text("Preboot VM lab source disk " + srcDiskVersion + ": ext4 data partition")},
		{3, "random/big.bin", fileData("p3/big", 4*mib+777)},
		{3, "random/medium.bin", fileData("p3/medium", 300*1024)},
		{3, "nested/a/b/c/deep.txt", text("deep inside")},
		{3, "empty", nil},
	}
}

// osInitScript is the /init of the disk's own OS: the marker, then off.
func osInitScript(id string) string {
	return `#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
echo "` + osMarker + ` ` + id + `"
echo "os cmdline: $(cat /proc/cmdline)"
sync
poweroff -f
`
}

// extlinuxConf boots the kernel and initrd from p1 with the serial console.
const extlinuxConf = `SERIAL 0 115200
DEFAULT os
PROMPT 0
TIMEOUT 0
LABEL os
  KERNEL /boot/vmlinuz
  INITRD /boot/initrd.gz
  APPEND console=ttyS0 panic=-1 quiet
`

// osInitrd is the disk OS's initramfs: busybox-static and /init.
func osInitrd(id string) ([]byte, error) {
	busybox, err := os.ReadFile("/bin/busybox")
	if err != nil {
		return nil, fmt.Errorf("os initrd: busybox-static: %w", err)
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	w := &newcWriter{w: zw}
	for _, d := range []string{"bin", "dev", "proc"} {
		w.dir(d)
	}
	w.charDev("dev/console", 0o600, 5, 1)
	w.file("bin/busybox", 0o755, busybox)
	for _, a := range []string{"sh", "mount", "echo", "cat", "sync", "poweroff"} {
		w.symlink("bin/"+a, "busybox")
	}
	w.file("init", 0o755, []byte(osInitScript(id)))
	if err := w.close(); err != nil {
		return nil, fmt.Errorf("os initrd: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("os initrd: %w", err)
	}
	return buf.Bytes(), nil
}

// requireDiskTools fails (not skips) when a tool the imaging scenarios
// need is missing, naming the Debian package.
func requireDiskTools(t testing.TB) {
	t.Helper()
	for tool, pkg := range map[string]string{
		"sfdisk": "fdisk", "losetup": "mount", "mkfs.ext4": "e2fsprogs", "e2fsck": "e2fsprogs",
		"mkfs.vfat": "dosfstools", "fsck.fat": "dosfstools", extlinuxBin: "extlinux",
		"mcopy": "mtools", "partx": "util-linux",
	} {
		if _, err := lookTool(tool); err != nil {
			t.Fatalf("%s not installed: apt-get install %s (see e2e/README.md)", tool, pkg)
		}
	}
	if _, err := os.Stat(syslinuxMBR); err != nil {
		t.Fatalf("%s missing: apt-get install syslinux-common", syslinuxMBR)
	}
}

// lookTool finds a tool in PATH or the sbin directories (root's PATH in
// some environments lacks them).
func lookTool(name string) (string, error) {
	for _, d := range append(filepath.SplitList(os.Getenv("PATH")), "/usr/sbin", "/sbin", "/usr/bin", "/bin") {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: not found", name)
}

// sfdiskCmd is sfdisk on a disk-image file, reading its script on stdin.
func sfdiskCmd(ctx context.Context, file string) *exec.Cmd {
	p, err := lookTool("sfdisk")
	if err != nil {
		p = "sfdisk"
	}
	return exec.CommandContext(ctx, p, "--no-reread", "--no-tell-kernel", "--wipe", "always", file)
}

// tool runs a system tool found by lookTool.
func tool(ctx context.Context, name string, args ...string) (string, error) {
	p, err := lookTool(name)
	if err != nil {
		return "", err
	}
	return run(ctx, p, args...)
}

// sourceDiskOnce builds the source disk once per test binary.
var sourceDiskOnce = sync.OnceValues(func() (*sourceDisk, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	art, err := sharedArtifacts()
	if err != nil {
		return nil, err
	}
	return cachedSourceDisk(ctx, cacheDir(), art.Kernel)
})

func cachedSourceDisk(ctx context.Context, dir string, k *kernel) (*sourceDisk, error) {
	key := "srcdisk-" + srcDiskVersion + "-" + k.Version
	id := key
	d := &sourceDisk{Path: filepath.Join(dir, key+".img"), ID: id}
	if st, err := os.Stat(d.Path); err == nil && st.Size() == srcDiskSize {
		return d, nil
	}
	tmp := filepath.Join(dir, key+"-"+randomHex(4)+".tmp")
	defer os.Remove(tmp)
	if err := buildSourceDisk(ctx, tmp, k, id); err != nil {
		return nil, fmt.Errorf("build source disk: %w", err)
	}
	if err := os.Rename(tmp, d.Path); err != nil {
		return nil, fmt.Errorf("build source disk: %w", err)
	}
	return d, nil
}

// sfdiskScript is the source disk's MBR partition table.
func sfdiskScript() string {
	return fmt.Sprintf(`label: dos
label-id: 0x50524542
unit: sectors

start=%d, size=%d, type=83, bootable
start=%d, size=%d, type=c
start=%d, type=83
`, p1Start*sectorsPerMiB, p1Size*sectorsPerMiB, p2Start*sectorsPerMiB, p2Size*sectorsPerMiB, p3Start*sectorsPerMiB)
}

func buildSourceDisk(ctx context.Context, file string, k *kernel, id string) (err error) {
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if err := f.Truncate(srcDiskSize); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	cmd := sfdiskCmd(ctx, file)
	cmd.Stdin = strings.NewReader(sfdiskScript())
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("sfdisk: %w: %s", err, out)
	}
	// Syslinux's MBR boot code: the first 440 bytes (the table follows).
	mbr, err := os.ReadFile(syslinuxMBR)
	if err != nil {
		return err
	}
	if len(mbr) > 440 {
		return fmt.Errorf("%s is %d bytes, want <= 440", syslinuxMBR, len(mbr))
	}
	if err := writeAt(file, mbr, 0); err != nil {
		return err
	}

	loop, err := attachLoop(ctx, file, false)
	if err != nil {
		return err
	}
	defer func() {
		if derr := loop.detach(); derr != nil && err == nil {
			err = derr
		}
	}()
	// p1: ext4 without 64bit (syslinux reads the filesystem itself), small
	// enough that mke2fs picks 1 KiB blocks.
	if _, err := tool(ctx, "mkfs.ext4", "-q", "-F", "-L", "PREBOOT-OS", "-O", "^64bit", loop.part(1)); err != nil {
		return err
	}
	if _, err := tool(ctx, "mkfs.vfat", "-F", "32", "-n", "PREBOOTFAT", loop.part(2)); err != nil {
		return err
	}
	if _, err := tool(ctx, "mkfs.ext4", "-q", "-F", "-L", "PREBOOT-DATA", "-b", "4096", loop.part(3)); err != nil {
		return err
	}

	initrd, err := osInitrd(id)
	if err != nil {
		return err
	}
	vmlinuz, err := os.ReadFile(k.Vmlinuz)
	if err != nil {
		return err
	}
	mnt, err := os.MkdirTemp("", "preboot-srcdisk-")
	if err != nil {
		return err
	}
	defer os.Remove(mnt)
	err = withMount(ctx, loop.part(1), mnt, false, func() error {
		for name, data := range map[string][]byte{
			"boot/vmlinuz":                 vmlinuz,
			"boot/initrd.gz":               initrd,
			"boot/syslinux/extlinux.conf":  []byte(extlinuxConf),
			"etc/preboot-e2e-disk-version": []byte(id + "\n"),
		} {
			if err := writeFileAll(filepath.Join(mnt, name), data); err != nil {
				return err
			}
		}
		_, err := tool(ctx, extlinuxBin, "--install", filepath.Join(mnt, "boot", "syslinux"))
		return err
	})
	if err != nil {
		return err
	}
	err = withMount(ctx, loop.part(3), mnt, false, func() error {
		return writeKnownFiles(mnt, 3)
	})
	if err != nil {
		return err
	}
	// FAT with mtools: the host kernel may have no vfat driver.
	stage, err := os.MkdirTemp("", "preboot-srcdisk-fat-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(stage)
	if err := writeKnownFiles(stage, 2); err != nil {
		return err
	}
	top, err := filepath.Glob(filepath.Join(stage, "*"))
	if err != nil {
		return err
	}
	if _, err := mtools(ctx, "mcopy", append(append([]string{"-s", "-i", loop.part(2)}, top...), "::/")...); err != nil {
		return err
	}
	// The filesystems are clean before they are cached.
	return fsckDisk(ctx, loop)
}

// writeKnownFiles writes the known files of partition part under dir.
func writeKnownFiles(dir string, part int) error {
	for _, kf := range knownFiles() {
		if kf.Part == part {
			if err := writeFileAll(filepath.Join(dir, kf.Path), kf.Data); err != nil {
				return err
			}
		}
	}
	return nil
}

// mtools runs an mtools command (mcopy, mdir) without its geometry check.
func mtools(ctx context.Context, name string, args ...string) (string, error) {
	p, err := lookTool(name)
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, p, args...)
	cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

func writeFileAll(file string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return err
	}
	return os.WriteFile(file, data, 0o644)
}

func writeAt(file string, data []byte, off int64) error {
	f, err := os.OpenFile(file, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteAt(data, off); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// loopDev is a loop device attached with partition scanning.
type loopDev struct {
	Dev  string // /dev/loopN
	File string
}

func (l *loopDev) part(n int) string { return fmt.Sprintf("%sp%d", l.Dev, n) }

// attachLoop attaches file to a free loop device with -P and waits for the
// partition nodes (devtmpfs creates them; there may be no udev). The nodes
// go away with the loop device (losetup -d).
func attachLoop(ctx context.Context, file string, readOnly bool) (*loopDev, error) {
	args := []string{"--find", "--show", "--partscan"}
	if readOnly {
		args = append(args, "--read-only")
	}
	out, err := tool(ctx, "losetup", append(args, file)...)
	if err != nil {
		return nil, err
	}
	l := &loopDev{Dev: strings.TrimSpace(out), File: file}
	if !strings.HasPrefix(l.Dev, "/dev/loop") {
		return nil, fmt.Errorf("losetup printed %q", out)
	}
	// How many partitions the table has: wait for each node.
	n, err := mbrPartitions(file)
	if err != nil {
		_ = l.detach()
		return nil, err
	}
	// Some kernels (without CONFIG_MSDOS_PARTITION) scan nothing: partx
	// reads the table in user space and adds the partitions with BLKPG.
	if _, err := os.Stat(l.part(1)); n > 0 && err != nil {
		time.Sleep(200 * time.Millisecond)
		if _, err := os.Stat(l.part(1)); err != nil {
			if _, err := tool(ctx, "partx", "--update", l.Dev); err != nil {
				_ = l.detach()
				return nil, err
			}
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for i := 1; i <= n; i++ {
		for {
			if _, err := os.Stat(l.part(i)); err == nil {
				break
			}
			if time.Now().After(deadline) {
				_ = l.detach()
				return nil, fmt.Errorf("%s: partition node %s did not appear", l.Dev, l.part(i))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return l, nil
}

// detach releases the loop device (retrying briefly while the kernel
// still holds it after an unmount).
func (l *loopDev) detach() error {
	var err error
	for i := 0; i < 20; i++ {
		if _, err = tool(context.Background(), "losetup", "--detach", l.Dev); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err
}

// mbrPartitions counts the used primary entries of an MBR.
func mbrPartitions(file string) (int, error) {
	f, err := os.Open(file)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	b := make([]byte, 512)
	if _, err := f.ReadAt(b, 0); err != nil {
		return 0, fmt.Errorf("read MBR of %s: %w", file, err)
	}
	if b[510] != 0x55 || b[511] != 0xAA {
		return 0, fmt.Errorf("%s: no MBR signature", file)
	}
	n := 0
	for i := 0; i < 4; i++ {
		e := b[446+16*i:]
		if e[4] != 0 && binary.LittleEndian.Uint32(e[12:]) != 0 {
			n = i + 1
		}
	}
	return n, nil
}

// withMount mounts dev on dir for fn and always unmounts it.
func withMount(ctx context.Context, dev, dir string, readOnly bool, fn func() error) (err error) {
	args := []string{dev, dir}
	if readOnly {
		args = append([]string{"-o", "ro,noload"}, args...)
	}
	if _, err := tool(ctx, "mount", args...); err != nil {
		return err
	}
	defer func() {
		if _, uerr := tool(context.Background(), "umount", dir); uerr != nil && err == nil {
			err = uerr
		}
	}()
	return fn()
}

// fsckDisk checks p1 and p3 (ext4) with e2fsck -fn and p2 (FAT32) with
// fsck.fat -n: read-only checks that fail on any problem.
func fsckDisk(ctx context.Context, l *loopDev) error {
	var errs []error
	for _, p := range []int{1, 3} {
		if _, err := tool(ctx, "e2fsck", "-f", "-n", l.part(p)); err != nil {
			errs = append(errs, err)
		}
	}
	if _, err := tool(ctx, "fsck.fat", "-n", l.part(2)); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// diskFileSums mounts p2 and p3 of the disk image read-only and returns the
// sha256 of every regular file, keyed "p<N>/<path>".
func diskFileSums(ctx context.Context, l *loopDev) (map[string]string, error) {
	sums := map[string]string{}
	mnt, err := os.MkdirTemp("", "preboot-check-")
	if err != nil {
		return nil, err
	}
	defer os.Remove(mnt)
	walk := func(part int, root string) error {
		return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if !d.Type().IsRegular() {
				return nil
			}
			rel, _ := filepath.Rel(root, p)
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			s := sha256.Sum256(b)
			sums[fmt.Sprintf("p%d/%s", part, rel)] = hex.EncodeToString(s[:])
			return nil
		})
	}
	// ext4 read-only mount (noload: no journal replay on a read-only
	// device); FAT through mtools (the host kernel may lack vfat).
	err = withMount(ctx, l.part(3), mnt, true, func() error { return walk(3, mnt) })
	if err != nil {
		return nil, err
	}
	stage, err := os.MkdirTemp("", "preboot-check-fat-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(stage)
	if _, err := mtools(ctx, "mcopy", "-s", "-n", "-i", l.part(2), "::/*", stage); err != nil {
		return nil, err
	}
	if err := walk(2, stage); err != nil {
		return nil, err
	}
	return sums, nil
}

// checkDiskContents asserts that the disk image's filesystems are clean and
// hold exactly the known files (FAT names compared case-insensitively).
func checkDiskContents(t *testing.T, file string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	l, err := attachLoop(ctx, file, true)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := l.detach(); err != nil {
			t.Error(err)
		}
	}()
	if err := fsckDisk(ctx, l); err != nil {
		t.Errorf("fsck of %s: %v", filepath.Base(file), err)
	}
	got, err := diskFileSums(ctx, l)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for _, kf := range knownFiles() {
		want[fmt.Sprintf("p%d/%s", kf.Part, kf.Path)] = kf.sum()
	}
	norm := func(m map[string]string) map[string]string {
		out := map[string]string{}
		for k, v := range m {
			if strings.HasPrefix(k, "p2/") {
				k = strings.ToUpper(k)
			}
			out[k] = v
		}
		return out
	}
	got, want = norm(got), norm(want)
	var keys []string
	for k := range want {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if got[k] != want[k] {
			t.Errorf("%s: %s sha256 %q, want %q", filepath.Base(file), k, got[k], want[k])
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%s: unexpected file %s", filepath.Base(file), k)
		}
	}
	t.Logf("%s: filesystems clean, %d known files match", filepath.Base(file), len(want))
}

// TestSourceDisk builds (or takes from the cache) the imaging scenarios'
// source disk, checks its filesystems and files on the host, and boots it
// alone in a VM without a NIC: extlinux → kernel → the OS marker.
func TestSourceDisk(t *testing.T) {
	requireRoot(t)
	requireDiskTools(t)
	t.Parallel()
	d, err := sourceDiskOnce()
	if err != nil {
		t.Fatal(err)
	}
	checkDiskContents(t, d.Path)
	v := startVM(t, vmConfig{Name: "srcdisk", Dir: workDir(t), Args: []string{
		"-drive", "file=" + d.Path + ",format=raw,if=ide,snapshot=on",
		"-boot", "c",
	}})
	ctx, cancel := context.WithTimeout(context.Background(), biosDeadline)
	defer cancel()
	start := time.Now()
	if err := v.waitFor(ctx, osMarker+" "+d.ID); err != nil {
		t.Fatal(err)
	}
	if err := v.waitExit(ctx); err != nil {
		t.Error(err)
	}
	t.Logf("source disk booted its OS in %s", time.Since(start).Round(time.Second))
}
