// Package bootmedia writes the manual-preboot medium: one hybrid ISO 9660
// image that boots the imaging environment (kernel + initrd) from a CD/DVD
// or, written to a USB stick with dd, from a disk, on BIOS and on UEFI
// machines — the seed's manual preboot (27.4.1) for sites without PXE.
//
// It drives Debian's maintained tools: xorriso (-as mkisofs) writes the
// ISO with two El Torito entries and an isohybrid MBR (isolinux's
// isohdpfx.bin) plus a GPT; BIOS boots isolinux (isolinux.bin,
// ldlinux.c32), UEFI boots a GRUB EFI program made with grub-mkimage
// (grub-efi-amd64-bin) from an EFI system partition image built with
// mtools (mformat, mmd, mcopy) and appended as partition 2.
//
// The kernel command line of both boot menus carries the server
// (preboot.server=URL), the pin of its TLS certificate (preboot.tls=) and
// preboot.media=1: the environment then asks the server for the
// machine's work itself (no job token on the command line).
package bootmedia

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/preboot/preboot/tlspin"
)

// Files the build needs from Debian packages (isolinux, syslinux-common,
// grub-efi-amd64-bin).
var (
	IsohdpfxPath  = "/usr/lib/ISOLINUX/isohdpfx.bin"
	IsolinuxPath  = "/usr/lib/ISOLINUX/isolinux.bin"
	LdlinuxPath   = "/usr/lib/syslinux/modules/bios/ldlinux.c32"
	GRUBModuleDir = "/usr/lib/grub/x86_64-efi"
)

// Tools are the programs Build runs (xorriso, grub-mkimage, mtools).
var Tools = []string{"xorriso", "grub-mkimage", "mformat", "mmd", "mcopy"}

// Packages are the Debian packages that hold the tools and files.
const Packages = "xorriso isolinux syslinux-common grub-efi-amd64-bin grub-common mtools"

// VolumeID is the ISO's volume label.
const VolumeID = "PREBOOT"

// MarkerFile is the file both boot loaders look for to find the medium.
const MarkerFile = "/preboot/media.txt"

// Options describe one medium.
type Options struct {
	Kernel string // the imaging environment's kernel (envbuild's DIR/kernel)
	Initrd string // its initrd
	Out    string // the image to write (replaced atomically)
	// Server is the Preboot server the environment asks for work
	// (https://HOST:8443 or http://HOST:8080); "" asks at the console.
	Server string
	// TLS is the pin of the server's certificate (sha256:HEX), required
	// with an https server.
	TLS string
	// Cmdline goes before the preboot.* parameters (console=, quiet).
	// Default: "quiet".
	Cmdline string
	// Serial makes the serial console (ttyS0, 115200 baud) the default
	// entry of both boot menus (the VM lab, headless servers); the other
	// entry stays one arrow key away.
	Serial bool
	// Timeout is the boot menus' timeout in seconds (default 5).
	Timeout int
	Logger  *slog.Logger
}

// CheckServer validates a server URL and its pin: a URL that does not
// parse, is not http(s), has no host or carries a path, query or
// credentials is refused, as is an https server without a valid pin.
func CheckServer(server, pin string) (string, error) {
	if pin != "" {
		if _, err := tlspin.Parse(pin); err != nil {
			return "", fmt.Errorf("TLS pin: %w", err)
		}
	}
	if server == "" {
		return "", nil
	}
	u, err := url.Parse(server)
	if err != nil {
		return "", fmt.Errorf("server URL %q: %w", server, err)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return "", fmt.Errorf("server URL %q: want http:// or https://", server)
	case u.Host == "" || u.Hostname() == "":
		return "", fmt.Errorf("server URL %q: no host", server)
	case u.User != nil:
		return "", fmt.Errorf("server URL %q: credentials do not belong in the URL", server)
	case strings.Trim(u.Path, "/") != "" || u.RawQuery != "" || u.Fragment != "":
		return "", fmt.Errorf("server URL %q: want only scheme, host and port (e.g. https://preboot.example:8443)", server)
	case strings.ContainsAny(u.Host, " \t\"'\\"):
		return "", fmt.Errorf("server URL %q: bad host", server)
	}
	if u.Scheme == "https" && pin == "" {
		return "", fmt.Errorf("server %s is https: give the pin of its certificate (sha256:HEX, the fingerprint the server logs at start and `preboot status` shows)", server)
	}
	return u.Scheme + "://" + u.Host, nil
}

// Cmdline is the kernel command line of the medium's default entry.
func Cmdline(base, server, pin string) string {
	parts := []string{}
	if base != "" {
		parts = append(parts, base)
	}
	if server != "" {
		parts = append(parts, "preboot.server="+server)
	}
	if pin != "" {
		parts = append(parts, "preboot.tls="+pin)
	}
	parts = append(parts, "preboot.media=1")
	return strings.Join(parts, " ")
}

