package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/preboot/preboot/agent"
	"github.com/preboot/preboot/bundle"
	"github.com/preboot/preboot/failover"
	"github.com/preboot/preboot/image"
	"github.com/preboot/preboot/image/httpstore"
	"github.com/preboot/preboot/mcast"
	"github.com/preboot/preboot/tlspin"
)

// agentFlags are the flags capture and restore share.
type agentFlags struct {
	server, token, repo string
	tokenFile, tlsPin   string
	device, image       string
	logLevel            string
	quiet               bool
	// disk is the --disk-* rule that picks the device when --device is
	// not given.
	disk bundle.DiskRule
}

func (a *agentFlags) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&a.server, "server", "", "Preboot server URL (default: $PREBOOT_SERVER)")
	f.StringVar(&a.token, "token", "", "job or admin token sent as a bearer token (visible in the process list: prefer --token-file or $PREBOOT_TOKEN)")
	f.StringVar(&a.tokenFile, "token-file", "", "file holding the token (default: $PREBOOT_TOKEN)")
	f.StringVar(&a.tlsPin, "tls-fingerprint", "", "accept exactly the https server certificate with this fingerprint, sha256:HEX (default: $PREBOOT_TLS_FINGERPRINT)")
	f.StringVar(&a.repo, "repo", "", "use a local image repository directory instead of a server")
	f.StringVar(&a.device, "device", "", "block device or disk-image file (or choose the disk with --disk-*)")
	f.StringVar(&a.disk.Serial, "disk-serial", "", "choose the disk with this serial number (removable and USB disks too)")
	f.StringVar(&a.disk.WWN, "disk-wwn", "", "choose the disk with this WWN, e.g. 0x5000c500a1b2c3d4 (removable and USB disks too)")
	f.StringVar(&a.disk.Model, "disk-model", "", "choose the fixed disk whose model matches (exactly or a glob with * and ?)")
	f.StringVar(&a.disk.Size, "disk-size", "", "choose the fixed disk whose size fits: >=200G, <=1T, 200G-600G, largest, smallest (K/M/G/T: powers of 1024; KB/MB/GB/TB: of 1000)")
	f.StringVar(&a.image, "image", "", "image name (required)")
	f.StringVar(&a.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	f.BoolVarP(&a.quiet, "quiet", "q", false, "no progress lines")
	_ = cmd.MarkFlagRequired("image")
}

// resolveDevice sets a.device from the --disk-* rule when --device is not
// given: exactly one disk must match (agent.SelectDisk), else nothing is
// touched and the error lists the disks.
func (a *agentFlags) resolveDevice(ctx context.Context, log *slog.Logger) error {
	rule := a.disk
	switch {
	case a.device != "" && !rule.IsZero():
		return errors.New("--device and --disk-*: give one, not both")
	case a.device != "":
		return nil
	case rule.IsZero():
		return errors.New("--device, or --disk-serial/--disk-wwn/--disk-model/--disk-size to choose the disk, is required")
	}
	if err := rule.Validate(); err != nil {
		return err
	}
	d, _, err := agent.SelectDisk(&rule)
	if err != nil {
		return err
	}
	log.InfoContext(ctx, "disk selected", "rule", rule.String(), "device", d.Path)
	a.device = d.Path
	return nil
}

type agentStore interface {
	agent.Store
	agent.ManifestGetter
}

func (a *agentFlags) store(g *globals, log *slog.Logger) (agentStore, error) {
	if a.repo != "" {
		r, err := image.OpenRepo(a.repo, image.RepoOptions{Logger: log})
		if err != nil {
			return nil, err
		}
		return agent.LocalRepo(r), nil
	}
	srv := a.server
	if srv == "" {
		srv = os.Getenv("PREBOOT_SERVER")
	}
	if srv == "" {
		return nil, errors.New("--server (or $PREBOOT_SERVER, or --repo) is required")
	}
	var tok string
	switch {
	case a.tokenFile != "":
		t, err := readSecretFile(a.tokenFile)
		if err != nil {
			return nil, err
		}
		tok = t
	case a.token != "":
		warnArgvSecret(g, "token", "--token-file FILE or $PREBOOT_TOKEN")
		tok = a.token
	default:
		tok = os.Getenv("PREBOOT_TOKEN")
	}
	pin := a.tlsPin
	if pin == "" {
		pin = os.Getenv("PREBOOT_TLS_FINGERPRINT")
	}
	if pin != "" {
		if _, err := tlspin.Parse(pin); err != nil {
			return nil, err
		}
	}
	return &httpstore.Client{BaseURL: srv, Token: tok, TLSFingerprint: pin, Image: a.image, Replace: true, Logger: log}, nil
}

