package cli

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/spf13/cobra"

	"github.com/preboot/preboot/api"
	"github.com/preboot/preboot/store"
)

// newSite is `preboot site`: the subnets whose devices fetch image data
// from a site server (docs/scale-out.md).
func newSite(g *globals) *cobra.Command {
	var af adminFlags
	cmd := &cobra.Command{
		Use:     "site",
		Aliases: []string{"sites"},
		Short:   "Sites: subnets whose devices restore from a site server (list, add, rm)",
	}
	af.register(cmd)

	cmd.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "List the sites",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := af.client(g)
			if err != nil {
				return err
			}
			var ss []store.Site
			raw, _, err := c.call(cmd.Context(), "GET", "/api/v1/sites", nil, &ss)
			if err != nil {
				return err
			}
			return af.emit(g, raw, func() error {
				tw := newTable(g.stdout)
				row(tw, "NAME", "SUBNETS", "SERVER", "PIN")
				for _, s := range ss {
					subnets := make([]string, len(s.Subnets))
					for i, p := range s.Subnets {
						subnets[i] = p.String()
					}
					row(tw, s.Name, strings.Join(subnets, ","), s.ServerURL, short(s.Pin))
				}
				return tw.Flush()
			})
		},
	})

	var subnets []string
	var serverURL, pin string
	add := &cobra.Command{
		Use:   "add NAME --subnet CIDR [--subnet CIDR] --server URL [--pin sha256:HEX]",
		Short: "Add a site: restores handed to devices of its subnets read image data from its server",
		Long: "Add a site. A restore job handed out to a device whose boot request comes from one of the\n" +
			"subnets gets preboot.images=URL: the agent reads manifests and chunks from the site server\n" +
			"(a `preboot serve --upstream` replicating this server), progress and results still come here;\n" +
			"where the site lacks the image version, the agent falls back to this server.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(subnets) == 0 || serverURL == "" {
				return fmt.Errorf("--subnet and --server are required")
			}
			if u, err := url.Parse(serverURL); err != nil || u.Host == "" {
				return fmt.Errorf("--server %q: want https://HOST:PORT", serverURL)
			}
			c, err := af.client(g)
			if err != nil {
				return err
			}
			var s store.Site
			raw, _, err := c.call(cmd.Context(), "POST", "/api/v1/sites",
				api.SiteRequest{Name: args[0], Subnets: subnets, ServerURL: serverURL, Pin: pin}, &s)
			if err != nil {
				return err
			}
			return af.emit(g, raw, func() error {
				fmt.Fprintf(g.stdout, "site %s added (server %s)\n", s.Name, s.ServerURL)
				return nil
			})
		},
	}
	add.Flags().StringArrayVar(&subnets, "subnet", nil, "a subnet of the site, CIDR (IPv4 or IPv6); repeatable")
	add.Flags().StringVar(&serverURL, "server", "", "the site server's URL, https://HOST:8443")
	add.Flags().StringVar(&pin, "pin", "", "the site server's certificate fingerprint, sha256:HEX (its log says it at start)")
	cmd.AddCommand(add)

	cmd.AddCommand(&cobra.Command{
		Use:     "rm NAME",
		Aliases: []string{"remove", "delete"},
		Short:   "Remove a site (its devices read image data from this server again)",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := af.client(g)
			if err != nil {
				return err
			}
			if err := c.do(cmd.Context(), "DELETE", "/api/v1/sites/"+url.PathEscape(args[0]), nil, nil); err != nil {
				return err
			}
			if !af.json() {
				fmt.Fprintf(g.stdout, "site %s removed\n", args[0])
			}
			return nil
		},
	})
	return cmd
}

// short abbreviates a fingerprint for a table.
func short(pin string) string {
	if len(pin) > 19 {
		return pin[:19] + "…"
	}
	return pin
}
