package mcast

import (
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"github.com/prometheus/common/expfmt"
)

// scrape gathers what c exports through a pedantic registry (which also
// checks that Collect sends what Describe announces) as the text format,
// with the metric names lint-checked.
func scrape(t *testing.T, reg *prometheus.Registry) string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %+v", err, problems)
	}
	var b strings.Builder
	for _, mf := range mfs {
		if _, err := expfmt.MetricFamilyToText(&b, mf); err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}

// compare fails the test unless c exports exactly want.
func compare(t *testing.T, reg *prometheus.Registry, want string) {
	t.Helper()
	if got := scrape(t, reg); got != want {
		t.Fatalf("metrics:\n%s\nwant:\n%s", got, want)
	}
}

// metricsList is a session manager's List whose answer the test changes.
type metricsList struct {
	mu sync.Mutex
	s  []SessionInfo
}

func (l *metricsList) set(s ...SessionInfo) { l.mu.Lock(); l.s = s; l.mu.Unlock() }
func (l *metricsList) list() []SessionInfo {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]SessionInfo(nil), l.s...)
}

const metricsHeader = `
# HELP preboot_multicast_receiver_bytes_total Chunk bytes multicast receivers got, by how: multicast (first pass), repair, peers, unicast (from the server over HTTP).
# TYPE preboot_multicast_receiver_bytes_total counter
# HELP preboot_multicast_receivers Receivers of the multicast sessions the server holds, by state.
# TYPE preboot_multicast_receivers gauge
# HELP preboot_multicast_sent_bytes_total Payload bytes sent to multicast groups: first-pass data, and repair symbols.
# TYPE preboot_multicast_sent_bytes_total counter
# HELP preboot_multicast_sent_packets_total Packets sent to multicast groups.
# TYPE preboot_multicast_sent_packets_total counter
# HELP preboot_multicast_served_bytes_total Chunk bytes the server sent over unicast HTTP to receivers of multicast sessions.
# TYPE preboot_multicast_served_bytes_total counter
# HELP preboot_multicast_sessions Multicast sessions the server holds, by state (ended sessions are kept for a while).
# TYPE preboot_multicast_sessions gauge
`

// metricsText orders the expected samples under their headers (the text
// format needs each family's samples after its HELP and TYPE lines).
func metricsText(samples string) string {
	byName := map[string][]string{}
	for _, l := range strings.Split(strings.TrimSpace(samples), "\n") {
		l = strings.TrimSpace(l)
		name, _, _ := strings.Cut(l, "{")
		name, _, _ = strings.Cut(name, " ")
		byName[name] = append(byName[name], l)
	}
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimSpace(metricsHeader), "\n") {
		b.WriteString(l + "\n")
		if strings.HasPrefix(l, "# TYPE ") {
			name := strings.Fields(l)[2]
			for _, s := range byName[name] {
				b.WriteString(s + "\n")
			}
		}
	}
	return b.String()
}

