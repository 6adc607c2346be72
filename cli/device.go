package cli

import (
	"fmt"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/preboot/preboot/api"
	"github.com/preboot/preboot/store"
)

func newDevice(g *globals) *cobra.Command {
	var af adminFlags
	cmd := &cobra.Command{
		Use:     "device",
		Aliases: []string{"devices"},
		Short:   "List devices, show one, assign or clear its work",
	}
	af.register(cmd)

	cmd.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "List devices that booted from the network, with their latest event",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := af.client(g)
			if err != nil {
				return err
			}
			var devs []store.Device
			if err := c.do(cmd.Context(), "GET", "/api/v1/devices", nil, &devs); err != nil {
				return err
			}
			if af.output == "json" {
				return printJSON(g.stdout, devs)
			}
			tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "MAC\tARCH\tMANUFACTURER\tPRODUCT\tSERIAL\tIP\tLAST SEEN\tLAST EVENT")
			for _, d := range devs {
				last := "-"
				if d.LastEvent != nil {
					last = d.LastEvent.Kind + ": " + d.LastEvent.Message
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.MAC, dash(d.Arch), dash(d.Manufacturer), dash(d.Product),
					dash(d.Serial), dash(d.IP), ago(d.LastSeen), last)
			}
			return tw.Flush()
		},
	})

	var events int
	show := &cobra.Command{
		Use:   "show MAC",
		Short: "Show a device: hardware, assigned work, recent events",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, mac, err := af.clientFor(g, args[0])
			if err != nil {
				return err
			}
			var d api.DeviceDetail
			if err := c.do(cmd.Context(), "GET", fmt.Sprintf("/api/v1/devices/%s?events=%d", url.PathEscape(mac), events), nil, &d); err != nil {
				return err
			}
			if af.output == "json" {
				return printJSON(g.stdout, d)
			}
			tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			for _, kv := range [][2]string{{"MAC", d.MAC}, {"UUID", d.UUID}, {"Serial", d.Serial}, {"Manufacturer", d.Manufacturer},
				{"Product", d.Product}, {"Arch", d.Arch}, {"Platform", d.Platform}, {"IP", d.IP},
				{"First seen", d.FirstSeen.Local().Format(time.RFC3339)}, {"Last seen", d.LastSeen.Local().Format(time.RFC3339)}} {
				fmt.Fprintf(tw, "%s:\t%s\n", kv[0], dash(kv[1]))
			}
			switch {
			case d.Work != nil && (d.Work.Kind == store.WorkCapture || d.Work.Kind == store.WorkRestore):
				fmt.Fprintf(tw, "Work:\t%s image %s, then %s (until its job succeeds)\n", d.Work.Kind, d.Work.Image, d.Work.After)
			case d.Work != nil:
				fmt.Fprintf(tw, "Work:\tboot %s (initrd %s) %q via %s%s\n", d.Work.Kernel, strings.Join(d.Work.Initrd, ","), d.Work.Cmdline, d.Work.Loader, onceText(d.Work.Once))
			default:
				fmt.Fprintf(tw, "Work:\tnone (boots its local disk)\n")
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			fmt.Fprintln(g.stdout, "\nEvents:")
			return printEvents(g, d.Events)
		},
	}
	show.Flags().IntVar(&events, "events", 20, "number of recent events to show")
	cmd.AddCommand(show)

	var wr api.WorkRequest
	boot := &cobra.Command{
		Use:   "boot MAC --kernel PATH [--initrd PATH]... [--cmdline ARGS]",
		Short: "Assign work: the device boots this kernel and initrd at its next network boot",
		Long: "Assign work: at its next network boot the device loads this kernel and initrd (paths under the\n" +
			"TFTP root, or http(s) URLs) with this command line. --loader pxelinux sends a BIOS device through\n" +
			"pxelinux.0 and a generated pxelinux.cfg/01-<mac> instead of an iPXE script. --once clears the work\n" +
			"once it has been handed out; otherwise the device boots it at every network boot.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, mac, err := af.clientFor(g, args[0])
			if err != nil {
				return err
			}
			if err := wr.Validate(); err != nil {
				return err
			}
			var got store.Work
			if err := c.do(cmd.Context(), "PUT", "/api/v1/devices/"+url.PathEscape(mac)+"/work", wr, &got); err != nil {
				return err
			}
			if af.output == "json" {
				return printJSON(g.stdout, got)
			}
			fmt.Fprintf(g.stdout, "%s: next network boot loads %s via %s%s\n", mac, got.Kernel, got.Loader, onceText(got.Once))
			return nil
		},
	}
	boot.Flags().StringVar(&wr.Kernel, "kernel", "", "kernel: path under the TFTP root or http(s) URL (required)")
	boot.Flags().StringSliceVar(&wr.Initrd, "initrd", nil, "initrd (repeatable)")
	boot.Flags().StringVar(&wr.Cmdline, "cmdline", "", "kernel command line")
	boot.Flags().StringVar(&wr.Loader, "loader", store.LoaderIPXE, "ipxe (HTTP script) or pxelinux (TFTP, BIOS only)")
	boot.Flags().BoolVar(&wr.Once, "once", false, "clear the work once handed out")
	cmd.AddCommand(boot)

	for _, kind := range []string{store.WorkCapture, store.WorkRestore} {
		var iw api.WorkRequest
		short := map[string]string{
			store.WorkCapture: "Assign work: at its next network boot the device captures its disk to image NAME",
			store.WorkRestore: "Assign work: at its next network boot the device restores image NAME onto its disk",
		}[kind]
		c := &cobra.Command{
			Use:   kind + " MAC --image NAME",
			Short: short,
			Long: short + ".\nThe device boots the imaging environment (see `preboot env build`); the work stays assigned until\n" +
				"its job succeeds, so a failed or interrupted job runs again at the next boot. Follow it with `preboot job list`.",
			Args: cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				c, mac, err := af.clientFor(g, args[0])
				if err != nil {
					return err
				}
				iw.Kind = kind
				if err := iw.Validate(); err != nil {
					return err
				}
				var got store.Work
				if err := c.do(cmd.Context(), "PUT", "/api/v1/devices/"+url.PathEscape(mac)+"/work", iw, &got); err != nil {
					return err
				}
				if af.output == "json" {
					return printJSON(g.stdout, got)
				}
				fmt.Fprintf(g.stdout, "%s: next network boot runs %s of image %s, then %s\n", mac, got.Kind, got.Image, got.After)
				return nil
			},
		}
		c.Flags().StringVar(&iw.Image, "image", "", "image name (required)")
		c.Flags().StringVar(&iw.After, "after", store.AfterReboot, "when done: reboot or poweroff")
		c.Flags().StringVar(&iw.Device, "disk", "", "disk to image, e.g. /dev/sda (default: the first fixed disk)")
		if kind == store.WorkCapture {
			c.Flags().IntVar(&iw.Compression, "compression", 0, "zstd level 1-19 (default 3)")
		}
		cmd.AddCommand(c)
	}

	cmd.AddCommand(&cobra.Command{
		Use:   "clear MAC",
		Short: "Clear the device's work: it boots its local disk again",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, mac, err := af.clientFor(g, args[0])
			if err != nil {
				return err
			}
			if err := c.do(cmd.Context(), "DELETE", "/api/v1/devices/"+url.PathEscape(mac)+"/work", nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "%s: work cleared, it boots its local disk\n", mac)
			return nil
		},
	})
	return cmd
}

