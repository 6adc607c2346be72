package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/preboot/preboot/store"
	"github.com/preboot/preboot/timing"
)

// jobDetail is GET /jobs/{id}: the job, the end of its log and its time
// breakdown explained.
type jobDetail struct {
	store.Job
	Log        []store.JobLine `json:"log"`
	TimeReport *timing.Report  `json:"time_report,omitempty"`
}

func newJob(g *globals) *cobra.Command {
	var af adminFlags
	cmd := &cobra.Command{Use: "job", Aliases: []string{"jobs"}, Short: "Jobs: runs of bundles on devices, their progress and logs"}
	af.register(cmd)

	var dev, state, bndl string
	var open bool
	var limit int
	var before int64
	list := &cobra.Command{
		Use:   "list [--device MAC] [--state S] [--bundle B] [--open]",
		Short: "List jobs, newest first, with their progress",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := url.Values{"limit": {strconv.Itoa(limit)}}
			if dev != "" {
				mac, err := store.NormalizeMAC(dev)
				if err != nil {
					return err
				}
				q.Set("device", mac)
			}
			setIf(q, "state", state)
			setIf(q, "bundle", bndl)
			if open {
				q.Set("open", "true")
			}
			if before > 0 {
				q.Set("before", strconv.FormatInt(before, 10))
			}
			c, err := af.client(g)
			if err != nil {
				return err
			}
			var js []store.Job
			raw, _, err := c.call(cmd.Context(), "GET", "/api/v1/jobs?"+q.Encode(), nil, &js)
			if err != nil {
				return err
			}
			return af.emit(g, raw, func() error { return printJobs(g.stdout, js) })
		},
	}
	list.Flags().StringVar(&dev, "device", "", "only this device (MAC)")
	list.Flags().StringVar(&state, "state", "", "only this state: pending, booting, running, succeeded, failed, cancelled")
	list.Flags().StringVar(&bndl, "bundle", "", "only this bundle's")
	list.Flags().BoolVar(&open, "open", false, "only jobs not finished")
	list.Flags().IntVar(&limit, "limit", 50, "how many")
	list.Flags().Int64Var(&before, "before", 0, "only jobs older than this job ID (paging back)")
	cmd.AddCommand(list)

	cmd.AddCommand(&cobra.Command{
		Use:   "show ID",
		Short: "Show a job, its progress, where its time went and its log",
		Long: `Show a job, its progress and its log. For a capture or restore also
where its time went: the shares of network (fetching or uploading chunks),
CPU (verifying, decompressing, hashing, compressing), disk (reading,
writing) and waiting, the bottleneck (the stage the others wait on), the
machine's disk model, link speed and CPUs from its inventory, and a hint
such as "the link is 100 Mb/s: at most 12 MB/s". See docs/imaging.md,
"Why is my restore slow?".`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseID(args[0], "job")
			if err != nil {
				return err
			}
			c, err := af.client(g)
			if err != nil {
				return err
			}
			var j jobDetail
			raw, _, err := c.call(cmd.Context(), "GET", "/api/v1/jobs/"+strconv.FormatInt(id, 10), nil, &j)
			if err != nil {
				return err
			}
			return af.emit(g, raw, func() error { return printJob(g.stdout, j) })
		},
	})

	var follow bool
	var interval time.Duration
	var logLimit int
	logCmd := &cobra.Command{
		Use:   "log ID [--follow]",
		Short: "Print a job's log; --follow prints new lines until the job ends",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseID(args[0], "job")
			if err != nil {
				return err
			}
			c, err := af.client(g)
			if err != nil {
				return err
			}
			if !follow {
				var lines []store.JobLine
				raw, _, err := c.call(cmd.Context(), "GET", fmt.Sprintf("/api/v1/jobs/%d/log?limit=%d", id, logLimit), nil, &lines)
				if err != nil {
					return err
				}
				return af.emit(g, raw, func() error {
					for _, l := range lines {
						printLogLine(g.stdout, l)
					}
					return nil
				})
			}
			return followJob(cmd.Context(), c, id, interval, g.stdout, af.json())
		},
	}
	logCmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new lines until the job ends")
	logCmd.Flags().DurationVar(&interval, "interval", time.Second, "how often --follow asks the server")
	logCmd.Flags().IntVar(&logLimit, "limit", 1000, "the last this many lines")
	cmd.AddCommand(logCmd)

	cmd.AddCommand(&cobra.Command{
		Use:   "cancel ID",
		Short: "Cancel a job that has not finished",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseID(args[0], "job")
			if err != nil {
				return err
			}
			c, err := af.client(g)
			if err != nil {
				return err
			}
			var j store.Job
			raw, _, err := c.call(cmd.Context(), "POST", fmt.Sprintf("/api/v1/jobs/%d/cancel", id), nil, &j)
			if err != nil {
				return err
			}
			return af.emit(g, raw, func() error {
				fmt.Fprintf(g.stdout, "job %d %s\n", j.ID, j.State)
				return nil
			})
		},
	})
	return cmd
}

