package server

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/preboot/preboot/config"
	"github.com/preboot/preboot/store"
	"github.com/preboot/preboot/tlspin"
	"github.com/preboot/preboot/wake"
)

// newWaker is the Wake-on-LAN service of the configuration (its metrics on
// reg, shared by the API and the scheduler).
func newWaker(cfg config.Config, st store.Store, reg prometheus.Registerer, log *slog.Logger) (*wake.Service, error) {
	subnets, err := cfg.Wake.Prefixes(cfg.ProxyDHCP)
	if err != nil {
		return nil, err
	}
	relays, err := wakeRelays(cfg.Wake.Relays)
	if err != nil {
		return nil, err
	}
	snd := &wake.Sender{Port: cfg.Wake.Port, Interfaces: cfg.Wake.Interfaces, Subnets: subnets, Relays: relays, Logger: log}
	if reg != nil {
		snd.Metrics = wake.NewMetrics(reg)
	}
	return &wake.Service{Store: st, Sender: snd, Logger: log}, nil
}

// wakeRelays reads the relays' tokens and pins (checked by Finish).
func wakeRelays(rs []config.WakeRelay) ([]wake.Relay, error) {
	var out []wake.Relay
	for i, r := range rs {
		p, err := netip.ParsePrefix(r.Subnet)
		if err != nil {
			return nil, fmt.Errorf("wake.relays[%d].subnet: %w", i, err)
		}
		tok, err := os.ReadFile(r.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("wake.relays[%d].token_file: %w", i, err)
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		if r.Fingerprint != "" {
			if tr.TLSClientConfig, err = tlspin.Config(r.Fingerprint); err != nil {
				return nil, fmt.Errorf("wake.relays[%d].fingerprint: %w", i, err)
			}
		}
		out = append(out, wake.Relay{Subnet: p.Masked(), URL: r.URL, Token: strings.TrimSpace(string(tok)),
			Client: &http.Client{Timeout: 10 * time.Second, Transport: tr}})
	}
	return out, nil
}
