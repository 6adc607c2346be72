// Package policy decides what a network-booting machine does next — the
// seed's novell-zmgprebootpolicy. The protocol servers ask it: proxyDHCP
// which boot program to hand out, TFTP for generated pxelinux configs, and
// iPXE over HTTP for its boot script (work, menu or local boot). The answers
// come from the store; the policy itself keeps no state.
package policy

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/iana"

	"github.com/preboot/preboot/bootfiles"
	"github.com/preboot/preboot/bundle"
	"github.com/preboot/preboot/config"
	"github.com/preboot/preboot/jobs"
	"github.com/preboot/preboot/proxydhcp"
	"github.com/preboot/preboot/store"
)

// Engine is the boot policy. Its zero value is not usable: set Store and
// Config.
type Engine struct {
	Store  store.Store
	Boot   config.Boot
	Logger *slog.Logger
	// DefaultSettings apply until an administrator stores settings (the
	// configuration file's menu, local boot for unregistered devices).
	DefaultSettings store.Settings
	// TFTPRoot is where boot programs live; used to check that an optional
	// program (ARM64) exists before handing it out.
	TFTPRoot string
	// HTTPPort is the port of the HTTP server, used to build the boot URL
	// handed to iPXE over DHCP.
	HTTPPort string
	// Jobs runs imaging jobs; Imaging says where the imaging environment is.
	Jobs    *jobs.Service
	Imaging config.Imaging
	// AgentServer, when set, returns the base URL the imaging agent uses
	// (e.g. "https://10.0.0.2:8443") for a boot request that came to
	// host (the request's Host: the address the device reached); nil or
	// "": the boot request's own base.
	AgentServer func(host string) string
	// AgentFingerprint is the SHA-256 pin ("sha256:HEX") of the server's
	// TLS certificate the agent accepts; empty: none (plain HTTP).
	AgentFingerprint string
	// PeerServers are the agent base URLs of the other servers sharing
	// this one's database and image store; they follow this server's on
	// preboot.server= so that the agent goes on with them when it dies.
	PeerServers []string
	// ImageServer, when set, returns the base URL and TLS pin of the
	// server a restore's agent handed out to clientIP fetches its image
	// data from (a site server for a device of a site's subnet:
	// preboot.images=URL preboot.images.tls=PIN); "": this server's.
	ImageServer func(ctx context.Context, clientIP string) (url, pin string)
	// Now returns the current time (tests may fix it).
	Now func() time.Time
	// GRUBConfigWait: how long after a Secure Boot client fetched GRUB the
	// server waits for its configuration request before it records that
	// the site DHCP's next-server is wrong (0: DefaultGRUBConfigWait).
	GRUBConfigWait time.Duration

	cache cache
	grub  grubWatch
}

// SettingsFromConfig are the settings a server starts with.
func SettingsFromConfig(m config.Menu) store.Settings {
	return store.Settings{
		Menu:         store.Menu{Mode: m.Mode, Hotkey: m.Hotkey, Timeout: store.Duration(m.Timeout), Title: m.Title, Shell: true},
		Unregistered: store.Unregistered{Action: store.UnregisteredLocal},
	}
}

func (e *Engine) logger() *slog.Logger {
	if e.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return e.Logger
}

func (e *Engine) now() time.Time {
	if e.Now != nil {
		return e.Now()
	}
	return time.Now()
}

// ArchName is the short, stable name Preboot uses for a firmware
// architecture (option 93) in the store and in logs.
func ArchName(a iana.Arch) string {
	switch a {
	case iana.INTEL_X86PC:
		return "bios"
	case iana.EFI_IA32:
		return "efi-ia32"
	case iana.EFI_X86_64, iana.EFI_BC:
		return "efi-x64"
	case iana.EFI_ARM32:
		return "efi-arm32"
	case iana.EFI_ARM64:
		return "efi-arm64"
	case iana.EFI_X86_64_HTTP:
		return "efi-x64-http"
	case iana.EFI_ARM64_HTTP:
		return "efi-arm64-http"
	default:
		return fmt.Sprintf("arch-%d", uint16(a))
	}
}

