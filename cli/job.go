package cli

import (
	"fmt"
	"net/url"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/preboot/preboot/api"
	"github.com/preboot/preboot/store"
)

func newJob(g *globals) *cobra.Command {
	var af adminFlags
	cmd := &cobra.Command{Use: "job", Aliases: []string{"jobs"}, Short: "Follow imaging jobs"}
	af.register(cmd)
	var mac, state string
	var open bool
	var limit int
	list := &cobra.Command{
		Use:   "list",
		Short: "List jobs, newest first, with their progress",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := af.client(g)
			if err != nil {
				return err
			}
			q := url.Values{"limit": {strconv.Itoa(limit)}}
			if mac != "" {
				q.Set("mac", mac)
			}
			if state != "" {
				q.Set("state", state)
			}
			if open {
				q.Set("open", "true")
			}
			var js []store.Job
			if err := c.do(cmd.Context(), "GET", "/api/v1/jobs?"+q.Encode(), nil, &js); err != nil {
				return err
			}
			if af.output == "json" {
				return printJSON(g.stdout, js)
			}
			tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tDEVICE\tKIND\tIMAGE\tSTATE\tPROGRESS\tRATE\tUPDATED\tERROR")
			for _, j := range js {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", j.ID, j.MAC, j.Kind, j.Image, j.State, progress(j), rate(j.Rate), ago(j.UpdatedAt), dash(j.Error))
			}
			return tw.Flush()
		},
	}
	list.Flags().StringVar(&mac, "device", "", "only this device (MAC)")
	list.Flags().StringVar(&state, "state", "", "only this state: pending, booting, running, succeeded, failed, cancelled")
	list.Flags().BoolVar(&open, "open", false, "only jobs not finished")
	list.Flags().IntVar(&limit, "limit", 50, "how many")
	cmd.AddCommand(list)

	cmd.AddCommand(&cobra.Command{
		Use:   "show ID",
		Short: "Show a job and its log",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := af.client(g)
			if err != nil {
				return err
			}
			var j api.JobDetail
			if err := c.do(cmd.Context(), "GET", "/api/v1/jobs/"+url.PathEscape(args[0]), nil, &j); err != nil {
				return err
			}
			if af.output == "json" {
				return printJSON(g.stdout, j)
			}
			tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintf(tw, "Job:\t%d\nDevice:\t%s\nWork:\t%s %s (then %s)\nState:\t%s %s\nProgress:\t%s at %s\nCreated:\t%s\n",
				j.ID, j.MAC, j.Kind, j.Image, j.After, j.State, j.Phase, progress(j.Job), rate(j.Rate), j.CreatedAt.Local().Format(time.RFC3339))
			if !j.FinishedAt.IsZero() {
				fmt.Fprintf(tw, "Finished:\t%s\n", j.FinishedAt.Local().Format(time.RFC3339))
			}
			if j.Error != "" {
				fmt.Fprintf(tw, "Error:\t%s\n", j.Error)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			fmt.Fprintln(g.stdout, "\nLog:")
			for _, l := range j.Log {
				fmt.Fprintf(g.stdout, "%s  %s\n", l.Time.Local().Format("15:04:05"), l.Line)
			}
			return nil
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "cancel ID",
		Short: "Mark a job cancelled (its work stays assigned: `preboot device clear` removes it)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := af.client(g)
			if err != nil {
				return err
			}
			if err := c.do(cmd.Context(), "POST", "/api/v1/jobs/"+url.PathEscape(args[0])+"/cancel", nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "job %s cancelled\n", args[0])
			return nil
		},
	})
	return cmd
}

func progress(j store.Job) string {
	if j.BytesTotal <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f%% of %s", 100*float64(j.BytesDone)/float64(j.BytesTotal), size(j.BytesTotal))
}

func rate(bps int64) string {
	if bps <= 0 {
		return "-"
	}
	return size(bps) + "/s"
}

// size formats a byte count in binary units: "512 B", "1.2 GiB".
func size(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