func printJob(w io.Writer, j jobDetail) error {
	kvs := [][2]string{
		{"Job", strconv.FormatInt(j.ID, 10)},
		{"Device", j.MAC},
		{"Bundle", fmt.Sprintf("%s (%s, version %d)", dash(j.Bundle), j.Kind, j.BundleVersion)},
		{"Image", j.Image},
		{"State", j.State + phaseText(j.Phase)},
		{"Progress", progressBar(j.Job)},
	}
	if r := j.TimeReport; r != nil {
		kvs = append(kvs, [2]string{"Time", r.Summary})
		if r.MachineText != "" {
			kvs = append(kvs, [2]string{"Machine", r.MachineText})
		}
		if r.Hint != "" {
			kvs = append(kvs, [2]string{"Hint", r.Hint})
		}
	}
	kvs = append(kvs, [][2]string{
		{"Message", j.Message},
		{"Error", j.Error},
		{"Created", when(j.CreatedAt)},
		{"Started", when(j.StartedAt)},
		{"Updated", ago(j.UpdatedAt)},
	}...)
	if !j.FinishedAt.IsZero() {
		d := j.FinishedAt.Sub(j.CreatedAt).Round(time.Second)
		kvs = append(kvs, [2]string{"Finished", fmt.Sprintf("%s (after %s)", when(j.FinishedAt), d)})
	}
	if err := printKV(w, kvs); err != nil {
		return err
	}
	fmt.Fprintln(w, "\nLog:")
	for _, l := range j.Log {
		printLogLine(w, l)
	}
	return nil
}

func phaseText(p string) string {
	if p == "" {
		return ""
	}
	return " (" + p + ")"
}

func printLogLine(w io.Writer, l store.JobLine) {
	fmt.Fprintf(w, "%s  %s\n", l.Time.Local().Format("15:04:05"), l.Line)
}

// followJob prints a job's log lines as they come, and a progress line on
// each change, until the job ends (or ctx does). With asJSON each new log
// line is printed as one JSON object per line.
func followJob(ctx context.Context, c *apiClient, id int64, interval time.Duration, w io.Writer, asJSON bool) error {
	if interval <= 0 {
		interval = time.Second
	}
	var last *store.JobLine
	lastProgress := ""
	for {
		var j jobDetail
		if err := c.do(ctx, "GET", fmt.Sprintf("/api/v1/jobs/%d", id), nil, &j); err != nil {
			if errors.Is(err, context.Canceled) {
				return nil
			}
			return err
		}
		for _, l := range newLines(j.Log, last) {
			if asJSON {
				if err := printCompact(w, l); err != nil {
					return err
				}
			} else {
				printLogLine(w, l)
			}
			last = &l
		}
		if !asJSON {
			if p := j.State + phaseText(j.Phase) + "  " + progressBar(j.Job); p != lastProgress {
				fmt.Fprintf(w, "-- job %d: %s\n", j.ID, p)
				lastProgress = p
			}
		}
		if store.JobFinished(j.State) {
			if j.State != store.JobSucceeded {
				msg := j.Error
				if msg == "" {
					msg = j.Message
				}
				return fmt.Errorf("job %d %s: %s", j.ID, j.State, dash(msg))
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(interval):
		}
	}
}

// newLines returns the lines after the last one already printed (all of
// them when it is no longer in the window the server sends).
func newLines(lines []store.JobLine, last *store.JobLine) []store.JobLine {
	if last == nil {
		return lines
	}
	for i := len(lines) - 1; i >= 0; i-- {
		if lines[i].Line == last.Line && lines[i].Time.Equal(last.Time) {
			return lines[i+1:]
		}
	}
	return lines
}
