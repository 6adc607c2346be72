package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/preboot/preboot/store"
)

// ruleTest is POST /rules/test's answer.
type ruleTest struct {
	Rule    string         `json:"rule"`
	Matched bool           `json:"matched"`
	Facts   map[string]any `json:"facts"`
}

func newRule(g *globals) *cobra.Command {
	var af adminFlags
	cmd := &cobra.Command{
		Use:     "rule",
		Aliases: []string{"rules"},
		Short:   "Rules for unregistered devices: ordered, the first enabled one that matches wins",
		Long: "Rules decide what an unregistered device does at its first boots: the enabled rules are tried in\n" +
			"order and the first whose match expression holds registers the device, adds it to the rule's group\n" +
			"and runs the rule's bundle once. Expressions filter on MAC (prefix), IP/subnet, maker, model,\n" +
			"serial, UUID, arch/firmware, RAM and disk size, combined with and/or/not.",
	}
	af.register(cmd)

	cmd.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "List rules in order",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := af.client(g)
			if err != nil {
				return err
			}
			var rs []store.Rule
			raw, _, err := c.call(cmd.Context(), "GET", "/api/v1/rules", nil, &rs)
			if err != nil {
				return err
			}
			return af.emit(g, raw, func() error {
				tw := newTable(g.stdout)
				row(tw, "POS", "NAME", "ENABLED", "MATCH", "BUNDLE", "GROUP")
				for _, r := range rs {
					row(tw, r.Position, r.Name, yesNo(r.Enabled), r.Match, dash(r.Bundle), dash(r.Group))
				}
				return tw.Flush()
			})
		},
	})

	cmd.AddCommand(&cobra.Command{
		Use:   "show NAME",
		Short: "Show a rule",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := af.client(g)
			if err != nil {
				return err
			}
			var r store.Rule
			raw, _, err := c.call(cmd.Context(), "GET", "/api/v1/rules/"+pathEsc(args[0]), nil, &r)
			if err != nil {
				return err
			}
			return af.emit(g, raw, func() error { return printRule(g, r) })
		},
	})

	var match, bndl, group string
	var pos int
	var disabled bool
	add := &cobra.Command{
		Use:   "add NAME --match EXPR [--bundle B] [--group G] [--position N] [--disabled]",
		Short: "Add a rule (at the end, or at --position)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := af.client(g)
			if err != nil {
				return err
			}
			body := map[string]any{"name": args[0], "match": match, "bundle": bndl, "group": group, "enabled": !disabled, "position": pos}
			var r store.Rule
			raw, _, err := c.call(cmd.Context(), "POST", "/api/v1/rules", body, &r)
			if err != nil {
				return err
			}
			return af.emit(g, raw, func() error {
				fmt.Fprintf(g.stdout, "rule %s added at position %d%s\n", r.Name, r.Position, disabledText(r.Enabled))
				return nil
			})
		},
	}
	add.Flags().StringVar(&match, "match", "", "rule expression, e.g. 'mac ^= \"52:54:00\" and ram >= 4GiB' (required)")
	add.Flags().StringVar(&bndl, "bundle", "", "bundle the device runs once")
	add.Flags().StringVar(&group, "group", "", "group the device joins")
	add.Flags().IntVar(&pos, "position", 0, "position, 1 = first (0 = last)")
	add.Flags().BoolVar(&disabled, "disabled", false, "add it disabled")
	_ = add.MarkFlagRequired("match")
	cmd.AddCommand(add)

	var ename, ematch, ebundle, egroup string
	var epos int
	var enable, disable bool
	edit := &cobra.Command{
		Use:   "edit NAME [--name NEW] [--match EXPR] [--bundle B] [--group G] [--position N] [--enable | --disable]",
		Short: "Change a rule (only the given fields change; --position moves it)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			fs := cmd.Flags()
			if enable && disable {
				return errors.New("--enable and --disable: give one")
			}
			patch := map[string]any{}
			for flag, v := range map[string]any{"name": ename, "match": ematch, "bundle": ebundle, "group": egroup, "position": epos} {
				if fs.Changed(flag) {
					patch[flag] = v
				}
			}
			if fs.Changed("enable") {
				patch["enabled"] = enable
			}
			if fs.Changed("disable") {
				patch["enabled"] = !disable
			}
			if len(patch) == 0 {
				return errors.New("nothing to change: give --name, --match, --bundle, --group, --position, --enable or --disable")
			}
			c, err := af.client(g)
			if err != nil {
				return err
			}
			var r store.Rule
			raw, _, err := c.call(cmd.Context(), "PATCH", "/api/v1/rules/"+pathEsc(args[0]), patch, &r)
			if err != nil {
				return err
			}
			return af.emit(g, raw, func() error {
				fmt.Fprintf(g.stdout, "rule %s updated, at position %d%s\n", r.Name, r.Position, disabledText(r.Enabled))
				return nil
			})
		},
	}
	edit.Flags().StringVar(&ename, "name", "", "rename the rule")
	edit.Flags().StringVar(&ematch, "match", "", "rule expression")
	edit.Flags().StringVar(&ebundle, "bundle", "", "bundle the device runs once (\"\" for none)")
	edit.Flags().StringVar(&egroup, "group", "", "group the device joins (\"\" for none)")
	edit.Flags().IntVar(&epos, "position", 0, "move to this position (1 = first)")
	edit.Flags().BoolVar(&enable, "enable", false, "enable the rule")
	edit.Flags().BoolVar(&disable, "disable", false, "disable the rule")
	cmd.AddCommand(edit)

	cmd.AddCommand(&cobra.Command{
		Use:     "rm NAME",
		Aliases: []string{"remove", "delete"},
		Short:   "Remove a rule",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := af.client(g)
			if err != nil {
				return err
			}
			if err := c.do(cmd.Context(), "DELETE", "/api/v1/rules/"+pathEsc(args[0]), nil, nil); err != nil {
				return err
			}
			if !af.json() {
				fmt.Fprintf(g.stdout, "rule %s removed\n", args[0])
			}
			return nil
		},
	})

	var tdev, tmatch string
	test := &cobra.Command{
		Use:   "test --device MAC [--match EXPR]",
		Short: "Which rule matches a known device (or whether EXPR does), with the facts rules see",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, mac, err := af.clientFor(g, tdev)
			if err != nil {
				return err
			}
			body := map[string]any{"device": mac}
			if cmd.Flags().Changed("match") {
				body["match"] = tmatch
			}
			var t ruleTest
			raw, _, err := c.call(cmd.Context(), "POST", "/api/v1/rules/test", body, &t)
			if err != nil {
				return err
			}
			return af.emit(g, raw, func() error {
				switch {
				case cmd.Flags().Changed("match") && t.Matched:
					fmt.Fprintf(g.stdout, "%s: the expression matches\n", mac)
				case cmd.Flags().Changed("match"):
					fmt.Fprintf(g.stdout, "%s: the expression does not match\n", mac)
				case t.Matched:
					fmt.Fprintf(g.stdout, "%s: rule %s matches (the first enabled rule that does)\n", mac, t.Rule)
				default:
					fmt.Fprintf(g.stdout, "%s: no enabled rule matches\n", mac)
				}
				keys := make([]string, 0, len(t.Facts))
				for k := range t.Facts {
					keys = append(keys, k)
				}
				sort.Strings(keys)
				kvs := make([][2]string, 0, len(keys))
				for _, k := range keys {
					v, ok := t.Facts[k].(string)
					if !ok {
						b, _ := json.Marshal(t.Facts[k])
						v = string(b)
					}
					kvs = append(kvs, [2]string{"  " + k, v})
				}
				if len(kvs) > 0 {
					fmt.Fprintln(g.stdout, "Facts:")
				}
				return printKV(g.stdout, kvs)
			})
		},
	}
	test.Flags().StringVar(&tdev, "device", "", "the device (MAC; required)")
	test.Flags().StringVar(&tmatch, "match", "", "test this expression instead of the rules")
	_ = test.MarkFlagRequired("device")
	cmd.AddCommand(test)
	return cmd
}

func disabledText(enabled bool) string {
	if enabled {
		return ""
	}
	return " (disabled)"
}

func printRule(g *globals, r store.Rule) error {
	return printKV(g.stdout, [][2]string{
		{"Name", r.Name}, {"Position", strconv.Itoa(r.Position)}, {"Enabled", yesNo(r.Enabled)},
		{"Match", r.Match}, {"Bundle", r.Bundle}, {"Group", r.Group},
		{"Created", when(r.CreatedAt)}, {"Updated", ago(r.UpdatedAt)},
	})
}
