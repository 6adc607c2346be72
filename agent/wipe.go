package agent

import (
	"context"
	"errors"
	"log/slog"
	"time"
)

// Wipe modes (the same words as the wipe bundle's mode).
const (
	// WipeZero writes zeros over every byte: BLKZEROOUT (the device zeroes
	// itself, or the kernel writes zero pages), falling back to plain
	// writes when the ioctl is not supported.
	WipeZero = "zero"
	// WipeDiscard tells the device to drop every block (BLKDISCARD, TRIM
	// on SSDs, UNMAP on SCSI). It is quick, but a device may keep the old
	// data readable; a disk without discard support is refused.
	WipeDiscard = "discard"
)

// ErrWipeRefused wraps the reasons Wipe refuses a disk: removable, in use
// by the running system, or (discard) no discard support. Nothing is
// written when a disk of the list is refused.
var ErrWipeRefused = errors.New("wipe refused")

// WipeOptions configure Wipe.
type WipeOptions struct {
	// Disks are block devices (or disk-image files); empty means every
	// fixed, non-removable disk of the machine.
	Disks []string
	// Mode is WipeZero (default) or WipeDiscard.
	Mode string
	// Progress, when set, gets the bytes wiped so far over all disks.
	Progress         func(WipeProgress)
	ProgressInterval time.Duration // default 1 s
	Logger           *slog.Logger
}

// WipeProgress is reported periodically while wiping.
type WipeProgress struct {
	Disk  string  `json:"disk"` // the disk being wiped
	Done  int64   `json:"done"`
	Total int64   `json:"total"`
	Rate  float64 `json:"rate"` // bytes per second since the start
}

// Wipe zeroes or discards whole disks. Every disk is checked before any is
// touched: a removable disk, a disk that holds a mounted filesystem or an
// active swap area (directly or under RAID/LVM/dm), or — for discard — a
// disk without discard support is refused with ErrWipeRefused. Block
// devices are opened exclusively (O_EXCL), so the kernel refuses one in
// use as well. Afterwards the kernel re-reads the (now empty) partition
// table. Everything on the disks is gone, the image-safe data included.
func Wipe(ctx context.Context, o WipeOptions) error {
	return wipe(ctx, o, defaultRoots)
}
