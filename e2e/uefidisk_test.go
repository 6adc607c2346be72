package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The UEFI scenarios' source disk: a 512 MiB sparse raw image with a GPT
// (sgdisk) and two partitions, like a minimal Linux install on a UEFI
// machine:
//
//	p1  1 MiB  +64 MiB  EFI System Partition, FAT32 (mkfs.vfat + mtools:
//	                    the host kernel has no vfat), holding only
//	                    \EFI\debian\grubx64.efi (grub-mkimage -O x86_64-efi,
//	                    prefix /EFI/debian) and \EFI\debian\grub.cfg;
//	                    deliberately no \EFI\BOOT\BOOTX64.EFI fallback: with
//	                    empty NVRAM the firmware cannot find the loader
//	p2  65 MiB  rest    ext4 root (mkfs.ext4 -d: no mount): /boot/vmlinuz
//	                    (the lab's Debian kernel), /boot/initrd.gz (the OS
//	                    initrd of disk_test.go: prints osMarker + " " + ID on
//	                    ttyS0 and powers off) and the known ext4 files of
//	                    knownFiles (Part 3) at the filesystem's root
//
// The disk and partition GUIDs and the root filesystem's UUID are fixed,
// so a restore can be checked for keeping them and grub.cfg can find the
// root by UUID. The partitions are built as files and copied in (loop
// devices get no partition nodes here); the disk is cached in e2e/cache
// keyed by uefiDiskVersion and the kernel version.
const (
	uefiDiskVersion = "v1" // bump when the layout or the contents change
	uefiDiskSize    = 512 << 20

	uefiESPStart, uefiESPSize = 1 * mib, 64 * mib
	uefiRootStart             = uefiESPStart + uefiESPSize

	uefiDiskGUID = "50524542-4f4f-5445-4545-000000000000"
	uefiESPGUID  = "50524542-4f4f-5445-4545-000000000001"
	uefiRootGUID = "50524542-4f4f-5445-4545-000000000002"
	uefiRootUUID = "50524542-4f4f-5445-4545-0000000000e4" // the ext4 filesystem
	uefiESPType  = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
	uefiRootType = "0FC63DAF-8483-4772-8E79-3D69D8477DE4" // Linux filesystem

	// uefiLoader is the OS loader on the ESP, the only one.
	uefiLoader    = "EFI/debian/grubx64.efi"
	uefiGrubCfg   = "EFI/debian/grub.cfg"
	uefiFallback  = "EFI/BOOT/BOOTX64.EFI"
	uefiGrubMods  = "/usr/lib/grub/x86_64-efi"
	uefiGrubMark  = "PREBOOT-E2E-GRUB" // grub.cfg echoes it before loading Linux
	uefiVersionAt = "etc/preboot-e2e-disk-version"
)

// uefiGrubModules are built into grubx64.efi (no modules on the ESP).
var uefiGrubModules = []string{
	"part_gpt", "part_msdos", "fat", "ext2", "normal", "linux", "search",
	"search_fs_uuid", "configfile", "echo", "test", "gzio",
}

// uefiGrubConfig finds the root filesystem by UUID and boots the kernel
// with the serial console.
const uefiGrubConfig = `set timeout=0
set default=0
echo "` + uefiGrubMark + ` grub.cfg from the ESP"
search --no-floppy --fs-uuid --set=root ` + uefiRootUUID + `
linux /boot/vmlinuz console=ttyS0 panic=-1 quiet
initrd /boot/initrd.gz
boot
`

// uefiDisk is the cached GPT/UEFI source disk.
type uefiDisk struct {
	Path string // raw image; never written by tests (QEMU opens it snapshot=on)
	ID   string // printed after osMarker by the disk's OS
}

