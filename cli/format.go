package cli

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/preboot/preboot/store"
)

// newTable is the tabwriter every table of the CLI uses.
func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
}

// row writes tab-separated cells and a newline.
func row(w io.Writer, cells ...any) {
	for i, c := range cells {
		if i > 0 {
			io.WriteString(w, "\t")
		}
		fmt.Fprint(w, c)
	}
	io.WriteString(w, "\n")
}

// printKV prints "Key:  value" lines, aligned.
func printKV(w io.Writer, kvs [][2]string) error {
	tw := newTable(w)
	for _, kv := range kvs {
		fmt.Fprintf(tw, "%s:\t%s\n", kv[0], dash(kv[1]))
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// ago is a short relative time for recent moments ("3m ago") and the
// local date and time for older ones.
func ago(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := time.Since(t)
	switch {
	case d < -time.Minute:
		return when(t)
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", max(0, int(d.Seconds())))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return when(t)
}

// when is a local date and time to the minute.
func when(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04")
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

func sizeOrDash(n int64) string {
	if n <= 0 {
		return "-"
	}
	return size(n)
}

func progress(j store.Job) string {
	if j.BytesTotal <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f%% of %s", percent(j), size(j.BytesTotal))
}

func percent(j store.Job) float64 {
	if j.BytesTotal <= 0 {
		return 0
	}
	return min(100, 100*float64(j.BytesDone)/float64(j.BytesTotal))
}

// progressBar is a one-line progress display:
// "[########............]  40%  1.1 GiB of 2.7 GiB at 52.0 MiB/s".
func progressBar(j store.Job) string {
	const width = 30
	if j.BytesTotal <= 0 {
		if store.JobFinished(j.State) {
			return j.State
		}
		return "(no progress reported yet)"
	}
	p := percent(j)
	n := int(p / 100 * width)
	s := fmt.Sprintf("[%s%s] %3.0f%%  %s of %s", strings.Repeat("#", n), strings.Repeat(".", width-n), p, size(j.BytesDone), size(j.BytesTotal))
	if j.Rate > 0 && !store.JobFinished(j.State) {
		s += " at " + rate(j.Rate)
	}
	return s
}

func rate(bps int64) string {
	if bps <= 0 {
		return "-"
	}
	return size(bps) + "/s"
}

func onceText(once bool) string {
	if once {
		return "once"
	}
	return "always"
}

// assignmentText describes an assignment in a few words.
func assignmentText(a *store.Assignment) string {
	if a == nil {
		return "-"
	}
	flags := onceText(a.Once)
	if a.Force {
		flags += ", force"
	}
	return fmt.Sprintf("%s (%s; %s; #%d)", a.Bundle, a.BundleKind, flags, a.ID)
}

// eventLine is one event on one line, for lists and the live stream.
func eventLine(w io.Writer, e store.Event) {
	who := e.MAC
	if who == "" && e.Job != 0 {
		who = fmt.Sprintf("job %d", e.Job)
	}
	msg := e.Message
	if e.Actor != "" {
		msg += " (by " + e.Actor + ")"
	}
	row(w, e.Time.Local().Format("2006-01-02 15:04:05"), dash(who), e.Kind, msg)
}

func printEvents(w io.Writer, evs []store.Event) error {
	tw := newTable(w)
	row(tw, "TIME", "DEVICE", "KIND", "MESSAGE")
	for _, e := range evs {
		eventLine(tw, e)
	}
	return tw.Flush()
}

func printJobs(w io.Writer, js []store.Job) error {
	tw := newTable(w)
	row(tw, "ID", "DEVICE", "BUNDLE", "KIND", "STATE", "PROGRESS", "RATE", "UPDATED", "ERROR")
	for _, j := range js {
		r := "-"
		if !store.JobFinished(j.State) {
			r = rate(j.Rate)
		}
		row(tw, j.ID, j.MAC, dash(j.Bundle), j.Kind, j.State, progress(j), r, ago(j.UpdatedAt), dash(j.Error))
	}
	return tw.Flush()
}

func menuText(m store.Menu) string {
	s := m.Mode
	if m.Mode == "hotkey" {
		s += " " + m.Hotkey
	}
	if m.Timeout > 0 {
		s += ", timeout " + time.Duration(m.Timeout).String()
	}
	if len(m.Bundles) > 0 {
		s += ", bundles " + strings.Join(m.Bundles, ",")
	}
	if m.Shell {
		s += ", shell"
	}
	if m.Title != "" {
		s += fmt.Sprintf(", title %q", m.Title)
	}
	return s
}

func printMenu(w io.Writer, m store.Menu) error {
	bundles := strings.Join(m.Bundles, ", ")
	return printKV(w, [][2]string{
		{"Mode", m.Mode},
		{"Hotkey", m.Hotkey},
		{"Timeout", time.Duration(m.Timeout).String()},
		{"Title", m.Title},
		{"Bundles", bundles},
		{"Shell", yesNo(m.Shell)},
	})
}
