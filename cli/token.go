package cli

import (
	"cmp"
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
	"github.com/preboot/preboot/tlspin"
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
				row(tw, "ID", "NAME", "SCOPE", "PREFIX", "CREATED", "LAST USED")
				for _, t := range ts {
					row(tw, t.ID, t.Name, cmp.Or(t.Scope, "admin"), t.Prefix+"...", when(t.CreatedAt), ago(t.LastUsed))
				}
				return tw.Flush()
			})
		},
	})

	var local bool
	var dataDir, scope string
	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Create an admin token; it is printed once, the server keeps only its hash",
		Long: "Create an admin token over the API (on the server host through its admin socket), or with --local\n" +
			"directly in the server's database (on the server, as the user that runs it).\n\n" +
			"--scope replication makes a site server's token: it reads images, manifests and chunks, lists\n" +
			"images and versions and introspects job tokens, and gets 403 on everything else (docs/scale-out.md).",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if scope == "admin" {
				scope = store.ScopeAdmin
			}
			if !api.ValidScope(scope) {
				return fmt.Errorf("--scope %q: want admin or replication", scope)
			}
			var t createdToken
			var raw []byte
			base := ""
			if local {
				var err error
				if t, err = createLocalToken(cmd.Context(), g, dataDir, args[0], scope); err != nil {
					return err
				}
				if raw, err = json.MarshalIndent(t, "", "  "); err != nil {
					return err
				}
			} else {
				if dataDir != "" {
					af.dataDir = dataDir // where the admin socket is
				}
				c, err := af.client(g)
				if err != nil {
					return err
				}
				if raw, _, err = c.call(cmd.Context(), "POST", "/api/v1/tokens", map[string]string{"name": args[0], "scope": scope}, &t); err != nil {
					return err
				}
				if c.sock == "" {
					base = c.base
				}
			}
			if base == "" {
				base = "https://SERVER:8443"
			}
			return af.emit(g, raw, func() error {
				fmt.Fprintln(g.stdout, t.Secret)
				fmt.Fprintf(g.stderr, "Token %s (id %d) created. Copy it now: it is not shown again and cannot be recovered.\n"+
					"Save it in a file (mode 0600) and use it with --token-file FILE, $PREBOOT_TOKEN, or:\n"+
					"preboot login --server %s --token-file FILE [--tls-fingerprint sha256:...]\n", t.Name, t.ID, base)
				return nil
			})
		},
	}
	create.Flags().StringVar(&scope, "scope", "admin", "what the token may do: admin (everything) or replication (a site server's: read images, introspect job tokens)")
	create.Flags().BoolVar(&local, "local", false, "write the token into the server's database directly (reads --config for the store)")
	create.Flags().StringVar(&dataDir, "data-dir", "", "the server's data directory: with --local its database, else its admin socket (default: the config's data_dir)")
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
	var server, token, tokenFile, fingerprint, caCert string
	var verify bool
	cmd := &cobra.Command{
		Use:   "login --server URL [--token-file FILE] [--tls-fingerprint sha256:HEX | --ca-cert FILE]",
		Short: "Save the server URL and admin token for the admin commands (in the CLI config file, mode 0600)",
		Long: "Save the server URL and admin token in the CLI config file: $PREBOOT_CLI_CONFIG, else\n" +
			"~/.config/preboot/cli.yaml. Admin commands use them when no --server/--token flag or\n" +
			"$PREBOOT_SERVER/$PREBOOT_TOKEN is set. The server and token are checked first (--verify=false skips it).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if server == "" {
				return errors.New("--server: required, e.g. https://preboot.example:8443")
			}
			u, err := url.Parse(server)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return fmt.Errorf("--server %q: want a URL like https://host:8443", server)
			}
			server = strings.TrimRight(server, "/")
			switch {
			case tokenFile != "":
				if token, err = readSecretFile(tokenFile); err != nil {
					return err
				}
			case token != "":
				warnArgvSecret(g, "token", "--token-file FILE")
			default:
				token = os.Getenv("PREBOOT_TOKEN")
			}
			if fingerprint != "" {
				if _, err := tlspin.Parse(fingerprint); err != nil {
					return err
				}
			}
			if verify {
				tf := ""
				if token != "" {
					f, err := os.CreateTemp("", "preboot-login-*")
					if err != nil {
						return err
					}
					defer os.Remove(f.Name())
					_, werr := f.WriteString(token)
					if err := errors.Join(werr, f.Close()); err != nil {
						return err
					}
					tf = f.Name()
				}
				af := adminFlags{server: server, tokenFile: tf, tlsFingerprint: fingerprint, caCert: caCert, output: "table"}
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
			cfg.Server, cfg.Token, cfg.TLSFingerprint, cfg.CACert = server, token, fingerprint, caCert
			if err := writeCLIConfig(path, cfg); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "saved server %s and %s to %s (mode 0600)\n", server, tokenText(token), path)
			return nil
		},
	}
	cmd.Flags().StringVar(&server, "server", "", "Preboot server URL, e.g. https://preboot.example:8443")
	cmd.Flags().StringVar(&token, "token", "", "admin token (visible in the process list: prefer --token-file or $PREBOOT_TOKEN)")
	cmd.Flags().StringVar(&tokenFile, "token-file", "", "file holding the admin token (preboot token create NAME)")
	cmd.Flags().StringVar(&fingerprint, "tls-fingerprint", "", "pin the server's certificate: sha256:HEX as the server logs it")
	cmd.Flags().StringVar(&caCert, "ca-cert", "", "PEM file of the CA to trust for the server")
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
func createLocalToken(ctx context.Context, g *globals, dataDir, name, scope string) (createdToken, error) {
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
	t, err := st.CreateToken(ctx, store.Token{Name: name, Hash: hash, Prefix: secret[:len(api.AdminTokenPrefix)+6], Scope: scope})
	if err != nil {
		return createdToken{}, fmt.Errorf("create token %s: %w", name, err)
	}
	if _, err := st.AddEvent(ctx, store.Event{Kind: store.EventAdmin, Actor: "local", Message: fmt.Sprintf("token %s created (id %d) on the server host", t.Name, t.ID)}); err != nil {
		return createdToken{}, err
	}
	return createdToken{Token: t, Secret: secret}, nil
}
