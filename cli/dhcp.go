package cli

import (
	"net/url"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/preboot/preboot/api"
)

func newDHCP(g *globals) *cobra.Command {
	var af adminFlags
	cmd := &cobra.Command{Use: "dhcp", Short: "The embedded DHCPv4 and DHCPv6 servers: their leases"}
	af.register(cmd)

	var family string
	var active bool
	var limit int
	leases := &cobra.Command{
		Use:     "leases [--family 4|6] [--active]",
		Aliases: []string{"lease"},
		Short:   "List DHCPv4 and DHCPv6 leases: address, client, hostname, state, expiry, server",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := url.Values{}
			setIf(q, "family", family)
			if active {
				q.Set("active", "true")
			}
			if limit > 0 {
				q.Set("limit", strconv.Itoa(limit))
			}
			c, err := af.client(g)
			if err != nil {
				return err
			}
			var ls []api.DHCPLease
			path := "/api/v1/dhcp/leases"
			if len(q) > 0 {
				path += "?" + q.Encode()
			}
			raw, _, err := c.call(cmd.Context(), "GET", path, nil, &ls)
			if err != nil {
				return err
			}
			return af.emit(g, raw, func() error {
				tw := newTable(g.stdout)
				row(tw, "ADDRESS", "MAC", "CLIENT", "HOSTNAME", "STATE", "EXPIRES", "SERVER")
				for _, l := range ls {
					state := l.State
					if !l.Active {
						state += " (free)"
					}
					row(tw, l.IP.String(), dash(l.MAC), dash(l.ClientID), dash(l.Hostname), state, when(l.Expires), dash(l.Server))
				}
				return tw.Flush()
			})
		},
	}
	leases.Flags().StringVar(&family, "family", "", "only DHCPv4 (4) or DHCPv6 (6) leases")
	leases.Flags().BoolVar(&active, "active", false, "only addresses bound, offered or quarantined now")
	leases.Flags().IntVar(&limit, "limit", 0, "at most this many leases (default 100)")
	cmd.AddCommand(leases)
	return cmd
}
