// Command pgserve runs a throwaway PostgreSQL (store/pgtest: Debian's
// binaries, unix socket only, fsync off) for the boot storm benchmark:
// in a new temporary directory, it creates one database, prints its DSN
// on stdout and serves until SIGTERM/SIGINT, then stops the server by its
// PID and removes the directory.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/preboot/preboot/store/pgtest"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "pgserve:", err)
		os.Exit(1)
	}
}

func run() error {
	// From the start: a SIGTERM while PostgreSQL starts still stops it.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	dir, err := os.MkdirTemp("", "preboot-bench-pg-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	c, err := pgtest.Start(ctx, dir)
	if err != nil {
		cancel()
		return err
	}
	dsn, err := c.CreateDatabase(ctx)
	cancel()
	if err != nil {
		c.Stop()
		return err
	}
	fmt.Println(dsn)
	fmt.Fprintf(os.Stderr, "pgserve: postgres pid %d\n", c.PID())
	<-sig
	return c.Stop()
}