func newAgent(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Imaging engine: capture, restore, info, auto (inside the imaging environment), shell",
	}
	cmd.AddCommand(newAgentCapture(g), newAgentRestore(g), newAgentInfo(g), newAgentAuto(g), newAgentShell(g), newAgentMedia(g))
	return cmd
}

func newAgentCapture(g *globals) *cobra.Command {
	var af agentFlags
	var level int
	var force bool
	c := &cobra.Command{
		Use:   "capture --server URL --device PATH --image NAME",
		Short: "Capture a disk (or disk-image file) into an image",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(g.stderr, "auto", af.logLevel)
			if err != nil {
				return err
			}
			st, err := af.store(g, log)
			if err != nil {
				return err
			}
			if err := af.resolveDevice(cmd.Context(), log); err != nil {
				return err
			}
			opts := agent.Options{Device: af.device, Image: af.image, Store: st, Compression: level, Force: force, Logger: log}
			if !af.quiet {
				opts.Progress = agentProgressPrinter(g.stderr)
			}
			if h, err := os.Hostname(); err == nil {
				opts.Source = map[string]string{"hostname": h}
			}
			m, err := agent.Capture(cmd.Context(), opts)
			if err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "captured %s: %d partitions, %s used, %s uploaded\n", m.Name, len(m.Partitions),
				agentSize(m.Sizes.Used), agentSize(m.Sizes.Uploaded))
			return nil
		},
	}
	af.register(c)
	c.Flags().IntVar(&level, "compression", image.DefaultLevel, "zstd level (1-19)")
	c.Flags().BoolVar(&force, "force", false, "capture filesystems that are not safe to image as they stand (a hibernated or dirty NTFS)")
	return c
}

