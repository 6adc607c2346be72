package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/preboot/preboot/bundle"
	"github.com/preboot/preboot/store"
)

// decision is what the boot policy does with a device at its next boot
// (GET /devices/{mac}/decision).
type decision struct {
	Action     string            `json:"action"`
	Bundle     *store.Bundle     `json:"bundle"`
	Assignment *store.Assignment `json:"assignment"`
	Source     string            `json:"source"`
	Reason     string            `json:"reason"`
	Menu       *store.Menu       `json:"menu"`
	Groups     []string          `json:"groups"` // static and by match expression, by priority
	BootPath   *struct {
		Program    string `json:"program"`
		SecureBoot bool   `json:"secure_boot"`
		Reason     string `json:"reason"`
	} `json:"boot_path"` // UEFI x64 devices: iPXE or the Secure Boot path
}

// deviceDetail is GET /devices/{mac}.
type deviceDetail struct {
	store.Device
	Groups     []store.Group     `json:"groups"`
	Assignment *store.Assignment `json:"assignment"`
	Decision   *decision         `json:"decision"`
	Events     []store.Event     `json:"events"`
	Jobs       []store.Job       `json:"jobs"`
}

// assignRequest is POST /assignments.
type assignRequest struct {
	Bundle  string `json:"bundle"`
	Device  string `json:"device,omitempty"`
	Group   string `json:"group,omitempty"`
	Once    bool   `json:"once"`
	Force   bool   `json:"force"`
	Replace bool   `json:"replace"`
	// At and Wake schedule the assignment (assign --at TIME --wake).
	At   *time.Time `json:"at,omitempty"`
	Wake bool       `json:"wake,omitempty"`
}

