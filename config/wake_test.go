package config

import (
	"strings"
	"testing"
)

func TestWakeChecks(t *testing.T) {
	c := Default()
	c.Wake.Port = 70000
	c.Wake.Subnets = []string{"10.2.0.0/24", "fd00::/64", "nope"}
	c.Wake.Relays = []WakeRelay{
		{Subnet: "10.3.0.0/24", URL: "https://10.3.0.5:8443", TokenFile: "/etc/preboot/relay"},
		{Subnet: "10.4.0.0", URL: "ftp://x", Fingerprint: "sha256:zz"},
	}
	err := c.Finish()
	if err == nil {
		t.Fatal("bad wake settings accepted")
	}
	for _, want := range []string{"wake.port 70000", `"fd00::/64" is not an IPv4`, `"nope"`, "wake.relays[1].subnet", "wake.relays[1].url",
		"wake.relays[1].fingerprint", "wake.relays[1].token_file: required"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "wake.relays[0]") {
		t.Errorf("a good relay refused: %v", err)
	}
	good := Default()
	good.Wake.Subnets = []string{"10.2.0.0/24"}
	good.ProxyDHCP.Subnets = []string{"10.9.0.0/16"}
	if err := good.Finish(); err != nil {
		t.Fatal(err)
	}
	ps, err := good.Wake.Prefixes(good.ProxyDHCP)
	if err != nil || len(ps) != 2 || ps[1].String() != "10.9.0.0/16" {
		t.Fatalf("prefixes %v %v", ps, err)
	}
}