// MissingTools lists what Build needs and this machine lacks.
func MissingTools() []string {
	var miss []string
	for _, t := range Tools {
		if _, err := exec.LookPath(t); err != nil {
			miss = append(miss, t)
		}
	}
	for _, f := range []string{IsohdpfxPath, IsolinuxPath, LdlinuxPath, filepath.Join(GRUBModuleDir, "linux.mod")} {
		if _, err := os.Stat(f); err != nil {
			miss = append(miss, f)
		}
	}
	return miss
}

// Build writes the hybrid image to opts.Out. The image is written next to
// it under a temporary name and renamed at the end: on any error nothing
// is left behind and an existing file is untouched.
func Build(ctx context.Context, opts Options) error {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	server, err := CheckServer(opts.Server, opts.TLS)
	if err != nil {
		return err
	}
	if opts.Out == "" {
		return errors.New("bootmedia: no output file")
	}
	for _, f := range []string{opts.Kernel, opts.Initrd} {
		if st, err := os.Stat(f); err != nil {
			return fmt.Errorf("bootmedia: imaging environment: %w (build it with `preboot env build`)", err)
		} else if !st.Mode().IsRegular() || st.Size() == 0 {
			return fmt.Errorf("bootmedia: imaging environment: %s is not a file with content", f)
		}
	}
	if miss := MissingTools(); len(miss) > 0 {
		return fmt.Errorf("bootmedia: missing %s (apt-get install %s)", strings.Join(miss, ", "), Packages)
	}
	if opts.Cmdline == "" {
		opts.Cmdline = "quiet"
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 5
	}
	stage, err := os.MkdirTemp(filepath.Dir(opts.Out), ".preboot-media-")
	if err != nil {
		return fmt.Errorf("bootmedia: %w", err)
	}
	defer os.RemoveAll(stage)
	root := filepath.Join(stage, "iso")
	cmdline := Cmdline(opts.Cmdline, server, opts.TLS)
	if err := stageTree(root, opts, cmdline); err != nil {
		return err
	}
	efiImg := filepath.Join(stage, "efiboot.img")
	if err := buildESP(ctx, stage, efiImg, opts); err != nil {
		return err
	}
	tmp := filepath.Join(stage, "out.iso")
	args := []string{"-as", "mkisofs",
		"-o", tmp,
		"-iso-level", "3", "-r", "-J", "-joliet-long",
		"-V", VolumeID,
		"-isohybrid-mbr", IsohdpfxPath,
		// BIOS: isolinux, with its boot info table.
		"-c", "isolinux/boot.cat",
		"-b", "isolinux/isolinux.bin", "-no-emul-boot", "-boot-load-size", "4", "-boot-info-table",
		// UEFI: the EFI system partition image, appended as partition 2
		// (a USB stick's ESP) and named by the second El Torito entry.
		"-eltorito-alt-boot",
		"-e", "--interval:appended_partition_2:all::", "-no-emul-boot",
		"-append_partition", "2", "0xef", efiImg,
		"-isohybrid-gpt-basdat",
		root,
	}
	if out, err := exec.CommandContext(ctx, "xorriso", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("bootmedia: xorriso: %w: %s", err, tail(out))
	}
	if err := os.Chmod(tmp, 0o644); err != nil {
		return fmt.Errorf("bootmedia: %w", err)
	}
	if err := os.Rename(tmp, opts.Out); err != nil {
		return fmt.Errorf("bootmedia: %w", err)
	}
	log.InfoContext(ctx, "boot medium written", "out", opts.Out, "server", server, "cmdline", cmdline)
	return nil
}

// stageTree lays out the ISO's files.
func stageTree(root string, opts Options, cmdline string) error {
	files := map[string]string{ // destination → source
		"isolinux/isolinux.bin": IsolinuxPath,
		"isolinux/ldlinux.c32":  LdlinuxPath,
		"boot/kernel":           opts.Kernel,
		"boot/initrd":           opts.Initrd,
	}
	for dst, src := range files {
		if err := copyFile(src, filepath.Join(root, dst)); err != nil {
			return err
		}
	}
	texts := map[string]string{
		"isolinux/isolinux.cfg":             isolinuxConfig(cmdline, opts),
		"boot/grub/grub.cfg":                grubConfig(cmdline, opts),
		strings.TrimPrefix(MarkerFile, "/"): "Preboot manual preboot medium\nkernel command line: " + cmdline + "\n",
	}
	for dst, text := range texts {
		p := filepath.Join(root, dst)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fmt.Errorf("bootmedia: %w", err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			return fmt.Errorf("bootmedia: %w", err)
		}
	}
	return nil
}

