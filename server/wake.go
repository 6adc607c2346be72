package server

import (
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/preboot/preboot/config"
	"github.com/preboot/preboot/store"
	"github.com/preboot/preboot/wake"
)

// newWaker is the Wake-on-LAN service of the configuration (its metrics on
// reg, shared by the API and the scheduler).
func newWaker(cfg config.Config, st store.Store, reg prometheus.Registerer, log *slog.Logger) (*wake.Service, error) {
	subnets, err := cfg.Wake.Prefixes(cfg.ProxyDHCP)
	if err != nil {
		return nil, err
	}
	snd := &wake.Sender{Port: cfg.Wake.Port, Interfaces: cfg.Wake.Interfaces, Subnets: subnets, Logger: log}
	if reg != nil {
		snd.Metrics = wake.NewMetrics(reg)
	}
	return &wake.Service{Store: st, Sender: snd, Logger: log}, nil
}
