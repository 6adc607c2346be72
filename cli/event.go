package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/preboot/preboot/store"
)

// eventFilter is the filter flags of event list and event watch.
type eventFilter struct {
	device, kind string
	job          int64
}

func (f *eventFilter) query() (url.Values, error) {
	q := url.Values{}
	if f.device != "" {
		mac, err := store.NormalizeMAC(f.device)
		if err != nil {
			return nil, err
		}
		q.Set("device", mac)
	}
	setIf(q, "kind", f.kind)
	if f.job > 0 {
		q.Set("job", strconv.FormatInt(f.job, 10))
	}
	return q, nil
}

// watchOptions bound a live event stream.
type watchOptions struct {
	count   int           // stop after this many events (0 = no limit)
	retries int           // reconnections in a row without an event before giving up
	idle    time.Duration // no byte (not even a keepalive) for this long: reconnect
	asJSON  bool
}

func newEvent(g *globals) *cobra.Command {
	var af adminFlags
	cmd := &cobra.Command{Use: "event", Aliases: []string{"events"}, Short: "Query and watch events: boots, policy decisions, jobs, admin actions"}
	af.register(cmd)

	var f eventFilter
	var since, until string
	var limit int
	var before int64
	var follow bool
	var wo watchOptions
	list := &cobra.Command{
		Use:   "list [--device MAC] [--kind K] [--job ID] [--since T] [--until T] [--follow]",
		Short: "List events, newest first (--follow: oldest first, then live)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q, err := f.query()
			if err != nil {
				return err
			}
			for _, t := range []struct{ key, flag, val string }{{"since", "since", since}, {"until", "until", until}} {
				if t.val == "" {
					continue
				}
				ts, err := parseTime(t.val, time.Now())
				if err != nil {
					return fmt.Errorf("--%s: %w", t.flag, err)
				}
				q.Set(t.key, ts.UTC().Format(time.RFC3339))
			}
			if follow && until != "" {
				return errors.New("--follow and --until: the stream has no end")
			}
			q.Set("limit", strconv.Itoa(limit))
			if before > 0 {
				q.Set("before", strconv.FormatInt(before, 10))
			}
			c, err := af.client(g)
			if err != nil {
				return err
			}
			var evs []store.Event
			raw, _, err := c.call(cmd.Context(), "GET", "/api/v1/events?"+q.Encode(), nil, &evs)
			if err != nil {
				return err
			}
			if !follow {
				return af.emit(g, raw, func() error { return printEvents(g.stdout, evs) })
			}
			// Following: oldest first, one line per event, then live.
			// --count counts the listed events too.
			slices.Reverse(evs)
			var after int64
			for i, e := range evs {
				if wo.count > 0 && i >= wo.count {
					return nil
				}
				if err := printEvent(g.stdout, e, af.json()); err != nil {
					return err
				}
				after = max(after, e.ID)
			}
			if wo.count > 0 {
				if wo.count -= len(evs); wo.count <= 0 {
					return nil
				}
			}
			sq, _ := f.query()
			wo.asJSON = af.json()
			return watch(cmd.Context(), c, sq, after, wo, g.stdout, g.stderr)
		},
	}
	list.Flags().StringVar(&f.device, "device", "", "only this device (MAC)")
	list.Flags().StringVar(&f.kind, "kind", "", "only this kind: dhcp, boot, work, localboot, menu, admin, job, policy, security, multicast")
	list.Flags().Int64Var(&f.job, "job", 0, "only this job's")
	list.Flags().StringVar(&since, "since", "", "from this time: RFC 3339, \"2006-01-02 15:04\" (local) or a duration back, e.g. 2h")
	list.Flags().StringVar(&until, "until", "", "before this time (same forms as --since)")
	list.Flags().IntVar(&limit, "limit", 50, "how many")
	list.Flags().Int64Var(&before, "before", 0, "only events older than this event ID (paging back)")
	list.Flags().BoolVarP(&follow, "follow", "f", false, "then keep printing new events as they happen")
	watchFlags(list, &wo)
	cmd.AddCommand(list)

	var wf eventFilter
	var wwo watchOptions
	var afterID int64
	w := &cobra.Command{
		Use:   "watch [--device MAC] [--kind K] [--job ID]",
		Short: "Print events as they happen, one line each (reconnects if the connection drops)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q, err := wf.query()
			if err != nil {
				return err
			}
			c, err := af.client(g)
			if err != nil {
				return err
			}
			wwo.asJSON = af.json()
			return watch(cmd.Context(), c, q, afterID, wwo, g.stdout, g.stderr)
		},
	}
	w.Flags().StringVar(&wf.device, "device", "", "only this device (MAC)")
	w.Flags().StringVar(&wf.kind, "kind", "", "only this kind")
	w.Flags().Int64Var(&wf.job, "job", 0, "only this job's")
	w.Flags().Int64Var(&afterID, "after", 0, "start with the events after this event ID (default: only new ones)")
	watchFlags(w, &wwo)
	cmd.AddCommand(w)
	return cmd
}

func watchFlags(cmd *cobra.Command, wo *watchOptions) {
	cmd.Flags().IntVar(&wo.count, "count", 0, "stop after printing this many events (0 = until interrupted)")
	cmd.Flags().IntVar(&wo.retries, "retries", 10, "reconnection attempts in a row before giving up")
	cmd.Flags().DurationVar(&wo.idle, "idle-timeout", 45*time.Second, "reconnect when the server sent nothing (not even a keepalive) for this long")
}