func newEvent(g *globals) *cobra.Command {
	var af adminFlags
	cmd := &cobra.Command{Use: "event", Aliases: []string{"events"}, Short: "Query boot events"}
	af.register(cmd)
	var mac, kind string
	var limit int
	list := &cobra.Command{
		Use:   "list",
		Short: "List events, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := af.client(g)
			if err != nil {
				return err
			}
			q := url.Values{}
			if mac != "" {
				q.Set("mac", mac)
			}
			if kind != "" {
				q.Set("kind", kind)
			}
			q.Set("limit", fmt.Sprint(limit))
			var evs []store.Event
			if err := c.do(cmd.Context(), "GET", "/api/v1/events?"+q.Encode(), nil, &evs); err != nil {
				return err
			}
			if af.output == "json" {
				return printJSON(g.stdout, evs)
			}
			return printEvents(g, evs)
		},
	}
	list.Flags().StringVar(&mac, "device", "", "only this device (MAC)")
	list.Flags().StringVar(&kind, "kind", "", "only this kind: dhcp, boot, work, localboot, menu, admin")
	list.Flags().IntVar(&limit, "limit", 50, "how many")
	cmd.AddCommand(list)
	return cmd
}

func printEvents(g *globals, evs []store.Event) error {
	tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tDEVICE\tKIND\tMESSAGE")
	for _, e := range evs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", e.Time.Local().Format("2006-01-02 15:04:05"), e.MAC, e.Kind, e.Message)
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func onceText(once bool) string {
	if once {
		return " (once)"
	}
	return " (every boot)"
}

func ago(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := time.Since(t).Round(time.Second)
	switch {
	case d < time.Minute:
		return d.String() + " ago"
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return t.Local().Format("2006-01-02")
}
