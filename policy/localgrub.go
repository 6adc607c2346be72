package policy

import "github.com/preboot/preboot/bootfiles"

// The local-boot method "grub", for UEFI firmware where iPXE's exit hangs,
// loops or stops in the boot manager's menu, and for disks whose loader
// the firmware's boot order does not name (fresh NVRAM, no
// \EFI\BOOT\BOOTX64.EFI): iPXE chains Debian's network GRUB (the one the
// Secure Boot path stages; signed, but it runs just as well with Secure
// Boot off) from the server. GRUB reads its configuration from the server
// over TFTP — grub/grub.cfg, then grub/grub.cfg-<mac> — and the boot
// policy answers it as on the Secure Boot path: for a device that is to
// boot its disk, the configuration grubLocal writes, which searches every
// disk's ESP for the known loaders (grubLoaders) and chainloads the first
// one found. The configuration holds no text from the client.
//
// On BIOS there is no ESP: the method is sanboot of drive 0x80.

// grubChainLocal is the iPXE commands of the method. The relative URL is
// resolved against the boot script's own (HTTP or HTTPS) address. When
// GRUB cannot be loaded (not staged: --copy-debian-files off, or no Debian
// mirror) or returns (no loader found), iPXE leaves for the firmware with
// an error status so that the firmware tries its next boot option.
const grubChainLocal = "iseq ${platform} pcbios || echo Preboot: chaining GRUB to start the boot loader of the disk's ESP\n" +
	"iseq ${platform} pcbios || chain --autofree /files/" + bootfiles.GRUBName + " ||\n" +
	"iseq ${platform} pcbios || echo Preboot: GRUB found no boot loader or could not be loaded, back to the firmware\n" +
	"iseq ${platform} pcbios || exit 1\n" +
	sanbootLocal