// parseTime reads RFC 3339, a local "2006-01-02 15:04[:05]" or
// "2006-01-02", or a duration back from now ("2h").
func parseTime(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	for _, layout := range []string{"2006-01-02 15:04:05", "2006-01-02 15:04", "2006-01-02T15:04", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, time.Local); err == nil {
			return t, nil
		}
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("%q: want RFC 3339 (2006-01-02T15:04:05Z), \"2006-01-02 15:04\" or a duration back like 2h", s)
}

// printEvent prints one event on one line: the table columns, or its
// JSON.
func printEvent(w io.Writer, e store.Event, asJSON bool) error {
	if asJSON {
		return printCompact(w, e)
	}
	var b strings.Builder
	eventLine(&b, e)
	_, err := io.WriteString(w, strings.ReplaceAll(b.String(), "\t", "  "))
	return err
}

// printCompact writes v as one line of JSON.
func printCompact(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// errStreamDone ends a watch that printed its --count events.
var errStreamDone = errors.New("enough events")

// watch reads the live event stream, printing each event, and reconnects
// with Last-Event-ID when the connection drops: up to wo.retries times in
// a row without receiving an event, waiting longer each time (1 s, 2 s,
// 4 s... at most 30 s). It returns nil when ctx ends or after wo.count
// events.
func watch(ctx context.Context, c *apiClient, q url.Values, after int64, wo watchOptions, stdout, stderr io.Writer) error {
	if wo.retries < 0 {
		wo.retries = 0
	}
	if wo.idle <= 0 {
		wo.idle = 45 * time.Second
	}
	hc := c.stream() // no overall timeout: the idle watchdog below replaces it
	seen := 0
	failures := 0
	for {
		got, err := streamOnce(ctx, c, hc, q, &after, wo, &seen, stdout)
		switch {
		case errors.Is(err, errStreamDone), ctx.Err() != nil:
			return nil
		case isStatus(err, http.StatusUnauthorized), isStatus(err, http.StatusForbidden),
			isStatus(err, http.StatusBadRequest), isStatus(err, http.StatusNotFound):
			return err
		}
		if got > 0 {
			failures = 0
		}
		failures++
		if failures > wo.retries {
			if err == nil {
				err = errors.New("the server closed the stream")
			}
			return fmt.Errorf("event stream: giving up after %d reconnection attempts: %w", wo.retries, err)
		}
		wait := min(30*time.Second, time.Second<<min(failures-1, 5))
		reason := "the server closed the stream"
		if err != nil {
			reason = err.Error()
		}
		fmt.Fprintf(stderr, "preboot: event stream: %s; reconnecting in %s (attempt %d of %d)\n", reason, wait, failures, wo.retries)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// streamOnce reads one connection of the event stream until it ends. It
// returns how many events it printed.
func streamOnce(ctx context.Context, c *apiClient, hc *http.Client, q url.Values, after *int64, wo watchOptions, seen *int, w io.Writer) (int, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	path := "/api/v1/events/stream"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	req, err := c.newRequest(ctx, "GET", path, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Accept", "text/event-stream")
	if *after > 0 {
		req.Header.Set("Last-Event-ID", strconv.FormatInt(*after, 10))
	}
	resp, err := hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		return 0, fmt.Errorf("cannot reach the Preboot server at %s: %w", c.where(), err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return 0, responseError(resp, data, "GET", path)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		return 0, &apiError{Status: http.StatusBadRequest, Message: fmt.Sprintf("GET %s: answer is %q, not an event stream", path, ct)}
	}

	// The watchdog cancels the request when nothing arrives for wo.idle.
	var timedOut atomic.Bool
	idle := time.AfterFunc(wo.idle, func() { timedOut.Store(true); cancel() })
	defer idle.Stop()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	var id, data strings.Builder
	var hasID bool
	printed := 0
	for sc.Scan() {
		idle.Reset(wo.idle)
		line := sc.Text()
		switch {
		case line == "":
			if data.Len() > 0 {
				var e store.Event
				if err := json.Unmarshal([]byte(data.String()), &e); err != nil {
					return printed, fmt.Errorf("event stream: bad event %q: %w", data.String(), err)
				}
				if err := printEvent(w, e, wo.asJSON); err != nil {
					return printed, err
				}
				printed++
				*seen++
				if hasID {
					if n, err := strconv.ParseInt(id.String(), 10, 64); err == nil {
						*after = n
					}
				} else if e.ID > 0 {
					*after = e.ID
				}
				if wo.count > 0 && *seen >= wo.count {
					return printed, errStreamDone
				}
			}
			id.Reset()
			data.Reset()
			hasID = false
		case strings.HasPrefix(line, ":"):
			// comment (keepalive)
		default:
			field, value, _ := strings.Cut(line, ":")
			value = strings.TrimPrefix(value, " ")
			switch field {
			case "id":
				id.Reset()
				id.WriteString(value)
				hasID = true
			case "data":
				if data.Len() > 0 {
					data.WriteByte('\n')
				}
				data.WriteString(value)
			}
		}
	}
	if err := sc.Err(); err != nil {
		if timedOut.Load() {
			return printed, fmt.Errorf("nothing received for %s", wo.idle)
		}
		return printed, err
	}
	return printed, nil
}
