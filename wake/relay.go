package wake

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"time"
)

// HowRelay: another Preboot server on the device's subnet sent the packet.
const HowRelay = "relay"

// RelayPath is the relay endpoint of the admin API.
const RelayPath = "/api/v1/wake/relay"

// Relay is a Preboot server on a subnet this server has no interface on,
// which sends the magic packets of that subnet's devices on its behalf
// (POST RelayPath with an admin token of the relay server).
type Relay struct {
	Subnet netip.Prefix
	URL    string // base URL, e.g. https://10.2.0.5:8443
	Token  string // an admin API token of the relay server
	// Client makes the requests (nil: a client with a 10 s timeout and
	// the system's roots).
	Client *http.Client
}

// RelayRequest is the body of POST /api/v1/wake/relay: a device the
// relay may not know, and its last address.
type RelayRequest struct {
	MAC string `json:"mac"`
	IP  string `json:"ip,omitempty"`
}

func (r Relay) client() *http.Client {
	if r.Client != nil {
		return r.Client
	}
	return &http.Client{Timeout: 10 * time.Second}
}

// ask has the relay send the magic packet; it returns what the relay did.
func (r Relay) ask(ctx context.Context, d Device) (Result, error) {
	body, err := json.Marshal(RelayRequest{MAC: d.MAC, IP: d.IP})
	if err != nil {
		return Result{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(r.URL, "/")+RelayPath, bytes.NewReader(body))
	if err != nil {
		return Result{}, fmt.Errorf("relay %s: %w", r.URL, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+r.Token)
	resp, err := r.client().Do(req)
	if err != nil {
		return Result{}, fmt.Errorf("relay %s: %w", r.URL, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return Result{}, fmt.Errorf("relay %s: read answer: %w", r.URL, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		_ = json.Unmarshal(raw, &e)
		return Result{}, fmt.Errorf("relay %s: %s: %s", r.URL, resp.Status, e.Error)
	}
	var res Result
	if err := json.Unmarshal(raw, &res); err != nil {
		return Result{}, fmt.Errorf("relay %s: answer: %w", r.URL, err)
	}
	if !res.Sent {
		return res, fmt.Errorf("relay %s could not send: %s", r.URL, res.Error)
	}
	return res, nil
}

// sendRelayed asks t's relay; t.Why gets where the relay sent it.
func (s *Sender) sendRelayed(ctx context.Context, d Device, t *Target) error {
	for _, r := range s.Relays {
		if r.URL != t.Relay {
			continue
		}
		res, err := r.ask(ctx, d)
		var to []string
		for _, rt := range res.Targets {
			to = append(to, rt.String())
		}
		if len(to) > 0 {
			t.Why += "; it sent it to " + strings.Join(to, ", ")
		}
		return err
	}
	return fmt.Errorf("relay %s not configured", t.Relay)
}

// Relayed is what a relay does for POST /api/v1/wake/relay: it sends the
// packet from its own interfaces (where it saw the device, else the subnet
// of its address, else its fallback) without looking the device up.
func (s *Service) Relayed(ctx context.Context, req RelayRequest, actor string) (Result, error) {
	mac, err := normalizeMAC(req.MAC)
	if err != nil {
		return Result{}, err
	}
	d := Device{MAC: mac, IP: req.IP}
	if dev, err := s.Store.Device(ctx, mac); err == nil {
		// Known here too: its interface and address are better news.
		d.Interface = dev.Interface
		if dev.IP != "" {
			d.IP = dev.IP
		}
	}
	// A relay sends only from its own interfaces, never on to another
	// relay.
	local := *s.Sender
	local.Relays = nil
	r := Result{MAC: mac}
	targets, err := local.Targets(d)
	if err == nil {
		r.Targets, err = local.Send(ctx, mac, targets)
	}
	r.Sent = err == nil
	if err != nil {
		r.Error = err.Error()
	}
	s.Sender.Metrics.device(CauseRelay, r.Sent)
	if err := s.event(ctx, mac, actor, r.message(CauseRelay)); err != nil {
		return r, err
	}
	return r, nil
}
