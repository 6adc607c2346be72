package envbuild_test

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/u-root/u-root/pkg/cpio"
	"golang.org/x/sys/unix"

	"github.com/preboot/preboot/envbuild"
)

// extractInitrd writes the initrd's directories, regular files and
// symlinks under dir (device nodes are skipped).
func extractInitrd(t *testing.T, recs map[string]cpio.Record, dir string) {
	t.Helper()
	for _, name := range sortedNames(recs) {
		r := recs[name]
		dst := filepath.Join(dir, filepath.FromSlash(name))
		switch r.Mode & cpio.S_IFMT {
		case cpio.S_IFDIR:
			if err := os.MkdirAll(dst, os.FileMode(r.Mode&0o777)); err != nil {
				t.Fatal(err)
			}
		case cpio.S_IFREG:
			if err := os.WriteFile(dst, content(t, r), os.FileMode(r.Mode&0o777)); err != nil {
				t.Fatal(err)
			}
		case cpio.S_IFLNK:
			if err := os.Symlink(string(content(t, r)), dst); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func sortedNames(recs map[string]cpio.Record) []string {
	names := make([]string, 0, len(recs))
	for n := range recs {
		names = append(names, n)
	}
	sort.Strings(names) // parents before their children
	return names
}

// TestBuildTools checks that the environment carries Debian's programs
// with every library they need (read independently from each ELF file in
// the initrd), the modules the agent loads, and the manifest entries.
func TestBuildTools(t *testing.T) {
	res := buildEnv(t)
	recs, _, _ := readInitrd(t, res.Initrd)
	if len(res.MissingTools) != 0 {
		t.Fatalf("tools missing on this build machine: %v (apt-get install e2fsprogs ntfs-3g fatresize)", res.MissingTools)
	}
	want := map[string]string{
		"e2fsck": "/usr/sbin/e2fsck", "resize2fs": "/usr/sbin/resize2fs", "tune2fs": "/usr/sbin/tune2fs",
		"ntfsresize": "/usr/sbin/ntfsresize", "ntfsfix": "/usr/bin/ntfsfix", "ntfscat": "/usr/bin/ntfscat",
		"ntfscp": "/usr/sbin/ntfscp", "ntfsls": "/usr/bin/ntfsls", "ntfsinfo": "/usr/bin/ntfsinfo", "fatresize": "/usr/sbin/fatresize",
	}
	if len(res.Tools) != len(want) {
		t.Errorf("Result.Tools = %v, want %d tools", res.Tools, len(want))
	}
	for name, p := range want {
		if res.Tools[name] != p {
			t.Errorf("tool %s at %q, want %s", name, res.Tools[name], p)
		}
	}
	// Every ELF file in the initrd other than the agent, busybox and the
	// modules: its interpreter and DT_NEEDED libraries must be there too,
	// at a path the loader searches without ld.so.cache (its own name,
	// which libc needs, is the interpreter in lib64).
	searchDirs := []string{"lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib", "usr/lib"}
	checked := 0
	for name, r := range recs {
		if r.Mode&cpio.S_IFMT != cpio.S_IFREG || strings.HasPrefix(name, "lib/modules/") || name == "init" || name == "bin/busybox" {
			continue
		}
		data := content(t, r)
		if !bytes.HasPrefix(data, []byte("\x7fELF")) {
			continue
		}
		f, err := elf.NewFile(bytes.NewReader(data))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		checked++
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				b := make([]byte, p.Filesz)
				_, _ = p.ReadAt(b, 0)
				interp := strings.TrimPrefix(strings.TrimRight(string(b), "\x00"), "/")
				if rr, ok := recs[interp]; !ok || rr.Mode&cpio.S_IFMT != cpio.S_IFREG {
					t.Errorf("%s: interpreter /%s not a file in the initrd", name, interp)
				}
			}
		}
		libs, err := f.DynString(elf.DT_NEEDED)
		if err != nil {
			t.Errorf("%s: %v", name, err)
		}
		for _, l := range libs {
			_, found := recs["lib64/"+l]
			found = found && l == "ld-linux-x86-64.so.2"
			for _, d := range searchDirs {
				if _, ok := recs[d+"/"+l]; ok {
					found = true
					break
				}
			}
			if !found {
				t.Errorf("%s needs %s: not in the initrd", name, l)
			}
		}
		f.Close()
	}
	if checked < len(want)+5 {
		t.Errorf("only %d dynamic ELF files checked", checked)
	}
	for _, l := range res.Libraries {
		if _, ok := recs[strings.TrimPrefix(l, "/")]; !ok {
			t.Errorf("Result.Libraries names %s, not in the initrd", l)
		}
	}
	for _, l := range []string{"lib64/ld-linux-x86-64.so.2", "lib/x86_64-linux-gnu/libc.so.6", "lib/x86_64-linux-gnu/libext2fs.so.",
		"lib/x86_64-linux-gnu/libntfs-3g.so.", "lib/x86_64-linux-gnu/libparted.so.", "lib/x86_64-linux-gnu/libparted-fs-resize.so."} {
		found := false
		for n := range recs {
			found = found || strings.HasPrefix(n, l)
		}
		if !found {
			t.Errorf("%s… missing", l)
		}
	}

	// Modules the agent loads at start, with their dependencies.
	have := map[string]bool{}
	for _, m := range res.Modules {
		have[m] = true
	}
	for _, m := range []string{"loop", "dm_mod", "xfs", "btrfs", "efivarfs", "nls_ascii", "libcrc32c", "crc32c_generic", "crc32c_intel",
		"xor", "raid6_pq", "zstd_compress"} {
		if !have[m] {
			t.Errorf("module %s not in the initrd", m)
		}
	}

	// The manifest records the tools.
	b, err := os.ReadFile(filepath.Join(filepath.Dir(res.Initrd), "env.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m envbuild.Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if m.Tools["resize2fs"] != "/usr/sbin/resize2fs" || len(m.Tools) != len(want) || len(m.Libraries) != len(res.Libraries) {
		t.Errorf("env.json tools %v, %d libraries", m.Tools, len(m.Libraries))
	}
}

// TestToolsRunInInitrd extracts the initrd and runs each carried program
// inside it with chroot: the dynamic loader finds every library without
// the build machine's files. Then the e2fsprogs, ntfs-3g and fatresize
// programs do real work on images inside the chroot.
func TestToolsRunInInitrd(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chroot needs root")
	}
	res := buildEnv(t)
	recs, _, _ := readInitrd(t, res.Initrd)
	dir := t.TempDir()
	extractInitrd(t, recs, dir)
	// As in the environment (initenv mounts /proc; etc/mtab links to
	// /proc/mounts): e2fsprogs and ntfs-3g check mounts before writing.
	if err := unix.Mount("proc", filepath.Join(dir, "proc"), "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		t.Fatalf("mount proc in the extracted initrd: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(filepath.Join(dir, "proc"), unix.MNT_DETACH) })

	run := func(args ...string) (string, int) {
		t.Helper()
		cmd := exec.Command("chroot", append([]string{dir}, args...)...)
		cmd.Env = []string{"PATH=/sbin:/bin:/usr/sbin:/usr/bin", "LANG=C"}
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("chroot %v: %v", args, err)
		}
		s := string(out)
		if strings.Contains(s, "error while loading shared libraries") || strings.Contains(s, "No such file or directory") && code == 127 {
			t.Errorf("%v: the library closure is incomplete: %s", args, s)
		}
		return s, code
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"/usr/sbin/resize2fs"}, "Usage: /usr/sbin/resize2fs"},
		{[]string{"/usr/sbin/e2fsck", "-V"}, "e2fsck"},
		{[]string{"/usr/sbin/tune2fs"}, "Usage: /usr/sbin/tune2fs"},
		{[]string{"/usr/sbin/ntfsresize", "--version"}, "ntfsresize"},
		{[]string{"/usr/bin/ntfsfix", "--version"}, "ntfsfix"},
		{[]string{"/usr/bin/ntfscat", "--version"}, "ntfscat"},
		{[]string{"/usr/sbin/ntfscp", "--version"}, "ntfscp"},
		{[]string{"/usr/bin/ntfsls", "--version"}, "ntfsls"},
		{[]string{"/usr/bin/ntfsinfo", "--version"}, "ntfsinfo"},
		{[]string{"/usr/sbin/fatresize", "--help"}, "fatresize"},
	} {
		out, code := run(c.args...)
		if !strings.Contains(out, c.want) || code == 126 || code == 127 {
			t.Errorf("chroot %v: exit %d, output %q; want %q", c.args, code, out, c.want)
		}
	}

	// ext4: check and grow an image.
	ext := filepath.Join(dir, "ext.img")
	mustRun(t, "truncate", "-s", "32M", ext)
	mustRun(t, "mkfs.ext4", "-q", "-F", ext)
	mustRun(t, "truncate", "-s", "48M", ext)
	if out, code := run("/usr/sbin/e2fsck", "-fy", "/ext.img"); code >= 4 {
		t.Errorf("e2fsck in the environment: exit %d: %s", code, out)
	}
	if out, code := run("/usr/sbin/resize2fs", "/ext.img"); code != 0 {
		t.Errorf("resize2fs in the environment: exit %d: %s", code, out)
	}
	out := mustRun(t, "dumpe2fs", "-h", ext)
	if blocks := field(out, "Block count:"); blocks*blockSize(out) != 48<<20 {
		t.Errorf("after resize2fs: %d blocks of %d bytes, want 48 MiB", blocks, blockSize(out))
	}
	if out, code := run("/usr/sbin/tune2fs", "-L", "grown", "/ext.img"); code != 0 {
		t.Errorf("tune2fs: exit %d: %s", code, out)
	}

	// FAT: libparted reads the file system (fatresize resizes partitions,
	// not image files, so -i is as far as it goes here).
	fat := filepath.Join(dir, "fat.img")
	mustRun(t, "truncate", "-s", "64M", fat)
	mustRun(t, "mkfs.vfat", "-F", "32", fat)
	if out, code := run("/usr/sbin/fatresize", "-i", "/fat.img"); code != 0 || !strings.Contains(out, "FAT: fat32") ||
		!strings.Contains(out, "Cur size: 67108864") {
		t.Errorf("fatresize -i: exit %d: %s", code, out)
	}

	// NTFS: read the volume, copy a file in and read it back.
	ntfs := filepath.Join(dir, "ntfs.img")
	mustRun(t, "truncate", "-s", "16M", ntfs)
	mustRun(t, "mkntfs", "-q", "-F", "-Q", ntfs)
	if out, code := run("/usr/sbin/ntfsresize", "--info", "--force", "--no-progress-bar", "/ntfs.img"); code != 0 ||
		!strings.Contains(out, "You might resize at") {
		t.Errorf("ntfsresize --info: exit %d: %s", code, out)
	}
	if err := os.WriteFile(filepath.Join(dir, "hello.txt"), []byte("hello from the environment\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, code := run("/usr/sbin/ntfscp", "-f", "/ntfs.img", "/hello.txt", "hello.txt"); code != 0 {
		t.Errorf("ntfscp: exit %d: %s", code, out)
	}
	if out, code := run("/usr/bin/ntfscat", "-f", "/ntfs.img", "hello.txt"); code != 0 || out != "hello from the environment\n" {
		t.Errorf("ntfscat: exit %d: %q", code, out)
	}
	if out, code := run("/usr/bin/ntfsls", "-f", "/ntfs.img"); code != 0 || !strings.Contains(out, "hello.txt") {
		t.Errorf("ntfsls: exit %d: %s", code, out)
	}
	if out, code := run("/usr/bin/ntfsinfo", "-f", "-m", "/ntfs.img"); code != 0 || !strings.Contains(out, "Volume Name") {
		t.Errorf("ntfsinfo -m: exit %d: %s", code, out)
	}
	if out, code := run("/usr/bin/ntfsfix", "-n", "/ntfs.img"); code != 0 {
		t.Errorf("ntfsfix -n: exit %d: %s", code, out)
	}
}

