package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// guestCmdline is the kernel command line for the marker initrd: serial
// console, the test's token, and the TFTP server the guest probes.
func guestCmdline(token, server, control string) string {
	parts := []string{"console=ttyS0", "panic=-1", "preboot_e2e_token=" + token}
	if server != "" {
		parts = append(parts, "preboot_e2e_server="+server)
	}
	if control != "" {
		parts = append(parts, "preboot_e2e_control="+control)
	}
	return strings.Join(parts, " ")
}

// TestLabHarness checks the lab without Preboot: the kernel and marker
// initrd boot directly (QEMU -kernel), get an address from the lab's
// dnsmasq and probe dnsmasq's own TFTP server (a file that exists, and
// boot/updateDrivers.tgz that does not). If this fails, the harness is
// broken, not Preboot.
func TestLabHarness(t *testing.T) {
	requireRoot(t)
	for _, tc := range []struct {
		name string
		uefi bool
		nic  string
	}{
		{"bios-e1000", false, "e1000,romfile="},
		{"uefi-virtio", true, "virtio-net-pci,romfile="},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			art, err := sharedArtifacts()
			if err != nil {
				t.Fatal(err)
			}
			l := newLab(t, separateDHCP)
			root := filepath.Join(l.Dir, "tftproot")
			if err := os.MkdirAll(filepath.Join(root, "boot"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(root, "control.txt"), []byte("control file\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			initrd := filepath.Join(l.Dir, "initrd")
			if err := os.WriteFile(initrd, art.Initrd, 0o644); err != nil {
				t.Fatal(err)
			}
			dhcp := l.startSiteDHCP("--enable-tftp", "--tftp-root="+root)
			token := randomHex(8)
			args := append(l.addTap(tc.nic),
				"-kernel", art.Kernel.Vmlinuz,
				"-initrd", initrd,
				"-append", guestCmdline(token, labDHCPIP, "control.txt"))
			v := startVM(t, vmConfig{Name: "guest", Dir: l.Dir, Netns: l.NetNS, UEFI: tc.uefi, Args: args})
			ctx, cancel := context.WithTimeout(context.Background(), 180*time.Second)
			defer cancel()
			if err := v.waitFor(ctx, guestMarker+" token="+token, guestDone); err != nil {
				t.Fatal(err)
			}
			out := v.serial()
			for _, want := range []string{"PREBOOT-E2E-IP 10.123.0.", guestTFTPControlOK + " control.txt 13 bytes", guestUDMissing + ": tftp: server error: (1)"} {
				if !strings.Contains(out, want) {
					t.Errorf("console lacks %q", want)
				}
			}
			if strings.Contains(out, guestUDPresent) {
				t.Errorf("console says %s", guestUDPresent)
			}
			if err := v.waitExit(ctx); err != nil {
				t.Error(err)
			}
			if !strings.Contains(dhcp.logText(), "DHCPACK(eth0)") {
				t.Errorf("dnsmasq log has no DHCPACK")
			}
		})
	}
}
