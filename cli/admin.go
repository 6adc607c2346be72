package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/preboot/preboot/server"
	"github.com/preboot/preboot/session"
	"github.com/preboot/preboot/store"
)

// newAdmin is `preboot admin`: the web console's users, written directly
// into the server's database (on the server host, as the user that runs
// it), like `preboot token create --local`.
func newAdmin(g *globals) *cobra.Command {
	var dataDir, output string
	var passwordStdin bool
	cmd := &cobra.Command{
		Use:   "admin",
		Short: "Web console users: create, list, passwd, rm (directly in the server's database)",
		Long: "Manage the users of the web console (/console/). These commands open the server's database\n" +
			"directly: run them on the server host, as the user that runs `preboot serve`, with the\n" +
			"server's --config (or --data-dir). Passwords are kept as bcrypt hashes.",
	}
	cmd.PersistentFlags().StringVar(&dataDir, "data-dir", "", "the server's data directory (default: the config's data_dir)")

	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a console user (password: --password-stdin, else asked twice on a terminal, else generated and printed once)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := session.ValidUserName(name); err != nil {
				return err
			}
			pw, generated, err := newPassword(cmd, g, passwordStdin)
			if err != nil {
				return err
			}
			return withLocalStore(cmd.Context(), g, dataDir, true, func(st store.Store) error {
				u, err := session.CreateUser(cmd.Context(), st, name, pw)
				if err != nil {
					return fmt.Errorf("create console user %s: %w", name, err)
				}
				if err := localEvent(cmd.Context(), st, fmt.Sprintf("console user %s created on the server host", u.Name)); err != nil {
					return err
				}
				if generated {
					fmt.Fprintln(g.stdout, pw)
					fmt.Fprintf(g.stderr, "Console user %s created with the password above. Copy it now: it is not shown again.\n", u.Name)
					return nil
				}
				fmt.Fprintf(g.stdout, "console user %s created\n", u.Name)
				return nil
			})
		},
	}
	create.Flags().BoolVar(&passwordStdin, "password-stdin", false, "read the password from the first line of standard input")
	cmd.AddCommand(create)

	list := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List console users",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "table" && output != "json" {
				return fmt.Errorf("--output %q: want table or json", output)
			}
			return withLocalStore(cmd.Context(), g, dataDir, false, func(st store.Store) error {
				users, err := st.Users(cmd.Context())
				if err != nil {
					return err
				}
				if output == "json" {
					enc := json.NewEncoder(g.stdout)
					enc.SetIndent("", "  ")
					return enc.Encode(users)
				}
				tw := newTable(g.stdout)
				row(tw, "NAME", "CREATED", "PASSWORD SET", "LAST LOGIN")
				for _, u := range users {
					row(tw, u.Name, when(u.CreatedAt), when(u.PasswordChangedAt), ago(u.LastLogin))
				}
				return tw.Flush()
			})
		},
	}
	list.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	cmd.AddCommand(list)

	passwd := &cobra.Command{
		Use:   "passwd NAME",
		Short: "Set a console user's password (as for create) and end the user's sessions",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			return withLocalStore(cmd.Context(), g, dataDir, false, func(st store.Store) error {
				if _, err := st.User(cmd.Context(), name); err != nil {
					if errors.Is(err, store.ErrNotFound) {
						return fmt.Errorf("no console user %s (preboot admin list)", name)
					}
					return err
				}
				pw, generated, err := newPassword(cmd, g, passwordStdin)
				if err != nil {
					return err
				}
				if err := session.SetPassword(cmd.Context(), st, name, pw); err != nil {
					return fmt.Errorf("set the password of %s: %w", name, err)
				}
				if err := localEvent(cmd.Context(), st, fmt.Sprintf("password of console user %s changed on the server host", name)); err != nil {
					return err
				}
				if generated {
					fmt.Fprintln(g.stdout, pw)
					fmt.Fprintf(g.stderr, "New password of %s above; copy it now, it is not shown again. The user's sessions ended.\n", name)
					return nil
				}
				fmt.Fprintf(g.stdout, "password of %s changed; the user's sessions ended\n", name)
				return nil
			})
		},
	}
	passwd.Flags().BoolVar(&passwordStdin, "password-stdin", false, "read the password from the first line of standard input")
	cmd.AddCommand(passwd)

	cmd.AddCommand(&cobra.Command{
		Use:     "rm NAME",
		Aliases: []string{"remove", "delete"},
		Short:   "Remove a console user and end its sessions",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			return withLocalStore(cmd.Context(), g, dataDir, false, func(st store.Store) error {
				if err := st.DeleteUser(cmd.Context(), name); err != nil {
					if errors.Is(err, store.ErrNotFound) {
						return fmt.Errorf("no console user %s (preboot admin list)", name)
					}
					return err
				}
				if err := localEvent(cmd.Context(), st, fmt.Sprintf("console user %s removed on the server host", name)); err != nil {
					return err
				}
				fmt.Fprintf(g.stdout, "console user %s removed\n", name)
				return nil
			})
		},
	})
	return cmd
}

// withLocalStore opens the store the server's configuration names. The
// SQLite file must exist, unless create is set and its directory does.
func withLocalStore(ctx context.Context, g *globals, dataDir string, create bool, fn func(st store.Store) error) error {
	cfg, err := g.load()
	if err != nil {
		return err
	}
	if dataDir != "" {
		cfg.DataDir = dataDir
	}
	if err := cfg.Finish(); err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	if cfg.Store.Driver == "sqlite" {
		where := cfg.Store.Path
		if create {
			where = filepath.Dir(cfg.Store.Path)
		}
		if _, err := os.Stat(where); err != nil {
			return fmt.Errorf("no database at %s (give the server's --config or --data-dir): %w", cfg.Store.Path, err)
		}
	}
	st, err := server.OpenStore(ctx, cfg.Store)
	if err != nil {
		return err
	}
	defer st.Close()
	return fn(st)
}

func localEvent(ctx context.Context, st store.Store, msg string) error {
	_, err := st.AddEvent(ctx, store.Event{Kind: store.EventAdmin, Actor: "local", Message: msg})
	return err
}

// newPassword gets a password: the first line of stdin (--password-stdin),
// else typed twice on a terminal, else a generated one (generated true).
// Passwords chosen by hand need session.MinPasswordLen characters.
func newPassword(cmd *cobra.Command, g *globals, fromStdin bool) (pw string, generated bool, err error) {
	in := cmd.InOrStdin()
	switch {
	case fromStdin:
		line, err := bufio.NewReader(io.LimitReader(in, 4096)).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return "", false, fmt.Errorf("read the password from stdin: %w", err)
		}
		pw = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
	case isTerminal(in):
		fd := int(in.(*os.File).Fd())
		fmt.Fprint(g.stderr, "Password: ")
		a, err := term.ReadPassword(fd)
		fmt.Fprintln(g.stderr)
		if err != nil {
			return "", false, fmt.Errorf("read the password: %w", err)
		}
		fmt.Fprint(g.stderr, "Again: ")
		b, err := term.ReadPassword(fd)
		fmt.Fprintln(g.stderr)
		if err != nil {
			return "", false, fmt.Errorf("read the password: %w", err)
		}
		if string(a) != string(b) {
			return "", false, errors.New("the two passwords differ")
		}
		pw = string(a)
	default:
		return session.GeneratePassword(), true, nil
	}
	if err := session.ValidatePassword(pw); err != nil {
		return "", false, err
	}
	return pw, false, nil
}

func isTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
