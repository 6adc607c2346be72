package initenv

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestKernelMountsTmp(t *testing.T) {
	var tmp *mountPoint
	for _, m := range kernelMounts() {
		if m.target == "/tmp" {
			tmp = &m
		}
	}
	if tmp == nil || tmp.fstype != "tmpfs" || !strings.Contains(tmp.data, "size=75%") || !strings.Contains(tmp.data, "mode=1777") {
		t.Fatalf("/tmp mount: %+v", tmp)
	}
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root")
	}
	// The same mount under a temporary root: the kernel sizes it at 75 %
	// of RAM.
	root := t.TempDir()
	if err := mountUnder(root, []mountPoint{*tmp}, true); err != nil {
		t.Skipf("cannot mount tmpfs here: %v", err)
	}
	target := filepath.Join(root, "tmp")
	t.Cleanup(func() { _ = unix.Unmount(target, unix.MNT_DETACH) })
	var st unix.Statfs_t
	if err := unix.Statfs(target, &st); err != nil {
		t.Fatal(err)
	}
	if st.Type != unix.TMPFS_MAGIC {
		t.Fatalf("%s is not a tmpfs (type %#x)", target, st.Type)
	}
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil {
		t.Fatal(err)
	}
	ram := float64(si.Totalram) * float64(si.Unit)
	size := float64(st.Blocks) * float64(st.Bsize)
	if r := size / ram; r < 0.74 || r > 0.76 {
		t.Errorf("/tmp holds %.0f bytes, %.3f of RAM (%.0f); want 0.75", size, r, ram)
	}
	fi, err := os.Stat(target)
	if err != nil || fi.Mode().Perm() != 0o777 || fi.Mode()&os.ModeSticky == 0 {
		t.Errorf("/tmp mode %v, want drwxrwxrwt", fi.Mode())
	}
}

func TestEFIVarsMount(t *testing.T) {
	sys := t.TempDir()
	if _, ok := efiVarsMount(sys); ok {
		t.Error("efivarfs wanted on a machine without /sys/firmware/efi")
	}
	if err := os.MkdirAll(filepath.Join(sys, "firmware", "efi", "efivars"), 0o755); err != nil {
		t.Fatal(err)
	}
	m, ok := efiVarsMount(sys)
	if !ok || m.fstype != "efivarfs" || m.target != filepath.Join(sys, "firmware/efi/efivars") {
		t.Errorf("efivarfs mount %+v %v", m, ok)
	}
	if m.flags&unix.MS_NOEXEC == 0 || m.flags&unix.MS_NOSUID == 0 {
		t.Errorf("efivarfs flags %#x", m.flags)
	}
}

func TestEnsureDMControl(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mknod needs root")
	}
	dir := t.TempDir()
	misc := filepath.Join(dir, "misc")
	dev := filepath.Join(dir, "dev")
	if err := os.WriteFile(misc, []byte("183 hw_random\n 236 device-mapper\n 60 loop-control\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := ensureDMControl(dev, misc); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(dev, "mapper", "control"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFCHR || unix.Major(st.Rdev) != 10 || unix.Minor(st.Rdev) != 236 {
		t.Errorf("mapper/control: mode %o, %d:%d; want char 10:236", st.Mode, unix.Major(st.Rdev), unix.Minor(st.Rdev))
	}
	// An existing node is left alone, even when /proc/misc is gone.
	if err := ensureDMControl(dev, filepath.Join(dir, "nonexistent")); err != nil {
		t.Errorf("existing node: %v", err)
	}
	// dm_mod not loaded: an error that says so.
	if err := os.WriteFile(misc, []byte("183 hw_random\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := ensureDMControl(filepath.Join(dir, "dev2"), misc); err == nil || !strings.Contains(err.Error(), "dm_mod") {
		t.Errorf("no device-mapper in /proc/misc: %v", err)
	}
}

func TestMiscMinor(t *testing.T) {
	for in, want := range map[string]int{
		"236 device-mapper\n":                 236,
		" 60 loop-control\n237 device-mapper": 237,
		"device-mapper 236\n":                 -1,
		"99999999 device-mapper\n":            -1,
		"236 device-mapper-x\n":               -1,
		"":                                    -1,
	} {
		got, ok := miscMinor(strings.NewReader(in), "device-mapper")
		if (want < 0 && ok) || (want >= 0 && (!ok || int(got) != want)) {
			t.Errorf("miscMinor(%q) = %d, %v; want %d", in, got, ok, want)
		}
	}
}

func FuzzMiscMinor(f *testing.F) {
	f.Add([]byte(" 60 loop-control\n236 device-mapper\n183 hw_random\n"))
	f.Add([]byte("1048576 device-mapper\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if m, ok := miscMinor(strings.NewReader(string(b)), "device-mapper"); ok && m >= 1<<20 {
			t.Errorf("minor %d does not fit 20 bits", m)
		}
	})
}

// TestPrepareImaging loads the imaging modules by name from a module
// tree: dependencies first, efivarfs only on UEFI machines, and a module
// that fails to load is a warning, not an error.
func TestPrepareImaging(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"modules.dep": "kernel/drivers/block/loop.ko:\nkernel/drivers/md/dm-mod.ko:\n" +
			"kernel/fs/xfs/xfs.ko: kernel/lib/libcrc32c.ko\nkernel/lib/libcrc32c.ko:\n" +
			"kernel/fs/btrfs/btrfs.ko: kernel/crypto/xor.ko kernel/lib/libcrc32c.ko\nkernel/crypto/xor.ko:\n" +
			"kernel/fs/efivarfs/efivarfs.ko:\nkernel/crypto/crc32c_generic.ko:\n",
		"modules.alias":   "alias crc32c crc32c_generic\n",
		"modules.softdep": "softdep libcrc32c pre: crc32c\n",
	}
	for n, c := range files {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	idx, err := ParseModuleIndex(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, uefi := range []bool{false, true} {
		sys := t.TempDir()
		if uefi {
			// A directory, not sysfs: the efivarfs mount fails and is
			// only logged.
			if err := os.MkdirAll(filepath.Join(sys, "firmware", "efi"), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		var inserted []string
		l := &Loader{Dir: dir, SysDir: sys, Index: idx, Logger: slog.New(slog.DiscardHandler), Load: func(file string) error {
			inserted = append(inserted, ModuleName(filepath.Base(file)))
			if strings.HasSuffix(file, "/btrfs.ko") {
				return errors.New("btrfs: unknown symbol")
			}
			return nil
		}}
		misc := filepath.Join(sys, "misc")
		_ = os.WriteFile(misc, nil, 0o644)
		got := prepareImaging(context.Background(), slog.New(slog.DiscardHandler), l, sys, filepath.Join(sys, "dev"), misc)
		want := []string{"loop", "dm_mod", "crc32c_generic", "libcrc32c", "xfs", "xor"}
		if uefi {
			want = append(want, "efivarfs")
		}
		if !slices.Equal(got, want) {
			t.Errorf("uefi=%v: loaded %v, want %v", uefi, got, want)
		}
		if !slices.Contains(inserted, "btrfs") {
			t.Errorf("uefi=%v: btrfs not tried (%v)", uefi, inserted)
		}
	}
}
