package cli

import (
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/preboot/preboot/mcast"
)

func newSession(g *globals) *cobra.Command {
	var af adminFlags
	cmd := &cobra.Command{Use: "session", Aliases: []string{"sessions"},
		Short: "Multicast sessions: one image to many machines at once, every receiver's progress and sources"}
	af.register(cmd)

	cmd.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "List multicast sessions, newest first (ended ones are kept for a while)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := af.client(g)
			if err != nil {
				return err
			}
			var ss []mcast.SessionInfo
			raw, _, err := c.call(cmd.Context(), "GET", "/api/v1/sessions", nil, &ss)
			if err != nil {
				return err
			}
			return af.emit(g, raw, func() error { return printSessions(g.stdout, ss) })
		},
	})

	cmd.AddCommand(&cobra.Command{
		Use:   "show ID",
		Short: "Show a multicast session and every receiver: progress, rate, loss, and how it got its bytes",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := af.client(g)
			if err != nil {
				return err
			}
			var s mcast.SessionInfo
			raw, _, err := c.call(cmd.Context(), "GET", "/api/v1/sessions/"+pathEsc(args[0]), nil, &s)
			if err != nil {
				return err
			}
			return af.emit(g, raw, func() error { return printSession(g.stdout, s) })
		},
	})

	cmd.AddCommand(&cobra.Command{
		Use:   "cancel ID",
		Short: "Cancel a multicast session: the server stops sending, its receivers finish over unicast",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := af.client(g)
			if err != nil {
				return err
			}
			var s mcast.SessionInfo
			raw, _, err := c.call(cmd.Context(), "POST", "/api/v1/sessions/"+pathEsc(args[0])+"/cancel", nil, &s)
			if err != nil {
				return err
			}
			return af.emit(g, raw, func() error {
				fmt.Fprintf(g.stdout, "session %s %s; its receivers finish over unicast\n", s.ID, s.State)
				return nil
			})
		},
	})
	return cmd
}

func printSessions(w io.Writer, ss []mcast.SessionInfo) error {
	tw := newTable(w)
	row(tw, "ID", "IMAGE", "STATE", "GROUP", "RECEIVERS", "PROGRESS", "SENT", "REPAIR", "SERVED", "CREATED")
	for _, s := range ss {
		row(tw, s.ID, s.Image, s.State, s.Group, receiversText(s.Receivers), sessionProgress(s),
			size(s.SentData), size(s.SentRepair), size(s.Served), ago(s.Created))
	}
	return tw.Flush()
}

// receiverStates is the order receivers' states are counted in.
var receiverStates = []string{mcast.RecvWaiting, mcast.RecvMulticast, mcast.RecvPeers, mcast.RecvUnicast,
	mcast.RecvDone, mcast.RecvFailed, mcast.RecvLost}

// receiversText counts receivers by state: "3: 2 multicast, 1 unicast".
func receiversText(rs []mcast.ReceiverInfo) string {
	if len(rs) == 0 {
		return "0"
	}
	n := map[string]int{}
	for _, r := range rs {
		n[r.State]++
	}
	var parts []string
	for _, st := range receiverStates {
		if n[st] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n[st], st))
			delete(n, st)
		}
	}
	for st, k := range n { // a state this CLI does not know yet
		parts = append(parts, fmt.Sprintf("%d %s", k, st))
	}
	return strconv.Itoa(len(rs)) + ": " + strings.Join(parts, ", ")
}

// sessionProgress is the share of all its receivers' bytes written.
func sessionProgress(s mcast.SessionInfo) string {
	var done, total int64
	for _, r := range s.Receivers {
		done += min(r.BytesDone, r.BytesTotal)
		total += r.BytesTotal
	}
	if total <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f%%", 100*float64(done)/float64(total))
}

// receiverPercent is how much of what a receiver restores is written,
// from 0 to 100, and false when it does not know yet.
func receiverPercent(r mcast.ReceiverInfo) (float64, bool) {
	switch {
	case r.State == mcast.RecvDone:
		return 100, true
	case r.BytesTotal > 0:
		return min(100, 100*float64(r.BytesDone)/float64(r.BytesTotal)), true
	case r.ChunksTotal > 0:
		return min(100, 100*float64(r.ChunksDone)/float64(r.ChunksTotal)), true
	}
	return 0, false
}

