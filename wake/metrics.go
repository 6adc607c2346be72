package wake

import "github.com/prometheus/client_golang/prometheus"

// Metrics counts wakes. A nil *Metrics counts nothing.
type Metrics struct {
	packets *prometheus.CounterVec
	devices *prometheus.CounterVec
}

// NewMetrics registers the wake counters with reg (or returns those
// already registered there).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		packets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "preboot_wake_packets_total",
			Help: "Wake-on-LAN magic packets, by how the destination was chosen (interface, address, relay, routed, fallback) and result (sent, failed).",
		}, []string{"how", "result"}),
		devices: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "preboot_wake_devices_total",
			Help: "Devices woken, by cause (admin: the API or CLI; schedule: a scheduled assignment; relay: for another server) and result (sent, failed).",
		}, []string{"cause", "result"}),
	}
	for _, how := range []string{HowInterface, HowAddress, HowRelay, HowRouted, HowFallback} {
		for _, r := range []string{"sent", "failed"} {
			m.packets.WithLabelValues(how, r)
		}
	}
	for _, c := range []string{CauseAdmin, CauseSchedule, CauseRelay} {
		for _, r := range []string{"sent", "failed"} {
			m.devices.WithLabelValues(c, r)
		}
	}
	// Several parts of a server (the API, the scheduler) may ask for
	// the counters of one registry: they share them.
	m.packets = register(reg, m.packets)
	m.devices = register(reg, m.devices)
	return m
}

func register(reg prometheus.Registerer, c *prometheus.CounterVec) *prometheus.CounterVec {
	if err := reg.Register(c); err != nil {
		if are, ok := err.(prometheus.AlreadyRegisteredError); ok {
			if old, ok := are.ExistingCollector.(*prometheus.CounterVec); ok {
				return old
			}
		}
		panic(err)
	}
	return c
}

func result(ok bool) string {
	if ok {
		return "sent"
	}
	return "failed"
}

func (m *Metrics) packet(how string, ok bool) {
	if m != nil {
		m.packets.WithLabelValues(how, result(ok)).Inc()
	}
}

func (m *Metrics) device(cause string, ok bool) {
	if m != nil {
		m.devices.WithLabelValues(cause, result(ok)).Inc()
	}
}
