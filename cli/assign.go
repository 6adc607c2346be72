package cli

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/preboot/preboot/store"
)

func newAssign(g *globals) *cobra.Command {
	var af adminFlags
	var req assignRequest
	var at string
	run := func(cmd *cobra.Command, args []string) error {
		if (req.Device == "") == (req.Group == "") {
			return errors.New("give exactly one of --device MAC or --group NAME")
		}
		r := req
		r.Bundle = args[0]
		if r.Wake && at == "" {
			return errWakeNeedsAt
		}
		if at != "" {
			t, err := parseAt(at, time.Now(), time.Local)
			if err != nil {
				return err
			}
			r.At = &t
		}
		if r.Device != "" {
			mac, err := store.NormalizeMAC(r.Device)
			if err != nil {
				return err
			}
			r.Device = mac
		}
		c, err := af.client(g)
		if err != nil {
			return err
		}
		var a store.Assignment
		raw, _, err := c.call(cmd.Context(), "POST", "/api/v1/assignments", r, &a)
		if isStatus(err, http.StatusConflict) && !r.Replace {
			return fmt.Errorf("%w\n(--replace swaps the current assignment for this one)", err)
		}
		if err != nil {
			return err
		}
		return af.emit(g, raw, func() error {
			fmt.Fprintf(g.stdout, "assignment %d: bundle %s to %s (%s%s)\n", a.ID, a.Bundle, target(a), onceText(a.Once), forceText(a.Force))
			if !a.At.IsZero() {
				fmt.Fprintf(g.stdout, "scheduled: not before %s", when(a.At))
				if a.Wake {
					fmt.Fprint(g.stdout, "; the server wakes the devices then")
				}
				fmt.Fprintln(g.stdout)
			}
			return nil
		})
	}
	cmd := &cobra.Command{
		Use:   "assign BUNDLE --device MAC | --group NAME [--once] [--force] [--replace] [--at TIME [--wake]]",
		Short: "Assign a bundle to a device or a group; list and remove assignments",
		Long: "Assign a bundle to a device or a group. --once: cleared for the device after a successful run;\n" +
			"otherwise it applies at every boot (a bundle already applied at this version is not run again\n" +
			"unless --force). A device or group has at most one assignment: --replace swaps it.\n" +
			"Precedence: the device's own assignment, else that of its highest-priority group, else (for\n" +
			"unregistered devices) the first matching rule, else the unregistered default.\n" +
			"--at TIME schedules it: the policy does not hand it out before TIME (RFC 3339, or a local\n" +
			"\"2026-12-08 18:00\"; a time in the past is refused); --wake: at TIME the server wakes the\n" +
			"device or the group's devices by Wake-on-LAN (docs/wake.md), and they boot into the work.\n" +
			"(`assign add BUNDLE ...` is the same, for a bundle named list or rm.)",
		Args: cobra.ExactArgs(1),
		RunE: run,
	}
	af.register(cmd)
	flags := func(c *cobra.Command) {
		c.Flags().StringVar(&req.Device, "device", "", "the device (MAC)")
		c.Flags().StringVar(&req.Group, "group", "", "the group")
		c.Flags().BoolVar(&req.Once, "once", false, "clear after a successful run")
		c.Flags().BoolVar(&req.Force, "force", false, "run even if it was the last bundle applied to the device")
		c.Flags().BoolVar(&req.Replace, "replace", false, "replace the target's current assignment")
		c.Flags().StringVar(&at, "at", "", `not before this time: RFC 3339 or local "2026-12-08 18:00"`)
		c.Flags().BoolVar(&req.Wake, "wake", false, "with --at: wake the devices (Wake-on-LAN) at that time")
	}
	flags(cmd)
	addCmd := &cobra.Command{Use: "add BUNDLE --device MAC | --group NAME", Short: "Same as assign BUNDLE", Args: cobra.ExactArgs(1), RunE: run}
	flags(addCmd)
	cmd.AddCommand(addCmd)

	var dev, group, bndl string
	var scheduled bool
	var limit, offset int
	list := &cobra.Command{
		Use:   "list [--device MAC] [--group G] [--bundle B] [--scheduled]",
		Short: "List assignments",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := pageQuery(limit, offset)
			if dev != "" {
				mac, err := store.NormalizeMAC(dev)
				if err != nil {
					return err
				}
				q.Set("device", mac)
			}
			setIf(q, "group", group)
			setIf(q, "bundle", bndl)
			if scheduled {
				q.Set("scheduled", "true")
			}
			c, err := af.client(g)
			if err != nil {
				return err
			}
			var as []store.Assignment
			raw, _, err := c.call(cmd.Context(), "GET", "/api/v1/assignments?"+q.Encode(), nil, &as)
			if err != nil {
				return err
			}
			return af.emit(g, raw, func() error {
				tw := newTable(g.stdout)
				row(tw, "ID", "BUNDLE", "KIND", "TARGET", "APPLY", "FORCE", "AT", "CREATED")
				for _, a := range as {
					row(tw, a.ID, a.Bundle, a.BundleKind, target(a), onceText(a.Once), yesNo(a.Force), scheduleText(a), ago(a.CreatedAt))
				}
				return tw.Flush()
			})
		},
	}
	list.Flags().StringVar(&dev, "device", "", "only this device's")
	list.Flags().StringVar(&group, "group", "", "only this group's")
	list.Flags().StringVar(&bndl, "bundle", "", "only this bundle's")
	list.Flags().BoolVar(&scheduled, "scheduled", false, "only scheduled assignments (--at)")
	pageFlags(list.Flags(), &limit, &offset)
	cmd.AddCommand(list)

	cmd.AddCommand(&cobra.Command{
		Use:     "rm ID",
		Aliases: []string{"remove", "delete"},
		Short:   "Remove an assignment",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseID(args[0], "assignment")
			if err != nil {
				return err
			}
			c, err := af.client(g)
			if err != nil {
				return err
			}
			if err := c.do(cmd.Context(), "DELETE", "/api/v1/assignments/"+strconv.FormatInt(id, 10), nil, nil); err != nil {
				return err
			}
			if !af.json() {
				fmt.Fprintf(g.stdout, "assignment %d removed\n", id)
			}
			return nil
		},
	})
	return cmd
}

func target(a store.Assignment) string {
	if a.Group != "" {
		return "group " + a.Group
	}
	return "device " + a.MAC
}

func forceText(f bool) string {
	if f {
		return ", force"
	}
	return ""
}

func parseID(s, what string) (int64, error) {
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 {
		return 0, fmt.Errorf("%s ID %q: want a positive number", what, s)
	}
	return id, nil
}