// receiverActive reports whether a receiver is still receiving.
func receiverActive(r mcast.ReceiverInfo) bool {
	return r.State == mcast.RecvMulticast || r.State == mcast.RecvUnicast || r.State == mcast.RecvPeers
}

func printSession(w io.Writer, s mcast.SessionInfo) error {
	state := s.State
	switch {
	case !s.Ended.IsZero():
		state += ", ended " + ago(s.Ended)
	case !s.Started.IsZero():
		state += ", started " + ago(s.Started)
	}
	rule := fmt.Sprintf("%d receivers", s.MinClients)
	if s.MinClients <= 1 {
		rule = "the first receiver"
	} else if s.MaxWait != "" && s.MaxWait != "0s" {
		rule += " or " + s.MaxWait + " after the first join"
	}
	group := s.Group
	if s.Interface != "" {
		group += " on " + s.Interface
	}
	kvs := [][2]string{
		{"Session", s.ID},
		{"Image", fmt.Sprintf("%s (%d chunks, %s)", s.Image, s.Chunks, size(s.ImageBytes))},
		{"State", state},
		{"Group", group},
		{"Starts with", rule},
		{"Rate cap", bitRate(s.Rate)},
		{"Sent", fmt.Sprintf("%s data + %s repair in %d packets", size(s.SentData), size(s.SentRepair), s.SentPackets)},
		{"Served", fmt.Sprintf("%s by unicast, %d pointed at peers", size(s.Served), s.PeerRedirects)},
		{"Created", when(s.Created)},
		{"Started", when(s.Started)},
		{"Ended", when(s.Ended)},
	}
	if err := printKV(w, kvs); err != nil {
		return err
	}
	fmt.Fprintln(w, "\nReceivers:")
	if len(s.Receivers) == 0 {
		fmt.Fprintln(w, "(none)")
		return nil
	}
	return printReceivers(w, s.Receivers)
}

// printReceivers is one row per receiver: where it is, how far, how fast,
// what it loses, and how it got its bytes.
func printReceivers(w io.Writer, rs []mcast.ReceiverInfo) error {
	tw := newTable(w)
	row(tw, "NAME", "ADDR", "STATE", "PROGRESS", "RATE", "LOSS", "MULTICAST", "REPAIR", "PEERS", "UNICAST", "REASON")
	for _, r := range rs {
		prog := "-"
		if p, ok := receiverPercent(r); ok {
			prog = fmt.Sprintf("%.0f%%", p)
		}
		rt := "-"
		if receiverActive(r) {
			rt = rate(int64(r.Rate))
		}
		loss := "-"
		if r.State != mcast.RecvWaiting && r.State != mcast.RecvPeers {
			loss = fmt.Sprintf("%.1f%%", 100*r.Loss)
		}
		row(tw, dash(r.Name), dash(r.Addr), r.State, prog, rt, loss,
			size(r.Bytes.Multicast), size(r.Bytes.Repair), size(r.Bytes.Peers), size(r.Bytes.Unicast), dash(r.Reason))
	}
	return tw.Flush()
}

// bitRate formats a rate in bits per second with SI units: "500 Mbit/s".
func bitRate(bps int64) string {
	if bps <= 0 {
		return "-"
	}
	v, units := float64(bps), []string{"bit/s", "kbit/s", "Mbit/s", "Gbit/s", "Tbit/s"}
	i := 0
	for v >= 1000 && i < len(units)-1 {
		v /= 1000
		i++
	}
	prec := 2
	switch {
	case v >= 100:
		prec = 0
	case v >= 10:
		prec = 1
	}
	n := strconv.FormatFloat(v, 'f', prec, 64)
	if strings.Contains(n, ".") {
		n = strings.TrimRight(strings.TrimRight(n, "0"), ".")
	}
	return n + " " + units[i]
}
