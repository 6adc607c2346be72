package initenv

import "testing"

// preboot.ip= names the address the machine booted with: the environment
// asks DHCP for it again, since the job's token works only from there.
func TestParseCmdlineWantIP(t *testing.T) {
	for _, c := range []struct{ cmdline, want string }{
		{"preboot.server=http://10.0.0.2:8080 preboot.ip=10.0.0.150", "10.0.0.150"},
		{"preboot.ip=fd00::1", "invalid IP"}, // DHCPv4 only
		{"preboot.ip=nonsense", "invalid IP"},
		{"quiet", "invalid IP"},
	} {
		if got := ParseCmdline(c.cmdline).WantIP.String(); got != c.want {
			t.Errorf("%q: %s, want %s", c.cmdline, got, c.want)
		}
	}
}
