// Command proxyserve runs proxydhcp.Server with a static Booter, for the
// proxyDHCP benchmark (bench/dhcp/run.sh). It serves until SIGTERM/SIGINT,
// then prints its request counters on stderr.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/preboot/preboot/proxydhcp"
)

func main() {
	iface := flag.String("iface", "", "interface to serve (\"\" = all)")
	file := flag.String("file", "undionly.kpxe", "boot file name to answer")
	dhcpAddr := flag.String("dhcp-addr", ":67", "DHCP listen address")
	pxeAddr := flag.String("pxe-addr", ":4011", "PXE listen address")
	workers := flag.Int("workers", 0, "reader goroutines per socket (0 = default)")
	verbose := flag.Bool("v", false, "log every answer (Info level); default logs warnings only")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile to this file")
	flag.Parse()

	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "proxyserve:", err)
			os.Exit(1)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, "proxyserve:", err)
			os.Exit(1)
		}
		defer f.Close()
		defer pprof.StopCPUProfile()
	}

	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	metrics := proxydhcp.NewMetrics(prometheus.NewRegistry())
	boot := proxydhcp.Boot{Filename: *file}
	s := &proxydhcp.Server{
		Booter: proxydhcp.BooterFunc(func(context.Context, proxydhcp.Client) (proxydhcp.Boot, error) {
			return boot, nil
		}),
		Interface: *iface,
		Logger:    log,
		Metrics:   metrics,
		DHCPAddr:  *dhcpAddr,
		PXEAddr:   *pxeAddr,
		Workers:   *workers,
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	fmt.Fprintln(os.Stderr, "proxyserve: ready")
	err := s.ListenAndServe(ctx)
	for _, r := range []string{proxydhcp.ResultOffered, proxydhcp.ResultIgnoredNotPXE, proxydhcp.ResultMalformed, proxydhcp.ResultSendError} {
		fmt.Fprintf(os.Stderr, "proxyserve: port 67 %s %.0f\n", r, metrics.Requests(67, r))
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "proxyserve:", err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}
