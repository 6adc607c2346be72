// Command agentprof runs Preboot's imaging agent (capture, restore) or the
// image repository's HTTP handler (serve) with a CPU profile written to
// $PREBOOT_BENCH_CPUPROFILE. It calls the same packages as `preboot agent`
// and the repository part of `preboot serve`; it exists so the imaging
// benchmark can profile them without profiling hooks in production code.
//
//	agentprof serve   -data-dir DIR -listen 127.0.0.1:8080
//	agentprof capture -server URL -device PATH -image NAME
//	agentprof restore -server URL -device PATH -image NAME [-no-delta]
//
// serve stops on SIGINT/SIGTERM and then writes its profile.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/preboot/preboot/agent"
	"github.com/preboot/preboot/image"
	"github.com/preboot/preboot/image/httpstore"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: agentprof serve|capture|restore [flags]")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1], os.Args[2:]); err != nil {
		fmt.Fprintln(os.Stderr, "agentprof:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cmd string, args []string) (err error) {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	server := fs.String("server", "http://127.0.0.1:8080", "server URL")
	device := fs.String("device", "", "disk or disk-image file")
	name := fs.String("image", "bench", "image name")
	noDelta := fs.Bool("no-delta", false, "restore: write every chunk")
	dataDir := fs.String("data-dir", "", "serve: data directory (the repository is DATA_DIR/images)")
	listen := fs.String("listen", "127.0.0.1:8080", "serve: listen address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

	if p := os.Getenv("PREBOOT_BENCH_CPUPROFILE"); p != "" {
		f, err := os.Create(p)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer func() {
			pprof.StopCPUProfile()
			err = errors.Join(err, f.Close())
		}()
	}

	start := time.Now()
	switch cmd {
	case "serve":
		repo, err := image.OpenRepo(filepath.Join(*dataDir, "images"), image.RepoOptions{Logger: log})
		if err != nil {
			return err
		}
		h := &httpstore.Handler{Repo: repo, Logger: log}
		mux := http.NewServeMux()
		for _, p := range h.Prefixes() {
			mux.Handle(p, h)
		}
		srv := &http.Server{Addr: *listen, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() {
			<-ctx.Done()
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
		}()
		if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	case "capture", "restore":
		st := &httpstore.Client{BaseURL: *server, Image: *name, Replace: true, Logger: log}
		opts := agent.Options{Device: *device, Image: *name, Store: st, NoDelta: *noDelta, Logger: log}
		var m *image.Manifest
		if cmd == "capture" {
			m, err = agent.Capture(ctx, opts)
		} else {
			m, err = agent.Restore(ctx, opts)
		}
		if err != nil {
			return err
		}
		fmt.Printf("%s %s: %d bytes used, %d uploaded, %.2fs\n", cmd, m.Name, m.Sizes.Used, m.Sizes.Uploaded,
			time.Since(start).Seconds())
		return nil
	}
	return fmt.Errorf("unknown command %q", cmd)
}
