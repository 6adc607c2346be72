// Package blockdev makes the block devices the imaging agent works
// through after a restore: loop devices over a byte range of a disk or a
// file (a partition without relying on the kernel's partition nodes), and
// device-mapper linear devices that join several ranges into one (a
// partition followed by a spill file while a filesystem is shrunk).
// Linux only; everything is done with ioctls, no helper binaries.
package blockdev

import (
	"errors"
	"fmt"
	"os"
	"time"
)

// waitNode waits for a device node the kernel (devtmpfs) creates after an
// ioctl; where /dev is not devtmpfs it is made with mknod.
func waitNode(path string, major, minor uint32) error {
	deadline := time.Now().Add(3 * time.Second)
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		} else if !errors.Is(err, os.ErrNotExist) {
			return err
		}
		if time.Now().After(deadline) {
			if err := mknodBlock(path, major, minor); err != nil {
				return fmt.Errorf("device node %s: %w", path, err)
			}
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
}
