package proxydhcp

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Results a request is counted under (label "result").
const (
	ResultOffered         = "offered"           // DISCOVER answered with a proxy OFFER
	ResultAcked           = "acked"             // REQUEST answered with a proxy ACK
	ResultIgnoredNotPXE   = "ignored_not_pxe"   // no option 60 PXEClient/HTTPClient
	ResultIgnoredMsgType  = "ignored_msg_type"  // BOOTREPLY, RELEASE, REQUEST on 67, ...
	ResultIgnoredByBooter = "ignored_by_booter" // the Booter returned ErrIgnore
	ResultBooterError     = "booter_error"      // the Booter failed, or its answer was unusable
	ResultNoServerIP      = "no_server_ip"      // no IPv4 address on the receiving interface
	ResultMalformed       = "malformed"         // not a well-formed DHCP request
	ResultSendError       = "send_error"        // the reply could not be sent
	// ResultIgnoredInterface: the request came in on loopback, on an
	// interface not in Server.Interfaces, or on one without IPv4 address.
	ResultIgnoredInterface = "ignored_interface"
	// ResultIgnoredSubnet: the client's network is not in Server.Subnets.
	ResultIgnoredSubnet = "ignored_subnet"
)

// allResults lists every result label, so that the counters exist (at 0)
// from the start and the hot path needs no label look-up.
var allResults = [...]string{
	ResultOffered, ResultAcked, ResultIgnoredNotPXE, ResultIgnoredMsgType, ResultIgnoredByBooter,
	ResultBooterError, ResultNoServerIP, ResultMalformed, ResultSendError, ResultIgnoredInterface, ResultIgnoredSubnet,
}

// Metrics are the Prometheus metrics of a [Server].
type Metrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	// Resolved children, by port.
	counters map[int]map[string]prometheus.Counter
	observer map[int]prometheus.Observer
}

// NewMetrics creates the proxyDHCP metrics and registers them with reg
// (which may be nil: the metrics then work but are not exported).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "preboot",
			Subsystem: "proxydhcp",
			Name:      "requests_total",
			Help:      "proxyDHCP packets received, by port and result.",
		}, []string{"port", "result"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "preboot",
			Subsystem: "proxydhcp",
			Name:      "reply_duration_seconds",
			Help:      "Time from receiving a proxyDHCP request to sending the answer (Booter included).",
			Buckets:   []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}, []string{"port"}),
	}
	m.counters = make(map[int]map[string]prometheus.Counter, 2)
	m.observer = make(map[int]prometheus.Observer, 2)
	for _, port := range []int{DHCPPort, PXEPort} {
		p := strconv.Itoa(port)
		m.counters[port] = make(map[string]prometheus.Counter, len(allResults))
		for _, r := range allResults {
			m.counters[port][r] = m.requests.WithLabelValues(p, r)
		}
		m.observer[port] = m.latency.WithLabelValues(p)
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.latency)
	}
	return m
}

func (m *Metrics) count(port int, result string) {
	if m == nil {
		return
	}
	if c, ok := m.counters[port][result]; ok {
		c.Inc()
		return
	}
	m.requests.WithLabelValues(strconv.Itoa(port), result).Inc()
}

func (m *Metrics) observe(port int, seconds float64) {
	if m == nil {
		return
	}
	if o, ok := m.observer[port]; ok {
		o.Observe(seconds)
		return
	}
	m.latency.WithLabelValues(strconv.Itoa(port)).Observe(seconds)
}

// Requests returns the current count for a port and result (for tests and
// benchmarks).
func (m *Metrics) Requests(port int, result string) float64 {
	if m == nil {
		return 0
	}
	c, err := m.requests.GetMetricWithLabelValues(strconv.Itoa(port), result)
	if err != nil {
		return 0
	}
	return counterValue(c)
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return 0
	}
	return m.GetCounter().GetValue()
}