func newDevice(g *globals) *cobra.Command {
	var af adminFlags
	cmd := &cobra.Command{
		Use:     "device",
		Aliases: []string{"devices"},
		Short:   "Devices: list, show, register, edit, their menu and quick tasks (capture, restore, boot)",
	}
	af.register(cmd)

	var search, group string
	var registered bool
	var limit, offset int
	list := &cobra.Command{
		Use:   "list [--search S] [--group G] [--registered=true|false]",
		Short: "List devices, with their latest event",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := af.client(g)
			if err != nil {
				return err
			}
			q := pageQuery(limit, offset)
			setIf(q, "q", search)
			setIf(q, "group", group)
			if cmd.Flags().Changed("registered") {
				q.Set("registered", strconv.FormatBool(registered))
			}
			var devs []store.Device
			raw, hdr, err := c.call(cmd.Context(), "GET", "/api/v1/devices?"+q.Encode(), nil, &devs)
			if err != nil {
				return err
			}
			return af.emit(g, raw, func() error {
				tw := newTable(g.stdout)
				row(tw, "MAC", "NAME", "REGISTERED", "MODEL", "SERIAL", "IP", "LAST SEEN", "LAST EVENT")
				for _, d := range devs {
					last := "-"
					if d.LastEvent != nil {
						last = d.LastEvent.Kind + ": " + d.LastEvent.Message
					}
					row(tw, d.MAC, dash(d.Name), yesNo(d.Registered), dash(strings.TrimSpace(d.Manufacturer+" "+d.Product)),
						dash(d.Serial), dash(d.IP), ago(d.LastSeen), last)
				}
				if err := tw.Flush(); err != nil {
					return err
				}
				if total, err := strconv.Atoi(hdr.Get("X-Total-Count")); err == nil && total > len(devs) {
					fmt.Fprintf(g.stdout, "(%d-%d of %d devices: use --limit and --offset for more)\n", offset+min(1, len(devs)), offset+len(devs), total)
				}
				return nil
			})
		},
	}
	list.Flags().StringVar(&search, "search", "", "only devices whose MAC, name, serial, maker, model or IP contain this")
	list.Flags().StringVar(&group, "group", "", "only static members of this group")
	list.Flags().BoolVar(&registered, "registered", false, "only registered (true) or unregistered (false) devices")
	pageFlags(list.Flags(), &limit, &offset)
	cmd.AddCommand(list)

	var events int
	show := &cobra.Command{
		Use:   "show MAC",
		Short: "Show a device: hardware, groups, assignment, what its next boot does and why, jobs, events",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, mac, err := af.clientFor(g, args[0])
			if err != nil {
				return err
			}
			var d deviceDetail
			raw, _, err := c.call(cmd.Context(), "GET", fmt.Sprintf("/api/v1/devices/%s?events=%d", pathEsc(mac), events), nil, &d)
			if err != nil {
				return err
			}
			return af.emit(g, raw, func() error { return printDevice(g.stdout, d) })
		},
	}
	show.Flags().IntVar(&events, "events", 20, "number of recent events to show")
	cmd.AddCommand(show)

	var name, assetTag, notes string
	add := &cobra.Command{
		Use:   "add MAC [--name N] [--asset-tag T] [--notes S]",
		Short: "Register a device by hand",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, mac, err := af.clientFor(g, args[0])
			if err != nil {
				return err
			}
			body := map[string]any{"mac": mac, "name": name, "asset_tag": assetTag, "notes": notes}
			var d store.Device
			raw, _, err := c.call(cmd.Context(), "POST", "/api/v1/devices", body, &d)
			if err != nil {
				return err
			}
			return af.emit(g, raw, func() error {
				fmt.Fprintf(g.stdout, "device %s registered%s\n", d.MAC, nameSuffix(d.Name))
				return nil
			})
		},
	}
	add.Flags().StringVar(&name, "name", "", "device name")
	add.Flags().StringVar(&assetTag, "asset-tag", "", "asset tag")
	add.Flags().StringVar(&notes, "notes", "", "free text")
	cmd.AddCommand(add)

	var ename, etag, enotes string
	var ereg bool
	edit := &cobra.Command{
		Use:   "edit MAC [--name N] [--asset-tag T] [--notes S] [--registered=true|false]",
		Short: "Change a device's name, asset tag, notes or registration (only the given fields change)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			fs := cmd.Flags()
			patch := map[string]any{}
			for flag, v := range map[string]any{"name": ename, "asset-tag": etag, "notes": enotes, "registered": ereg} {
				if fs.Changed(flag) {
					patch[strings.ReplaceAll(flag, "-", "_")] = v
				}
			}
			if len(patch) == 0 {
				return errors.New("nothing to change: give --name, --asset-tag, --notes or --registered")
			}
			c, mac, err := af.clientFor(g, args[0])
			if err != nil {
				return err
			}
			var d store.Device
			raw, _, err := c.call(cmd.Context(), "PATCH", "/api/v1/devices/"+pathEsc(mac), patch, &d)
			if err != nil {
				return err
			}
			return af.emit(g, raw, func() error {
				fmt.Fprintf(g.stdout, "device %s updated%s (registered: %s)\n", d.MAC, nameSuffix(d.Name), yesNo(d.Registered))
				return nil
			})
		},
	}
	edit.Flags().StringVar(&ename, "name", "", "device name")
	edit.Flags().StringVar(&etag, "asset-tag", "", "asset tag")
	edit.Flags().StringVar(&enotes, "notes", "", "free text")
	edit.Flags().BoolVar(&ereg, "registered", false, "registered (rules only apply to unregistered devices)")
	cmd.AddCommand(edit)

	cmd.AddCommand(&cobra.Command{
		Use:     "rm MAC",
		Aliases: []string{"remove", "delete"},
		Short:   "Forget a device: its assignment, group memberships and menu go too (jobs and events stay)",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, mac, err := af.clientFor(g, args[0])
			if err != nil {
				return err
			}
			if err := c.do(cmd.Context(), "DELETE", "/api/v1/devices/"+pathEsc(mac), nil, nil); err != nil {
				return err
			}
			if !af.json() {
				fmt.Fprintf(g.stdout, "device %s removed\n", mac)
			}
			return nil
		},
	})

	cmd.AddCommand(&cobra.Command{
		Use:   "decision MAC",
		Short: "What the device's next network boot does, and why",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, mac, err := af.clientFor(g, args[0])
			if err != nil {
				return err
			}
			var d decision
			raw, _, err := c.call(cmd.Context(), "GET", "/api/v1/devices/"+pathEsc(mac)+"/decision", nil, &d)
			if err != nil {
				return err
			}
			return af.emit(g, raw, func() error { return printKV(g.stdout, decisionKV(&d)) })
		},
	})

	cmd.AddCommand(scopedMenu(g, &af, "device", "MAC", func(arg string) (string, string, error) {
		mac, err := store.NormalizeMAC(arg)
		if err != nil {
			return "", "", err
		}
		return "/api/v1/devices/" + pathEsc(mac) + "/menu", "device " + mac, nil
	}))

	addQuickTasks(g, &af, cmd)
	return cmd
}

func nameSuffix(name string) string {
	if name == "" {
		return ""
	}
	return " as " + name
}

func decisionKV(d *decision) [][2]string {
	next := d.Action
	if d.Bundle != nil {
		next += ": " + d.Bundle.Name + " (" + d.Bundle.Kind + ")"
	}
	kvs := [][2]string{{"Next boot", next}, {"Source", d.Source}, {"Reason", d.Reason}}
	if d.Menu != nil {
		kvs = append(kvs, [2]string{"Menu", menuText(*d.Menu)})
	}
	if p := d.BootPath; p != nil {
		path := p.Program + " (iPXE)"
		if p.SecureBoot {
			path = p.Program + " → GRUB (Secure Boot path)"
		}
		kvs = append(kvs, [2]string{"Boot program", path + ": " + p.Reason})
	}
	return kvs
}

