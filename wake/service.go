package wake

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/preboot/preboot/rules"
	"github.com/preboot/preboot/store"
)

// Causes of a wake (the metrics' cause label).
const (
	CauseAdmin    = "admin"    // the API or the CLI
	CauseSchedule = "schedule" // a scheduled assignment came due
	CauseRelay    = "relay"    // another server asked this one (a relay)
)

// Result is what a wake did for one device.
type Result struct {
	MAC     string   `json:"mac"`
	Name    string   `json:"name,omitempty"`
	Sent    bool     `json:"sent"`
	Targets []Target `json:"targets"`
	Error   string   `json:"error,omitempty"`
}

// Service wakes devices the store knows, and records an event per device.
type Service struct {
	Store  store.Store
	Sender *Sender
	Logger *slog.Logger
}

func (s *Service) logger() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

// Devices looks up every MAC first: an unknown one fails the whole call
// (wrapping store.ErrNotFound) before any packet is sent.
func (s *Service) Devices(ctx context.Context, macs []string) ([]store.Device, error) {
	if len(macs) == 0 {
		return nil, fmt.Errorf("wake: no device given: %w", store.ErrInvalid)
	}
	out := make([]store.Device, 0, len(macs))
	seen := map[string]bool{}
	for _, m := range macs {
		mac, err := store.NormalizeMAC(m)
		if err != nil {
			return nil, fmt.Errorf("wake: %w: %w", err, store.ErrInvalid)
		}
		if seen[mac] {
			continue
		}
		seen[mac] = true
		d, err := s.Store.Device(ctx, mac)
		if err != nil {
			return nil, fmt.Errorf("wake: unknown device %s (nothing was sent): %w", mac, err)
		}
		out = append(out, d)
	}
	return out, nil
}

// GroupDevices returns a group's devices: its static members and the
// devices its expression matches (ErrNotFound for an unknown group).
func (s *Service) GroupDevices(ctx context.Context, name string) ([]store.Device, error) {
	g, err := s.Store.Group(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("wake group %s: %w", name, err)
	}
	var expr *rules.Expr
	if g.Match != "" {
		if expr, err = rules.Parse(g.Match); err != nil {
			return nil, fmt.Errorf("wake group %s: expression: %w", name, err)
		}
	}
	const page = 500
	seen := map[string]bool{}
	var out []store.Device
	for off := 0; ; off += page {
		ms, err := s.Store.Members(ctx, name, store.Page{Limit: page, Offset: off})
		if err != nil {
			return nil, fmt.Errorf("wake group %s: members: %w", name, err)
		}
		for _, d := range ms {
			if !seen[d.MAC] {
				seen[d.MAC] = true
				out = append(out, d)
			}
		}
		if len(ms) < page {
			break
		}
	}
	if expr == nil {
		return out, nil
	}
	for off := 0; ; off += page {
		ds, err := s.Store.Devices(ctx, store.DeviceFilter{Page: store.Page{Limit: page, Offset: off}})
		if err != nil {
			return nil, fmt.Errorf("wake group %s: devices: %w", name, err)
		}
		for _, d := range ds {
			if !seen[d.MAC] && expr.Match(rules.FactsOf(d)) {
				seen[d.MAC] = true
				out = append(out, d)
			}
		}
		if len(ds) < page {
			break
		}
	}
	return out, nil
}

// Wake sends the magic packet of every device and records a wake event
// for each (actor names who asked, cause is CauseAdmin or CauseSchedule).
// A device whose packet could not be sent anywhere has Sent false and an
// Error; the call itself fails only when the store does.
func (s *Service) Wake(ctx context.Context, devs []store.Device, actor, cause string) ([]Result, error) {
	out := make([]Result, 0, len(devs))
	for _, d := range devs {
		r := Result{MAC: d.MAC, Name: d.Name}
		wd := Device{MAC: d.MAC, IP: d.IP, Interface: d.Interface}
		targets, err := s.Sender.Targets(wd)
		if err == nil {
			r.Targets, err = s.Sender.send(ctx, wd, targets)
		}
		r.Sent = err == nil
		if err != nil {
			r.Error = err.Error()
		}
		s.Sender.Metrics.device(cause, r.Sent)
		if err := s.event(ctx, d.MAC, actor, r.message(cause)); err != nil {
			return out, err
		}
		out = append(out, r)
	}
	return out, nil
}

