package config

import (
	"strings"
	"testing"
)

func TestUpstreamCheck(t *testing.T) {
	c := Default()
	c.DataDir = t.TempDir()
	c.Upstream = Upstream{URL: "ftp://central", Parallel: 100, Interval: -1}
	err := c.Finish()
	if err == nil {
		t.Fatal("bad upstream accepted")
	}
	for _, want := range []string{"upstream.url", "upstream.token_file", "upstream.parallel", "upstream.interval"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("no %s problem in %v", want, err)
		}
	}
	c = Default()
	c.DataDir = t.TempDir()
	c.Upstream = Upstream{URL: "https://central.example:8443", TokenFile: "/etc/preboot/upstream.token"}
	if err := c.Finish(); err != nil {
		t.Fatal(err)
	}
	if !c.Upstream.Enabled() || (Upstream{}).Enabled() {
		t.Fatal("Enabled")
	}
}
