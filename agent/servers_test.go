package agent

import (
	"slices"
	"testing"
)

// preboot.server= may list every server sharing the job's database: the
// first is the one the agent starts with.
func TestParseCmdlineServers(t *testing.T) {
	e, err := ParseCmdline("quiet preboot.server=https://10.0.0.1:8443,https://10.0.0.2:8443/ preboot.token=pbj_x preboot.job=7")
	if err != nil {
		t.Fatal(err)
	}
	if e.Server != "https://10.0.0.1:8443" || !slices.Equal(e.Servers, []string{"https://10.0.0.1:8443", "https://10.0.0.2:8443"}) {
		t.Fatalf("server %q servers %q", e.Server, e.Servers)
	}
	e, err = ParseCmdline("preboot.server=http://10.0.0.1:8080")
	if err != nil {
		t.Fatal(err)
	}
	if e.Server != "http://10.0.0.1:8080" || len(e.Servers) != 1 {
		t.Fatalf("one server: %q %q", e.Server, e.Servers)
	}
	if _, err := ParseCmdline("preboot.server=,"); err == nil {
		t.Fatal("an empty server list accepted")
	}
}