func newAgentRestore(g *globals) *cobra.Command {
	var af agentFlags
	var noDelta, noGrow, multicast, peersOnly bool
	var minClients, growPart int
	var bootEntry string
	var maxWait time.Duration
	var mcIface string
	var seedFor time.Duration
	var personalize string
	c := &cobra.Command{
		Use:   "restore --server URL --device PATH --image NAME",
		Short: "Restore an image onto a disk (or disk-image file)",
		Long: "Restore an image onto a disk. On a disk of another size one partition takes the difference (the\n" +
			"largest with ext2/3/4, NTFS, XFS or Btrfs, never an ESP, MSR or Recovery; --grow-partition names\n" +
			"another) and the partitions after it move with it; its filesystem grows, or shrinks (ext, NTFS,\n" +
			"Btrfs) when the disk is smaller and the data in use fits; otherwise the restore is refused before\n" +
			"anything is written. On a UEFI machine the restored OS's loader gets its NVRAM boot entry\n" +
			"(--boot-entry). Chunks the disk already holds are skipped (delta restore) unless --no-delta. The\n" +
			"disk's image-safe data is kept.\n\n" +
			"With --multicast the restore joins the image's running or next multicast session (an admin token\n" +
			"creates one with --min-clients/--max-wait as its start rule) and gets what multicast does not bring\n" +
			"over HTTP; with --peers it fetches from the session's other receivers (and the server) over HTTP only.\n" +
			"Both end with one line: the bytes got by multicast, by repair, from peers and by unicast.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) (err error) {
			log, err := newLogger(g.stderr, "auto", af.logLevel)
			if err != nil {
				return err
			}
			st, err := af.store(g, log)
			if err != nil {
				return err
			}
			if err := agent.ValidBootEntry(bootEntry); err != nil {
				return err
			}
			if err := af.resolveDevice(cmd.Context(), log); err != nil {
				return err
			}
			opts := agent.Options{Device: af.device, Image: af.image, Store: st, NoDelta: noDelta, NoGrowFS: noGrow,
				GrowPartition: growPart, BootEntry: bootEntry, Logger: log}
			if opts.Manifest, err = st.Manifest(cmd.Context(), af.image); err != nil {
				return fmt.Errorf("restore %s: get manifest: %w", af.image, err)
			}
			if err := agent.CheckSectorSize(af.device, opts.Manifest); err != nil {
				return err
			}
			if !af.quiet {
				opts.Progress = agentProgressPrinter(g.stderr)
			}
			var res mcast.Result
			if multicast || peersOnly {
				hc, ok := st.(*httpstore.Client)
				if !ok {
					return errors.New("--multicast and --peers need --server (not --repo)")
				}
				name, _ := os.Hostname()
				printed := false
				report := func(r mcast.Result) {
					if printed {
						return
					}
					printed = true
					b := r.Bytes
					if r.Fallback != "" {
						fmt.Fprintf(g.stderr, "over HTTP: %s\n", r.Fallback)
					}
					fmt.Fprintf(g.stdout, "restored %s onto %s: multicast=%d repair=%d peers=%d unicast=%d\n",
						r.Image, af.device, b.Multicast, b.Repair, b.Peers, b.Unicast)
					if seedFor > 0 {
						fmt.Fprintf(g.stderr, "serving peers for up to %s while the session's other receivers work (--seed-for 0: exit now)\n", seedFor)
					}
				}
				opts.Multicast = &mcast.ReceiveOptions{Client: hc, Image: af.image, Name: name, Interface: mcIface,
					PeersOnly: peersOnly, MinClients: minClients, MaxWait: maxWait, Logger: log, Peers: newPeerFactory(hc, log),
					SeedFor: seedFor, Done: report}
				opts.MulticastResult = &res
				defer func() {
					if err == nil {
						report(res)
					}
				}()
			}
			m, err := agent.Restore(cmd.Context(), opts)
			if err != nil {
				return err
			}
			if cmd.Flags().Changed("personalize") {
				agent.Personalize(cmd.Context(), agent.PersonalizeOptions{Device: af.device, Hostname: personalize, Logger: log})
			}
			if multicast || peersOnly {
				return nil
			}
			fmt.Fprintf(g.stdout, "restored %s onto %s (%s used)\n", m.Name, af.device, agentSize(m.Sizes.Used))
			return nil
		},
	}
	af.register(c)
	c.Flags().BoolVar(&noDelta, "no-delta", false, "write every chunk, do not compare with the disk's content")
	c.Flags().StringVar(&personalize, "personalize", "", "after restoring a whole block device, write this hostname and a fresh machine-id into the Linux systems on it and this computer name into a sysprep unattend.xml (\"\" = machine-id only)")
	c.Flags().BoolVar(&noGrow, "no-grow-fs", false, "on a larger disk, do not grow the filesystem of the partition that takes the space")
	c.Flags().IntVar(&growPart, "grow-partition", 0, "on a disk of another size, the partition that takes (or gives up) the difference (0: automatic)")
	c.Flags().StringVar(&bootEntry, "boot-entry", "auto", "UEFI NVRAM boot entry of the restored OS: auto (network boot kept first), disk-first or off")
	c.Flags().BoolVar(&multicast, "multicast", false, "get the chunks from the image's multicast session (HTTP for the rest)")
	c.Flags().BoolVar(&peersOnly, "peers", false, "get the chunks from the session's other receivers over HTTP (no multicast)")
	c.Flags().IntVar(&minClients, "min-clients", 0, "start a new session when this many receivers joined (with --multicast or --peers)")
	c.Flags().DurationVar(&maxWait, "max-wait", 0, "or this long after its first receiver joined (default 5m when --min-clients > 1)")
	c.Flags().StringVar(&mcIface, "multicast-interface", "", "interface to receive the group on (default: the one that routes to the server)")
	c.Flags().DurationVar(&seedFor, "seed-for", time.Minute, "once done, keep serving the chunks to the session's other receivers this long at most while they work (0: exit at once)")
	c.MarkFlagsMutuallyExclusive("multicast", "peers")
	return c
}