func printDevice(w io.Writer, d deviceDetail) error {
	// The decision lists every group (static and by match) by priority;
	// the detail's groups are the static ones.
	static := map[string]bool{}
	groups := []string{}
	for _, gr := range d.Groups {
		static[gr.Name] = true
	}
	if d.Decision != nil && d.Decision.Groups != nil {
		for _, n := range d.Decision.Groups {
			if static[n] {
				groups = append(groups, n)
			} else {
				groups = append(groups, n+" (by match)")
			}
		}
	} else {
		for _, gr := range d.Groups {
			groups = append(groups, gr.Name)
		}
	}
	applied := ""
	if d.Applied != nil {
		applied = fmt.Sprintf("%s v%d, %s", d.Applied.Bundle, d.Applied.BundleVersion, ago(d.Applied.Time))
		if d.Applied.Job != 0 {
			applied += fmt.Sprintf(" (job %d)", d.Applied.Job)
		}
	}
	kvs := [][2]string{
		{"MAC", d.MAC}, {"Name", d.Name}, {"Registered", yesNo(d.Registered)}, {"Asset tag", d.AssetTag},
		{"UUID", d.UUID}, {"Serial", d.Serial}, {"Manufacturer", d.Manufacturer}, {"Product", d.Product},
		{"Arch", strings.TrimSpace(d.Arch + " " + d.Platform)}, {"IP", d.IP},
		{"RAM", sizeOrDash(d.RAMBytes)}, {"Disks", sizeOrDash(d.DiskBytes)},
		{"First seen", when(d.FirstSeen)}, {"Last seen", ago(d.LastSeen)}, {"Notes", d.Notes},
		{"Groups", strings.Join(groups, ", ")},
		{"Assignment", assignmentText(d.Assignment)},
		{"Last applied", applied},
	}
	if d.Decision != nil {
		kvs = append(kvs, decisionKV(d.Decision)...)
	}
	if err := printKV(w, kvs); err != nil {
		return err
	}
	if len(d.Jobs) > 0 {
		fmt.Fprintln(w, "\nJobs:")
		if err := printJobs(w, d.Jobs); err != nil {
			return err
		}
	}
	fmt.Fprintln(w, "\nEvents:")
	return printEvents(w, d.Events)
}

