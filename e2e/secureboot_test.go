package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/preboot/preboot/bootfiles"
	"github.com/preboot/preboot/store"
)

// signedPrograms downloads Debian's signed shim and GRUB packages into the
// e2e cache once per test binary (outside the labs: their namespaces have
// no route out), where every lab's server finds them (--signed-cache).
var signedPrograms = sync.OnceValues(func() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	root, err := os.MkdirTemp("", "preboot-signed-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(root)
	dir := filepath.Join(cacheDir(), "signed")
	if err := bootfiles.StageSigned(ctx, root, dir, slog.New(slog.DiscardHandler)); err != nil {
		return "", err
	}
	return dir, nil
})

// signedFile is a file of an installed signed package, or of its copy in
// the cache.
func signedFile(t testing.TB, pkg, path string) string {
	t.Helper()
	if _, err := os.Stat(path); err == nil {
		return path
	}
	dir, err := signedPrograms()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, pkg, "root", path)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("signed program: %v", err)
	}
	return p
}

const sbLocalMarker = "PREBOOT-SB-LOCAL-DISK-BOOTED"

// buildSignedESPDisk makes a GPT disk whose only partition is an ESP with
// what Debian installs under Secure Boot: \EFI\debian\shimx64.efi
// (Microsoft-signed), grubx64.efi (Debian-signed, the disk image) and a
// grub.cfg that prints sbLocalMarker and powers off.
func buildSignedESPDisk(ctx context.Context, t *testing.T, file string) {
	t.Helper()
	shim := signedFile(t, "shim-signed", "/usr/lib/shim/shimx64.efi.signed")
	grub := signedFile(t, "grub-efi-amd64-signed", "/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed")
	stage := t.TempDir()
	if err := createSparse(file, 80*mib); err != nil {
		t.Fatal(err)
	}
	if _, err := tool(ctx, "sgdisk", "--clear", "--new=1:2048:0", "--typecode=1:EF00", file); err != nil {
		t.Fatal(err)
	}
	parts, err := readGPT(ctx, file)
	if err != nil || len(parts.Partitions) != 1 {
		t.Fatalf("gpt %+v: %v", parts, err)
	}
	esp := filepath.Join(stage, "esp.img")
	if err := createSparse(esp, parts.Partitions[0].Size*512); err != nil {
		t.Fatal(err)
	}
	if _, err := tool(ctx, "mkfs.vfat", "-F", "32", "-s", "1", "-n", "ESP", esp); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(stage, "grub.cfg")
	if err := os.WriteFile(cfg, []byte("echo "+sbLocalMarker+"\nsleep 1\nhalt\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range [][]string{
		{"mmd", "-i", esp, "::/EFI", "::/EFI/debian"},
		{"mcopy", "-i", esp, shim, "::/EFI/debian/shimx64.efi"},
		{"mcopy", "-i", esp, grub, "::/EFI/debian/grubx64.efi"},
		{"mcopy", "-i", esp, cfg, "::/EFI/debian/grub.cfg"},
	} {
		if _, err := mtools(ctx, c[0], c[1:]...); err != nil {
			t.Fatal(err)
		}
	}
	if err := copySparseInto(file, esp, parts.Partitions[0].Start*512); err != nil {
		t.Fatal(err)
	}
}

// secureBootVM starts OVMF enforcing Secure Boot with Microsoft's keys,
// booting from virtio-net without an option ROM (a NIC ROM would be
// QEMU's unsigned iPXE, which OVMF runs even under Secure Boot).
func secureBootVM(t *testing.T, l *lab, name, mac string, extra ...string) *vm {
	t.Helper()
	args := append([]string{"-cpu", "max"}, l.addTap("virtio-net-pci,mac="+mac+",romfile=,bootindex=1")...)
	args = append(args, extra...)
	return startVM(t, vmConfig{Name: name, Dir: l.Dir, Netns: l.NetNS, SecureBoot: true, Args: args})
}

// waitJobFinished waits until the device's newest job succeeded or failed
// and returns it. It fails early when QEMU exited before any job started.
func waitJobFinished(ctx context.Context, v *vm, srv *prebootServer, mac string) (*store.Job, error) {
	for {
		exited := v.exited()
		js, err := srv.jobs(ctx, mac)
		if err != nil {
			return nil, err
		}
		if len(js) > 0 && (js[0].State == store.JobSucceeded || js[0].State == store.JobFailed) {
			return &js[0], nil
		}
		if exited && len(js) == 0 {
			return nil, fmt.Errorf("vm %s: qemu exited (%v) before its job started", v.cfg.Name, v.err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("vm %s: no finished job: %w", v.cfg.Name, ctx.Err())
		case <-time.After(time.Second):
		}
	}
}

// checkSignedKernelJob asserts that a finished job succeeded in the imaging
// environment on Debian's signed kernel, locked down by Secure Boot, and
// that the server recorded the Secure Boot path and state.
func checkSignedKernelJob(t *testing.T, srv *prebootServer, v *vm, mac string, job *store.Job) {
	t.Helper()
	if job.State != store.JobSucceeded {
		srv.logJobs(t, mac)
		t.Fatalf("job %d (%s): %s %q", job.ID, job.Kind, job.State, job.Error)
	}
	out := v.serial()
	for _, want := range []string{"Kernel is locked down from EFI Secure Boot", `msg="firmware Secure Boot" job=` + fmt.Sprint(job.ID) + " enabled=true lockdown=integrity"} {
		if !strings.Contains(out, want) {
			t.Errorf("console lacks %q", want)
		}
	}
	d := srv.showDevice(mac)
	if !d.eventMatching(store.EventWork, "on the signed kernel") {
		t.Errorf("no work event for the Secure Boot path: %s", d.eventSummary())
	}
	if !d.eventMatching(store.EventSecureBoot, store.SecureBootStateOn+" (imaging environment") {
		t.Errorf("the imaging environment's Secure Boot state was not recorded: %s", d.eventSummary())
	}
}

// labSBImage is the image the Secure Boot capture stores and its restore
// writes back.
const labSBImage = "lab-sb-uefi"

// TestSecureBoot boots OVMF with Secure Boot enforced through Preboot.
// Its main lab has a site DHCP server whose next-server is Preboot for the
// Secure Boot machines (Debian's signed GRUB ignores proxyDHCP):
//
//	(a) unsigned ipxe.efi is refused: the lab enforces Secure Boot;
//	(b) with nothing assigned, shim → GRUB → its generated config chains
//	    the disk's own shim → GRUB (local boot);
//	(c) an inventory job runs in the imaging environment on Debian's
//	    signed kernel and succeeds;
//	(d) a capture job on that path stores the GPT source disk of
//	    uefidisk_test.go (ESP, ext4 root);
//	(e) a restore job on that path, on a second Secure Boot VM, writes it
//	    onto a blank disk, checked on the host (checkUEFIDisk) and in the
//	    VM's NVRAM (the boot entry the agent wrote through efivarfs). The
//	    restored OS is not booted: the lab disk's GRUB is unsigned.
//
// A second lab has no site DHCP server at all:
//
//	(f) Preboot is the DHCP server (--dhcp-range): the same Secure Boot
//	    VM gets its address, siaddr and shim from Preboot's ACK and boots
//	    its disk through shim → GRUB → generated config (local boot).
func TestSecureBoot(t *testing.T) {
	for _, f := range []string{ovmfCodeSecure, ovmfVarsMS} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("Secure Boot firmware: %v (apt-get install ovmf)", err)
		}
	}
	requireUEFIDiskTools(t)
	l := newLab(t, separateDHCP)
	art, err := sharedArtifacts()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := signedPrograms(); err != nil {
		t.Fatalf("Debian's signed shim and GRUB: %v", err)
	}
	src, err := uefiDiskOnce()
	if err != nil {
		t.Fatal(err)
	}
	macA, macB, macC, macD, macE := randomMAC(), randomMAC(), randomMAC(), randomMAC(), randomMAC()
	// Only the Secure Boot machines get next-server = Preboot (and the
	// shim's name) from the site's DHCP server; macA gets plain DHCP and
	// Preboot's proxyDHCP answer.
	var siteArgs []string
	for _, m := range []string{macB, macC, macD, macE} {
		siteArgs = append(siteArgs, "--dhcp-host="+m+",set:sb")
	}
	l.startSiteDHCP(append(siteArgs, "--dhcp-boot=tag:sb,"+bootfiles.ShimName+",preboot,"+labServerIP)...)
	srv := l.startPreboot(serverOptions{Extra: []string{"--imaging-cmdline", "console=ttyS0,115200"}}, art)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	if err := srv.proc.waitLog(ctx, "Secure Boot path ready"); err != nil {
		cancel()
		t.Fatal(err)
	}
	cancel()
	buildImagingEnv(t, srv, art.Kernel)
	srv.mustCLI("settings", "set", "--secure-boot-device", macA+"=off",
		"--secure-boot-device", macB+"=on", "--secure-boot-device", macC+"=on",
		"--secure-boot-device", macD+"=on", "--secure-boot-device", macE+"=on")
	srv.mustCLI("bundle", "create", "inv", "--kind", "inventory")
	srv.mustCLI("device", "add", macC)
	srv.mustCLI("assign", "inv", "--device", macC, "--once")
	t.Cleanup(func() {
		if t.Failed() {
			for _, mac := range []string{macC, macD, macE} {
				srv.logJobs(t, mac)
			}
		}
	})

	disk := filepath.Join(l.Dir, "sb-esp.img")
	dctx, dcancel := context.WithTimeout(context.Background(), 2*time.Minute)
	buildSignedESPDisk(dctx, t, disk)
	dcancel()

	deadline := imagingDeadlineFor()

	// (a) and (b) together: both are short.
	t.Run("refused-and-local", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		defer cancel()
		vmA := secureBootVM(t, l, "sb-refuse", macA)
		vmB := secureBootVM(t, l, "sb-local", macB,
			"-drive", "file="+disk+",if=none,format=raw,id=d0,snapshot=on", "-device", "virtio-blk-pci,drive=d0,bootindex=2")
		var wg sync.WaitGroup
		errs := make([]error, 2)
		wg.Add(2)
		go func() {
			defer wg.Done()
			errs[0] = vmA.waitFor(ctx, "Access Denied")
			vmA.stop()
		}()
		go func() {
			defer wg.Done()
			errs[1] = vmB.waitFor(ctx, "Preboot: chaining", sbLocalMarker)
		}()
		wg.Wait()
		if errs[0] != nil {
			t.Errorf("(a) unsigned iPXE was not refused: %v", errs[0])
		}
		if errs[1] != nil {
			t.Errorf("(b) local boot through shim → GRUB: %v", errs[1])
		}
		a := srv.showDevice(macA)
		if !a.eventMatching(store.EventDHCP, "PXEClient → ipxe.efi") {
			t.Errorf("(a) no DHCP event handing out ipxe.efi: %s", a.eventSummary())
		}
		if strings.Contains(vmA.serial(), "Preboot:") {
			t.Errorf("(a) iPXE ran under Secure Boot")
		}
		checkSBLocalBoot(t, srv, macB)
	})

	// (f) Preboot as the lab's DHCP server, in a lab of its own.
	t.Run("dhcp-server", func(t *testing.T) {
		l2 := newLab(t, separateDHCP) // its dnsmasq namespace stays empty: no site DHCP
		srv2 := l2.startPreboot(serverOptions{Extra: []string{"--dhcp-range", labPoolStart + "-" + labPoolEnd}}, art)
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		defer cancel()
		if err := srv2.proc.waitLog(ctx, "Secure Boot path ready"); err != nil {
			t.Fatal(err)
		}
		mac := randomMAC()
		srv2.mustCLI("settings", "set", "--secure-boot-device", mac+"=on")
		v := secureBootVM(t, l2, "sb-dhcpserver", mac,
			"-drive", "file="+disk+",if=none,format=raw,id=d0,snapshot=on", "-device", "virtio-blk-pci,drive=d0,bootindex=2")
		if err := v.waitFor(ctx, "Preboot: chaining", sbLocalMarker); err != nil {
			t.Errorf("local boot through shim → GRUB with Preboot as the DHCP server: %v", err)
		}
		v.stop()
		acked := false
		for _, r := range srv2.logRecords("dhcpserver answer") {
			ip, _ := r["ip"].(string)
			if r["mac"] == mac && r["type"] == "ACK" && r["filename"] == bootfiles.ShimName && strings.HasPrefix(ip, "10.123.0.") {
				acked = true
				t.Logf("Preboot's DHCP server: %v", r)
			}
		}
		if !acked {
			t.Errorf("no ACK from Preboot's DHCP server with an address of the range and %s for %s", bootfiles.ShimName, mac)
		}
		checkSBLocalBoot(t, srv2, mac)
	})

	// (c) the inventory job on the signed kernel.
	t.Run("inventory", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		defer cancel()
		v := secureBootVM(t, l, "sb-inventory", macC)
		job, err := waitJobFinished(ctx, v, srv, macC)
		if err != nil {
			t.Fatal(err)
		}
		v.stop()
		checkSignedKernelJob(t, srv, v, macC, job)
		if c := srv.showDevice(macC); len(c.Info) == 0 {
			t.Errorf("no inventory reported")
		}
	})

	// (d) capture of the GPT source disk on the Secure Boot path.
	captured := t.Run("capture", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		defer cancel()
		srv.mustCLI("device", "capture", macD, "--image", labSBImage)
		v := secureBootVM(t, l, "sb-capture", macD,
			"-drive", "file="+src.Path+",if=none,format=raw,id=d0,snapshot=on", "-device", "virtio-blk-pci,drive=d0")
		job, err := waitJobFinished(ctx, v, srv, macD)
		if err != nil {
			t.Fatal(err)
		}
		v.stop()
		checkSignedKernelJob(t, srv, v, macD, job)
		j := checkOneJob(t, srv, macD, store.KindImageCapture, "capture-"+labSBImage)
		if j != nil && (j.Image != labSBImage || j.BytesTotal <= 0 || j.BytesDone != j.BytesTotal) {
			t.Errorf("job %d: image %q, progress %d/%d bytes, want %q and done == total > 0", j.ID, j.Image, j.BytesDone, j.BytesTotal, labSBImage)
		}
		found := false
		for _, im := range srv.images().Images {
			if im.Name != labSBImage {
				continue
			}
			found = true
			if im.Logical != uefiDiskSize || len(im.Partitions) != 2 {
				t.Errorf("image %s: logical size %d, partitions %+v; want %d bytes, 2 partitions (ESP, root)", im.Name, im.Logical, im.Partitions, uefiDiskSize)
			}
		}
		if !found {
			t.Fatalf("image list does not show %s", labSBImage)
		}
	})

	// (e) restore onto a blank disk of a second Secure Boot VM.
	t.Run("restore", func(t *testing.T) {
		if !captured {
			t.Skip("no captured image")
		}
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		defer cancel()
		target := filepath.Join(l.Dir, "sb-restore.img")
		if err := createSparse(target, uefiDiskSize); err != nil {
			t.Fatal(err)
		}
		srv.mustCLI("device", "restore", macE, "--image", labSBImage)
		v := secureBootVM(t, l, "sb-restore", macE,
			"-drive", "file="+target+",if=none,format=raw,id=d0", "-device", "virtio-blk-pci,drive=d0")
		job, err := waitJobFinished(ctx, v, srv, macE)
		if err != nil {
			t.Fatal(err)
		}
		// The agent reboots after the job; QEMU exits (-no-reboot). The
		// disk is checked only once QEMU is gone.
		if err := v.waitExit(ctx); err != nil {
			t.Fatal(err)
		}
		checkSignedKernelJob(t, srv, v, macE, job)
		j := checkOneJob(t, srv, macE, store.KindImageRestore, "restore-"+labSBImage)
		if j != nil && (j.Image != labSBImage+"@1" || j.BytesTotal <= 0 || j.BytesDone != j.BytesTotal) {
			t.Errorf("job %d: image %q, progress %d/%d bytes, want %s@1 and done == total > 0", j.ID, j.Image, j.BytesDone, j.BytesTotal, labSBImage)
		}
		loader := `\` + strings.ReplaceAll(uefiLoader, "/", `\`)
		has, err := nvramHasLoader(filepath.Join(l.Dir, "sb-restore-OVMF_VARS_4M.ms.fd"), loader)
		if err != nil {
			t.Fatal(err)
		}
		if !has {
			t.Errorf("the VM's NVRAM holds no boot option naming %s", loader)
		}
		checkUEFIDisk(t, target, src)
	})
}

// checkSBLocalBoot asserts that the device took the Secure Boot path and
// was sent to its local disk.
func checkSBLocalBoot(t *testing.T, srv *prebootServer, mac string) {
	t.Helper()
	d := srv.showDevice(mac)
	if d.Decision == nil || d.Decision.BootPath == nil || !d.Decision.BootPath.SecureBoot || d.Decision.BootPath.Program != bootfiles.ShimName {
		t.Errorf("device show: decision %+v, want the Secure Boot path", d.Decision)
	}
	for _, want := range []struct{ kind, substr string }{
		{store.EventDHCP, "→ " + bootfiles.ShimName + " (Secure Boot path"},
		{store.EventLocalBoot, "Secure Boot path"},
	} {
		if !d.eventMatching(want.kind, want.substr) {
			t.Errorf("no %s event with %q: %s", want.kind, want.substr, d.eventSummary())
		}
	}
}