func TestCollector(t *testing.T) {
	var l metricsList
	c := NewCollector(l.list)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)

	// No session yet: every state at 0, every counter at 0.
	compare(t, reg, metricsText(`
preboot_multicast_receiver_bytes_total{source="multicast"} 0
preboot_multicast_receiver_bytes_total{source="peers"} 0
preboot_multicast_receiver_bytes_total{source="repair"} 0
preboot_multicast_receiver_bytes_total{source="unicast"} 0
preboot_multicast_receivers{state="done"} 0
preboot_multicast_receivers{state="failed"} 0
preboot_multicast_receivers{state="lost"} 0
preboot_multicast_receivers{state="multicast"} 0
preboot_multicast_receivers{state="peers"} 0
preboot_multicast_receivers{state="unicast"} 0
preboot_multicast_receivers{state="waiting"} 0
preboot_multicast_sent_bytes_total{kind="data"} 0
preboot_multicast_sent_bytes_total{kind="repair"} 0
preboot_multicast_sent_packets_total 0
preboot_multicast_served_bytes_total 0
preboot_multicast_sessions{state="cancelled"} 0
preboot_multicast_sessions{state="done"} 0
preboot_multicast_sessions{state="running"} 0
preboot_multicast_sessions{state="waiting"} 0
`))

	running := SessionInfo{ID: "a", State: StateRunning, SentPackets: 100, SentData: 1000, SentRepair: 50, Served: 300,
		Receivers: []ReceiverInfo{
			{ID: "r1", State: RecvMulticast, Bytes: Bytes{Multicast: 900, Repair: 50}},
			{ID: "r2", State: RecvUnicast, Bytes: Bytes{Multicast: 100, Peers: 200, Unicast: 300}},
		}}
	done := SessionInfo{ID: "b", State: StateDone, SentPackets: 10, SentData: 100,
		Receivers: []ReceiverInfo{{ID: "r1", State: RecvDone, Bytes: Bytes{Multicast: 100}}}}
	waiting := SessionInfo{ID: "c", State: StateWaiting, Receivers: []ReceiverInfo{{ID: "r1", State: RecvWaiting}}}
	l.set(running, done, waiting)
	want := metricsText(`
preboot_multicast_receiver_bytes_total{source="multicast"} 1100
preboot_multicast_receiver_bytes_total{source="peers"} 200
preboot_multicast_receiver_bytes_total{source="repair"} 50
preboot_multicast_receiver_bytes_total{source="unicast"} 300
preboot_multicast_receivers{state="done"} 1
preboot_multicast_receivers{state="failed"} 0
preboot_multicast_receivers{state="lost"} 0
preboot_multicast_receivers{state="multicast"} 1
preboot_multicast_receivers{state="peers"} 0
preboot_multicast_receivers{state="unicast"} 1
preboot_multicast_receivers{state="waiting"} 1
preboot_multicast_sent_bytes_total{kind="data"} 1100
preboot_multicast_sent_bytes_total{kind="repair"} 50
preboot_multicast_sent_packets_total 110
preboot_multicast_served_bytes_total 300
preboot_multicast_sessions{state="cancelled"} 0
preboot_multicast_sessions{state="done"} 1
preboot_multicast_sessions{state="running"} 1
preboot_multicast_sessions{state="waiting"} 1
`)
	compare(t, reg, want)
	// A second scrape of the same figures counts nothing twice.
	compare(t, reg, want)

	// The done session is dropped from the list, the running one goes on
	// and is cancelled: the counters keep what the dropped one did.
	running.State = StateCancelled
	running.SentPackets, running.SentData, running.SentRepair, running.Served = 150, 1500, 60, 400
	running.Receivers = []ReceiverInfo{
		{ID: "r1", State: RecvUnicast, Bytes: Bytes{Multicast: 1400, Repair: 60, Unicast: 40}},
		{ID: "r2", State: RecvDone, Bytes: Bytes{Multicast: 100, Peers: 250, Unicast: 350}},
	}
	l.set(running, waiting)
	after := metricsText(`
preboot_multicast_receiver_bytes_total{source="multicast"} 1600
preboot_multicast_receiver_bytes_total{source="peers"} 250
preboot_multicast_receiver_bytes_total{source="repair"} 60
preboot_multicast_receiver_bytes_total{source="unicast"} 390
preboot_multicast_receivers{state="done"} 1
preboot_multicast_receivers{state="failed"} 0
preboot_multicast_receivers{state="lost"} 0
preboot_multicast_receivers{state="multicast"} 0
preboot_multicast_receivers{state="peers"} 0
preboot_multicast_receivers{state="unicast"} 1
preboot_multicast_receivers{state="waiting"} 1
preboot_multicast_sent_bytes_total{kind="data"} 1600
preboot_multicast_sent_bytes_total{kind="repair"} 60
preboot_multicast_sent_packets_total 160
preboot_multicast_served_bytes_total 400
preboot_multicast_sessions{state="cancelled"} 1
preboot_multicast_sessions{state="done"} 0
preboot_multicast_sessions{state="running"} 0
preboot_multicast_sessions{state="waiting"} 1
`)
	compare(t, reg, after)

	// Everything dropped: gauges at 0, counters as they were; a session
	// in a state this collector does not know is still counted.
	l.set(SessionInfo{ID: "d", State: "paused"})
	compare(t, reg, metricsText(`
preboot_multicast_receiver_bytes_total{source="multicast"} 1600
preboot_multicast_receiver_bytes_total{source="peers"} 250
preboot_multicast_receiver_bytes_total{source="repair"} 60
preboot_multicast_receiver_bytes_total{source="unicast"} 390
preboot_multicast_receivers{state="done"} 0
preboot_multicast_receivers{state="failed"} 0
preboot_multicast_receivers{state="lost"} 0
preboot_multicast_receivers{state="multicast"} 0
preboot_multicast_receivers{state="peers"} 0
preboot_multicast_receivers{state="unicast"} 0
preboot_multicast_receivers{state="waiting"} 0
preboot_multicast_sent_bytes_total{kind="data"} 1600
preboot_multicast_sent_bytes_total{kind="repair"} 60
preboot_multicast_sent_packets_total 160
preboot_multicast_served_bytes_total 400
preboot_multicast_sessions{state="cancelled"} 0
preboot_multicast_sessions{state="done"} 0
preboot_multicast_sessions{state="paused"} 1
preboot_multicast_sessions{state="running"} 0
preboot_multicast_sessions{state="waiting"} 0
`))
}

func TestCollectorConcurrentScrapes(t *testing.T) {
	var l metricsList
	l.set(SessionInfo{ID: "a", State: StateRunning, SentPackets: 5, Receivers: []ReceiverInfo{{ID: "r", State: RecvMulticast, Bytes: Bytes{Multicast: 7}}}})
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewCollector(l.list))
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 20 {
				if _, err := reg.Gather(); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if got := scrape(t, reg); !strings.Contains(got, "\npreboot_multicast_sent_packets_total 5\n") ||
		!strings.Contains(got, `preboot_multicast_receiver_bytes_total{source="multicast"} 7`+"\n") {
		t.Errorf("after concurrent scrapes:\n%s", got)
	}
}
