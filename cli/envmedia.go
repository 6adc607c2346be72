package cli

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/preboot/preboot/bootmedia"
)

// newEnvMedia is `preboot env iso` and `preboot env usb`: the manual
// preboot medium (one hybrid image: CD/DVD and USB disk, BIOS and UEFI).
func newEnvMedia(g *globals, use string) *cobra.Command {
	var (
		out, envDir, kernel, initrd, server, pin, cmdline string
		serial                                            bool
		timeout                                           int
	)
	what := map[string]string{
		"iso": "a bootable CD/DVD image (also a USB disk image: the file is a hybrid)",
		"usb": "a bootable USB disk image (write it with dd; also a CD/DVD image: the file is a hybrid)",
	}[use]
	c := &cobra.Command{
		Use:   use + " --out FILE [--server URL --tls-fingerprint sha256:HEX]",
		Short: "Build the manual preboot medium: " + what,
		Long: "Writes FILE: a hybrid ISO 9660 image that boots the imaging environment (kernel and initrd of\n" +
			"`preboot env build`) on BIOS and UEFI machines, from a CD/DVD or a USB stick (dd if=FILE of=/dev/sdX bs=4M).\n" +
			"Booted, it gets an address by DHCP, asks the server for the machine's work (registering it like a\n" +
			"PXE boot), runs it, or, with nothing assigned, shows the manual menu on the console.\n" +
			"--server is baked into the boot menus' kernel command line (without it, the medium asks at the console);\n" +
			"an https server needs the pin of its certificate (--tls-fingerprint, as the server logs it at start).\n" +
			"Needs Debian's " + bootmedia.Packages + ".\n" +
			"The server also serves one for itself at /files/preboot.iso.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if kernel == "" {
				kernel = filepath.Join(envDir, "kernel")
			}
			if initrd == "" {
				initrd = filepath.Join(envDir, "initrd")
			}
			if pin == "" {
				pin = os.Getenv("PREBOOT_TLS_FINGERPRINT")
			}
			logger := slog.New(slog.NewTextHandler(g.stderr, nil))
			err := bootmedia.Build(cmd.Context(), bootmedia.Options{
				Kernel: kernel, Initrd: initrd, Out: out, Server: server, TLS: pin,
				Cmdline: cmdline, Serial: serial, Timeout: timeout, Logger: logger,
			})
			if err != nil {
				return err
			}
			st, err := os.Stat(out)
			if err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "%s  %d MiB, hybrid ISO (CD/DVD and USB disk, BIOS and UEFI)\n", out, (st.Size()+(1<<20)-1)>>20)
			if server == "" {
				fmt.Fprintln(g.stdout, "no --server: the medium asks for the server's URL at the console")
			}
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&out, "out", "", "image file to write (required; replaced atomically)")
	f.StringVar(&envDir, "env", "var/tftp/boot", "directory of the imaging environment (`preboot env build --out DIR`)")
	f.StringVar(&kernel, "kernel", "", "the environment's kernel (default: ENV/kernel)")
	f.StringVar(&initrd, "initrd", "", "the environment's initrd (default: ENV/initrd)")
	f.StringVar(&server, "server", "", "Preboot server URL the medium asks for work, e.g. https://preboot.example:8443")
	f.StringVar(&pin, "tls-fingerprint", "", "pin of the https server's certificate, sha256:HEX (default: $PREBOOT_TLS_FINGERPRINT)")
	f.StringVar(&cmdline, "cmdline", "quiet", "kernel parameters before Preboot's own")
	f.BoolVar(&serial, "serial", false, "make the serial console (ttyS0, 115200) the boot menus' default entry")
	f.IntVar(&timeout, "timeout", 5, "boot menu timeout in seconds")
	_ = c.MarkFlagRequired("out")
	return c
}
