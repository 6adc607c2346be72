//go:build linux

package agent

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
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

// Block-device ioctls golang.org/x/sys/unix does not name: _IO(0x12, n).
const (
	ioctlBLKDISCARD = 0x1277 // _IO(0x12, 119)
	ioctlBLKZEROOUT = 0x127f // _IO(0x12, 127)
)

// blkRange runs a BLKDISCARD/BLKZEROOUT style ioctl on [off, off+n).
func blkRange(f *os.File, req uintptr, name string, off, n int64) error {
	r := [2]uint64{uint64(off), uint64(n)}
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), req, uintptr(unsafe.Pointer(&r[0])))
	if errno != 0 {
		return fmt.Errorf("%s %s: %w", name, f.Name(), errno)
	}
	return nil
}

// blkDiscard discards [off, off+n) of a block device.
func blkDiscard(f *os.File, off, n int64) error {
	return blkRange(f, ioctlBLKDISCARD, "BLKDISCARD", off, n)
}

// blkZeroOut zeroes [off, off+n) of a block device (the device's own
// write-zeroes command, else the kernel writes zero pages).
func blkZeroOut(f *os.File, off, n int64) error {
	return blkRange(f, ioctlBLKZEROOUT, "BLKZEROOUT", off, n)
}

// punchHole deallocates [off, off+n) of a regular file (the file analogue
// of a discard: it then reads as zeros).
func punchHole(f *os.File, off, n int64) error {
	if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n); err != nil {
		return fmt.Errorf("punch hole in %s: %w", f.Name(), err)
	}
	return nil
}

func devMajor(rdev uint64) uint32 { return unix.Major(rdev) }
func devMinor(rdev uint64) uint32 { return unix.Minor(rdev) }

// startProcessGroup makes cmd the leader of a new process group, so that
// killProcessGroup reaches everything it starts.
func startProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &unix.SysProcAttr{Setpgid: true}
}

// killProcessGroup sends SIGKILL to the process group led by pid; a group
// that is already gone is not an error.
func killProcessGroup(pid int) error {
	if pid <= 0 {
		return nil
	}
	if err := unix.Kill(-pid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
		return err
	}
	return nil
}

// waitExited blocks until process pid has exited, without reaping it: its
// id (and so its process group's) stays taken until cmd.Wait, so killing
// the group afterwards cannot hit an unrelated process.
func waitExited(pid int) error {
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}
