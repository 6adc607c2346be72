package tftp

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the Prometheus metrics of a Server. A nil *Metrics records nothing.
type Metrics struct {
	transfers   *prometheus.CounterVec
	bytesSent   prometheus.Counter
	retransmits prometheus.Counter
	active      prometheus.Gauge
	duration    prometheus.Histogram
	refused     *prometheus.CounterVec
}

// NewMetrics creates the TFTP metrics and registers them with reg (if reg is not nil).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		transfers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "preboot", Subsystem: "tftp", Name: "transfers_total",
			Help: "TFTP requests handled, by result (ok, not_found, access_violation, illegal_operation, timeout, client_error, aborted, error).",
		}, []string{"result"}),
		bytesSent: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "preboot", Subsystem: "tftp", Name: "bytes_sent_total",
			Help: "File bytes sent in DATA packets, retransmissions included.",
		}),
		retransmits: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "preboot", Subsystem: "tftp", Name: "retransmits_total",
			Help: "DATA and OACK packets sent again after a timeout or a go-back-N request.",
		}),
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "preboot", Subsystem: "tftp", Name: "active_transfers",
			Help: "TFTP transfers in progress.",
		}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "preboot", Subsystem: "tftp", Name: "transfer_duration_seconds",
			Help:    "Duration of TFTP transfers, from request to last acknowledgement or failure.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "preboot", Subsystem: "tftp", Name: "requests_refused_total",
			Help: "Read requests dropped without a transfer, by reason (busy: tftp.max_transfers reached; client_busy: tftp.max_transfers_per_client reached; duplicate: a retransmitted request of a transfer in progress).",
		}, []string{"reason"}),
	}
	for _, r := range []string{refusedBusy, refusedClientBusy, refusedDuplicate} {
		m.refused.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.transfers, m.bytesSent, m.retransmits, m.active, m.duration, m.refused)
	}
	return m
}

func (m *Metrics) refuse(reason string) {
	if m != nil {
		m.refused.WithLabelValues(reason).Inc()
	}
}

func (m *Metrics) start() {
	if m != nil {
		m.active.Inc()
	}
}

func (m *Metrics) finish(result string, bytes int64, retransmits int, d time.Duration) {
	if m == nil {
		return
	}
	m.active.Dec()
	m.transfers.WithLabelValues(result).Inc()
	m.bytesSent.Add(float64(bytes))
	m.retransmits.Add(float64(retransmits))
	m.duration.Observe(d.Seconds())
}