func newAgentInfo(g *globals) *cobra.Command {
	var device, output string
	c := &cobra.Command{
		Use:   "info",
		Short: "Show hardware, disks, partitions and image-safe data",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "table" && output != "json" {
				return fmt.Errorf("--output %q: want table or json", output)
			}
			in, err := agent.GetInfo(cmd.Context(), device)
			if err != nil {
				return err
			}
			if output == "json" {
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(in)
			}
			return printAgentInfo(g.stdout, in)
		},
	}
	c.Flags().StringVar(&device, "device", "", "only this disk (block device or disk-image file)")
	c.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return c
}

func printAgentInfo(w io.Writer, in agent.Info) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	h := in.Hardware
	for _, kv := range [][2]string{{"Hostname", in.Hostname}, {"Vendor", h.Vendor}, {"Product", h.Product},
		{"Serial", h.Serial}, {"UUID", h.UUID}, {"Firmware", h.Firmware},
		{"CPUs", fmt.Sprintf("%d × %s", h.CPUs, dash(h.CPUModel))}, {"Memory", agentSize(h.MemoryBytes)}} {
		fmt.Fprintf(tw, "%s:\t%s\n", kv[0], dash(kv[1]))
	}
	for _, n := range h.NICs {
		fmt.Fprintf(tw, "NIC %s:\t%s %s %s\n", n.Name, n.MAC, dash(n.Driver), dash(n.State))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, d := range in.Disks {
		fmt.Fprintf(w, "\nDisk %s: %s, %s table", d.Path, agentSize(d.Size), dash(d.Table))
		if d.Model != "" {
			fmt.Fprintf(w, ", model %s", d.Model)
		}
		if d.Removable {
			fmt.Fprint(w, ", removable")
		}
		fmt.Fprintln(w)
		if d.Error != "" {
			fmt.Fprintf(w, "  error: %s\n", d.Error)
		}
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		if len(d.Partitions) > 0 {
			fmt.Fprintln(tw, "  #\tSTART\tSIZE\tTYPE\tFS\tNAME")
		}
		for _, p := range d.Partitions {
			boot := ""
			if p.Bootable {
				boot = " *"
			}
			fmt.Fprintf(tw, "  %d%s\t%d\t%s\t%s\t%s\t%s\n", p.Index, boot, p.Start, agentSize(p.Size), p.Type, dash(p.FSType), dash(p.Name))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		if d.ImageSafe != nil {
			b, _ := json.Marshal(d.ImageSafe)
			fmt.Fprintf(w, "  image-safe data: %s\n", b)
		}
	}
	return nil
}

func newAgentAuto(g *globals) *cobra.Command {
	var cmdline, server, token, tokenFile, pin, device, logLevel string
	var reboot bool
	c := &cobra.Command{
		Use:   "auto",
		Short: "Ask the server for the assigned job and run it (the imaging environment runs this)",
		Long: "Reads preboot.server=, preboot.token= and preboot.job= from the kernel command line, fetches\n" +
			"the job, captures or restores, and reports progress, log and result to the server. With --reboot\n" +
			"it then reboots or powers off as the job says.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(g.stderr, "auto", logLevel)
			if err != nil {
				return err
			}
			var env agent.Env
			if server == "" {
				b, err := os.ReadFile(cmdline)
				if err != nil {
					return err
				}
				if env, err = agent.ParseCmdline(string(b)); err != nil {
					return err
				}
			}
			if server != "" {
				env.Servers = failover.Split(server)
				env.Server = ""
				if len(env.Servers) > 0 {
					env.Server = env.Servers[0]
				}
			}
			switch {
			case tokenFile != "":
				if env.Token, err = readSecretFile(tokenFile); err != nil {
					return err
				}
			case token != "":
				warnArgvSecret(g, "token", "--token-file FILE")
				env.Token = token
			}
			if pin != "" {
				if _, err := tlspin.Parse(pin); err != nil {
					return err
				}
				env.TLS = pin
			}
			out, err := agent.Auto(cmd.Context(), env, agent.AutoOptions{Device: device, Logger: log,
				Progress: agentProgressPrinter(g.stderr)})
			if errors.Is(err, agent.ErrNoJob) {
				fmt.Fprintln(g.stdout, "no job assigned")
				return nil
			}
			if out.Job != nil {
				if err != nil {
					fmt.Fprintf(g.stdout, "job %d failed: %v\n", out.Job.ID, err)
				} else {
					fmt.Fprintf(g.stdout, "job %d (%s %s) succeeded\n", out.Job.ID, out.Job.Kind, out.Job.Image)
				}
			}
			if reboot && out.Job != nil {
				if err != nil {
					time.Sleep(10 * time.Second) // leave the error on the console a moment
				}
				if perr := agentPowerAction(out.After); perr != nil {
					return errors.Join(err, perr)
				}
			}
			return err
		},
	}
	c.Flags().StringVar(&cmdline, "cmdline", "/proc/cmdline", "kernel command line to read preboot.* keys from")
	c.Flags().StringVar(&server, "server", "", "server URL, or URL,URL,… of servers sharing one database (overrides preboot.server=)")
	c.Flags().StringVar(&token, "token", "", "job token (overrides preboot.token=; visible in the process list: prefer --token-file)")
	c.Flags().StringVar(&tokenFile, "token-file", "", "file holding the job token (overrides preboot.token=)")
	c.Flags().StringVar(&pin, "tls-fingerprint", "", "pin of the server's certificate, sha256:HEX (overrides preboot.tls=)")
	c.Flags().StringVar(&device, "device", "", "disk to work on (overrides the job's device)")
	c.Flags().StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	c.Flags().BoolVar(&reboot, "reboot", false, "reboot or power off afterwards as the job says (\"after\")")
	return c
}

