package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf16"

	"github.com/preboot/preboot/store"
)

// labUEFIImage is the image TestImagingUEFI captures and restores.
const labUEFIImage = "lab-uefi"

// uefiImagingVM starts a UEFI VM for the imaging scenarios: OVMF with a
// fresh copy of OVMF_VARS.fd (empty NVRAM), EDK2's own PXE on virtio-net
// (no option ROM: EDK2 loads the boot program over TFTP) and the disk on
// virtio-blk; it may reboot in place.
//
// No bootindex: with one, QEMU passes a boot order through fw_cfg and OVMF
// rewrites BootOrder at every boot to follow it (every option of the NIC
// first, then the disk's), overriding what the agent wrote to NVRAM — a
// real machine follows its NVRAM. Without it, fresh NVRAM lists the disk's
// removable-media option (nothing there: blank, or no fallback loader)
// before the NIC's PXE options, so the first boot is a network boot.
func uefiImagingVM(t *testing.T, l *lab, name, mac, disk string, snapshot bool) *vm {
	t.Helper()
	drive := "file=" + disk + ",format=raw,if=none,id=disk0"
	if snapshot {
		drive += ",snapshot=on"
	}
	// -cpu max: RDRAND seeds the guest kernel's CRNG (see imagingVM).
	args := append([]string{"-cpu", "max"}, l.addTap("virtio-net-pci,mac="+mac+",romfile=")...)
	args = append(args, "-drive", drive, "-device", "virtio-blk-pci,drive=disk0")
	return startVM(t, vmConfig{Name: name, Dir: l.Dir, Netns: l.NetNS, UEFI: true, Reboot: true, Args: args})
}

// deviceDetail is `preboot device show MAC -o json` without failing the
// test (for polling).
func (s *prebootServer) deviceDetail(ctx context.Context, mac string) (*deviceInfo, error) {
	out, err := s.cli(ctx, "device", "show", mac, "--events", "1000", "-o", "json")
	if err != nil {
		return nil, err
	}
	var d deviceInfo
	if err := json.Unmarshal([]byte(out), &d); err != nil {
		return nil, fmt.Errorf("device show %s: %w: %s", mac, err, out)
	}
	return &d, nil
}

// waitJobThenLocal waits until the device's job succeeded and a later
// network boot was answered with local boot (the reboot after the job). It
// fails early when a job failed or QEMU exited.
func waitJobThenLocal(ctx context.Context, v *vm, srv *prebootServer, mac string) error {
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		exited := v.exited()
		qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		js, jerr := srv.jobs(qctx, mac)
		var d *deviceInfo
		var derr error
		if jerr == nil {
			d, derr = srv.deviceDetail(qctx, mac)
		}
		cancel()
		if jerr == nil && derr == nil {
			var done time.Time
			for _, j := range js {
				if j.State == store.JobFailed {
					return fmt.Errorf("job %d (%s bundle %s) failed: %s", j.ID, j.Kind, j.Bundle, j.Error)
				}
				if j.State == store.JobSucceeded && j.FinishedAt.After(done) {
					done = j.FinishedAt
				}
			}
			if !done.IsZero() {
				for _, e := range d.Events {
					if e.Kind == store.EventLocalBoot && e.Time.After(done) {
						return nil
					}
				}
			}
		}
		if exited {
			return fmt.Errorf("vm %s: qemu exited (%v) before the job succeeded and the next boot went local", v.cfg.Name, v.err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("vm %s: no succeeded job followed by a local boot (jobs: %v, device: %v): %w", v.cfg.Name, jerr, derr, ctx.Err())
		case <-tick.C:
		}
	}
}

// ovmfSetupMenu is what OVMF prints when it gives up on the boot options
// and starts its setup menu (also when a boot option returned
// EFI_SUCCESS: an iPXE "exit" with status 0).
const ovmfSetupMenu = `BdsDxe: starting Boot0000 "UiApp"`