// requireUEFIDiskTools fails (not skips) when a tool the UEFI disk needs
// is missing, naming the Debian package.
func requireUEFIDiskTools(t testing.TB) {
	t.Helper()
	for tool, pkg := range map[string]string{
		"sgdisk": "gdisk", "sfdisk": "fdisk", "losetup": "mount", "mkfs.ext4": "e2fsprogs",
		"e2fsck": "e2fsprogs", "dumpe2fs": "e2fsprogs", "mkfs.vfat": "dosfstools",
		"fsck.fat": "dosfstools", "mcopy": "mtools", "mmd": "mtools", "mdir": "mtools",
		"grub-mkimage": "grub-common",
	} {
		if _, err := lookTool(tool); err != nil {
			t.Fatalf("%s not installed: apt-get install %s (see e2e/README.md)", tool, pkg)
		}
	}
	if _, err := os.Stat(filepath.Join(uefiGrubMods, "linux.mod")); err != nil {
		t.Fatalf("%s missing: apt-get install grub-efi-amd64-bin", uefiGrubMods)
	}
	for _, f := range []string{ovmfCode, ovmfVars} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("%s missing: apt-get install ovmf", f)
		}
	}
}

// uefiDiskOnce builds the UEFI source disk once per test binary.
var uefiDiskOnce = sync.OnceValues(func() (*uefiDisk, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	art, err := sharedArtifacts()
	if err != nil {
		return nil, err
	}
	return cachedUEFIDisk(ctx, cacheDir(), art.Kernel)
})

func cachedUEFIDisk(ctx context.Context, dir string, k *kernel) (*uefiDisk, error) {
	key := "uefidisk-" + uefiDiskVersion + "-" + k.Version
	d := &uefiDisk{Path: filepath.Join(dir, key+".img"), ID: key}
	if st, err := os.Stat(d.Path); err == nil && st.Size() == uefiDiskSize {
		return d, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("build UEFI source disk: %w", err)
	}
	tmp := filepath.Join(dir, key+"-"+randomHex(4)+".tmp")
	defer os.Remove(tmp)
	if err := buildUEFIDisk(ctx, tmp, k, d.ID); err != nil {
		return nil, fmt.Errorf("build UEFI source disk: %w", err)
	}
	if err := os.Rename(tmp, d.Path); err != nil {
		return nil, fmt.Errorf("build UEFI source disk: %w", err)
	}
	return d, nil
}