// addQuickTasks adds the one-step tasks of `preboot device`: each makes
// (or updates) a bundle for the task and assigns it to the device,
// replacing its current assignment.
func addQuickTasks(g *globals, af *adminFlags, cmd *cobra.Command) {
	for _, kind := range []string{store.KindImageCapture, store.KindImageRestore} {
		var image, device, after string
		var compression int
		verb := strings.TrimPrefix(kind, "image-")
		short := map[string]string{
			store.KindImageCapture: "At its next network boot the device captures its disk to image NAME",
			store.KindImageRestore: "At its next network boot the device restores image NAME onto its disk",
		}[kind]
		c := &cobra.Command{
			Use:   verb + " MAC --image NAME",
			Short: short,
			Long: short + ".\nThis makes (or updates) the bundle " + verb + "-NAME and assigns it to the device once, forced,\n" +
				"replacing its assignment. The device boots the imaging environment (see `preboot env build`); the\n" +
				"assignment stays until its job succeeds, so a failed job runs again at the next boot.\n" +
				"Follow it with `preboot job list --device MAC`.",
			Args: cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				cl, mac, err := af.clientFor(g, args[0])
				if err != nil {
					return err
				}
				var params any
				if kind == store.KindImageCapture {
					params = bundle.Capture{Image: image, Compression: compression, Device: device, After: after}
				} else {
					params = bundle.Restore{Image: image, Device: device, After: after}
				}
				desc := fmt.Sprintf("%s image %s (made by preboot device %s)", verb, image, verb)
				a, b, did, err := quickAssign(cmd.Context(), cl, mac, verb+"-"+image, kind, desc, params, true)
				if err != nil {
					return err
				}
				return af.emit(g, a.raw, func() error {
					then := after
					if then == "" {
						then = store.AfterReboot
					}
					fmt.Fprintf(g.stdout, "%s: next network boot runs %s of image %s, then %s (bundle %s %s, assignment %d)\n",
						mac, b.Kind, image, then, b.Name, did, a.ID)
					return nil
				})
			},
		}
		c.Flags().StringVar(&image, "image", "", "image name (required)")
		c.Flags().StringVar(&after, "after", store.AfterReboot, "when done: reboot or poweroff")
		c.Flags().StringVar(&device, "device", "", "disk to image, e.g. /dev/sda (default: the first fixed disk)")
		c.Flags().StringVar(&device, "disk", "", "same as --device")
		_ = c.Flags().MarkHidden("disk")
		if kind == store.KindImageCapture {
			c.Flags().IntVar(&compression, "compression", 0, "zstd level 1-19 (default 3)")
		}
		_ = c.MarkFlagRequired("image")
		cmd.AddCommand(c)
	}

	var osi bundle.OSInstall
	var once bool
	boot := &cobra.Command{
		Use:   "boot MAC --kernel PATH [--initrd PATH]... [--cmdline ARGS] [--loader ipxe|pxelinux] [--once]",
		Short: "At its next network boot the device loads this kernel and initrd",
		Long: "At its next network boot the device loads this kernel and initrd (paths under the TFTP root, or\n" +
			"http(s) URLs) with this command line. This makes (or updates) the os-install bundle boot-<MAC without\n" +
			"colons> and assigns it to the device, forced, replacing its assignment. --loader pxelinux sends a BIOS\n" +
			"device through pxelinux.0 and a generated pxelinux.cfg/01-<mac> instead of an iPXE script. --once:\n" +
			"the assignment is cleared once done; otherwise the device boots it at every network boot.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, mac, err := af.clientFor(g, args[0])
			if err != nil {
				return err
			}
			name := "boot-" + strings.ReplaceAll(mac, ":", "")
			a, b, did, err := quickAssign(cmd.Context(), cl, mac, name, store.KindOSInstall, "kernel boot of "+mac+" (made by preboot device boot)", osi, once)
			if err != nil {
				return err
			}
			return af.emit(g, a.raw, func() error {
				loader := osi.Loader
				if loader == "" {
					loader = store.LoaderIPXE
				}
				every := " (every boot)"
				if once {
					every = " (once)"
				}
				fmt.Fprintf(g.stdout, "%s: next network boot loads %s via %s%s (bundle %s %s, assignment %d)\n",
					mac, osi.Kernel, loader, every, b.Name, did, a.ID)
				return nil
			})
		},
	}
	boot.Flags().StringVar(&osi.Kernel, "kernel", "", "kernel: path under the TFTP root or http(s) URL (required)")
	boot.Flags().StringSliceVar(&osi.Initrd, "initrd", nil, "initrd (repeatable)")
	boot.Flags().StringVar(&osi.Cmdline, "cmdline", "", "kernel command line")
	boot.Flags().StringVar(&osi.Loader, "loader", store.LoaderIPXE, "ipxe (HTTP script) or pxelinux (TFTP, BIOS only)")
	boot.Flags().BoolVar(&once, "once", false, "clear the assignment once done")
	_ = boot.MarkFlagRequired("kernel")
	cmd.AddCommand(boot)
	cmd.AddCommand(newDeviceWake(g, af))

	cmd.AddCommand(&cobra.Command{
		Use:   "clear MAC",
		Short: "Remove the device's own assignment (group assignments and rules still apply: see device decision)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, mac, err := af.clientFor(g, args[0])
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			var as []store.Assignment
			if err := cl.do(ctx, "GET", "/api/v1/assignments?device="+url.QueryEscape(mac), nil, &as); err != nil {
				return err
			}
			if len(as) == 0 {
				if !af.json() {
					fmt.Fprintf(g.stdout, "%s: no assignment to clear\n", mac)
				}
				return nil
			}
			for _, a := range as {
				if err := cl.do(ctx, "DELETE", "/api/v1/assignments/"+strconv.FormatInt(a.ID, 10), nil, nil); err != nil {
					return err
				}
				if !af.json() {
					fmt.Fprintf(g.stdout, "%s: assignment %d (bundle %s) cleared\n", mac, a.ID, a.Bundle)
				}
			}
			if af.json() {
				return nil
			}
			var d decision
			if err := cl.do(ctx, "GET", "/api/v1/devices/"+pathEsc(mac)+"/decision", nil, &d); err == nil {
				fmt.Fprintf(g.stdout, "%s: next boot: %s\n", mac, d.Reason)
			}
			return nil
		},
	})
}

// rawAssignment is an assignment with the API's raw answer.
type rawAssignment struct {
	store.Assignment
	raw []byte
}

// quickAssign ensures the bundle and assigns it to the device (forced,
// replacing the device's assignment).
func quickAssign(ctx context.Context, c *apiClient, mac, name, kind, desc string, params any, once bool) (rawAssignment, store.Bundle, string, error) {
	b, did, err := ensureBundle(ctx, c, name, kind, desc, params)
	if err != nil {
		return rawAssignment{}, b, "", err
	}
	var a rawAssignment
	a.raw, _, err = c.call(ctx, "POST", "/api/v1/assignments", assignRequest{Bundle: b.Name, Device: mac, Once: once, Force: true, Replace: true}, &a.Assignment)
	if err != nil {
		return a, b, did, err
	}
	return a, b, did, nil
}