func (s *Service) event(ctx context.Context, mac, actor, msg string) error {
	if _, err := s.Store.AddEvent(ctx, store.Event{MAC: mac, Kind: store.EventWake, Actor: actor, Message: msg}); err != nil {
		return fmt.Errorf("wake %s: record event: %w", mac, err)
	}
	return nil
}

func normalizeMAC(s string) (string, error) {
	mac, err := store.NormalizeMAC(s)
	if err != nil {
		return "", fmt.Errorf("wake: %w: %w", err, store.ErrInvalid)
	}
	return mac, nil
}

func (r Result) message(cause string) string {
	var b strings.Builder
	if r.Sent {
		b.WriteString("magic packet sent to ")
	} else {
		b.WriteString("magic packet not sent: ")
	}
	for i, t := range r.Targets {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(t.String())
		if t.Error != "" {
			b.WriteString(" (failed: " + t.Error + ")")
		}
	}
	if len(r.Targets) == 0 && r.Error != "" {
		b.WriteString(r.Error)
	} else if len(r.Targets) > 0 {
		b.WriteString(" (" + r.Targets[0].Why + ")")
	}
	switch cause {
	case CauseSchedule:
		b.WriteString(" [scheduled]")
	case CauseRelay:
		b.WriteString(" [relayed for another server]")
	}
	return b.String()
}

// Scheduler wakes the devices of scheduled assignments that have come due
// and asked for it (Assignment.Wake). Each due assignment is claimed in
// the store (ClaimDueWakes), so that servers sharing a database wake its
// devices once.
type Scheduler struct {
	Service *Service
	// Now is the clock (nil: time.Now); tests set it.
	Now func() time.Time
	// Interval between checks (0: 10 s).
	Interval time.Duration
}

// Tick claims the assignments due at the scheduler's current time and
// wakes their devices; it returns the claimed assignments.
func (s *Scheduler) Tick(ctx context.Context) ([]store.Assignment, error) {
	now := time.Now()
	if s.Now != nil {
		now = s.Now()
	}
	due, err := s.Service.Store.ClaimDueWakes(ctx, now)
	if err != nil {
		return nil, fmt.Errorf("scheduler: %w", err)
	}
	var errs []error
	for _, a := range due {
		var devs []store.Device
		var err error
		if a.MAC != "" {
			devs, err = s.Service.Devices(ctx, []string{a.MAC})
		} else {
			devs, err = s.Service.GroupDevices(ctx, a.Group)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("scheduled assignment %d: %w", a.ID, err))
			continue
		}
		target := "device " + a.MAC
		if a.Group != "" {
			target = "group " + a.Group
		}
		s.Service.logger().InfoContext(ctx, "scheduled assignment due: waking its devices", "assignment", a.ID, "bundle", a.Bundle, "target", target, "devices", len(devs))
		if _, err := s.Service.Wake(ctx, devs, "schedule", CauseSchedule); err != nil {
			errs = append(errs, fmt.Errorf("scheduled assignment %d: %w", a.ID, err))
		}
	}
	return due, errors.Join(errs...)
}

// Run calls Tick every Interval until ctx ends.
func (s *Scheduler) Run(ctx context.Context) {
	iv := s.Interval
	if iv <= 0 {
		iv = 10 * time.Second
	}
	t := time.NewTicker(iv)
	defer t.Stop()
	for {
		if _, err := s.Tick(ctx); err != nil && ctx.Err() == nil {
			s.Service.logger().WarnContext(ctx, "wake scheduler", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
