package initenv

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ImagingModules are loaded by name at start, whatever the hardware: the
// agent's loop devices and device-mapper tables, and the XFS and Btrfs
// drivers it mounts to grow those file systems (the kernel would also ask
// /sbin/modprobe for them on mount; loading them here makes sure).
// efivarfs is loaded too when the machine booted by UEFI.
var ImagingModules = []string{"loop", "dm_mod", "xfs", "btrfs"}

// mountPoint is one mount(2) call.
type mountPoint struct {
	src, target, fstype string
	flags               uintptr
	data                string
}

// kernelMounts are the file systems pid 1 mounts first. /tmp is a tmpfs
// allowed to grow to 75 % of RAM: the agent spills large blobs there.
func kernelMounts() []mountPoint {
	return []mountPoint{
		{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		// The kernel's lockdown mode (Secure Boot) is read there.
		{"securityfs", "/sys/kernel/security", "securityfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755"},
		{"devpts", "/dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "gid=5,mode=620,ptmxmode=666"},
		{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"},
		{"tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777,size=75%"},
	}
}

// efiVarsMount is the efivarfs mount the agent needs to write UEFI boot
// entries, wanted when sysDir/firmware/efi exists (the machine booted by
// UEFI).
func efiVarsMount(sysDir string) (mountPoint, bool) {
	if fi, err := os.Stat(filepath.Join(sysDir, "firmware", "efi")); err != nil || !fi.IsDir() {
		return mountPoint{}, false
	}
	return mountPoint{"efivarfs", filepath.Join(sysDir, "firmware", "efi", "efivars"), "efivarfs",
		unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""}, true
}

// mountUnder mounts each mount point with its target under root ("/" in
// the environment); a target that is already mounted (EBUSY) is fine.
// mkdir says whether missing targets are created (not in sysfs).
func mountUnder(root string, ms []mountPoint, mkdir bool) error {
	var errs []error
	for _, m := range ms {
		target := filepath.Join(root, m.target)
		if mkdir {
			if err := os.MkdirAll(target, 0o755); err != nil {
				errs = append(errs, fmt.Errorf("mount %s: %w", m.fstype, err))
				continue
			}
		}
		err := unix.Mount(m.src, target, m.fstype, m.flags, m.data)
		if err != nil && !errors.Is(err, unix.EBUSY) {
			errs = append(errs, fmt.Errorf("mount %s on %s: %w", m.fstype, target, err))
		}
	}
	return errors.Join(errs...)
}

// prepareImaging loads ImagingModules (and efivarfs on UEFI machines),
// mounts efivarfs and makes sure /dev/mapper/control exists. Failures are
// logged: the agent reports a missing capability when a job needs it.
func prepareImaging(ctx context.Context, logger *slog.Logger, loader *Loader, sysDir, devDir, procMisc string) []string {
	var loaded []string
	names := append([]string(nil), ImagingModules...)
	efi, uefi := efiVarsMount(sysDir)
	if uefi {
		names = append(names, "efivarfs")
	}
	for _, m := range names {
		if ctx.Err() != nil {
			return loaded
		}
		got, err := loader.LoadNamed(m)
		loaded = append(loaded, got...)
		if err != nil {
			logger.Warn("imaging module not loaded", "module", m, "err", err)
		}
	}
	if uefi {
		if err := mountUnder("/", []mountPoint{efi}, false); err != nil {
			logger.Warn("UEFI variables not available", "err", err)
		} else {
			logger.Info("UEFI variables mounted", "path", efi.target)
		}
	}
	if err := ensureDMControl(devDir, procMisc); err != nil {
		logger.Warn("device-mapper control node", "err", err)
	}
	return loaded
}

// ensureDMControl creates devDir/mapper/control when devtmpfs did not
// (it does when dm_mod registers its misc device), from the minor number
// in /proc/misc.
func ensureDMControl(devDir, procMisc string) error {
	node := filepath.Join(devDir, "mapper", "control")
	if _, err := os.Stat(node); err == nil {
		return nil
	}
	f, err := os.Open(procMisc)
	if err != nil {
		return fmt.Errorf("device-mapper: %w", err)
	}
	defer f.Close()
	minor, ok := miscMinor(f, "device-mapper")
	if !ok {
		return errors.New("device-mapper: not in " + procMisc + " (dm_mod not loaded)")
	}
	if err := os.MkdirAll(filepath.Dir(node), 0o755); err != nil {
		return fmt.Errorf("device-mapper: %w", err)
	}
	const miscMajor = 10
	if err := unix.Mknod(node, unix.S_IFCHR|0o600, int(unix.Mkdev(miscMajor, minor))); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("device-mapper: mknod %s: %w", node, err)
	}
	return nil
}

// miscMinor finds name in /proc/misc ("236 device-mapper" lines); it reads
// at most 64 KiB.
func miscMinor(r io.Reader, name string) (uint32, bool) {
	sc := bufio.NewScanner(io.LimitReader(r, 64<<10))
	sc.Buffer(make([]byte, 0, 256), 4096)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 || f[1] != name {
			continue
		}
		n, err := strconv.ParseUint(f[0], 10, 20)
		if err != nil {
			continue
		}
		return uint32(n), true
	}
	return 0, false
}