func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %v: %s", args, err, out)
	}
	return string(out)
}

func field(out, key string) int64 {
	for _, l := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(l, key); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return -1
}

func blockSize(out string) int64 { return field(out, "Block size:") }

// TestBuildMissingTool: a tool the build machine lacks is left out with a
// warning; the build goes on and the result says so.
func TestBuildMissingTool(t *testing.T) {
	res0 := buildEnv(t)
	res, err := envbuild.Build(context.Background(), envbuild.Options{
		CacheDir: cacheDir(t), OutDir: t.TempDir(), AgentBinary: buildAgent(t), KernelVersion: res0.KernelVersion,
		Tools: []string{"resize2fs", "no_such_tool_xyz"}, Logger: testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.MissingTools) != 1 || res.MissingTools[0] != "no_such_tool_xyz" {
		t.Errorf("MissingTools = %v", res.MissingTools)
	}
	if len(res.Tools) != 1 || res.Tools["resize2fs"] != "/usr/sbin/resize2fs" {
		t.Errorf("Tools = %v", res.Tools)
	}
	recs, _, _ := readInitrd(t, res.Initrd)
	for n := range recs {
		if path.Base(n) == "ntfsresize" || path.Base(n) == "no_such_tool_xyz" {
			t.Errorf("%s in the initrd", n)
		}
	}
	if _, err := envbuild.Build(context.Background(), envbuild.Options{
		CacheDir: cacheDir(t), OutDir: t.TempDir(), AgentBinary: buildAgent(t), KernelVersion: res0.KernelVersion,
		Tools: []string{"../etc/passwd"},
	}); err == nil {
		t.Error("a tool name with a slash was accepted")
	}
}
