package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/preboot/preboot/store"
)

// menuFlags are the flags that set a Preboot menu; prefix is "" or
// "menu-" (settings set).
type menuFlags struct {
	prefix  string
	mode    string
	hotkey  string
	timeout time.Duration
	title   string
	bundles []string
	shell   bool
}

func (m *menuFlags) register(fs *pflag.FlagSet, prefix string) {
	m.prefix = prefix
	fs.StringVar(&m.mode, prefix+"mode", "", "menu mode: always, hotkey or never")
	fs.StringVar(&m.hotkey, prefix+"hotkey", "", "hotkey that opens the menu in hotkey mode (a letter, a digit, ctrl-X, esc or space)")
	fs.DurationVar(&m.timeout, prefix+"timeout", 0, "how long the menu or the hotkey prompt waits, e.g. 5s")
	fs.StringVar(&m.title, prefix+"title", "", "menu title")
	fs.StringSliceVar(&m.bundles, prefix+"bundle", nil, "bundle offered as a menu entry (repeatable; --"+prefix+"bundle= for none)")
	fs.BoolVar(&m.shell, prefix+"shell", false, "offer the maintenance shell (--"+prefix+"shell=false to remove it)")
}

// changed reports whether any menu flag was given.
func (m *menuFlags) changed(fs *pflag.FlagSet) bool {
	for _, n := range []string{"mode", "hotkey", "timeout", "title", "bundle", "shell"} {
		if fs.Changed(m.prefix + n) {
			return true
		}
	}
	return false
}

// apply sets the fields whose flags were given.
func (m *menuFlags) apply(fs *pflag.FlagSet, dst *store.Menu) {
	if fs.Changed(m.prefix + "mode") {
		dst.Mode = m.mode
	}
	if fs.Changed(m.prefix + "hotkey") {
		dst.Hotkey = m.hotkey
	}
	if fs.Changed(m.prefix + "timeout") {
		dst.Timeout = store.Duration(m.timeout)
	}
	if fs.Changed(m.prefix + "title") {
		dst.Title = m.title
	}
	if fs.Changed(m.prefix + "bundle") {
		dst.Bundles = slices.DeleteFunc(slices.Clone(m.bundles), func(s string) bool { return strings.TrimSpace(s) == "" })
	}
	if fs.Changed(m.prefix + "shell") {
		dst.Shell = m.shell
	}
}

// newMenu is `preboot menu`: the server's default Preboot menu.
func newMenu(g *globals) *cobra.Command {
	var af adminFlags
	cmd := &cobra.Command{
		Use:   "menu",
		Short: "Show or set the server's default Preboot menu (groups and devices may override it)",
	}
	af.register(cmd)
	cmd.AddCommand(&cobra.Command{
		Use:   "show",
		Short: "Show the server's default menu",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := af.client(g)
			if err != nil {
				return err
			}
			var m store.Menu
			raw, _, err := c.call(cmd.Context(), "GET", "/api/v1/menu", nil, &m)
			if err != nil {
				return err
			}
			return af.emit(g, raw, func() error { return printMenu(g.stdout, m) })
		},
	})
	var mf menuFlags
	set := &cobra.Command{
		Use:   "set [--mode M] [--hotkey K] [--timeout T] [--title S] [--bundle B]... [--shell]",
		Short: "Change the server's default menu (only the given fields change)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !mf.changed(cmd.Flags()) {
				return errors.New("nothing to change: give --mode, --hotkey, --timeout, --title, --bundle or --shell")
			}
			c, err := af.client(g)
			if err != nil {
				return err
			}
			var m store.Menu
			if err := c.do(cmd.Context(), "GET", "/api/v1/menu", nil, &m); err != nil {
				return err
			}
			mf.apply(cmd.Flags(), &m)
			raw, _, err := c.call(cmd.Context(), "PUT", "/api/v1/menu", m, &m)
			if err != nil {
				return err
			}
			return af.emit(g, raw, func() error {
				fmt.Fprintf(g.stdout, "default menu: %s\n", menuText(m))
				return nil
			})
		},
	}
	mf.register(set.Flags(), "")
	cmd.AddCommand(set)
	return cmd
}

