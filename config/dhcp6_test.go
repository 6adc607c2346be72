package config

import "testing"

func TestParseRange6(t *testing.T) {
	for _, tc := range []struct{ in, start, end string }{
		{"fd00:10::100-fd00:10::1ff", "fd00:10::100", "fd00:10::1ff"},
		{" 2001:db8::a - 2001:db8::a ", "2001:db8::a", "2001:db8::a"},
		{"fd00:10::/64", "fd00:10::100", "fd00:10::ffff:ffff:ffff:ffff"},
		{"fd00:10::1:0/112", "fd00:10::1:100", "fd00:10::1:ffff"},
	} {
		s, e, err := ParseRange6(tc.in)
		if err != nil || s.String() != tc.start || e.String() != tc.end {
			t.Errorf("%q: %v-%v %v, want %s-%s", tc.in, s, e, err, tc.start, tc.end)
		}
	}
	for _, bad := range []string{"", "fd00::2-fd00::1", "10.0.0.1-10.0.0.2", "::ffff:10.0.0.1-::ffff:10.0.0.9",
		"fe80::1-fe80::9", "fd00::/48", "fd00::/124", "ff02::1-ff02::2", "fd00::1%eth0-fd00::2", "fd00::1"} {
		if _, _, err := ParseRange6(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	c := Default()
	c.DHCP6.Ranges = []string{"fd00::/64"}
	c.DHCP6.DNS = []string{"10.0.0.1"}
	if errs := c.DHCP6.check(); len(errs) != 1 {
		t.Errorf("IPv4 DNS server: %v", errs)
	}
}

// TestDHCP6Proxy: the proxy runs without ranges and excludes them.
func TestDHCP6Proxy(t *testing.T) {
	c := Default()
	c.DHCP6.Proxy = true
	if errs := c.DHCP6.check(); len(errs) != 0 || !c.DHCP6.IPv6Boot() || c.DHCP6.Enabled() {
		t.Errorf("proxy alone: %v", errs)
	}
	c.DHCP6.Ranges = []string{"fd00::/64"}
	if errs := c.DHCP6.check(); len(errs) != 1 {
		t.Errorf("proxy and ranges: %v", errs)
	}
}
