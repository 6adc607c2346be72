//go:build linux

package agent

import (
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// mountFS mounts the filesystem on dev at dir read-write. XFS gets
// nouuid: the restored disk may share its UUID with another one here.
func mountFS(dev, dir, fstype string) error {
	data := ""
	switch fstype {
	case "ext2", "ext3":
		fstype = "ext4" // the ext4 driver serves them all
	case "xfs":
		data = "nouuid"
	}
	if err := unix.Mount(dev, dir, fstype, unix.MS_NOATIME|unix.MS_NODEV|unix.MS_NOSUID|unix.MS_NOEXEC, data); err != nil {
		return fmt.Errorf("mount %s (%s): %w", dev, fstype, err)
	}
	return nil
}

// unmountFS unmounts dir, retrying a busy mount for a few seconds, then
// detaching it lazily.
func unmountFS(dir string) error {
	var err error
	for range 20 {
		if err = unix.Unmount(dir, 0); err == nil || !errors.Is(err, unix.EBUSY) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if errors.Is(err, unix.EBUSY) {
		err = unix.Unmount(dir, unix.MNT_DETACH)
	}
	if err != nil {
		return fmt.Errorf("unmount %s: %w", dir, err)
	}
	return nil
}

// sysDirOf is SYS/dev/block/MAJ:MIN of the block device f.
func sysDirOf(f interface{ Fd() uintptr }) (string, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return "", err
	}
	return fmt.Sprintf("%s/dev/block/%d:%d", defaultRoots.sys, unix.Major(uint64(st.Rdev)), unix.Minor(uint64(st.Rdev))), nil
}

// attachPartLoop attaches a free loop device to size bytes of dev at off
// (as losetup --offset --sizelimit does); release detaches it.
func attachPartLoop(dev string, off, size int64) (string, func() error, error) {
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		return "", nil, fmt.Errorf("loop device: %w", err)
	}
	defer ctl.Close()
	back, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return "", nil, err
	}
	defer back.Close()
	var last error
	for range 8 { // another process may take the free device first
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return "", nil, fmt.Errorf("LOOP_CTL_GET_FREE: %w", err)
		}
		path := fmt.Sprintf("/dev/loop%d", n)
		lf, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			return "", nil, fmt.Errorf("loop device: %w", err)
		}
		cfg := unix.LoopConfig{Fd: uint32(back.Fd()), Info: unix.LoopInfo64{Offset: uint64(off), Sizelimit: uint64(size)}}
		if err := unix.IoctlLoopConfigure(int(lf.Fd()), &cfg); err != nil {
			lf.Close()
			last = fmt.Errorf("LOOP_CONFIGURE %s: %w", path, err)
			if errors.Is(err, unix.EBUSY) {
				continue
			}
			return "", nil, last
		}
		release := func() error {
			defer lf.Close()
			if err := unix.IoctlSetInt(int(lf.Fd()), unix.LOOP_CLR_FD, 0); err != nil {
				return fmt.Errorf("LOOP_CLR_FD %s: %w", path, err)
			}
			return nil
		}
		return path, release, nil
	}
	return "", nil, last
}
