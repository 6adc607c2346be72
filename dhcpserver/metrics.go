package dhcpserver

import (
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Metrics are the server's Prometheus metrics. A nil *Metrics is valid
// and counts nothing.
type Metrics struct {
	requests *prometheus.CounterVec
	latency  prometheus.Histogram
}

// NewMetrics creates the metrics and registers them with reg (which may
// be nil).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "preboot",
			Subsystem: "dhcpserver",
			Name:      "requests_total",
			Help:      "DHCP server packets, by result (offered, acked, nak, released, declined, exhausted, duplicate_client_id, ...).",
		}, []string{"result"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "preboot",
			Subsystem: "dhcpserver",
			Name:      "reply_duration_seconds",
			Help:      "Time from receiving a DHCP request to sending the answer (the committed lease included).",
			Buckets:   []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.latency)
	}
	return m
}

func (m *Metrics) count(result string) {
	if m != nil {
		m.requests.WithLabelValues(result).Inc()
	}
}

func (m *Metrics) observe(seconds float64) {
	if m != nil {
		m.latency.Observe(seconds)
	}
}

// Requests returns the count of a result (tests, benchmarks).
func (m *Metrics) Requests(result string) float64 {
	if m == nil {
		return 0
	}
	c, err := m.requests.GetMetricWithLabelValues(result)
	if err != nil {
		return 0
	}
	var d dto.Metric
	if err := c.Write(&d); err != nil {
		return 0
	}
	return d.GetCounter().GetValue()
}
