package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/preboot/preboot/store"
)

// TestLocalBootGRUB proves the local-boot method "grub" on the machine
// where exit cannot boot the disk: a UEFI VM (OVMF, fresh NVRAM) with
// Preboot's default ipxe.efi and the UEFI source disk, whose ESP holds
// only \EFI\debian\grubx64.efi (no fallback loader: the firmware finds
// nothing on the disk, TestSourceDiskUEFI/no-fallback). Assigned a
// local-boot bundle with method grub, iPXE chains Debian's network GRUB
// from the server, GRUB reads its configuration from Preboot over TFTP,
// finds the disk's loader on the ESP and chains it: the disk's GRUB and
// then its OS print their markers.
func TestLocalBootGRUB(t *testing.T) {
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
	if _, err := signedPrograms(); err != nil {
		t.Fatalf("Debian's signed GRUB: %v", err)
	}
	l := newLab(t, separateDHCP)
	srv := l.startPreboot(serverOptions{}, art) // ipxe.efi
	l.siteDHCP = l.startSiteDHCP()
	mac := randomMAC()
	srv.logOnFailure(t, nil)
	srv.mustCLI("bundle", "create", "local-grub", "--kind", store.KindLocalBoot, "--method", "grub")
	srv.mustCLI("assign", "local-grub", "--device", mac)

	v := uefiImagingVM(t, l, "localgrub", mac, src.Path, true)
	ctx, cancel := context.WithTimeout(context.Background(), uefiDeadline)
	defer cancel()
	start := time.Now()
	osLine := osMarker + " " + src.ID
	if err := v.waitFor(ctx, uefiGrubMark, osLine); err != nil {
		t.Fatalf("%v; console tail:\n%s", err, tailFile(v.SerialLog, 40))
	}
	t.Logf("ipxe.efi → GRUB → the disk's \\EFI\\debian\\grubx64.efi → the OS in %s", time.Since(start).Round(time.Second))
	out := v.serial()
	v.stop()
	if !strings.Contains(out, ovmfNoLoader) {
		t.Errorf("the firmware did not try the disk first (no %q): the proof needs a disk it cannot boot by itself", ovmfNoLoader)
	}
	if !strings.Contains(out, "Preboot: chaining (") || !strings.Contains(out, "/EFI/debian/grubx64.efi") {
		t.Errorf("console does not show GRUB chaining the disk's loader:\n%s", tailFile(v.SerialLog, 40))
	}

	qctx, qcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer qcancel()
	d, err := srv.deviceDetail(qctx, mac)
	if err != nil {
		t.Fatal(err)
	}
	if !d.eventMatching(store.EventLocalBoot, "(method grub)") {
		t.Errorf("no localboot event names the method grub; events:%s", d.eventSummary())
	}
	if !d.eventMatching(store.EventLocalBoot, "GRUB chains the disk's boot loader") {
		t.Errorf("no localboot event from GRUB's configuration request; events:%s", d.eventSummary())
	}
}
