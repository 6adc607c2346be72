package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"

	"github.com/preboot/preboot/agent"
	"github.com/preboot/preboot/initenv"
)

// RunInit is what the preboot binary does as pid 1 of the imaging
// environment (the seed's phase 8): bring the machine up (initenv), run the
// assigned job (agent auto), then reboot or power off as the job says.
func RunInit() int {
	ctx := context.Background()
	err := initenv.Run(ctx, nil, func(ctx context.Context, env *initenv.Env) error {
		log := initenv.ConsoleLogger(env.Debug)
		if env.Params["preboot.media"] == "1" {
			// Booted from the manual preboot medium: no job on the
			// command line; ask the server (docs/manual-boot.md).
			return runMediaInit(ctx, env, log)
		}
		job, _ := strconv.ParseInt(env.Job, 10, 64)
		out, err := agent.Auto(ctx, agent.Env{Server: env.Server, Servers: env.Servers, Token: env.Token, Job: job, Debug: env.Debug, TLS: env.TLS,
			Images: env.Params["preboot.images"], ImagesTLS: env.Params["preboot.images.tls"]},
			agent.AutoOptions{Logger: log, Progress: agentProgressPrinter(os.Stderr)})
		if errors.Is(err, agent.ErrNoJob) {
			log.Info("no job assigned: rebooting; the next network boot goes to the local disk")
			env.After = initenv.Reboot
			return nil
		}
		if out.Job != nil {
			env.After = initenv.ParseAfter(out.After)
		}
		return err
	})
	fmt.Fprintln(os.Stderr, "preboot init:", err)
	return 1
}
