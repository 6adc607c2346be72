package cli

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/preboot/preboot/envbuild"
)

// newEnv is `preboot env`: the imaging environment (kernel + initrd).
func newEnv(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "env",
		Short: "Build the imaging environment (kernel and initrd the agent runs in)",
	}
	var (
		out, kernelVersion, cache, agent, busybox string
		extra                                     []string
	)
	build := &cobra.Command{
		Use:   "build --out DIR",
		Short: "Build kernel + initrd: Debian's kernel, drivers, busybox, and this binary as /init",
		Long: "Downloads Debian's kernel (apt-get download linux-image-<version>-amd64; cached), and writes\n" +
			"DIR/kernel, DIR/initrd (zstd newc cpio with the agent as /init) and DIR/env.json.\n" +
			"Serve DIR as the boot/ directory of the TFTP/HTTP root (boot/kernel, boot/initrd).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger := slog.New(slog.NewTextHandler(g.stderr, nil))
			if agent == "" {
				self, err := os.Executable()
				if err != nil {
					return fmt.Errorf("find this binary (use --agent): %w", err)
				}
				agent = self
			}
			if static, err := envbuild.IsStatic(agent); err != nil {
				return fmt.Errorf("agent %s: %w", agent, err)
			} else if !static {
				logger.Warn("the agent binary is not statically linked and will not run in the initrd; rebuild with CGO_ENABLED=0 or pass --agent", "agent", agent)
			}
			if cache == "" {
				dir, err := os.UserCacheDir()
				if err != nil {
					return fmt.Errorf("no cache directory (use --cache): %w", err)
				}
				cache = filepath.Join(dir, "preboot", "env")
			}
			res, err := envbuild.Build(cmd.Context(), envbuild.Options{
				CacheDir:      cache,
				OutDir:        out,
				KernelVersion: kernelVersion,
				AgentBinary:   agent,
				ExtraModules:  extra,
				Busybox:       busybox,
				Logger:        logger,
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "kernel  %s (Linux %s)\ninitrd  %s (%d modules)\n", res.Kernel, res.KernelVersion, res.Initrd, len(res.Modules))
			return nil
		},
	}
	build.Flags().StringVar(&out, "out", "", "output directory (required)")
	build.Flags().StringVar(&kernelVersion, "kernel-version", "", "Debian kernel version, e.g. 6.1.0-56-amd64 (default: the one linux-image-amd64 depends on)")
	build.Flags().StringVar(&cache, "cache", "", "kernel cache directory (default: $XDG_CACHE_HOME/preboot/env)")
	build.Flags().StringVar(&agent, "agent", "", "static preboot binary to use as /init (default: this binary)")
	build.Flags().StringSliceVar(&extra, "extra-module", nil, "additional kernel module (name or alias), repeatable")
	build.Flags().StringVar(&busybox, "busybox", "/bin/busybox", "busybox-static binary for the maintenance shell")
	_ = build.MarkFlagRequired("out")
	cmd.AddCommand(build, newEnvMedia(g, "iso"), newEnvMedia(g, "usb"))
	return cmd
}
