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

// TestSecureBoot boots OVMF with Secure Boot enforced through Preboot,
// next to a site DHCP server whose next-server is Preboot for the Secure
// Boot machines (Debian's signed GRUB ignores proxyDHCP):
//
//	(a) unsigned ipxe.efi is refused: the lab enforces Secure Boot;
//	(b) with nothing assigned, shim → GRUB → its generated config chains
//	    the disk's own shim → GRUB (local boot);
//	(c) an inventory job runs in the imaging environment on Debian's
//	    signed kernel and succeeds.
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
	macA, macB, macC := randomMAC(), randomMAC(), randomMAC()
	// Only the Secure Boot machines get next-server = Preboot (and the
	// shim's name) from the site's DHCP server; macA gets plain DHCP and
	// Preboot's proxyDHCP answer.
	l.startSiteDHCP("--dhcp-host="+macB+",set:sb", "--dhcp-host="+macC+",set:sb",
		"--dhcp-boot=tag:sb,"+bootfiles.ShimName+",preboot,"+labServerIP)
	srv := l.startPreboot(serverOptions{Extra: []string{"--imaging-cmdline", "console=ttyS0,115200"}}, art)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	if err := srv.proc.waitLog(ctx, "Secure Boot path ready"); err != nil {
		cancel()
		t.Fatal(err)
	}
	cancel()
	buildImagingEnv(t, srv, art.Kernel)
	srv.mustCLI("settings", "set", "--secure-boot-device", macA+"=off",
		"--secure-boot-device", macB+"=on", "--secure-boot-device", macC+"=on")
	srv.mustCLI("bundle", "create", "inv", "--kind", "inventory")
	srv.mustCLI("device", "add", macC)
	srv.mustCLI("assign", "inv", "--device", macC, "--once")

	disk := filepath.Join(l.Dir, "sb-esp.img")
	dctx, dcancel := context.WithTimeout(context.Background(), 2*time.Minute)
	buildSignedESPDisk(dctx, t, disk)
	dcancel()

	deadline := imagingDeadlineFor()
	ctx, cancel = context.WithTimeout(context.Background(), deadline)
	defer cancel()

	// (a) and (b) together: both are short.
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
	b := srv.showDevice(macB)
	if b.Decision == nil || b.Decision.BootPath == nil || !b.Decision.BootPath.SecureBoot || b.Decision.BootPath.Program != bootfiles.ShimName {
		t.Errorf("(b) device show: decision %+v, want the Secure Boot path", b.Decision)
	}
	for _, want := range []struct{ kind, substr string }{
		{store.EventDHCP, "→ " + bootfiles.ShimName + " (Secure Boot path"},
		{store.EventLocalBoot, "Secure Boot path"},
	} {
		if !b.eventMatching(want.kind, want.substr) {
			t.Errorf("(b) no %s event with %q: %s", want.kind, want.substr, b.eventSummary())
		}
	}

	// (c) the inventory job on the signed kernel.
	cancel()
	ctx, cancel = context.WithTimeout(context.Background(), deadline)
	defer cancel()
	vmC := secureBootVM(t, l, "sb-inventory", macC)
	var job *store.Job
	for job == nil {
		js, err := srv.jobs(ctx, macC)
		if err != nil {
			t.Fatal(err)
		}
		if len(js) > 0 && (js[0].State == store.JobSucceeded || js[0].State == store.JobFailed) {
			job = &js[0]
			break
		}
		if vmC.exited() && len(js) == 0 {
			t.Fatalf("(c) VM exited before its job started")
		}
		select {
		case <-ctx.Done():
			srv.logJobs(t, macC)
			t.Fatalf("(c) no finished inventory job: %v", ctx.Err())
		case <-time.After(time.Second):
		}
	}
	if job.State != store.JobSucceeded {
		srv.logJobs(t, macC)
		t.Fatalf("(c) inventory job %d: %s %q", job.ID, job.State, job.Error)
	}
	vmC.stop()
	out := vmC.serial()
	for _, want := range []string{"Kernel is locked down from EFI Secure Boot", `msg="firmware Secure Boot" job=` + fmt.Sprint(job.ID) + " enabled=true lockdown=integrity"} {
		if !strings.Contains(out, want) {
			t.Errorf("(c) console lacks %q", want)
		}
	}
	c := srv.showDevice(macC)
	if len(c.Info) == 0 {
		t.Errorf("(c) no inventory reported")
	}
	if !c.eventMatching(store.EventWork, "on the signed kernel") {
		t.Errorf("(c) no work event for the Secure Boot path: %s", c.eventSummary())
	}
	if !c.eventMatching(store.EventSecureBoot, store.SecureBootStateOn+" (imaging environment") {
		t.Errorf("(c) the imaging environment's Secure Boot state was not recorded: %s", c.eventSummary())
	}
}
