//go:build !linux

package efiboot

import (
	"context"
	"errors"
	"os"
)

var errNotLinux = errors.New("EFI variables are only supported on Linux")

// Firmware is where Linux shows the UEFI firmware.
const Firmware = "/sys/firmware/efi"

func makeMutable(path string) error { return nil }

func truncateIfPlain(f *os.File) error { return f.Truncate(0) }

// IsUEFI reports whether the running system booted through UEFI.
func IsUEFI() bool { return false }

// MountVars mounts efivarfs; only on Linux.
func MountVars(ctx context.Context) error { return errNotLinux }
