// Command tftpserve runs Preboot's tftp.Server alone, for benchmarks and manual tests.
//
//	go run ./bench/tftp/tftpserve -addr 127.0.0.1:6969 -root /srv/tftp
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

	"github.com/preboot/preboot/tftp"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:6969", "UDP address to listen on")
	root := flag.String("root", ".", "directory to serve")
	verbose := flag.Bool("v", false, "log every transfer")
	windowBytes := flag.Int("max-window-bytes", 0, "tftp.Server.MaxWindowBytes (0 = default)")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile to this file")
	// The benchmark's clients all come from one address (loopback or one
	// namespace), unlike a room of PXE machines: the per-client cap is
	// raised by default so that 100 concurrent downloads are measured, not
	// the cap.
	perClient := flag.Int("max-transfers-per-client", 1024, "tftp.Server.MaxTransfersPerClient (0 = the server's default, 16)")
	flag.Parse()

	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "tftpserve:", err)
			os.Exit(1)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, "tftpserve:", err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}
	srv := &tftp.Server{Root: *root, Logger: log, MaxWindowBytes: *windowBytes, MaxTransfersPerClient: *perClient}
	if err := srv.ListenAndServe(ctx, *addr); err != nil {
		fmt.Fprintln(os.Stderr, "tftpserve:", err)
		os.Exit(1) //nolint:gocritic // the profile is only for successful runs
	}
}
