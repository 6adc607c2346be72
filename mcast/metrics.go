package mcast

import (
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Metric descriptions of the collector NewCollector returns.
var (
	sessionsDesc = prometheus.NewDesc("preboot_multicast_sessions",
		"Multicast sessions the server holds, by state (ended sessions are kept for a while).", []string{"state"}, nil)
	receiversDesc = prometheus.NewDesc("preboot_multicast_receivers",
		"Receivers of the multicast sessions the server holds, by state.", []string{"state"}, nil)
	sentBytesDesc = prometheus.NewDesc("preboot_multicast_sent_bytes_total",
		"Payload bytes sent to multicast groups: first-pass data, and repair symbols.", []string{"kind"}, nil)
	sentPacketsDesc = prometheus.NewDesc("preboot_multicast_sent_packets_total",
		"Packets sent to multicast groups.", nil, nil)
	receiverBytesDesc = prometheus.NewDesc("preboot_multicast_receiver_bytes_total",
		"Chunk bytes multicast receivers got, by how: multicast (first pass), repair, peers, unicast (from the server over HTTP).", []string{"source"}, nil)
	servedBytesDesc = prometheus.NewDesc("preboot_multicast_served_bytes_total",
		"Chunk bytes the server sent over unicast HTTP to receivers of multicast sessions.", nil, nil)
)

var (
	sessionStates  = []string{StateWaiting, StateRunning, StateDone, StateCancelled}
	receiverStates = []string{RecvWaiting, RecvMulticast, RecvUnicast, RecvPeers, RecvDone, RecvFailed, RecvLost}
)

// counts are the cumulative figures of one session (or their sums).
type counts struct {
	packets, data, repair, served int64
}

// NewCollector exports the sessions list returns (the session manager's
// List) as Prometheus metrics: sessions and receivers by state (gauges),
// and what was sent and received (counters). The counters add up what
// every session did, also after the manager dropped an ended session from
// its list, so that they never go down.
func NewCollector(list func() []SessionInfo) prometheus.Collector {
	return &collector{list: list, sessions: map[string]counts{}, receivers: map[[2]string]Bytes{}}
}

type collector struct {
	list func() []SessionInfo

	mu sync.Mutex
	// The last figures seen of each listed session and receiver
	// ({session, receiver}), and the totals of every session so far.
	sessions  map[string]counts
	receivers map[[2]string]Bytes
	total     counts
	recvTotal Bytes
}

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{sessionsDesc, receiversDesc, sentBytesDesc, sentPacketsDesc, receiverBytesDesc, servedBytesDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	list := c.list()
	byState := map[string]int{}
	recvByState := map[string]int{}

	c.mu.Lock()
	seen := map[string]bool{}
	seenRecv := map[[2]string]bool{}
	for _, s := range list {
		byState[s.State]++
		seen[s.ID] = true
		now := counts{packets: s.SentPackets, data: s.SentData, repair: s.SentRepair, served: s.Served}
		last := c.sessions[s.ID]
		c.total.packets += growth(last.packets, now.packets)
		c.total.data += growth(last.data, now.data)
		c.total.repair += growth(last.repair, now.repair)
		c.total.served += growth(last.served, now.served)
		c.sessions[s.ID] = now
		for _, r := range s.Receivers {
			recvByState[r.State]++
			k := [2]string{s.ID, r.ID}
			seenRecv[k] = true
			lb := c.receivers[k]
			c.recvTotal.Multicast += growth(lb.Multicast, r.Bytes.Multicast)
			c.recvTotal.Repair += growth(lb.Repair, r.Bytes.Repair)
			c.recvTotal.Peers += growth(lb.Peers, r.Bytes.Peers)
			c.recvTotal.Unicast += growth(lb.Unicast, r.Bytes.Unicast)
			c.receivers[k] = r.Bytes
		}
	}
	// What is no longer listed stays in the totals.
	for id := range c.sessions {
		if !seen[id] {
			delete(c.sessions, id)
		}
	}
	for k := range c.receivers {
		if !seenRecv[k] {
			delete(c.receivers, k)
		}
	}
	total, recvTotal := c.total, c.recvTotal
	c.mu.Unlock()

	gauges(ch, sessionsDesc, sessionStates, byState)
	gauges(ch, receiversDesc, receiverStates, recvByState)
	ch <- prometheus.MustNewConstMetric(sentBytesDesc, prometheus.CounterValue, float64(total.data), "data")
	ch <- prometheus.MustNewConstMetric(sentBytesDesc, prometheus.CounterValue, float64(total.repair), "repair")
	ch <- prometheus.MustNewConstMetric(sentPacketsDesc, prometheus.CounterValue, float64(total.packets))
	for _, src := range []struct {
		name string
		n    int64
	}{{"multicast", recvTotal.Multicast}, {"repair", recvTotal.Repair}, {"peers", recvTotal.Peers}, {"unicast", recvTotal.Unicast}} {
		ch <- prometheus.MustNewConstMetric(receiverBytesDesc, prometheus.CounterValue, float64(src.n), src.name)
	}
	ch <- prometheus.MustNewConstMetric(servedBytesDesc, prometheus.CounterValue, float64(total.served))
}

// gauges sends one gauge per state: every known state (0 when none is in
// it), then any other state seen, in order.
func gauges(ch chan<- prometheus.Metric, d *prometheus.Desc, known []string, n map[string]int) {
	for _, st := range known {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(n[st]), st)
	}
	var other []string
	for st := range n {
		if !slices.Contains(known, st) {
			other = append(other, st)
		}
	}
	slices.Sort(other)
	for _, st := range other {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(n[st]), st)
	}
}

// growth is how much a cumulative figure grew since it was last seen
// (never negative: a figure that went down is taken as it is from then on).
func growth(last, now int64) int64 {
	return max(0, now-last)
}
