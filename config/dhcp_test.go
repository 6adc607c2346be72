package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestDHCPServerConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "preboot.yaml")
	if err := os.WriteFile(path, []byte("dhcp:\n  ranges: [10.1.0.100-10.1.0.199]\n  routers: [10.1.0.1]\n  dns: [10.1.0.53, 10.1.0.54]\n  lease_time: 30m\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Finish(); err != nil {
		t.Fatal(err)
	}
	rs, err := c.DHCP.ParsedRanges()
	if err != nil || len(rs) != 1 || rs[0].Start.String() != "10.1.0.100" || rs[0].End.String() != "10.1.0.199" {
		t.Fatalf("ranges %v %v", rs, err)
	}
	if r, err := ParseRange("10.2.0.10-10.2.1.200/23"); err != nil || r.Subnet.String() != "10.2.0.0/23" {
		t.Fatalf("range with subnet: %+v %v", r, err)
	}
	if !c.DHCP.Enabled() || c.DHCP.LeaseTime != 30*time.Minute || len(c.DHCP.DNS) != 2 {
		t.Fatalf("dhcp %+v", c.DHCP)
	}
	if Default().DHCP.Enabled() {
		t.Fatal("the DHCP server must be off by default")
	}
	for _, tc := range []struct {
		mod  func(*DHCPServer)
		want string
	}{
		{func(d *DHCPServer) { d.Ranges = []string{"10.1.0.100"} }, "START-END"},
		{func(d *DHCPServer) { d.Ranges = []string{"10.1.0.200-10.1.0.100"} }, "before"},
		{func(d *DHCPServer) { d.Ranges = []string{"fd00::1-fd00::9"} }, "IPv4"},
		{func(d *DHCPServer) { d.Ranges = []string{"10.1.0.100-10.1.1.9/24"} }, "outside"},
		{func(d *DHCPServer) { d.Ranges = []string{"10.1.0.100-10.1.0.109/x"} }, "BITS"},
		{func(d *DHCPServer) { d.Ranges = []string{"10.1.0.1-10.1.0.9", "10.1.0.5-10.1.0.20"} }, "overlap"},
		{func(d *DHCPServer) { d.Routers = []string{"gateway"} }, "dhcp.routers"},
		{func(d *DHCPServer) { d.DNS = []string{"::1"} }, "dhcp.dns"},
		{func(d *DHCPServer) { d.LeaseTime = time.Second }, "lease_time"},
	} {
		c := Default()
		c.DHCP.Ranges = []string{"10.1.0.100-10.1.0.199"}
		tc.mod(&c.DHCP)
		if err := c.Finish(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want one mentioning %q", c.DHCP, err, tc.want)
		}
	}
}
