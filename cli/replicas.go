package cli

import (
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/spf13/cobra"

	"github.com/preboot/preboot/api"
	"github.com/preboot/preboot/replica"
)

// addReplicaCommands adds the site server's commands to `preboot image`:
// replicas (state and lag), sync (a round now), and --repair on verify
// (scrub the replicated chunks at rest, re-fetching bad ones from the
// upstream).
func addReplicaCommands(g *globals, img *cobra.Command, af *adminFlags) {
	var sync bool
	replicas := &cobra.Command{
		Use:   "replicas",
		Short: "On a site server: the images replicated from its upstream, their state (in-sync, pulling, failed), progress and lag",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := af.client(g)
			if err != nil {
				return err
			}
			method, path := http.MethodGet, "/api/v1/replicas"
			if sync {
				method, path = http.MethodPost, "/api/v1/replicas/sync"
			}
			var st replica.Status
			raw, _, err := c.call(cmd.Context(), method, path, nil, &st)
			if err != nil {
				return err
			}
			return af.emit(g, raw, func() error { return printReplicas(g.stdout, st) })
		},
	}
	replicas.Flags().BoolVar(&sync, "sync", false, "run a replication round now, then report")
	img.AddCommand(replicas)

	for _, sub := range img.Commands() {
		if sub.Name() != "verify" {
			continue
		}
		var repair, scrub bool
		sub.Flags().BoolVar(&scrub, "scrub", false, "on a site server: re-hash the chunks at rest of NAME (or, with no NAME, of every image) and report the bad ones")
		sub.Flags().BoolVar(&repair, "repair", false, "on a site server: like --scrub, and replace corrupt or missing chunks with verified copies from the upstream")
		sub.Args = func(cmd *cobra.Command, args []string) error {
			if (scrub || repair) && len(args) == 0 {
				return nil
			}
			return cobra.ExactArgs(1)(cmd, args)
		}
		sub.Use = "verify [NAME[@VERSION]]"
		plain := sub.RunE
		sub.RunE = func(cmd *cobra.Command, args []string) error {
			if !scrub && !repair {
				return plain(cmd, args)
			}
			c, err := af.client(g)
			if err != nil {
				return err
			}
			req := api.ScrubRequest{Repair: repair}
			if len(args) == 1 {
				req.Image = args[0]
			}
			var res replica.ScrubResult
			raw, _, err := c.call(cmd.Context(), http.MethodPost, "/api/v1/replicas/verify", req, &res)
			if err != nil {
				return err
			}
			if err := af.emit(g, raw, func() error { return printScrub(g.stdout, res) }); err != nil {
				return err
			}
			if bad := res.Corrupt + res.Missing - res.Repaired; bad > 0 || len(res.Errors) > 0 {
				return fmt.Errorf("%d bad chunks left (%d corrupt, %d missing, %d repaired)", bad, res.Corrupt, res.Missing, res.Repaired)
			}
			return nil
		}
	}
}

func printReplicas(w io.Writer, st replica.Status) error {
	fmt.Fprintf(w, "upstream %s, images %s, every %s, last round %s", st.Upstream, st.Select, st.Interval, ago(st.LastRound))
	if st.KeepDeleted {
		fmt.Fprint(w, ", keeps what the upstream removed")
	}
	fmt.Fprintln(w)
	if st.RoundError != "" {
		fmt.Fprintf(w, "last round failed: %s\n", st.RoundError)
	}
	tw := newTable(w)
	row(tw, "NAME", "STATE", "VERSION", "UPSTREAM", "PROGRESS", "FETCHED", "LAST SUCCESS", "LAG", "ERROR")
	for _, im := range st.Images {
		prog := "-"
		if im.ChunksTotal > 0 {
			prog = fmt.Sprintf("%d/%d chunks", im.ChunksDone, im.ChunksTotal)
		}
		lag := "-"
		if im.LagSeconds > 0 {
			lag = (time.Duration(im.LagSeconds) * time.Second).String()
		}
		row(tw, im.Name, im.State, im.Version, im.UpstreamVersion, prog, sizeOrDash(im.Bytes), ago(im.LastSuccess), lag, dash(im.Error))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, n := range st.Removed {
		fmt.Fprintf(w, "removed %s (gone from the upstream or no longer selected)\n", n)
	}
	if s := st.LastScrub; s != nil {
		fmt.Fprintf(w, "last scrub %s: %d chunks, %d corrupt, %d missing, %d repaired\n", ago(s.Finished), s.Chunks, s.Corrupt, s.Missing, s.Repaired)
	}
	return nil
}

func printScrub(w io.Writer, r replica.ScrubResult) error {
	fmt.Fprintf(w, "%d images, %d chunks re-hashed in %s: %d corrupt, %d missing, %d repaired\n",
		r.Images, r.Chunks, r.Finished.Sub(r.Started).Round(time.Millisecond), r.Corrupt, r.Missing, r.Repaired)
	for _, e := range r.Errors {
		fmt.Fprintln(w, "  "+e)
	}
	return nil
}
