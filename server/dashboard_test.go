package server

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/preboot/preboot/dhcpserver"
	"github.com/preboot/preboot/mcast"
	"github.com/preboot/preboot/proxydhcp"
	"github.com/preboot/preboot/replica"
	"github.com/preboot/preboot/tftp"
	"github.com/preboot/preboot/wake"
)

// describedRegisterer records the name and labels of every metric the
// collectors registered through it describe (vectors without children
// are described, though they gather nothing).
type describedRegisterer struct {
	prometheus.Registerer
	labels map[string][]string
}

var (
	fqNameRe = regexp.MustCompile(`fqName: "([^"]+)"`)
	labelsRe = regexp.MustCompile(`variableLabels: \{([^}]*)\}`)
)

func (d *describedRegisterer) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc, 64)
	go func() { c.Describe(ch); close(ch) }()
	for desc := range ch {
		s := desc.String()
		m := fqNameRe.FindStringSubmatch(s)
		if m == nil {
			continue
		}
		var labels []string
		if l := labelsRe.FindStringSubmatch(s); l != nil && l[1] != "" {
			for _, x := range strings.Split(l[1], ",") {
				labels = append(labels, strings.TrimSpace(x))
			}
		}
		d.labels[m[1]] = labels
	}
	return d.Registerer.Register(c)
}

func (d *describedRegisterer) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := d.Register(c); err != nil {
			panic(err)
		}
	}
}

// serverMetrics describes every metric a server can register: the same
// constructors Run and handler call, with every daemon on.
func serverMetrics(t *testing.T) map[string][]string {
	t.Helper()
	reg := &describedRegisterer{Registerer: prometheus.NewRegistry(), labels: map[string][]string{}}
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	tftp.NewMetrics(reg)
	proxydhcp.NewMetrics(reg)
	dhcpserver.NewMetrics(reg)
	wake.NewMetrics(reg)
	reg.MustRegister(mcast.NewCollector(func() []mcast.SessionInfo { return nil }))
	reg.MustRegister(&replica.Replicator{}) // site servers (--upstream)
	newBootMetrics(reg)
	registerStoreCollector(reg, nil, nil)
	return reg.labels
}

var (
	// A metric name in a PromQL expression: followed by a selector, a
	// range, or the end of an argument.
	promNameRe = regexp.MustCompile(`\b((?:preboot|go|process)_[a-zA-Z0-9_]+)\s*(\{[^}]*\})?`)
	matcherRe  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)`)
	byRe       = regexp.MustCompile(`\b(?:by|without)\s*\(([^)]*)\)`)
)

// TestGrafanaDashboardMetrics checks that every metric the dashboard in
// docs/grafana queries is one the server registers, with the labels the
// queries select and group by.
func TestGrafanaDashboardMetrics(t *testing.T) {
	raw, err := os.ReadFile("../docs/grafana/preboot.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Type    string `json:"type"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	known := serverMetrics(t)
	type query struct{ where, expr string }
	var queries []query
	for _, p := range dash.Panels {
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			queries = append(queries, query{p.Title, tg.Expr})
		}
	}
	for _, v := range dash.Templating.List {
		queries = append(queries, query{"variable", v.Definition})
	}
	if len(queries) < 20 {
		t.Fatalf("only %d queries in the dashboard", len(queries))
	}
	seen := map[string]bool{}
	for _, q := range queries {
		names := promNameRe.FindAllStringSubmatch(q.expr, -1)
		if len(names) == 0 {
			t.Errorf("%s: %q queries no Preboot metric", q.where, q.expr)
		}
		var allowed []string // labels of the metrics of this expression
		for _, m := range names {
			name := m[1]
			labels, ok := known[name]
			if !ok {
				for _, suffix := range []string{"_bucket", "_sum", "_count"} {
					if base, cut := strings.CutSuffix(name, suffix); cut {
						if labels, ok = known[base]; ok {
							if suffix == "_bucket" {
								labels = append(slices.Clone(labels), "le")
							}
							break
						}
					}
				}
			}
			if !ok {
				t.Errorf("%s: metric %s is not registered by the server", q.where, name)
				continue
			}
			seen[name] = true
			// Target labels Prometheus adds to every series.
			labels = append(slices.Clone(labels), "instance", "job")
			allowed = append(allowed, labels...)
			for _, l := range matcherRe.FindAllStringSubmatch(m[2], -1) {
				if !slices.Contains(labels, l[1]) {
					t.Errorf("%s: %s has no label %q (has %v)", q.where, name, l[1], labels)
				}
			}
		}
		for _, by := range byRe.FindAllStringSubmatch(q.expr, -1) {
			for _, l := range strings.Split(by[1], ",") {
				if l = strings.TrimSpace(l); l != "" && !slices.Contains(allowed, l) {
					t.Errorf("%s: groups by %q, a label none of its metrics has: %q", q.where, l, q.expr)
				}
			}
		}
	}
	// The dashboard covers each part of the server.
	for _, prefix := range []string{"preboot_boot_", "preboot_proxydhcp_", "preboot_dhcpserver_", "preboot_tftp_", "preboot_jobs", "preboot_multicast_", "preboot_wake_", "preboot_store_up", "preboot_replication_"} {
		found := false
		for n := range seen {
			found = found || strings.HasPrefix(n, prefix)
		}
		if !found {
			t.Errorf("the dashboard shows no %s* metric", prefix)
		}
	}
}
