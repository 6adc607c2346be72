package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/preboot/preboot/store"
)

// TestManualMedia is the manual preboot (issue 13): machines with no
// network boot at all start the imaging environment from the medium,
// register with the server and restore their assigned image, which then
// boots from their disk.
//
//   - The lab's two source disks (BIOS: MBR + extlinux; UEFI: GPT + GRUB)
//     are captured from the host with `preboot agent capture` (an admin
//     token) as lab-base and lab-uefi; `preboot device restore MAC` assigns
//     them to two MACs the server has never seen.
//   - bios: SeaBIOS, e1000 without its option ROM (no PXE), a blank IDE
//     disk first in the boot order (-boot order=cd) and, as a CD-ROM, the
//     ISO the server serves at /files/preboot.iso (its own agent URL and
//     certificate pin baked in).
//   - uefi: OVMF, an e1000 without option ROM (OVMF has no driver for it:
//     no PXE, no HTTP boot; Linux drives it), a blank virtio disk and, as
//     a USB stick (qemu-xhci + usb-storage), the image of
//     `preboot env usb --serial`.
//
// Each VM boots the medium (the blank disk has nothing to boot), the
// environment asks POST /api/v1/agent/media, gets its restore job,
// restores, reboots, and now boots the restored OS from its disk (on
// UEFI through the boot entry the agent wrote, first in BootOrder).
// Asserted: the device registered with the VM's SMBIOS identity, one
// succeeded restore job, the "manual preboot medium" events, no DHCP
// event (no PXE), and on the host the restored disk's contents.
func TestManualMedia(t *testing.T) {
	requireRoot(t)
	requireQEMU(t)
	requireDiskTools(t)
	requireUEFIDiskTools(t)
	t.Parallel()
	art, err := sharedArtifacts()
	if err != nil {
		t.Fatal(err)
	}
	src, err := sourceDiskOnce()
	if err != nil {
		t.Fatal(err)
	}
	usrc, err := uefiDiskOnce()
	if err != nil {
		t.Fatal(err)
	}
	l := newLab(t, separateDHCP)
	srv := l.startPreboot(serverOptions{}, art)
	l.siteDHCP = l.startSiteDHCP()
	buildImagingEnv(t, srv, art.Kernel)
	var macs []string
	srv.logOnFailure(t, func() []string { return macs })

	// The server's certificate pin, as it logged it.
	pin := ""
	for _, r := range srv.logRecords("https listening") {
		pin, _ = r["fingerprint"].(string)
	}
	if pin == "" {
		t.Fatal("the server logged no https fingerprint")
	}
	agentURL := "https://" + labServerIP + ":8443"

	// Images from the host (the agent on disk-image files).
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	tok, err := run(ctx, srv.bin, "token", "create", "e2e-media", "--local", "--data-dir", srv.DataDir)
	if err != nil {
		t.Fatalf("token create: %v", err)
	}
	tokFile := filepath.Join(l.Dir, "admin.token")
	if err := os.WriteFile(tokFile, []byte(strings.TrimSpace(tok)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for img, disk := range map[string]string{labImage: src.Path, labUEFIImage: usrc.Path} {
		l.nsRun(l.SrvNS, srv.bin, "agent", "capture", "--server", agentURL, "--tls-fingerprint", pin,
			"--token-file", tokFile, "--device", disk, "--image", img, "-q")
	}

	// The media: the server's own ISO, and a USB image from the CLI.
	iso := filepath.Join(l.Dir, "served.iso")
	l.nsRun(l.SrvNS, "curl", "-sf", "-o", iso, "http://"+labServerIP+":8080/files/preboot.iso")
	usb := filepath.Join(l.Dir, "preboot-usb.img")
	out, err := run(ctx, srv.bin, "env", "usb", "--out", usb, "--env", filepath.Join(srv.TFTPDir, "boot"),
		"--server", agentURL, "--tls-fingerprint", pin, "--serial", "--timeout", "1")
	if err != nil {
		t.Fatalf("preboot env usb: %v", err)
	}
	t.Logf("%s", strings.TrimSpace(out))
	if _, err := run(ctx, srv.bin, "env", "iso", "--out", filepath.Join(l.Dir, "bad.iso"), "--env", filepath.Join(srv.TFTPDir, "boot"),
		"--server", "https://"+labServerIP+":8443/x?y"); err == nil {
		t.Error("env iso accepted a server URL with a path")
	}
	if _, err := os.Stat(filepath.Join(l.Dir, "bad.iso")); err == nil {
		t.Error("a refused build left its output behind")
	}

	type target struct {
		name, image, mac, disk string
		uefi                   bool
		args                   func(disk string) []string
	}
	blank := func(name string, size int64) string {
		f := filepath.Join(l.Dir, "blank-"+name+".img")
		if err := createSparse(f, size); err != nil {
			t.Fatal(err)
		}
		return f
	}
	targets := []*target{
		{name: "bios", image: labImage, mac: randomMAC()},
		{name: "uefi", image: labUEFIImage, mac: randomMAC(), uefi: true},
	}
	targets[0].disk = blank("bios", srcDiskSize)
	targets[1].disk = blank("uefi", uefiDiskSize)
	// Serial numbers the server must record from SMBIOS.
	for _, tg := range targets {
		macs = append(macs, tg.mac)
		srv.mustCLI("device", "restore", tg.mac, "--image", tg.image)
		smbios := fmt.Sprintf("type=1,manufacturer=PrebootLab,product=Media-%s,serial=MEDIA-%s", tg.name, strings.ReplaceAll(tg.mac, ":", ""))
		if tg.uefi {
			tg.args = func(disk string) []string {
				return append([]string{"-cpu", "max", "-smbios", smbios,
					"-drive", "file=" + disk + ",format=raw,if=none,id=disk0",
					"-device", "virtio-blk-pci,drive=disk0",
					"-device", "qemu-xhci,id=xhci",
					"-drive", "file=" + usb + ",format=raw,if=none,id=usb0,snapshot=on",
					"-device", "usb-storage,bus=xhci.0,drive=usb0,removable=on"},
					l.addTap("e1000,mac="+tg.mac+",romfile=")...)
			}
		} else {
			tg.args = func(disk string) []string {
				return append([]string{"-cpu", "max", "-smbios", smbios, "-boot", "order=cd",
					"-drive", "file=" + disk + ",format=raw,if=ide,index=0",
					"-drive", "file=" + iso + ",format=raw,if=ide,index=2,media=cdrom,readonly=on"},
					l.addTap("e1000,mac="+tg.mac+",romfile=")...)
			}
		}
	}
	deadline := imagingDeadlineFor()
	for _, tg := range targets {
		t.Run(tg.name, func(t *testing.T) {
			t.Parallel()
			v := startVM(t, vmConfig{Name: "media-" + tg.name, Dir: l.Dir, Netns: l.NetNS, UEFI: tg.uefi, Reboot: true, Args: tg.args(tg.disk)})
			osLine := osMarker + " " + src.ID
			if tg.uefi {
				osLine = osMarker + " " + usrc.ID
			}
			ctx, cancel := context.WithTimeout(context.Background(), deadline)
			defer cancel()
			start := time.Now()
			if err := waitImaging(ctx, v, srv, tg.mac, osLine); err != nil {
				t.Fatal(err)
			}
			t.Logf("%s VM: medium → restore → reboot → restored OS after %s", tg.name, time.Since(start).Round(time.Second))
			if err := v.waitExit(ctx); err != nil {
				t.Fatal(err)
			}
			if n := strings.Count(v.serial(), osLine); n != 1 {
				t.Errorf("console shows the OS marker %d times, want 1", n)
			}
			j := checkOneJob(t, srv, tg.mac, store.KindImageRestore, "restore-"+tg.image)
			if j != nil && j.ClientIP == "" {
				t.Errorf("job %d: no client address", j.ID)
			}
			d := srv.showDevice(tg.mac)
			t.Logf("device %s events:%s", tg.mac, d.eventSummary())
			if d.Serial != "MEDIA-"+strings.ReplaceAll(tg.mac, ":", "") || d.Manufacturer != "PrebootLab" || d.Product != "Media-"+tg.name {
				t.Errorf("device %s: serial %q maker %q product %q: not the VM's SMBIOS identity", tg.mac, d.Serial, d.Manufacturer, d.Product)
			}
			wantArch := "bios"
			if tg.uefi {
				wantArch = "efi-x64"
			}
			if d.Arch != wantArch {
				t.Errorf("device %s: arch %q, want %q", tg.mac, d.Arch, wantArch)
			}
			if !d.eventMatching(store.EventBoot, "manual preboot medium") || !d.eventMatching(store.EventWork, "manual preboot medium: bundle restore-"+tg.image) {
				t.Errorf("no manual preboot medium boot/work events")
			}
			if d.hasEvent(store.EventDHCP) {
				t.Errorf("a DHCP boot event: the VM was meant to have no PXE")
			}
			if d.Assignment != nil {
				t.Errorf("assignment left after the job: %+v", d.Assignment)
			}
			if tg.uefi {
				checkUEFIDisk(t, tg.disk, usrc)
			} else {
				checkDiskContents(t, tg.disk)
			}
		})
	}
}
