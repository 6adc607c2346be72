package initenv

import (
	"slices"
	"testing"
)

func TestParseCmdlineServers(t *testing.T) {
	env := ParseCmdline("preboot.server=https://[fd00::1]:8443,https://10.0.0.2:8443 preboot.job=3")
	if env.Server != "https://[fd00::1]:8443" || !slices.Equal(env.Servers, []string{"https://[fd00::1]:8443", "https://10.0.0.2:8443"}) {
		t.Fatalf("server %q servers %q", env.Server, env.Servers)
	}
	if env := ParseCmdline("preboot.server=http://10.0.0.1:8080/"); env.Server != "http://10.0.0.1:8080" || len(env.Servers) != 1 {
		t.Fatalf("one server: %q %q", env.Server, env.Servers)
	}
}
