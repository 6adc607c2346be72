package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/preboot/preboot/api"
	"github.com/preboot/preboot/bundle"
	"github.com/preboot/preboot/server"
	"github.com/preboot/preboot/store"
)

// createdToken is POST /tokens's answer: the token (shown once) and its
// record.
type createdToken struct {
	store.Token
	Secret string `json:"token"`
}

func newToken(g *globals) *cobra.Command {
	var af adminFlags
	cmd := &cobra.Command{
		Use:     "token",
		Aliases: []string{"tokens"},
		Short:   "Admin API tokens: list, create, remove",
	}
	af.register(cmd)

	cmd.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "List tokens (the server keeps only their hashes)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := af.client(g)
			if err != nil {
				return err
			}
			var ts []store.Token
			raw, _, err := c.call(cmd.Context(), "GET", "/api/v1/tokens", nil, &ts)
			if err != nil {
				return err
			}
			return af.emit(g, raw, func() error {
				tw := newTable(g.stdout)
				row(tw, "ID", "NAME", "PREFIX", "CREATED", "LAST USED")
				for _, t := range ts {
					row(tw, t.ID, t.Name, t.Prefix+"...", when(t.CreatedAt), ago(t.LastUsed))
				}
				return tw.Flush()
			})
		},
	})

	var local bool
	var dataDir string
	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Create an admin token; it is printed once, the server keeps only its hash",
		Long: "Create an admin token over the API, or with --local directly in the server's database (on the\n" +
			"server, as the user that runs it: the first token when loopback clients are not trusted).",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var t createdToken
			var raw []byte
			base := ""
			if local {
				var err error
				if t, err = createLocalToken(cmd.Context(), g, dataDir, args[0]); err != nil {
					return err
				}
				if raw, err = json.MarshalIndent(t, "", "  "); err != nil {
					return err
				}
			} else {
				c, err := af.client(g)
				if err != nil {
					return err
				}
				if raw, _, err = c.call(cmd.Context(), "POST", "/api/v1/tokens", map[string]string{"name": args[0]}, &t); err != nil {
					return err
				}
				base = c.base
			}
			if base == "" {
				base = "http://SERVER:8080"
			}
			return af.emit(g, raw, func() error {
				fmt.Fprintln(g.stdout, t.Secret)
				fmt.Fprintf(g.stderr, "Token %s (id %d) created. Copy it now: it is not shown again and cannot be recovered.\n"+
					"Use it with --token, $PREBOOT_TOKEN, or: preboot login --server %s --token <token>\n", t.Name, t.ID, base)
				return nil
			})
		},
	}
	create.Flags().BoolVar(&local, "local", false, "write the token into the server's database directly (reads --config for the store)")
	create.Flags().StringVar(&dataDir, "data-dir", "", "with --local: the server's data directory (default: the config's data_dir)")
	cmd.AddCommand(create)

	cmd.AddCommand(&cobra.Command{
		Use:     "rm ID",
		Aliases: []string{"remove", "delete", "revoke"},
		Short:   "Remove (revoke) a token",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseID(args[0], "token")
			if err != nil {
				return err
			}
			c, err := af.client(g)
			if err != nil {
				return err
			}
			if err := c.do(cmd.Context(), "DELETE", fmt.Sprintf("/api/v1/tokens/%d", id), nil, nil); err != nil {
				return err
			}
			if !af.json() {
				fmt.Fprintf(g.stdout, "token %d removed\n", id)
			}
			return nil
		},
	})
	return cmd
}

// newLogin is `preboot login`: it saves the server URL and token in the
// CLI config file.
func newLogin(g *globals) *cobra.Command {
	var server, token string
	var verify bool
	cmd := &cobra.Command{
		Use:   "login --server URL [--token TOKEN]",
		Short: "Save the server URL and admin token for the admin commands (in the CLI config file, mode 0600)",
		Long: "Save the server URL and admin token in the CLI config file: $PREBOOT_CLI_CONFIG, else\n" +
			"~/.config/preboot/cli.yaml. Admin commands use them when no --server/--token flag or\n" +
			"$PREBOOT_SERVER/$PREBOOT_TOKEN is set. The server and token are checked first (--verify=false skips it).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if server == "" {
				return errors.New("--server: required, e.g. http://preboot.example:8080")
			}
			u, err := url.Parse(server)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return fmt.Errorf("--server %q: want a URL like http://host:8080", server)
			}
			server = strings.TrimRight(server, "/")
			if verify {
				af := adminFlags{server: server, token: token, output: "table"}
				c, err := af.client(g)
				if err != nil {
					return err
				}
				// The token must reach an admin endpoint.
				if err := c.do(cmd.Context(), "GET", "/api/v1/settings", nil, nil); err != nil {
					return fmt.Errorf("not saved: %w", err)
				}
			}
			cfg, path, err := readCLIConfig()
			if err != nil {
				return err
			}
			cfg.Server, cfg.Token = server, token
			if err := writeCLIConfig(path, cfg); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "saved server %s and %s to %s (mode 0600)\n", server, tokenText(token), path)
			return nil
		},
	}
	cmd.Flags().StringVar(&server, "server", "", "Preboot server URL, e.g. http://preboot.example:8080")
	cmd.Flags().StringVar(&token, "token", "", "admin token (preboot token create NAME); empty for a server that trusts this host")
	cmd.Flags().BoolVar(&verify, "verify", true, "check that the server answers and accepts the token")
	return cmd
}

func tokenText(t string) string {
	if t == "" {
		return "no token"
	}
	if len(t) > 8 {
		return "token " + t[:8] + "..."
	}
	return "a token"
}

// createLocalToken writes an admin token into the store the server's
// configuration names, without the API.
func createLocalToken(ctx context.Context, g *globals, dataDir, name string) (createdToken, error) {
	if err := bundle.ValidName("token", name); err != nil {
		return createdToken{}, err
	}
	cfg, err := g.load()
	if err != nil {
		return createdToken{}, err
	}
	if dataDir != "" {
		cfg.DataDir = dataDir
	}
	if err := cfg.Finish(); err != nil {
		return createdToken{}, fmt.Errorf("configuration: %w", err)
	}
	if cfg.Store.Driver == "sqlite" {
		if _, err := os.Stat(cfg.Store.Path); err != nil {
			return createdToken{}, fmt.Errorf("no database at %s (give the server's --config or --data-dir): %w", cfg.Store.Path, err)
		}
	}
	st, err := server.OpenStore(ctx, cfg.Store)
	if err != nil {
		return createdToken{}, err
	}
	defer st.Close()
	secret, hash, err := api.NewToken()
	if err != nil {
		return createdToken{}, err
	}
	t, err := st.CreateToken(ctx, store.Token{Name: name, Hash: hash, Prefix: secret[:len(api.AdminTokenPrefix)+6]})
	if err != nil {
		return createdToken{}, fmt.Errorf("create token %s: %w", name, err)
	}
	if _, err := st.AddEvent(ctx, store.Event{Kind: store.EventAdmin, Actor: "local", Message: fmt.Sprintf("token %s created (id %d) on the server host", t.Name, t.ID)}); err != nil {
		return createdToken{}, err
	}
	return createdToken{Token: t, Secret: secret}, nil
}
