package cli

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/preboot/preboot/store"
)

// groupDetail is GET /groups/{name}.
type groupDetail struct {
	store.Group
	Assignment *store.Assignment `json:"assignment"`
}

func newGroup(g *globals) *cobra.Command {
	var af adminFlags
	cmd := &cobra.Command{
		Use:     "group",
		Aliases: []string{"groups"},
		Short:   "Groups of devices (by hand or by a match expression), their members and menu",
	}
	af.register(cmd)
	cmd.AddCommand(newGroupWake(g, &af))

	var limit, offset int
	list := &cobra.Command{
		Use:   "list",
		Short: "List groups by priority (a device in several groups gets the assignment of the first)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := af.client(g)
			if err != nil {
				return err
			}
			var gs []store.Group
			raw, _, err := c.call(cmd.Context(), "GET", "/api/v1/groups?"+pageQuery(limit, offset).Encode(), nil, &gs)
			if err != nil {
				return err
			}
			return af.emit(g, raw, func() error {
				tw := newTable(g.stdout)
				row(tw, "PRIORITY", "NAME", "MEMBERS", "MATCH", "DESCRIPTION")
				for _, gr := range gs {
					row(tw, gr.Priority, gr.Name, gr.Members, dash(gr.Match), dash(gr.Description))
				}
				return tw.Flush()
			})
		},
	}
	pageFlags(list.Flags(), &limit, &offset)
	cmd.AddCommand(list)

	cmd.AddCommand(&cobra.Command{
		Use:   "show NAME",
		Short: "Show a group and its assignment",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := af.client(g)
			if err != nil {
				return err
			}
			var gr groupDetail
			raw, _, err := c.call(cmd.Context(), "GET", "/api/v1/groups/"+pathEsc(args[0]), nil, &gr)
			if err != nil {
				return err
			}
			return af.emit(g, raw, func() error {
				return printKV(g.stdout, [][2]string{
					{"Name", gr.Name}, {"Description", gr.Description}, {"Priority", strconv.Itoa(gr.Priority)},
					{"Match", gr.Match}, {"Static members", strconv.Itoa(gr.Members)},
					{"Assignment", assignmentText(gr.Assignment)}, {"Created", when(gr.CreatedAt)}, {"Updated", ago(gr.UpdatedAt)},
				})
			})
		},
	})

	var desc, match string
	var prio int
	add := &cobra.Command{
		Use:   "add NAME [--priority N] [--match EXPR] [--description D]",
		Short: "Create a group",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := af.client(g)
			if err != nil {
				return err
			}
			body := map[string]any{"name": args[0], "description": desc, "priority": prio, "match": match}
			var gr store.Group
			raw, _, err := c.call(cmd.Context(), "POST", "/api/v1/groups", body, &gr)
			if err != nil {
				return err
			}
			return af.emit(g, raw, func() error {
				fmt.Fprintf(g.stdout, "group %s created (priority %d)\n", gr.Name, gr.Priority)
				return nil
			})
		},
	}
	add.Flags().IntVar(&prio, "priority", 0, "priority, lower first (0 = after the last group)")
	add.Flags().StringVar(&match, "match", "", "rule expression: devices it matches are members too")
	add.Flags().StringVar(&desc, "description", "", "what the group is for")
	cmd.AddCommand(add)

	var ename, edesc, ematch string
	var eprio int
	edit := &cobra.Command{
		Use:   "edit NAME [--name NEW] [--priority N] [--match EXPR] [--description D]",
		Short: "Change a group (only the given fields change)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			fs := cmd.Flags()
			patch := map[string]any{}
			for flag, v := range map[string]any{"name": ename, "description": edesc, "priority": eprio, "match": ematch} {
				if fs.Changed(flag) {
					patch[flag] = v
				}
			}
			if len(patch) == 0 {
				return errors.New("nothing to change: give --name, --priority, --match or --description")
			}
			c, err := af.client(g)
			if err != nil {
				return err
			}
			var gr store.Group
			raw, _, err := c.call(cmd.Context(), "PATCH", "/api/v1/groups/"+pathEsc(args[0]), patch, &gr)
			if err != nil {
				return err
			}
			return af.emit(g, raw, func() error {
				fmt.Fprintf(g.stdout, "group %s updated (priority %d)\n", gr.Name, gr.Priority)
				return nil
			})
		},
	}
	edit.Flags().StringVar(&ename, "name", "", "rename the group")
	edit.Flags().IntVar(&eprio, "priority", 0, "priority, lower first")
	edit.Flags().StringVar(&ematch, "match", "", "rule expression (\"\" for none)")
	edit.Flags().StringVar(&edesc, "description", "", "what the group is for")
	cmd.AddCommand(edit)

	cmd.AddCommand(&cobra.Command{
		Use:     "rm NAME",
		Aliases: []string{"remove", "delete"},
		Short:   "Remove a group, its memberships, menu and assignment (refused while a rule adds devices to it)",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := af.client(g)
			if err != nil {
				return err
			}
			if err := c.do(cmd.Context(), "DELETE", "/api/v1/groups/"+pathEsc(args[0]), nil, nil); err != nil {
				return err
			}
			if !af.json() {
				fmt.Fprintf(g.stdout, "group %s removed\n", args[0])
			}
			return nil
		},
	})

	var mlimit, moffset int
	members := &cobra.Command{
		Use:   "members NAME",
		Short: "List a group's static members",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := af.client(g)
			if err != nil {
				return err
			}
			var devs []store.Device
			raw, _, err := c.call(cmd.Context(), "GET", "/api/v1/groups/"+pathEsc(args[0])+"/members?"+pageQuery(mlimit, moffset).Encode(), nil, &devs)
			if err != nil {
				return err
			}
			return af.emit(g, raw, func() error {
				tw := newTable(g.stdout)
				row(tw, "MAC", "NAME", "MODEL", "SERIAL", "LAST SEEN")
				for _, d := range devs {
					row(tw, d.MAC, dash(d.Name), dash(d.Product), dash(d.Serial), ago(d.LastSeen))
				}
				return tw.Flush()
			})
		},
	}
	pageFlags(members.Flags(), &mlimit, &moffset)
	cmd.AddCommand(members)

	memberCmd := func(use, short, method, verb string) *cobra.Command {
		return &cobra.Command{
			Use:   use + " NAME MAC...",
			Short: short,
			Args:  cobra.MinimumNArgs(2),
			RunE: func(cmd *cobra.Command, args []string) error {
				macs := make([]string, 0, len(args)-1)
				for _, a := range args[1:] {
					mac, err := store.NormalizeMAC(a)
					if err != nil {
						return err
					}
					macs = append(macs, mac)
				}
				c, err := af.client(g)
				if err != nil {
					return err
				}
				for _, mac := range macs {
					if err := c.do(cmd.Context(), method, "/api/v1/groups/"+pathEsc(args[0])+"/members/"+pathEsc(mac), nil, nil); err != nil {
						return fmt.Errorf("%s: %w", mac, err)
					}
					if !af.json() {
						fmt.Fprintf(g.stdout, "%s %s group %s\n", mac, verb, args[0])
					}
				}
				return nil
			},
		}
	}
	cmd.AddCommand(memberCmd("add-member", "Add devices to a group (they must be known: see device add)", "PUT", "added to"))
	cmd.AddCommand(memberCmd("rm-member", "Remove devices from a group", "DELETE", "removed from"))
	member := &cobra.Command{Use: "member", Short: "Add or remove static members"}
	member.AddCommand(memberCmd("add", "Add devices to a group (they must be known: see device add)", "PUT", "added to"))
	rm := memberCmd("rm", "Remove devices from a group", "DELETE", "removed from")
	rm.Aliases = []string{"remove"}
	member.AddCommand(rm)
	cmd.AddCommand(member)

	cmd.AddCommand(scopedMenu(g, &af, "group", "NAME", func(arg string) (string, string, error) {
		return "/api/v1/groups/" + pathEsc(arg) + "/menu", "group " + arg, nil
	}))
	return cmd
}
