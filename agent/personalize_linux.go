//go:build linux

package agent

import (
	"errors"
	"fmt"
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