func buildUEFIDisk(ctx context.Context, file string, k *kernel, id string) error {
	stage, err := os.MkdirTemp("", "preboot-uefidisk-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(stage)
	if err := createSparse(file, uefiDiskSize); err != nil {
		return err
	}
	if _, err := tool(ctx, "sgdisk", "--clear",
		"--disk-guid="+uefiDiskGUID,
		fmt.Sprintf("--new=1:%d:+%dM", uefiESPStart/512, uefiESPSize/mib),
		"--typecode=1:"+uefiESPType, "--change-name=1:EFI System Partition", "--partition-guid=1:"+uefiESPGUID,
		fmt.Sprintf("--new=2:%d:0", uefiRootStart/512),
		"--typecode=2:"+uefiRootType, "--change-name=2:root", "--partition-guid=2:"+uefiRootGUID,
		file); err != nil {
		return err
	}
	parts, err := readGPT(ctx, file)
	if err != nil {
		return err
	}
	if len(parts.Partitions) != 2 || parts.Partitions[0].Start*512 != uefiESPStart || parts.Partitions[1].Start*512 != uefiRootStart {
		return fmt.Errorf("sgdisk made %+v", parts)
	}

	// p1: the ESP.
	grub := filepath.Join(stage, "grubx64.efi")
	if _, err := tool(ctx, "grub-mkimage", append([]string{"-O", "x86_64-efi", "-d", uefiGrubMods,
		"-p", "/EFI/debian", "-o", grub}, uefiGrubModules...)...); err != nil {
		return err
	}
	cfg := filepath.Join(stage, "grub.cfg")
	if err := os.WriteFile(cfg, []byte(uefiGrubConfig), 0o644); err != nil {
		return err
	}
	esp := filepath.Join(stage, "esp.img")
	if err := createSparse(esp, parts.Partitions[0].Size*512); err != nil {
		return err
	}
	// 512-byte clusters: enough clusters for FAT32 in 64 MiB.
	if _, err := tool(ctx, "mkfs.vfat", "-F", "32", "-s", "1", "-n", "ESP", "-i", "50524542", esp); err != nil {
		return err
	}
	if _, err := mtools(ctx, "mmd", "-i", esp, "::/EFI", "::/EFI/debian"); err != nil {
		return err
	}
	if _, err := mtools(ctx, "mcopy", "-i", esp, grub, cfg, "::/EFI/debian/"); err != nil {
		return err
	}

	// p2: the root filesystem, populated from a directory.
	initrd, err := osInitrd(id)
	if err != nil {
		return err
	}
	vmlinuz, err := os.ReadFile(k.Vmlinuz)
	if err != nil {
		return err
	}
	rootDir := filepath.Join(stage, "root")
	for name, data := range map[string][]byte{
		"boot/vmlinuz":   vmlinuz,
		"boot/initrd.gz": initrd,
		uefiVersionAt:    []byte(id + "\n"),
	} {
		if err := writeFileAll(filepath.Join(rootDir, name), data); err != nil {
			return err
		}
	}
	if err := writeKnownFiles(rootDir, 3); err != nil {
		return err
	}
	root := filepath.Join(stage, "root.img")
	if err := createSparse(root, parts.Partitions[1].Size*512); err != nil {
		return err
	}
	if _, err := tool(ctx, "mkfs.ext4", "-q", "-F", "-L", "PREBOOT-ROOT", "-U", uefiRootUUID,
		"-b", "4096", "-d", rootDir, root); err != nil {
		return err
	}
	if _, err := tool(ctx, "e2fsck", "-f", "-n", root); err != nil {
		return err
	}
	if _, err := tool(ctx, "fsck.fat", "-n", esp); err != nil {
		return err
	}
	for i, src := range []string{esp, root} {
		if err := copySparseInto(file, src, parts.Partitions[i].Start*512); err != nil {
			return err
		}
	}
	_, err = tool(ctx, "sgdisk", "--verify", file)
	return err
}

// createSparse creates (or truncates) file as size bytes of holes.
func createSparse(file string, size int64) error {
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// copySparseInto writes src into dst at off, skipping all-zero blocks (dst
// is sparse and holds zeros there already).
func copySparseInto(dst, src string, off int64) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	buf := make([]byte, 64<<10)
	zero := make([]byte, len(buf))
	for pos := int64(0); ; {
		n, rerr := io.ReadFull(in, buf)
		if n > 0 && !bytes.Equal(buf[:n], zero[:n]) {
			if _, err := out.WriteAt(buf[:n], off+pos); err != nil {
				out.Close()
				return err
			}
		}
		pos += int64(n)
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			out.Close()
			return rerr
		}
	}
	return out.Close()
}

// gptTable is what `sfdisk --json` says about a GPT disk image (sectors).
type gptTable struct {
	Label      string `json:"label"`
	ID         string `json:"id"` // the disk GUID
	FirstLBA   int64  `json:"firstlba"`
	LastLBA    int64  `json:"lastlba"`
	SectorSize int64  `json:"sectorsize"`
	Partitions []struct {
		Node  string `json:"node"`
		Start int64  `json:"start"`
		Size  int64  `json:"size"`
		Type  string `json:"type"`
		UUID  string `json:"uuid"`
		Name  string `json:"name"`
	} `json:"partitions"`
}