const (
	serialConsole = "console=tty0 console=ttyS0,115200" // /dev/console: the serial port
	screenConsole = "console=ttyS0,115200 console=tty0" // /dev/console: the screen
)

// entries are the two boot entries: label, console parameters; the first
// is the default.
func entries(serial bool) [][2]string {
	screen := [2]string{"Preboot (screen and keyboard)", screenConsole}
	ser := [2]string{"Preboot (serial console ttyS0)", serialConsole}
	if serial {
		return [][2]string{ser, screen}
	}
	return [][2]string{screen, ser}
}

func isolinuxConfig(cmdline string, opts Options) string {
	var b strings.Builder
	fmt.Fprintf(&b, "SERIAL 0 115200\nPROMPT 1\nTIMEOUT %d\nDEFAULT preboot0\nSAY Preboot manual preboot: Enter starts the first entry, \"preboot1\" the second.\n", opts.Timeout*10)
	for i, e := range entries(opts.Serial) {
		fmt.Fprintf(&b, "SAY   preboot%d  %s\nLABEL preboot%d\n  KERNEL /boot/kernel\n  INITRD /boot/initrd\n  APPEND %s %s\n", i, e[0], i, e[1], cmdline)
	}
	return b.String()
}

func grubConfig(cmdline string, opts Options) string {
	var b strings.Builder
	fmt.Fprintf(&b, "serial --unit=0 --speed=115200\nterminal_input console serial\nterminal_output console serial\nset timeout=%d\nset default=0\n", opts.Timeout)
	for _, e := range entries(opts.Serial) {
		fmt.Fprintf(&b, "menuentry '%s' {\n  linux /boot/kernel %s %s\n  initrd /boot/initrd\n}\n", e[0], e[1], cmdline)
	}
	return b.String()
}

// grubEmbedded is the configuration built into BOOTX64.EFI: find the
// medium (CD or USB disk) by its marker file and read its grub.cfg.
const grubEmbedded = "search --no-floppy --set=root --file " + MarkerFile + "\nset prefix=($root)/boot/grub\nconfigfile ($root)/boot/grub/grub.cfg\n"

// grubModules are built into BOOTX64.EFI (no module loading from the
// medium).
var grubModules = []string{"part_gpt", "part_msdos", "fat", "iso9660", "search", "search_fs_file", "normal", "configfile",
	"linux", "echo", "test", "serial", "terminal", "sleep", "reboot", "halt", "efi_gop", "all_video", "gzio", "minicmd"}

// buildESP writes the EFI system partition image: a FAT file system with
// \EFI\BOOT\BOOTX64.EFI (GRUB).
func buildESP(ctx context.Context, stage, img string, opts Options) error {
	cfg := filepath.Join(stage, "grub-embedded.cfg")
	if err := os.WriteFile(cfg, []byte(grubEmbedded), 0o644); err != nil {
		return fmt.Errorf("bootmedia: %w", err)
	}
	efi := filepath.Join(stage, "BOOTX64.EFI")
	args := append([]string{"-O", "x86_64-efi", "-d", GRUBModuleDir, "-p", "/boot/grub", "-c", cfg, "-o", efi}, grubModules...)
	if out, err := exec.CommandContext(ctx, "grub-mkimage", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("bootmedia: grub-mkimage: %w: %s", err, tail(out))
	}
	st, err := os.Stat(efi)
	if err != nil {
		return fmt.Errorf("bootmedia: %w", err)
	}
	// Whole MiB, with room for the FAT and directories: 64 heads × 32
	// sectors per track = 1 MiB per cylinder.
	mib := st.Size()/(1<<20) + 2
	f, err := os.Create(img)
	if err != nil {
		return fmt.Errorf("bootmedia: %w", err)
	}
	if err := f.Truncate(mib << 20); err != nil {
		f.Close()
		return fmt.Errorf("bootmedia: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("bootmedia: %w", err)
	}
	for _, c := range [][]string{
		{"mformat", "-i", img, "-T", fmt.Sprint(mib * 2048), "-h", "64", "-s", "32", "-v", "PREBOOTEFI", "::"},
		{"mmd", "-i", img, "::/EFI", "::/EFI/BOOT"},
		{"mcopy", "-i", img, efi, "::/EFI/BOOT/BOOTX64.EFI"},
	} {
		cmd := exec.CommandContext(ctx, c[0], c[1:]...)
		cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("bootmedia: %s: %w: %s", c[0], err, tail(out))
		}
	}
	return nil
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("bootmedia: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Errorf("bootmedia: %w", err)
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		return fmt.Errorf("bootmedia: %w", err)
	}
	return nil
}

func tail(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 800 {
		s = "…" + s[len(s)-800:]
	}
	return s
}