// waitUEFIOS waits until the VM's console shows osLine after the imaging
// environment. It fails early when a job of the device failed, QEMU
// exited, or, after the imaging environment ran, the firmware started its
// setup menu (no boot option led to the restored disk).
func waitUEFIOS(ctx context.Context, v *vm, srv *prebootServer, mac, osLine string) error {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for n := 0; ; n++ {
		exited := v.exited()
		out := v.serial()
		if strings.Contains(out, osLine) {
			return nil
		}
		if env := strings.Index(out, envBanner); env >= 0 && strings.Contains(out[env:], ovmfSetupMenu) {
			return fmt.Errorf("vm %s: after the imaging environment the firmware started its setup menu (%s) instead of the restored OS", v.cfg.Name, ovmfSetupMenu)
		}
		if exited {
			return fmt.Errorf("vm %s: qemu exited (%v) before the console showed %q", v.cfg.Name, v.err, osLine)
		}
		if n%5 == 4 {
			qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			js, err := srv.jobs(qctx, mac)
			cancel()
			if err == nil {
				for _, j := range js {
					if j.State == store.JobFailed {
						return fmt.Errorf("job %d (%s bundle %s) failed: %s", j.ID, j.Kind, j.Bundle, j.Error)
					}
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("vm %s: console did not show %q: %w", v.cfg.Name, osLine, ctx.Err())
		case <-tick.C:
		}
	}
}

// checkRestoreJob asserts that the device has exactly one job: the
// restore of labUEFIImage (version 1) by the quick task's bundle,
// succeeded, with its bytes counted and a log; it logs the job's log.
func checkRestoreJob(t *testing.T, srv *prebootServer, mac string) {
	t.Helper()
	j := checkOneJob(t, srv, mac, store.KindImageRestore, "restore-"+labUEFIImage)
	if j == nil {
		return
	}
	if want := labUEFIImage + "@1"; j.Image != want {
		t.Errorf("job %d: image %q, want %q", j.ID, j.Image, want)
	}
	if j.BytesTotal <= 0 || j.BytesDone != j.BytesTotal {
		t.Errorf("job %d: progress %d/%d bytes, want done == total > 0", j.ID, j.BytesDone, j.BytesTotal)
	}
	checkJobLog(t, srv, j.ID)
	checkTimeReport(t, srv, j.ID)
	srv.logJobs(t, mac)
}

// nvramHasLoader reports whether a VM's OVMF variable store holds the
// loader's path as UTF-16 (a Boot#### load option's file path node),
// compared case-insensitively.
func nvramHasLoader(file, loader string) (bool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return false, err
	}
	var u bytes.Buffer
	for _, r := range utf16.Encode([]rune(strings.ToLower(loader))) {
		u.WriteByte(byte(r))
		u.WriteByte(byte(r >> 8))
	}
	return bytes.Contains(bytes.ToLower(b), u.Bytes()), nil
}

// TestImagingUEFI is the UEFI/GPT imaging round trip in the VM lab:
//
//  1. capture: a UEFI VM (OVMF, EDK2's PXE on virtio-net) whose disk is the
//     GPT source disk of uefidisk_test.go (ESP with only
//     \EFI\debian\grubx64.efi, ext4 root) is assigned "capture to
//     lab-uefi"; it PXE-boots the imaging environment, the agent captures
//     the disk, the VM reboots and its next network boot goes local.
//  2. restore: two UEFI VMs with FRESH NVRAM (no boot entry for the disk,
//     and the disk has no fallback loader) and blank disks, one larger
//     (768 MiB) and one smaller (384 MiB) than the source (512 MiB), are
//     assigned "restore lab-uefi"; each PXE-boots, restores (the root
//     partition and its filesystem grown or shrunk to the disk; the agent
//     creates the boot entry through efivarfs, network boot staying
//     first), reboots by itself: PXE → Preboot answers local boot → iPXE
//     exits → the firmware's next boot option, the new entry → GRUB →
//     Linux → the OS marker, then poweroff.
//  3. on the host, after each VM stopped: checkUEFIDisk (GPT valid with
//     its backup at the disk's end and the source's GUIDs, ESP intact and
//     clean, root partition ending at the disk's end, e2fsck -fn clean,
//     the filesystem filling its partition, every known file's sha256),
//     and the VM's NVRAM names the loader.
func TestImagingUEFI(t *testing.T) {
	requireRoot(t)
	requireQEMU(t)
	requireUEFIDiskTools(t)
	t.Parallel()
	art, err := sharedArtifacts()
	if err != nil {
		t.Fatal(err)
	}
	src, err := uefiDiskOnce()
	if err != nil {
		t.Fatal(err)
	}
	testStart := time.Now()
	l := newLab(t, separateDHCP)
	// snponly.efi: it drives the NIC through the firmware's own SNP, and
	// its "exit" (Preboot's local boot on UEFI) returns to the firmware's
	// boot manager, which goes on to the next boot option. Debian's 2019
	// ipxe.efi loads its own virtio-net driver and, in this lab, hangs
	// after its exit instead (the console stops after "Press Ctrl-B").
	srv := l.startPreboot(serverOptions{UEFIBootFile: "snponly.efi"}, art)
	l.siteDHCP = l.startSiteDHCP()
	buildImagingEnv(t, srv, art.Kernel)
	var macs []string
	srv.logOnFailure(t, func() []string { return macs })
	deadline := imagingDeadlineFor()
	osLine := osMarker + " " + src.ID

	// 1. Capture.
	ok := t.Run("capture", func(t *testing.T) {
		mac := randomMAC()
		macs = append(macs, mac)
		srv.mustCLI("device", "capture", mac, "--image", labUEFIImage)
		v := uefiImagingVM(t, l, "capture", mac, src.Path, true)
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		defer cancel()
		start := time.Now()
		if err := waitJobThenLocal(ctx, v, srv, mac); err != nil {
			t.Fatal(err)
		}
		t.Logf("capture VM: job done, rebooted, next network boot went local after %s", time.Since(start).Round(time.Second))
		v.stop() // its NVRAM has no entry for the disk: nothing more to see
		if n := strings.Count(v.serial(), envBanner); n != 1 {
			t.Errorf("console shows the imaging environment %d times, want 1", n)
		}
		j := checkOneJob(t, srv, mac, store.KindImageCapture, "capture-"+labUEFIImage)
		if j != nil {
			if j.Image != labUEFIImage || j.BytesTotal <= 0 || j.BytesDone != j.BytesTotal {
				t.Errorf("job %d: image %q, progress %d/%d bytes, want %q and done == total > 0", j.ID, j.Image, j.BytesDone, j.BytesTotal, labUEFIImage)
			}
			checkJobLog(t, srv, j.ID)
		}
		checkBootsAfterJob(t, srv, mac)
		found := false
		for _, im := range srv.images().Images {
			if im.Name != labUEFIImage {
				continue
			}
			found = true
			t.Logf("image %s: logical %d, used %d, stored %d bytes, %d chunks, partitions %+v", im.Name, im.Logical, im.Used, im.Stored, im.Chunks, im.Partitions)
			if im.Logical != uefiDiskSize {
				t.Errorf("image %s: logical size %d, want the disk's %d", im.Name, im.Logical, uefiDiskSize)
			}
			if len(im.Partitions) != 2 {
				t.Errorf("image %s: %d partitions, want 2 (ESP, root): %+v", im.Name, len(im.Partitions), im.Partitions)
			}
		}
		if !found {
			t.Errorf("image list does not show %s", labUEFIImage)
		} else {
			t.Logf("%s", strings.TrimSpace(srv.mustCLI("image", "verify", labUEFIImage)))
		}
	})
	if !ok {
		listed := false
		for _, im := range srv.images().Images {
			listed = listed || im.Name == labUEFIImage
		}
		if !listed {
			t.FailNow()
		}
	}

	// 2. Restore onto blank disks of VMs with fresh NVRAM.
	type target struct {
		name string
		size int64
		mac  string
		disk string
	}
	targets := []*target{
		{name: "larger", size: 768 * mib},
		{name: "smaller", size: 384 * mib},
	}
	t.Run("restore", func(t *testing.T) {
		for _, tg := range targets {
			tg.mac = randomMAC()
			macs = append(macs, tg.mac)
			tg.disk = filepath.Join(l.Dir, "restore-uefi-"+tg.name+".img")
			if err := createSparse(tg.disk, tg.size); err != nil {
				t.Fatal(err)
			}
			srv.mustCLI("device", "restore", tg.mac, "--image", labUEFIImage)
		}
		for _, tg := range targets {
			t.Run(tg.name, func(t *testing.T) {
				t.Parallel()
				v := uefiImagingVM(t, l, "restore-"+tg.name, tg.mac, tg.disk, false)
				ctx, cancel := context.WithTimeout(context.Background(), deadline)
				defer cancel()
				start := time.Now()
				if err := waitUEFIOS(ctx, v, srv, tg.mac, osLine); err != nil {
					t.Fatal(err)
				}
				t.Logf("restore VM %s: job done, rebooted and booted the restored OS through its new boot entry after %s", tg.name, time.Since(start).Round(time.Second))
				if err := v.waitExit(ctx); err != nil {
					t.Fatal(err) // the disk is checked only once QEMU is gone
				}
				out := v.serial()
				checkConsoleOrder(t, out, osLine)
				if env, grub := strings.Index(out, envBanner), strings.LastIndex(out, uefiGrubMark); grub < env {
					t.Errorf("console: GRUB from the restored ESP (at %d) did not run after the imaging environment (at %d)", grub, env)
				}
				if strings.Contains(out, `\EFI\BOOT\BOOTX64.EFI`) {
					t.Logf("the firmware looked for the fallback loader (there is none)")
				}
				checkRestoreJob(t, srv, tg.mac)
				checkBootsAfterJob(t, srv, tg.mac)
				has, err := nvramHasLoader(filepath.Join(l.Dir, "restore-"+tg.name+"-OVMF_VARS.fd"), `\`+strings.ReplaceAll(uefiLoader, "/", `\`))
				if err != nil {
					t.Fatal(err)
				}
				if !has {
					t.Errorf("the VM's NVRAM holds no boot option naming \\%s", strings.ReplaceAll(uefiLoader, "/", `\`))
				}

				// 3. Host-side checks on the stopped VM's disk.
				checkUEFIDisk(t, tg.disk, src)
			})
		}
	})
	t.Logf("UEFI imaging round trip took %s", time.Since(testStart).Round(time.Second))
}
