package server

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/preboot/preboot/store"
)

// bootMetrics counts the boot policy's answers (GET /boot.ipxe: every
// iPXE that chains to this server asks once per boot).
type bootMetrics struct {
	requests *prometheus.CounterVec
	duration prometheus.Histogram
}

func newBootMetrics(reg prometheus.Registerer) *bootMetrics {
	m := &bootMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "preboot_boot_requests_total",
			Help: "Boot script requests (GET /boot.ipxe) by HTTP status code.",
		}, []string{"code"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "preboot_boot_request_duration_seconds",
			Help:    "Time to answer GET /boot.ipxe (the boot policy's decision, registration of new devices included).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
	}
	m.requests.WithLabelValues("200")
	if reg == nil {
		return m
	}
	// Handler may be built more than once on one registry (tests): the
	// builds share the collectors.
	if err := reg.Register(m.requests); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if old, ok := are.ExistingCollector.(*prometheus.CounterVec); ok {
				m.requests = old
			}
		}
	}
	if err := reg.Register(m.duration); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if old, ok := are.ExistingCollector.(prometheus.Histogram); ok {
				m.duration = old
			}
		}
	}
	return m
}

// handler counts next's answers.
func (m *bootMetrics) handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		code := sw.status
		if code == 0 {
			code = http.StatusOK
		}
		m.requests.WithLabelValues(strconv.Itoa(code)).Inc()
		m.duration.Observe(time.Since(start).Seconds())
	})
}

// storeCollectTimeout bounds one scrape's store queries.
const storeCollectTimeout = 2 * time.Second

var (
	devicesDesc = prometheus.NewDesc("preboot_devices",
		"Devices registered in the store (every server on one database reports the same number).", nil, nil)
	devicesSeenDesc = prometheus.NewDesc("preboot_devices_seen_last_hour",
		"Devices that booted from the network or reported in the last hour.", nil, nil)
	jobsDesc = prometheus.NewDesc("preboot_jobs",
		"Jobs not finished, by state (pending: waiting for the device to boot; booting; running).", []string{"state"}, nil)
	jobsFinishedDesc = prometheus.NewDesc("preboot_jobs_finished_last_day",
		"Jobs that finished in the last 24 hours, by state (succeeded, failed, cancelled).", []string{"state"}, nil)
	storeUpDesc = prometheus.NewDesc("preboot_store_up",
		"1 when the store answered this scrape's queries, 0 when it did not.", nil, nil)
)

// storeCollector reads the fleet's figures from the store at each
// scrape (counts only: a few indexed queries).
type storeCollector struct {
	st  store.Store
	log *slog.Logger
}

func (c *storeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{devicesDesc, devicesSeenDesc, jobsDesc, jobsFinishedDesc, storeUpDesc} {
		ch <- d
	}
}

func (c *storeCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), storeCollectTimeout)
	defer cancel()
	now := time.Now()
	var out []prometheus.Metric
	err := func() error {
		n, err := c.st.CountDevices(ctx, store.DeviceFilter{})
		if err != nil {
			return err
		}
		out = append(out, prometheus.MustNewConstMetric(devicesDesc, prometheus.GaugeValue, float64(n)))
		if n, err = c.st.CountDevices(ctx, store.DeviceFilter{SeenSince: now.Add(-time.Hour)}); err != nil {
			return err
		}
		out = append(out, prometheus.MustNewConstMetric(devicesSeenDesc, prometheus.GaugeValue, float64(n)))
		for _, s := range []string{store.JobPending, store.JobBooting, store.JobRunning} {
			if n, err = c.st.CountJobs(ctx, store.JobFilter{State: s, Open: true}); err != nil {
				return err
			}
			out = append(out, prometheus.MustNewConstMetric(jobsDesc, prometheus.GaugeValue, float64(n), s))
		}
		for _, s := range []string{store.JobSucceeded, store.JobFailed, store.JobCancelled} {
			if n, err = c.st.CountJobs(ctx, store.JobFilter{State: s, FinishedSince: now.Add(-24 * time.Hour)}); err != nil {
				return err
			}
			out = append(out, prometheus.MustNewConstMetric(jobsFinishedDesc, prometheus.GaugeValue, float64(n), s))
		}
		return nil
	}()
	up := 1.0
	if err != nil {
		up = 0
		out = nil
		if c.log != nil {
			c.log.Warn("metrics: store figures unavailable", "err", err)
		}
	}
	for _, m := range out {
		ch <- m
	}
	ch <- prometheus.MustNewConstMetric(storeUpDesc, prometheus.GaugeValue, up)
}

// registerStoreCollector adds the store's figures to reg once.
func registerStoreCollector(reg prometheus.Registerer, st store.Store, log *slog.Logger) {
	if reg == nil {
		return
	}
	if err := reg.Register(&storeCollector{st: st, log: log}); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) && log != nil {
			log.Warn("metrics: store collector", "err", err)
		}
	}
}