// agentPowerAction syncs and reboots or powers off the machine.
func agentPowerAction(after string) error {
	var how int
	switch after {
	case "reboot", "":
		how = unix.LINUX_REBOOT_CMD_RESTART
	case "poweroff":
		how = unix.LINUX_REBOOT_CMD_POWER_OFF
	case "none":
		return nil
	default:
		return fmt.Errorf("unknown after-job action %q", after)
	}
	unix.Sync()
	if err := unix.Reboot(how); err != nil {
		return fmt.Errorf("%s: %w", after, err)
	}
	return nil
}

func newAgentShell(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "shell",
		Short: "Start a maintenance shell (busybox sh, else $SHELL, else /bin/sh)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var sh []string
			if _, err := os.Stat("/bin/busybox"); err == nil {
				sh = []string{"/bin/busybox", "sh"}
			} else if s := os.Getenv("SHELL"); s != "" {
				sh = []string{s}
			} else {
				sh = []string{"/bin/sh"}
			}
			p, err := exec.LookPath(sh[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(g.stderr, "maintenance shell (%s); exit to return\n", strings.Join(sh, " "))
			return syscall.Exec(p, sh, os.Environ())
		},
	}
}

// agentProgressPrinter prints a progress line per call (the engine calls once a
// second): phase, %, rate, ETA.
func agentProgressPrinter(w io.Writer) func(image.Progress) {
	return func(p image.Progress) {
		pct := 100.0
		if p.Total > 0 {
			pct = 100 * float64(p.Done) / float64(p.Total)
		}
		eta := "-"
		if p.Rate > 0 && p.Total > p.Done {
			eta = (time.Duration(float64(p.Total-p.Done)/p.Rate) * time.Second).Round(time.Second).String()
		}
		fmt.Fprintf(w, "%-7s %5.1f%%  %7.1f MB/s  ETA %-6s  %s / %s  chunks %d/%d (transferred %d, skipped %d)\n",
			p.Phase, pct, p.Rate/1e6, eta, agentSize(p.Done), agentSize(p.Total), p.Chunks, p.ChunksTotal,
			p.Transferred, p.Skipped)
	}
}

func agentSize(n int64) string {
	const u = "KMGTPE"
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	f, i := float64(n)/1024, 0
	for f >= 1024 && i < len(u)-1 {
		f /= 1024
		i++
	}
	return fmt.Sprintf("%.1f %ciB", f, u[i])
}
