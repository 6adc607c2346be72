// Package cli is the preboot command: the server (serve) and the admin
// commands that talk to it over the REST API.
package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/preboot/preboot/config"
	"github.com/preboot/preboot/server"
)

// Execute runs the preboot command line and returns the process exit code.
func Execute(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newRoot(stdout, stderr)
	root.SetArgs(args)
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(stderr, "preboot:", err)
		return 1
	}
	return 0
}

type globals struct {
	configFile string
	stdout     io.Writer
	stderr     io.Writer
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	g := &globals{stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:           "preboot",
		Short:         "Network boot and disk imaging server",
		Long:          "Preboot answers PXE machines (proxyDHCP, TFTP, HTTP) and gives each the work assigned to it,\nor sends it to its own disk.",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.PersistentFlags().StringVar(&g.configFile, "config", "", "YAML configuration file")
	root.AddCommand(newServe(g), newVersion(g), newAgent(g), newEnv(g))
	root.AddCommand(newAdmin(g)) // web console users, directly in the server's database
	// The admin commands, over the REST API.
	root.AddCommand(newDevice(g), newGroup(g), newBundle(g), newAssign(g), newRule(g), newJob(g), newEvent(g),
		newImage(g), newSession(g), newMenu(g), newSettings(g), newToken(g), newLogin(g), newDHCP(g))
	root.AddCommand(newSite(g))
	return root
}

// load reads the configuration file (--config) over the defaults; the
// database's connection string may also come from $PREBOOT_STORE_DSN (it
// may hold a password, which has no place on a command line).
func (g *globals) load() (config.Config, error) {
	c, err := config.Load(g.configFile)
	if dsn := os.Getenv("PREBOOT_STORE_DSN"); dsn != "" {
		c.Store.DSN = dsn
	}
	return c, err
}

func newVersion(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintf(g.stdout, "preboot %s\n", server.Version)
			return nil
		},
	}
}

// newLogger builds the slog logger: text on a terminal, JSON otherwise.
func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch strings.ToLower(format) {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "auto", "":
		if f, ok := w.(*os.File); ok {
			if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
				return slog.New(slog.NewTextHandler(w, opts)), nil
			}
		}
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log format %q: want auto, text or json", format)
}
