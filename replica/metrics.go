package replica

import "github.com/prometheus/client_golang/prometheus"

var (
	descBytes   = prometheus.NewDesc("preboot_replication_bytes_total", "Chunk bytes (compressed) fetched from the upstream and stored.", nil, nil)
	descChunks  = prometheus.NewDesc("preboot_replication_chunks_fetched_total", "Chunks fetched from the upstream, verified and stored.", nil, nil)
	descCorrupt = prometheus.NewDesc("preboot_replication_corrupt_chunks_total",
		"Chunks that did not hash to their name: from the upstream (refused, fetched again) or at rest at the site (found by a scrub).", []string{"where"}, nil)
	descRepaired = prometheus.NewDesc("preboot_replication_repaired_chunks_total", "Chunks at rest replaced by a verified copy from the upstream.", nil, nil)
	descRounds   = prometheus.NewDesc("preboot_replication_rounds_total", "Replication rounds, by result.", []string{"result"}, nil)
	descLag      = prometheus.NewDesc("preboot_replication_lag_seconds", "How long the image has been behind the upstream (0: in sync).", []string{"image"}, nil)
	descInSync   = prometheus.NewDesc("preboot_replication_in_sync", "1 when the image is in sync with the upstream, else 0.", []string{"image", "state"}, nil)
)

// Describe implements prometheus.Collector.
func (r *Replicator) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descBytes, descChunks, descCorrupt, descRepaired, descRounds, descLag, descInSync} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (r *Replicator) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(r.bytes.Load()))
	ch <- prometheus.MustNewConstMetric(descChunks, prometheus.CounterValue, float64(r.chunks.Load()))
	ch <- prometheus.MustNewConstMetric(descCorrupt, prometheus.CounterValue, float64(r.corruptUp.Load()), "upstream")
	ch <- prometheus.MustNewConstMetric(descCorrupt, prometheus.CounterValue, float64(r.corruptLocal.Load()), "local")
	ch <- prometheus.MustNewConstMetric(descRepaired, prometheus.CounterValue, float64(r.repaired.Load()))
	rounds, failed := r.rounds.Load(), r.roundFailures.Load()
	ch <- prometheus.MustNewConstMetric(descRounds, prometheus.CounterValue, float64(rounds-failed), "ok")
	ch <- prometheus.MustNewConstMetric(descRounds, prometheus.CounterValue, float64(failed), "failed")
	for _, st := range r.Status().Images {
		ch <- prometheus.MustNewConstMetric(descLag, prometheus.GaugeValue, st.LagSeconds, st.Name)
		in := 0.0
		if st.State == StateInSync {
			in = 1
		}
		ch <- prometheus.MustNewConstMetric(descInSync, prometheus.GaugeValue, in, st.Name, st.State)
	}
}