// BootFor implements proxydhcp.Booter: it picks the boot program for the
// client's firmware, or sends an iPXE client to the HTTP boot script.
func (e *Engine) BootFor(ctx context.Context, c proxydhcp.Client) (proxydhcp.Boot, error) {
	mac := c.MAC.String()
	arch := ArchName(c.Arch)
	// The DHCP stage knows little, but enough to register the device the
	// first time it is seen. The sighting may read the policy version too.
	ctx = store.WithVersionSlot(ctx)
	dev, _, err := e.Store.SeeDevice(ctx, store.Sighting{MAC: mac, Arch: archIfFirmware(c), UUID: uuidString(c.UUID), Interface: c.Interface, Time: e.now(), FillOnly: true})
	if err != nil {
		return proxydhcp.Boot{}, fmt.Errorf("policy for %s: %w", mac, err)
	}
	d, err := e.Decide(ctx, dev)
	if err != nil {
		return proxydhcp.Boot{}, fmt.Errorf("policy for %s: %w", mac, err)
	}
	if d.Action == ActionIgnore {
		return proxydhcp.Boot{}, fmt.Errorf("%s: %s: %w", mac, d.Reason, proxydhcp.ErrIgnore)
	}
	pxelinux := false
	if d.Action == ActionBundle && d.Bundle.Kind == store.KindOSInstall {
		var p bundle.OSInstall
		pxelinux = decodeParams(*d.Bundle, &p) == nil && p.Loader == store.LoaderPXELinux
	}

	var b proxydhcp.Boot
	note := ""
	switch {
	case pxelinux && c.Arch == iana.INTEL_X86PC:
		// The seed's phases 5–7: pxelinux.0 over TFTP, then a generated
		// config. BIOS only: pxelinux.0 is a BIOS program.
		b.Filename = e.Boot.PXELinux
	case c.IsIPXE():
		// Already iPXE (QEMU's ROM, or the iPXE we handed out): go to the
		// HTTP policy, never chain-load iPXE again.
		b.Filename = e.scriptURL(c)
	case c.Arch == iana.EFI_X86_64_HTTP || c.IsHTTPClient():
		if c.Arch != iana.EFI_X86_64_HTTP {
			return proxydhcp.Boot{}, fmt.Errorf("%s: HTTP boot for %s: %w", mac, arch, proxydhcp.ErrIgnore)
		}
		b.Filename = "http://" + hostPort(c.ServerIP.String(), e.HTTPPort) + "/files/" + e.Boot.UEFIHTTP
		b.HTTPClient = true
	case c.Arch == iana.INTEL_X86PC:
		b.Filename = e.Boot.BIOS
	case c.Arch == iana.EFI_X86_64 || c.Arch == iana.EFI_BC:
		sb, why, err := e.secureBoot(ctx, dev, d)
		if err != nil {
			return proxydhcp.Boot{}, fmt.Errorf("policy for %s: %w", mac, err)
		}
		b.Filename = e.Boot.UEFI
		if sb {
			if !e.exists(bootfiles.ShimName) || !e.exists(bootfiles.GRUBName) {
				// Never an unsigned program instead: the firmware would
				// refuse it anyway.
				msg := fmt.Sprintf("needs the Secure Boot path (%s) but Debian's signed shim and GRUB are not staged in the TFTP root (see the server log; apt-get install shim-signed grub-efi-amd64-signed, or let the server reach a Debian mirror): not answered", why)
				if err := e.event(ctx, mac, store.EventSecureBoot, msg); err != nil {
					return proxydhcp.Boot{}, fmt.Errorf("policy for %s: %w", mac, err)
				}
				e.logger().ErrorContext(ctx, "Secure Boot programs missing", "mac", mac, "why", why)
				return proxydhcp.Boot{}, fmt.Errorf("%s: %w: %w", mac, bootfiles.ErrSignedMissing, proxydhcp.ErrIgnore)
			}
			b.Filename = bootfiles.ShimName
			e.shimHandedOut(mac)
			note = " (Secure Boot path: shim → GRUB; " + why + ")"
		}
	case c.Arch == iana.EFI_ARM64 && e.exists(e.Boot.ARM64):
		b.Filename = e.Boot.ARM64
	default:
		e.logger().InfoContext(ctx, "no boot program for this firmware", "mac", mac, "arch", arch, "vendor_class", c.VendorClass)
		return proxydhcp.Boot{}, fmt.Errorf("%s: no boot program for %s: %w", mac, arch, proxydhcp.ErrIgnore)
	}
	msg := fmt.Sprintf("port %d, %s, %s → %s", c.Port, arch, clientKind(c), b.Filename) + note
	if err := e.event(ctx, mac, store.EventDHCP, msg); err != nil {
		return proxydhcp.Boot{}, fmt.Errorf("policy for %s: %w", mac, err)
	}
	return b, nil
}

func archIfFirmware(c proxydhcp.Client) string {
	if !c.HasArch {
		return ""
	}
	return ArchName(c.Arch)
}

func clientKind(c proxydhcp.Client) string {
	if c.IsIPXE() {
		return "iPXE"
	}
	if c.VendorClass != "" {
		return strings.SplitN(c.VendorClass, ":", 2)[0]
	}
	return "unknown"
}

// scriptURL is the first URL an iPXE client fetches. It carries no
// parameters (DHCP file names are not expanded by iPXE); the script it
// returns chains to the parameterised one.
func (e *Engine) scriptURL(c proxydhcp.Client) string {
	return "http://" + hostPort(c.ServerIP.String(), e.HTTPPort) + "/boot.ipxe"
}

func hostPort(host, port string) string {
	if port == "" || port == "80" {
		if strings.Contains(host, ":") {
			return "[" + host + "]" // an IPv6 address (DHCPv6 clients)
		}
		return host
	}
	return net.JoinHostPort(host, port)
}

func (e *Engine) exists(name string) bool {
	if name == "" || e.TFTPRoot == "" {
		return false
	}
	fi, err := os.Stat(filepath.Join(e.TFTPRoot, filepath.FromSlash(path.Clean("/"+name))))
	return err == nil && fi.Mode().IsRegular()
}

// uuidString formats option 97 (a type byte 0 then 16 bytes) as the SMBIOS
// UUID text iPXE's ${uuid} prints, so both stages record the same value.
func uuidString(b []byte) string {
	if len(b) == 17 && b[0] == 0 {
		b = b[1:]
	}
	if len(b) != 16 {
		return ""
	}
	// SMBIOS stores the first three fields little-endian; PXE clients send
	// the raw SMBIOS bytes.
	return fmt.Sprintf("%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
		b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15])
}
