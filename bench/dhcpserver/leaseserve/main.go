// Command leaseserve runs Preboot's embedded DHCP server (package
// dhcpserver) with its leases in a SQLite file or a PostgreSQL database,
// for bench/dhcpserver/run.sh: the same code `preboot serve --dhcp-range`
// runs, without the rest of the server.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/preboot/preboot/dhcpserver"
	"github.com/preboot/preboot/store"
	"github.com/preboot/preboot/store/sqlstore"
)

func main() {
	iface := flag.String("iface", "", "interface to serve")
	db := flag.String("sqlite", "", "SQLite database file")
	dsn := flag.String("postgres", "", "PostgreSQL DSN (instead of -sqlite)")
	rng := flag.String("range", "", "START-END")
	subnet := flag.String("subnet", "", "the range's subnet (CIDR), to serve it through relays (perfdhcp acts as one)")
	lease := flag.Duration("lease-time", time.Hour, "lease time")
	flag.Parse()
	if err := run(*iface, *db, *dsn, *rng, *subnet, *lease); err != nil {
		fmt.Fprintln(os.Stderr, "leaseserve:", err)
		os.Exit(1)
	}
}

func run(iface, db, dsn, rng, subnet string, lease time.Duration) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	var (
		st  *sqlstore.Store
		err error
	)
	if dsn != "" {
		st, err = sqlstore.OpenPostgres(ctx, dsn)
	} else {
		st, err = sqlstore.OpenSQLite(ctx, db)
	}
	if err != nil {
		return err
	}
	defer st.Close()
	a, b, _ := strings.Cut(rng, "-")
	start, err := netip.ParseAddr(a)
	if err != nil {
		return fmt.Errorf("range: %w", err)
	}
	end, err := netip.ParseAddr(b)
	if err != nil {
		return fmt.Errorf("range: %w", err)
	}
	var sn netip.Prefix
	if subnet != "" {
		if sn, err = netip.ParsePrefix(subnet); err != nil {
			return fmt.Errorf("subnet: %w", err)
		}
	}
	s := &dhcpserver.Server{
		Leases:    st,
		Events:    st,
		Ranges:    []dhcpserver.Range{{LeaseRange: store.LeaseRange{Start: start, End: end}}},
		LeaseTime: lease,
		Interface: iface,
		Logger:    slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Metrics:   dhcpserver.NewMetrics(nil),
	}
	s.Ranges[0].Subnet = sn
	err = s.ListenAndServe(ctx)
	for _, r := range []string{dhcpserver.ResultOffered, dhcpserver.ResultAcked, dhcpserver.ResultNak, dhcpserver.ResultExhausted, dhcpserver.ResultStoreError} {
		fmt.Fprintf(os.Stderr, "%s=%.0f ", r, s.Metrics.Requests(r))
	}
	fmt.Fprintln(os.Stderr)
	return err
}
