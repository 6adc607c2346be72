//go:build linux

package agent

import (
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// blockSize returns the size in bytes of the block device open as f.
func blockSize(f *os.File) (int64, error) {
	var n uint64
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.BLKGETSIZE64, uintptr(unsafe.Pointer(&n)))
	if errno != 0 {
		return 0, fmt.Errorf("BLKGETSIZE64 %s: %w", f.Name(), errno)
	}
	return int64(n), nil
}

// rereadPartitions asks the kernel to re-read the partition table of the
// block device open as f.
func rereadPartitions(f *os.File) error {
	if err := unix.IoctlSetInt(int(f.Fd()), unix.BLKRRPART, 0); err != nil {
		return fmt.Errorf("BLKRRPART %s: %w", f.Name(), err)
	}
	return nil
}
