package policy

import (
	"strings"
	"testing"

	"github.com/preboot/preboot/store"
)

// TestLocalBootGRUB: a device assigned a local-boot bundle with method
// grub gets a script that chains the staged GRUB on UEFI (and sanboots on
// BIOS); GRUB's configuration request for the device then finds the
// disk's loaders, shim before a distribution's GRUB before the fallback
// path, and holds nothing the client sent.
func TestLocalBootGRUB(t *testing.T) {
	e := newEngine(t, "never")
	stageFakeSigned(t, e)
	grub := mkBundle(t, e.Store, "local-grub", store.KindLocalBoot, `{"method":"grub"}`)
	assign(t, e.Store, store.Assignment{BundleID: grub.ID, MAC: mac})

	// The serial is the client's text: it must not reach either config.
	req := strings.Replace(efiFirst, "serial=SN%201", "serial=%27%3Bexit%3Becho%20X", 1)
	body := get(t, e, req)
	mustContain(t, body, "bundle local-grub boots the local disk (method grub)", grubChain("10.0.0.1"), "set netX/next-server 10.0.0.1\n")
	if strings.Contains(body, ";exit;echo X") {
		t.Errorf("script holds client text:\n%s", body)
	}
	if !strings.HasSuffix(body, sanbootLocal) {
		t.Errorf("script does not end with the BIOS fallback (sanboot):\n%s", body)
	}
	// Every UEFI step is skipped on BIOS.
	for _, line := range strings.Split(strings.TrimSuffix(grubChain(""), sanbootLocal), "\n") {
		if line != "" && !strings.HasPrefix(line, "iseq ${platform} pcbios || ") {
			t.Errorf("line %q runs on BIOS too", line)
		}
	}
	mustContain(t, grubChain(""), "set netX/next-server ${next-server}\n", "imgfetch --name preboot-grub /files/grubx64.efi ||\n", "imgexec --autofree preboot-grub ||\n", "|| exit 1\n")

	cfg, err := grubFile(t, e, "grub/grub.cfg-"+mac)
	if err != nil {
		t.Fatal(err)
	}
	shim := strings.Index(cfg, "/EFI/debian/shimx64.efi")
	dgrub := strings.Index(cfg, "/EFI/debian/grubx64.efi")
	fallback := strings.Index(cfg, "/EFI/BOOT/BOOTX64.EFI")
	if shim < 0 || dgrub < shim || fallback < dgrub {
		t.Errorf("loader order: shim at %d, grubx64 at %d, fallback at %d:\n%s", shim, dgrub, fallback, cfg)
	}
	if strings.Contains(cfg, "exit;echo") || strings.Contains(cfg, "SN 1") {
		t.Errorf("GRUB config holds client text:\n%s", cfg)
	}
	evs := events(t, e, store.EventLocalBoot)
	if len(evs) != 2 {
		t.Fatalf("localboot events %+v, want iPXE's and GRUB's", evs)
	}
}
