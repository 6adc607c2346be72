package cli

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/preboot/preboot/store"
	"github.com/preboot/preboot/wake"
)

// wakeResponse is the answer of the wake endpoints.
type wakeResponse struct {
	Results []wake.Result `json:"results"`
}

const wakeLong = "The server sends the Wake-on-LAN magic packet (UDP port 9) to the directed broadcast of the subnet\n" +
	"of its interface that last saw the device's DHCP requests; else of the interface on the subnet of\n" +
	"the device's last address; else of a routed subnet (serve --wake-subnets, --proxydhcp-subnets)\n" +
	"holding that address; else out of every interface (serve --wake-interfaces). Each line says which.\n" +
	"The machine needs Wake-on-LAN enabled in its firmware and NIC: see docs/wake.md."

func newDeviceWake(g *globals, af *adminFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "wake MAC...",
		Short: "Wake devices (Wake-on-LAN); every MAC must be known, else nothing is sent",
		Long:  "Wake devices by Wake-on-LAN. An unknown MAC fails the command before anything is sent.\n" + wakeLong,
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			macs := make([]string, len(args))
			for i, a := range args {
				m, err := store.NormalizeMAC(a)
				if err != nil {
					return err
				}
				macs[i] = m
			}
			c, err := af.client(g)
			if err != nil {
				return err
			}
			var res wakeResponse
			raw, _, err := c.call(cmd.Context(), "POST", "/api/v1/wake", map[string]any{"devices": macs}, &res)
			if err != nil {
				return err
			}
			return emitWake(g, af, raw, res)
		},
	}
}

func newGroupWake(g *globals, af *adminFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "wake NAME",
		Short: "Wake the group's devices (static members and those its expression matches) by Wake-on-LAN",
		Long:  "Wake the group's devices (static members and devices its expression matches).\n" + wakeLong,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := af.client(g)
			if err != nil {
				return err
			}
			var res wakeResponse
			raw, _, err := c.call(cmd.Context(), "POST", "/api/v1/groups/"+pathEsc(args[0])+"/wake", nil, &res)
			if err != nil {
				return err
			}
			if len(res.Results) == 0 && !af.json() {
				fmt.Fprintf(g.stdout, "group %s has no devices: nothing sent\n", args[0])
				return nil
			}
			return emitWake(g, af, raw, res)
		},
	}
}

func emitWake(g *globals, af *adminFlags, raw []byte, res wakeResponse) error {
	failed := 0
	err := af.emit(g, raw, func() error {
		for _, r := range res.Results {
			name := r.MAC
			if r.Name != "" {
				name += " (" + r.Name + ")"
			}
			if !r.Sent {
				failed++
				fmt.Fprintf(g.stdout, "%s: NOT sent: %s\n", name, r.Error)
				continue
			}
			var to []string
			for _, t := range r.Targets {
				s := t.Addr.String() + fmt.Sprintf(":%d", t.Port)
				if t.Interface != "" {
					s += " on " + t.Interface
				}
				if t.Error != "" {
					s += " (failed: " + t.Error + ")"
				}
				to = append(to, s)
			}
			fmt.Fprintf(g.stdout, "%s: magic packet sent to %s — %s\n", name, strings.Join(to, ", "), r.Targets[0].Why)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, r := range res.Results {
		if !r.Sent && af.json() {
			failed++
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d devices could not be sent their magic packet", failed, len(res.Results))
	}
	return nil
}

// atLayouts are the local-time forms --at accepts besides RFC 3339.
var atLayouts = []string{"2006-01-02 15:04", "2006-01-02 15:04:05", "2006-01-02T15:04", "2006-01-02T15:04:05"}

// parseAt reads a --at time: RFC 3339, or a date and time in loc
// ("2026-12-08 18:00"). A time not after now is an error.
func parseAt(s string, now time.Time, loc *time.Location) (time.Time, error) {
	s = strings.TrimSpace(s)
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		ok := false
		for _, l := range atLayouts {
			if t, err = time.ParseInLocation(l, s, loc); err == nil {
				ok = true
				break
			}
		}
		if !ok {
			return time.Time{}, fmt.Errorf("--at %q: want RFC 3339 (2026-12-08T18:00:00+01:00) or a local date and time (2026-12-08 18:00)", s)
		}
	}
	if !t.After(now) {
		return time.Time{}, fmt.Errorf("--at %s is in the past (now: %s)", t.Format(time.RFC3339), now.In(loc).Format(time.RFC3339))
	}
	return t, nil
}

// scheduleText describes an assignment's schedule for lists ("-" when
// it has none).
func scheduleText(a store.Assignment) string {
	if a.At.IsZero() {
		return "-"
	}
	s := when(a.At)
	switch {
	case !a.WokenAt.IsZero():
		s += " (woken " + when(a.WokenAt) + ")"
	case a.Wake:
		s += " + wake"
	}
	return s
}

var errWakeNeedsAt = errors.New("--wake needs --at TIME (to wake devices now: preboot device wake MAC...)")
