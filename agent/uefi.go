package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/preboot/preboot/disk"
	"github.com/preboot/preboot/efiboot"
)

// Values of Options.BootEntry.
const (
	// BootEntryAuto (the default, also for "") creates the UEFI boot
	// entry of the restored OS on UEFI machines, keeping network-boot
	// entries first in BootOrder so the server keeps deciding.
	BootEntryAuto = "auto"
	// BootEntryDiskFirst is BootEntryAuto with the disk's entry first of
	// all, ahead of network boot.
	BootEntryDiskFirst = "disk-first"
	// BootEntryOff leaves NVRAM alone.
	BootEntryOff = "off"
)

// ValidBootEntry checks a value for Options.BootEntry.
func ValidBootEntry(mode string) error {
	switch mode {
	case "", BootEntryAuto, BootEntryDiskFirst, BootEntryOff:
		return nil
	}
	return fmt.Errorf("boot entry mode %q: want %q, %q or %q", mode, BootEntryAuto, BootEntryDiskFirst, BootEntryOff)
}

// uefiHost says where the firmware shows itself: firmware is the
// directory that exists only on UEFI machines, vars the efivarfs
// directory ("" for the default, mounted when needed).
type uefiHost struct {
	firmware string
	vars     string
}

var realUEFI = uefiHost{firmware: efiboot.Firmware}

// ensureBootEntry runs after a whole-disk restore onto the block device
// f of size bytes: on a UEFI machine it makes NVRAM boot the restored
// OS (see bootEntry). Failures are logged as warnings; the restore
// itself succeeded.
func (o *Options) ensureBootEntry(ctx context.Context, f *os.File, size int64) {
	_, _ = bootEntry(ctx, f, size, o.BootEntry, realUEFI, o.log())
}

// bootEntry finds the ESP of the restored disk r, its best OS loader,
// and creates (or reuses) the Boot#### entry and BootOrder for it. It
// does nothing with mode "off", on a machine not booted through UEFI, or
// when the disk has no partition table with an ESP. ok reports whether
// NVRAM now has an entry for the disk.
func bootEntry(ctx context.Context, r io.ReaderAt, size int64, mode string, host uefiHost, log *slog.Logger) (e efiboot.Entry, ok bool) {
	if err := ValidBootEntry(mode); err != nil {
		log.WarnContext(ctx, "uefi boot entry not created; the machine may not boot the restored OS", "err", err)
		return e, false
	}
	if mode == BootEntryOff {
		log.DebugContext(ctx, "uefi boot entry: off, NVRAM left alone")
		return e, false
	}
	if st, err := os.Stat(host.firmware); err != nil || !st.IsDir() {
		log.DebugContext(ctx, "not booted through UEFI; no boot entry needed", "firmware", host.firmware)
		return e, false
	}
	tbl, err := disk.ReadTable(r, size)
	if err != nil {
		log.WarnContext(ctx, "uefi boot entry not created: the restored partition table is unreadable; the machine may not boot the restored OS", "err", err)
		return e, false
	}
	if _, err := efiboot.FindESP(tbl); err != nil {
		// A BIOS-style disk (or a data disk) restored on a UEFI machine:
		// nothing to point NVRAM at.
		log.InfoContext(ctx, "uefi boot entry not created: the restored disk has no EFI System Partition", "table", tbl.Kind)
		return e, false
	}
	e, err = efiboot.Ensure(ctx, efiboot.EnsureOptions{
		Disk: r, Table: tbl, VarsDir: host.vars,
		KeepNetworkFirst: mode != BootEntryDiskFirst,
		Logger:           log,
	})
	if err != nil {
		msg := "uefi boot entry not created; the machine may not boot the restored OS unless its firmware finds a loader by itself"
		if errors.Is(err, efiboot.ErrNoLoader) {
			msg = "uefi boot entry not created: no OS loader on the EFI System Partition; the machine may not boot the restored OS"
		}
		log.WarnContext(ctx, msg, "err", err)
		return e, false
	}
	msg := "uefi boot entry created"
	if !e.Created {
		msg = "uefi boot entry present"
		if e.Updated {
			msg = "uefi boot entry updated"
		}
	}
	log.InfoContext(ctx, msg, "entry", e.Name(), "description", e.Description, "path", e.Path,
		"device_path", e.DevicePath, "boot_order", bootOrderString(e.BootOrder))
	return e, true
}

func bootOrderString(order []uint16) string {
	s := ""
	for i, n := range order {
		if i > 0 {
			s += ","
		}
		s += fmt.Sprintf("%04X", n)
	}
	return s
}