// scopedMenu is `preboot device|group menu TARGET [show|set|clear]`: the
// menu override of one device or group. target turns the argument into
// the API path of the override and a label.
func scopedMenu(g *globals, af *adminFlags, what, argName string, target func(arg string) (path, label string, err error)) *cobra.Command {
	var mf menuFlags
	cmd := &cobra.Command{
		Use:   "menu " + argName + " [show | set FLAGS | clear]",
		Short: "Show, set or clear the " + what + "'s Preboot menu override",
		Long: "Without an action, or with show: the " + what + "'s menu override (404 when it has none).\n" +
			"set: change the override; given flags change, others keep the current override's values, or the\n" +
			"server default's when there is no override yet.\n" +
			"clear: remove the override (the " + what + " follows the next scope up again).",
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			action := "show"
			if len(args) == 2 {
				action = args[1]
			}
			if action != "set" && mf.changed(cmd.Flags()) {
				return fmt.Errorf("menu flags need the set action: preboot %s menu %s set ...", what, args[0])
			}
			path, label, err := target(args[0])
			if err != nil {
				return err
			}
			c, err := af.client(g)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			switch action {
			case "show":
				var m store.Menu
				raw, _, err := c.call(ctx, "GET", path, nil, &m)
				if err != nil {
					return err
				}
				return af.emit(g, raw, func() error { return printMenu(g.stdout, m) })
			case "set":
				if !mf.changed(cmd.Flags()) {
					return errors.New("nothing to change: give --mode, --hotkey, --timeout, --title, --bundle or --shell")
				}
				var m store.Menu
				err := c.do(ctx, "GET", path, nil, &m)
				if isStatus(err, http.StatusNotFound) {
					err = c.do(ctx, "GET", "/api/v1/menu", nil, &m)
				}
				if err != nil {
					return err
				}
				mf.apply(cmd.Flags(), &m)
				raw, _, err := c.call(ctx, "PUT", path, m, &m)
				if err != nil {
					return err
				}
				return af.emit(g, raw, func() error {
					fmt.Fprintf(g.stdout, "%s menu: %s\n", label, menuText(m))
					return nil
				})
			case "clear":
				if err := c.do(ctx, "DELETE", path, nil, nil); err != nil {
					return err
				}
				if !af.json() {
					fmt.Fprintf(g.stdout, "%s menu override removed\n", label)
				}
				return nil
			}
			return fmt.Errorf("menu action %q: want show, set or clear", action)
		},
	}
	mf.register(cmd.Flags(), "")
	return cmd
}

