package blockdev

import (
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Loop is an attached loop device.
type Loop struct {
	Path         string
	Major, Minor uint32
	f            *os.File
}

// AttachLoop attaches a loop device to bytes [offset, offset+size) of
// backing (a block device or a regular file); size 0 means to the end.
// Over a block device the loop goes through its page cache, so it sees
// what was written to the disk before (and the disk sees what the loop
// writes once it is detached).
func AttachLoop(backing string, offset, size int64, readOnly bool) (*Loop, error) {
	flag := os.O_RDWR
	if readOnly {
		flag = os.O_RDONLY
	}
	bf, err := os.OpenFile(backing, flag, 0)
	if err != nil {
		return nil, fmt.Errorf("loop: %w", err)
	}
	defer bf.Close()
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("loop: %w", err)
	}
	defer ctl.Close()
	for try := 0; try < 8; try++ {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, fmt.Errorf("loop: get a free device: %w", err)
		}
		path := fmt.Sprintf("/dev/loop%d", n)
		if err := waitNode(path, 7, uint32(n)); err != nil {
			return nil, err
		}
		lf, err := os.OpenFile(path, flag, 0)
		if err != nil {
			return nil, fmt.Errorf("loop: %w", err)
		}
		cfg := unix.LoopConfig{Fd: uint32(bf.Fd())}
		cfg.Info.Offset = uint64(offset)
		cfg.Info.Sizelimit = uint64(size)
		cfg.Info.Flags = unix.LO_FLAGS_AUTOCLEAR
		if readOnly {
			cfg.Info.Flags |= unix.LO_FLAGS_READ_ONLY
		}
		err = unix.IoctlLoopConfigure(int(lf.Fd()), &cfg)
		if errors.Is(err, unix.EBUSY) { // raced with another user of the same number
			lf.Close()
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if err != nil {
			lf.Close()
			return nil, fmt.Errorf("loop: configure %s over %s: %w", path, backing, err)
		}
		return &Loop{Path: path, Major: 7, Minor: uint32(n), f: lf}, nil
	}
	return nil, errors.New("loop: no free loop device after 8 tries")
}

// Close detaches the loop device (autoclear: the kernel detaches it when
// the last user closes it).
func (l *Loop) Close() error {
	if l == nil || l.f == nil {
		return nil
	}
	_ = unix.IoctlSetInt(int(l.f.Fd()), unix.LOOP_CLR_FD, 0)
	err := l.f.Close()
	l.f = nil
	return err
}

// Flush writes back and drops the page cache of the block device at path,
// so reads that follow see what other devices over the same disk wrote.
func Flush(path string) error {
	f, err := os.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return err
	}
	fi, err := f.Stat()
	if err != nil || fi.Mode()&os.ModeDevice == 0 {
		return err
	}
	return unix.IoctlSetInt(int(f.Fd()), unix.BLKFLSBUF, 0)
}

func mknodBlock(path string, major, minor uint32) error {
	return unix.Mknod(path, unix.S_IFBLK|0o600, int(unix.Mkdev(major, minor)))
}
