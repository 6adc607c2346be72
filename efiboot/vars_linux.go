//go:build linux

package efiboot

import (
	"context"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// efivarfsMagic is EFIVARFS_MAGIC from linux/magic.h.
const efivarfsMagic = 0xde5e81e4

// fsImmutableFL is FS_IMMUTABLE_FL.
const fsImmutableFL = 0x00000010

// makeMutable clears FS_IMMUTABLE_FL on path, as libefivar does before
// rewriting an efivarfs variable. Filesystems without inode flags
// (ENOTTY, EOPNOTSUPP, EINVAL) are fine.
func makeMutable(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	flags, err := unix.IoctlGetUint32(int(f.Fd()), unix.FS_IOC_GETFLAGS)
	if err != nil {
		if unsupported(err) {
			return nil
		}
		return fmt.Errorf("FS_IOC_GETFLAGS %s: %w", path, err)
	}
	if flags&fsImmutableFL == 0 {
		return nil
	}
	if err := unix.IoctlSetPointerInt(int(f.Fd()), unix.FS_IOC_SETFLAGS, int(flags&^fsImmutableFL)); err != nil && !unsupported(err) {
		return fmt.Errorf("FS_IOC_SETFLAGS %s: %w", path, err)
	}
	return nil
}

func unsupported(err error) bool {
	return errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL)
}

// isEfivarfs reports whether path is on efivarfs.
func isEfivarfs(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && uint32(st.Type) == efivarfsMagic
}

// truncateIfPlain empties f unless it is on efivarfs (where a write
// replaces the variable and truncation is not supported); tests use plain
// directories.
func truncateIfPlain(f *os.File) error {
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &st); err != nil {
		return fmt.Errorf("fstatfs: %w", err)
	}
	if uint32(st.Type) == efivarfsMagic {
		return nil
	}
	return f.Truncate(0)
}

// Firmware is where Linux shows the UEFI firmware; it exists only on
// machines booted through UEFI.
const Firmware = "/sys/firmware/efi"

// IsUEFI reports whether the running system booted through UEFI.
func IsUEFI() bool {
	st, err := os.Stat(Firmware)
	return err == nil && st.IsDir()
}

// MountVars mounts efivarfs on DefaultVarsDir when the machine booted
// through UEFI and it is not mounted yet.
func MountVars(ctx context.Context) error {
	if !IsUEFI() {
		return fmt.Errorf("%s missing: not booted through UEFI", Firmware)
	}
	if isEfivarfs(DefaultVarsDir) {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := unix.Mount("efivarfs", DefaultVarsDir, "efivarfs", 0, ""); err != nil && !errors.Is(err, unix.EBUSY) {
		return fmt.Errorf("mount efivarfs on %s: %w", DefaultVarsDir, err)
	}
	if !isEfivarfs(DefaultVarsDir) {
		return fmt.Errorf("efivarfs not mounted on %s", DefaultVarsDir)
	}
	return nil
}
