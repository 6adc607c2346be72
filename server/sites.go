package server

import (
	"context"
	"log/slog"
	"net/netip"

	"github.com/preboot/preboot/store"
)

// siteImageServer returns policy.Engine.ImageServer: the server and pin of
// the site whose subnets hold a job's client address, read from the store
// at each imaging boot (sites are few, imaging boots rare; several
// servers sharing the database see the same sites).
func siteImageServer(st store.Store, log *slog.Logger) func(ctx context.Context, clientIP string) (string, string) {
	return func(ctx context.Context, clientIP string) (string, string) {
		addr, err := netip.ParseAddr(clientIP)
		if err != nil {
			return "", ""
		}
		sites, err := st.Sites(ctx)
		if err != nil {
			log.WarnContext(ctx, "sites unreadable: the agent fetches its image data from this server", "client", clientIP, "err", err)
			return "", ""
		}
		site, ok := store.SiteFor(sites, addr)
		if !ok {
			return "", ""
		}
		log.InfoContext(ctx, "image data from the site server", "client", clientIP, "site", site.Name, "server", site.ServerURL)
		return site.ServerURL, site.Pin
	}
}
