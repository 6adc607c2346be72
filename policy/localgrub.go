package policy

import (
	"context"
	"net/netip"

	"github.com/preboot/preboot/bootfiles"
)

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

// scriptServerKey carries the host the boot script was asked from.
type scriptServerKey struct{}

func withScriptServer(ctx context.Context, host string) context.Context {
	return context.WithValue(ctx, scriptServerKey{}, host)
}

// scriptServer is the IP address the boot script was asked from, "" when
// it is unknown or a name.
func scriptServer(ctx context.Context) string {
	h, _ := ctx.Value(scriptServerKey{}).(string)
	a, err := netip.ParseAddr(h)
	if err != nil || !a.Unmap().Is4() {
		return ""
	}
	return a.Unmap().String()
}

// grubChain is the iPXE commands of the method. GRUB takes its TFTP server
// from the DHCP acknowledgement iPXE hands it (the PXE base code protocol
// iPXE installs), whose server address is the site DHCP server's
// next-server: the address of this server (server, the host the script
// was asked from; else iPXE's next-server, which prefers proxyDHCP's) is
// set on the network device before GRUB starts so that GRUB asks this
// server. GRUB is fetched first: the relative URL is resolved against the
// boot script's own (HTTP or HTTPS) address, and setting next-server
// makes iPXE's working URI tftp://next-server/. When GRUB cannot be loaded (not staged: --copy-debian-files
// off, or no Debian mirror) or returns (no loader found), iPXE leaves for
// the firmware with an error status so that the firmware tries its next
// boot option.
func grubChain(server string) string {
	if server == "" {
		server = "${next-server}"
	}
	return "iseq ${platform} pcbios || echo Preboot: chaining GRUB to start the boot loader of the disk's ESP\n" +
		"iseq ${platform} pcbios || imgfetch --name preboot-grub /files/" + bootfiles.GRUBName + " ||\n" +
		"iseq ${platform} pcbios || set netX/next-server " + server + "\n" +
		"iseq ${platform} pcbios || imgexec --autofree preboot-grub ||\n" +
		"iseq ${platform} pcbios || echo Preboot: GRUB found no boot loader or could not be loaded, back to the firmware\n" +
		"iseq ${platform} pcbios || exit 1\n" +
		sanbootLocal
}