// newSettings is `preboot settings`: the server-wide policy settings.
func newSettings(g *globals) *cobra.Command {
	var af adminFlags
	cmd := &cobra.Command{
		Use:   "settings",
		Short: "Show or change server-wide settings: default menu, unregistered devices, naming",
	}
	af.register(cmd)
	cmd.AddCommand(&cobra.Command{
		Use:   "show",
		Short: "Show the settings",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := af.client(g)
			if err != nil {
				return err
			}
			var s store.Settings
			raw, _, err := c.call(cmd.Context(), "GET", "/api/v1/settings", nil, &s)
			if err != nil {
				return err
			}
			return af.emit(g, raw, func() error { return printSettings(g, s) })
		},
	})

	var (
		mf                 menuFlags
		action, bndl, file string
		prefix, from       string
		sbf                secureBootFlags
	)
	set := &cobra.Command{
		Use:   "set [FLAGS | --file F.json]",
		Short: "Change settings (only the given ones change)",
		Long: "Change settings. With flags, the current settings are read and the given values changed.\n" +
			"With --file, the file's JSON ({\"menu\":{...},\"unregistered\":{...},\"naming\":{...}}, any subset) is\n" +
			"sent as is: each section it has replaces that section.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fs := cmd.Flags()
			flagsGiven := mf.changed(fs) || fs.Changed("unregistered-action") || fs.Changed("unregistered-bundle") ||
				fs.Changed("naming-prefix") || fs.Changed("naming-from") || sbf.changed(fs)
			if file != "" && flagsGiven {
				return errors.New("--file and the other flags: use one or the other")
			}
			if file == "" && !flagsGiven {
				return errors.New("nothing to change: give --file or flags (see --help)")
			}
			c, err := af.client(g)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			var body any
			if file != "" {
				b, err := readFileArg(cmd, file)
				if err != nil {
					return err
				}
				if !json.Valid(b) {
					return fmt.Errorf("%s: not valid JSON", file)
				}
				body = json.RawMessage(b)
			} else {
				var s store.Settings
				if err := c.do(ctx, "GET", "/api/v1/settings", nil, &s); err != nil {
					return err
				}
				patch := map[string]any{}
				if mf.changed(fs) {
					mf.apply(fs, &s.Menu)
					patch["menu"] = s.Menu
				}
				if fs.Changed("unregistered-action") || fs.Changed("unregistered-bundle") {
					if fs.Changed("unregistered-action") {
						s.Unregistered.Action = action
					}
					if fs.Changed("unregistered-bundle") {
						s.Unregistered.Bundle = bndl
					}
					if s.Unregistered.Action != store.UnregisteredBundle && !fs.Changed("unregistered-bundle") {
						s.Unregistered.Bundle = ""
					}
					patch["unregistered"] = s.Unregistered
				}
				if fs.Changed("naming-prefix") || fs.Changed("naming-from") {
					if fs.Changed("naming-prefix") {
						s.Naming.Prefix = prefix
					}
					if fs.Changed("naming-from") {
						s.Naming.From = from
					}
					patch["naming"] = s.Naming
				}
				if sbf.changed(fs) {
					if err := sbf.apply(fs, &s.SecureBoot); err != nil {
						return err
					}
					patch["secure_boot"] = s.SecureBoot
				}
				body = patch
			}
			var s store.Settings
			raw, _, err := c.call(ctx, "PATCH", "/api/v1/settings", body, &s)
			if err != nil {
				return err
			}
			return af.emit(g, raw, func() error { return printSettings(g, s) })
		},
	}
	fs := set.Flags()
	mf.register(fs, "menu-")
	fs.StringVar(&action, "unregistered-action", "", "what an unregistered device no rule matches does: local, menu, bundle or ignore")
	fs.StringVar(&bndl, "unregistered-bundle", "", "the bundle it runs once for --unregistered-action bundle")
	fs.StringVar(&prefix, "naming-prefix", "", "prefix of the names given to new devices")
	fs.StringVar(&from, "naming-from", "", "what follows the prefix: serial, asset, mac, sequence, or \"\" to leave devices unnamed")
	sbf.register(fs)
	fs.StringVar(&file, "file", "", "JSON file of settings sections (- for stdin)")
	cmd.AddCommand(set)
	return cmd
}

func printSettings(g *globals, s store.Settings) error {
	un := s.Unregistered.Action
	if s.Unregistered.Bundle != "" {
		un += " (bundle " + s.Unregistered.Bundle + ")"
	}
	naming := "leave unnamed"
	if s.Naming.From != "" {
		naming = fmt.Sprintf("%s + %s", dash(s.Naming.Prefix), s.Naming.From)
	}
	return printKV(g.stdout, [][2]string{
		{"Default menu", menuText(s.Menu)},
		{"Unregistered devices", un},
		{"Naming", naming},
		{"Secure Boot", secureBootText(s.SecureBoot)},
	})
}

// readFileArg reads a file named on the command line; "-" is stdin.
func readFileArg(cmd *cobra.Command, name string) ([]byte, error) {
	if name == "-" {
		b, err := io.ReadAll(io.LimitReader(cmd.InOrStdin(), 16<<20+1))
		if err != nil {
			return nil, fmt.Errorf("stdin: %w", err)
		}
		if len(b) > 16<<20 {
			return nil, errors.New("stdin: more than 16 MiB")
		}
		return b, nil
	}
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, err
	}
	return b, nil
}