// readGPT reads a disk image's GPT with sfdisk (no parser of our own).
func readGPT(ctx context.Context, file string) (*gptTable, error) {
	out, err := tool(ctx, "sfdisk", "--json", file)
	if err != nil {
		return nil, err
	}
	var v struct {
		PT gptTable `json:"partitiontable"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		return nil, fmt.Errorf("sfdisk --json %s: %w: %s", file, err, out)
	}
	if v.PT.Label != "gpt" {
		return nil, fmt.Errorf("%s: partition table %q, want gpt", file, v.PT.Label)
	}
	if v.PT.SectorSize != 0 && v.PT.SectorSize != 512 {
		return nil, fmt.Errorf("%s: sector size %d", file, v.PT.SectorSize)
	}
	return &v.PT, nil
}

// attachPart attaches bytes [off, off+size) of file to a loop device
// (read-only if asked): the lab's loop devices get no partition nodes.
func attachPart(ctx context.Context, file string, off, size int64, readOnly bool) (*loopDev, error) {
	args := []string{"--find", "--show", "--offset", strconv.FormatInt(off, 10), "--sizelimit", strconv.FormatInt(size, 10)}
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
	return l, nil
}

// uefiRootFiles returns the sha256 of every known file on the ext4 root
// filesystem at [off, off+size) of file, keyed by path; the filesystem is
// mounted read-only (noload) from a read-only loop device.
func uefiRootFiles(ctx context.Context, file string, off, size int64) (sums map[string]string, err error) {
	l, err := attachPart(ctx, file, off, size, true)
	if err != nil {
		return nil, err
	}
	defer func() {
		if derr := l.detach(); derr != nil && err == nil {
			err = derr
		}
	}()
	mnt, err := os.MkdirTemp("", "preboot-uefi-check-")
	if err != nil {
		return nil, err
	}
	defer os.Remove(mnt)
	sums = map[string]string{}
	err = withMount(ctx, l.Dev, mnt, true, func() error {
		for _, kf := range knownFiles() {
			if kf.Part != 3 {
				continue
			}
			b, err := os.ReadFile(filepath.Join(mnt, kf.Path))
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return err
			}
			sums[kf.Path] = knownFile{Data: b}.sum()
		}
		return nil
	})
	return sums, err
}

// espFiles lists the ESP's files (mdir -/ through mtools at the
// partition's offset), upper-cased paths without the leading "::/".
func espFiles(ctx context.Context, file string, off int64) ([]string, error) {
	out, err := mtools(ctx, "mdir", "-/", "-b", "-i", fmt.Sprintf("%s@@%d", file, off), "::/")
	if err != nil {
		return nil, err
	}
	var files []string
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasSuffix(line, "/") {
			continue
		}
		files = append(files, strings.ToUpper(strings.TrimPrefix(line, "::/")))
	}
	sort.Strings(files)
	return files, nil
}

// espFile reads one file of the ESP through mtools.
func espFile(ctx context.Context, file string, off int64, name string) ([]byte, error) {
	dir, err := os.MkdirTemp("", "preboot-esp-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	out := filepath.Join(dir, "f")
	if _, err := mtools(ctx, "mcopy", "-n", "-i", fmt.Sprintf("%s@@%d", file, off), "::/"+name, out); err != nil {
		return nil, err
	}
	return os.ReadFile(out)
}

// checkUEFIDisk asserts on the host what a UEFI disk image (the source, or
// a restore of it onto a disk of any size) must hold: a valid GPT (primary
// and backup, sgdisk --verify) with the source's disk and partition GUIDs,
// the ESP unchanged at its place and clean, holding exactly the loader and
// grub.cfg (byte for byte the source's), the root partition at its place
// and ending near the disk's end, its ext4 filesystem clean
// (e2fsck -fn), filling the partition (within 1 MiB) and holding every
// known file with its checksum.
func checkUEFIDisk(t *testing.T, file string, src *uefiDisk) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	name := filepath.Base(file)
	st, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := tool(ctx, "sgdisk", "--verify", file); err != nil || !strings.Contains(out, "No problems found") {
		t.Errorf("%s: sgdisk --verify: %v\n%s", name, err, out)
	}
	pt, err := readGPT(ctx, file)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s (%d MiB): GPT %s, usable LBA %d-%d, partitions %+v", name, st.Size()/mib, pt.ID, pt.FirstLBA, pt.LastLBA, pt.Partitions)
	if !strings.EqualFold(pt.ID, uefiDiskGUID) {
		t.Errorf("%s: disk GUID %s, want the source's %s", name, pt.ID, uefiDiskGUID)
	}
	if want := st.Size()/512 - 34; pt.LastLBA != want {
		t.Errorf("%s: last usable LBA %d, want %d: the GPT does not describe the disk's size (backup header not at the end)", name, pt.LastLBA, want)
	}
	if len(pt.Partitions) != 2 {
		t.Fatalf("%s: %d partitions, want 2 (ESP, root)", name, len(pt.Partitions))
	}
	esp, root := pt.Partitions[0], pt.Partitions[1]
	if esp.Start*512 != uefiESPStart || esp.Size*512 != uefiESPSize || !strings.EqualFold(esp.Type, uefiESPType) || !strings.EqualFold(esp.UUID, uefiESPGUID) {
		t.Errorf("%s: ESP %+v, want start %d size %d type %s GUID %s", name, esp, uefiESPStart/512, uefiESPSize/512, uefiESPType, uefiESPGUID)
	}
	if root.Start*512 != uefiRootStart || !strings.EqualFold(root.Type, uefiRootType) || !strings.EqualFold(root.UUID, uefiRootGUID) {
		t.Errorf("%s: root partition %+v, want start %d type %s GUID %s", name, root, uefiRootStart/512, uefiRootType, uefiRootGUID)
	}
	rootEnd := (root.Start + root.Size) * 512
	if gap := (pt.LastLBA+1)*512 - rootEnd; gap < 0 || gap > mib {
		t.Errorf("%s: root partition ends at %d, %d bytes before the end of the usable space (%d): not resized to the disk", name, rootEnd, gap, (pt.LastLBA+1)*512)
	}

	// ESP: clean, the same two files as the source, byte for byte.
	espOff, rootOff, rootSize := esp.Start*512, root.Start*512, root.Size*512
	func() {
		l, err := attachPart(ctx, file, espOff, esp.Size*512, true)
		if err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := l.detach(); err != nil {
				t.Error(err)
			}
		}()
		if out, err := tool(ctx, "fsck.fat", "-n", l.Dev); err != nil {
			t.Errorf("%s: ESP: %v\n%s", name, err, out)
		}
	}()
	files, err := espFiles(ctx, file, espOff)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{strings.ToUpper(uefiGrubCfg), strings.ToUpper(uefiLoader)}; !equalStrings(files, want) {
		t.Errorf("%s: ESP holds %q, want exactly %q", name, files, want)
	}
	if file != src.Path {
		for _, f := range []string{uefiLoader, uefiGrubCfg} {
			got, err := espFile(ctx, file, espOff, f)
			if err != nil {
				t.Errorf("%s: ESP %s: %v", name, f, err)
				continue
			}
			want, err := espFile(ctx, src.Path, uefiESPStart, f)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s: ESP %s differs from the source's (%d bytes, source %d)", name, f, len(got), len(want))
			}
		}
	}

	// Root: clean, filling its partition, the known files.
	func() {
		l, err := attachPart(ctx, file, rootOff, rootSize, true)
		if err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := l.detach(); err != nil {
				t.Error(err)
			}
		}()
		if out, err := tool(ctx, "e2fsck", "-f", "-n", l.Dev); err != nil {
			t.Errorf("%s: root filesystem: %v\n%s", name, err, out)
		}
		fsBytes, err := extFSBytes(ctx, l.Dev)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: root partition %d bytes, its ext4 filesystem %d bytes", name, rootSize, fsBytes)
		if fsBytes > rootSize || rootSize-fsBytes > mib {
			t.Errorf("%s: the root ext4 filesystem is %d bytes in a %d-byte partition: it does not fill it (within 1 MiB)", name, fsBytes, rootSize)
		}
	}()
	sums, err := uefiRootFiles(ctx, file, rootOff, rootSize)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, kf := range knownFiles() {
		if kf.Part != 3 {
			continue
		}
		n++
		if got := sums[kf.Path]; got != kf.sum() {
			t.Errorf("%s: root /%s sha256 %q, want %q", name, kf.Path, got, kf.sum())
		}
	}
	t.Logf("%s: GPT, ESP and root checked, filesystems clean, %d known files match", name, n)
}

// extFSBytes is the ext filesystem's size: block count × block size
// (dumpe2fs -h).
func extFSBytes(ctx context.Context, dev string) (int64, error) {
	out, err := tool(ctx, "dumpe2fs", "-h", dev)
	if err != nil {
		return 0, err
	}
	var count, size int64
	for _, line := range strings.Split(out, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		switch strings.TrimSpace(k) {
		case "Block count":
			count, _ = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		case "Block size":
			size, _ = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	if count <= 0 || size <= 0 {
		return 0, fmt.Errorf("dumpe2fs -h %s: no block count/size:\n%s", dev, out)
	}
	return count * size, nil
}

func equalStrings(a, b []string) bool {
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

// ovmfNoLoader is what OVMF's boot manager prints when a boot option's
// device has no loader: with empty NVRAM the disk's only option is the
// removable-media path \EFI\BOOT\BOOTX64.EFI.
const ovmfNoLoader = "BdsDxe: failed to load Boot"

// TestSourceDiskUEFI builds (or takes from the cache) the UEFI source
// disk, checks it on the host, and proves in two VMs with fresh NVRAM that
// it is what it claims: alone, OVMF cannot boot it (no fallback loader,
// no boot entry); a copy with \EFI\BOOT\BOOTX64.EFI added boots GRUB →
// Linux → the OS marker (so the loader, grub.cfg, kernel and initrd are
// right, and only the missing boot entry stops the first VM).
func TestSourceDiskUEFI(t *testing.T) {
	requireRoot(t)
	requireQEMU(t)
	requireUEFIDiskTools(t)
	t.Parallel()
	d, err := uefiDiskOnce()
	if err != nil {
		t.Fatal(err)
	}
	checkUEFIDisk(t, d.Path, d)
	dir := workDir(t)
	osLine := osMarker + " " + d.ID

	t.Run("no-fallback", func(t *testing.T) {
		v := startVM(t, vmConfig{Name: "nofallback", Dir: dir, UEFI: true, Args: []string{
			"-drive", "file=" + d.Path + ",format=raw,if=none,id=disk0,snapshot=on",
			"-device", "virtio-blk-pci,drive=disk0,bootindex=1",
		}})
		ctx, cancel := context.WithTimeout(context.Background(), uefiDeadline)
		defer cancel()
		// The firmware tried the disk and found nothing to start; then
		// it falls through to its built-in shell (or stops).
		if err := v.waitFor(ctx, ovmfNoLoader, "Shell>"); err != nil {
			t.Fatal(err)
		}
		out := v.serial()
		v.stop()
		if strings.Contains(out, uefiGrubMark) || strings.Contains(out, osLine) {
			t.Errorf("the disk booted with fresh NVRAM and no fallback loader:\n%s", tailFile(v.SerialLog, 30))
		}
		for _, line := range strings.Split(out, "\n") {
			if strings.Contains(line, ovmfNoLoader) {
				t.Logf("firmware: %s", strings.TrimSpace(line))
			}
		}
	})

	t.Run("with-fallback", func(t *testing.T) {
		cp := filepath.Join(dir, "fallback.img")
		if err := createSparse(cp, uefiDiskSize); err != nil {
			t.Fatal(err)
		}
		if err := copySparseInto(cp, d.Path, 0); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), uefiDeadline)
		defer cancel()
		img := fmt.Sprintf("%s@@%d", cp, uefiESPStart)
		if _, err := mtools(ctx, "mmd", "-i", img, "::/EFI/BOOT"); err != nil {
			t.Fatal(err)
		}
		loader, err := espFile(ctx, d.Path, uefiESPStart, uefiLoader)
		if err != nil {
			t.Fatal(err)
		}
		lf := filepath.Join(dir, "BOOTX64.EFI")
		if err := os.WriteFile(lf, loader, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := mtools(ctx, "mcopy", "-i", img, lf, "::/"+uefiFallback); err != nil {
			t.Fatal(err)
		}
		v := startVM(t, vmConfig{Name: "fallback", Dir: dir, UEFI: true, Args: []string{
			"-drive", "file=" + cp + ",format=raw,if=none,id=disk0",
			"-device", "virtio-blk-pci,drive=disk0,bootindex=1",
		}})
		start := time.Now()
		if err := v.waitFor(ctx, uefiGrubMark, osLine); err != nil {
			t.Fatal(err)
		}
		if err := v.waitExit(ctx); err != nil {
			t.Error(err)
		}
		t.Logf("with \\%s added the disk booted GRUB and its OS in %s", strings.ReplaceAll(uefiFallback, "/", `\`), time.Since(start).Round(time.Second))
	})
}
