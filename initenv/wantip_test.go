package initenv

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// preboot.ip= names the address the machine booted with: the environment
// asks DHCP for it again, since the job's token works only from there.
func TestParseCmdlineWantIP(t *testing.T) {
	for _, c := range []struct{ cmdline, want string }{
		{"preboot.server=http://10.0.0.2:8080 preboot.ip=10.0.0.150", "10.0.0.150"},
		{"preboot.ip=fd00::1", "fd00::1"},      // booted over IPv6
		{"preboot.ip=fe80::1%eth0", "fe80::1"}, // the server's zone means nothing here
		{"preboot.ip=::ffff:10.0.0.7", "10.0.0.7"},
		{"preboot.ip=::", "invalid IP"},
		{"preboot.ip=nonsense", "invalid IP"},
		{"quiet", "invalid IP"},
	} {
		if got := ParseCmdline(c.cmdline).WantIP.String(); got != c.want {
			t.Errorf("%q: %s, want %s", c.cmdline, got, c.want)
		}
	}
}

// The interface the machine booted from (preboot.mac=) is tried first.
func TestBootInterfaceFirst(t *testing.T) {
	sys := t.TempDir()
	for name, addr := range map[string]string{"eth0": "52:54:00:00:00:01", "eth1": "52:54:00:00:00:02", "eth2": "52:54:00:00:00:03"} {
		dir := filepath.Join(sys, "class", "net", name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "address"), []byte(addr+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ifaces := []string{"eth0", "eth1", "eth2"}
	env := ParseCmdline("preboot.mac=52:54:00:00:00:03")
	if got := bootInterfaceFirst(sys, ifaces, env.BootMAC); strings.Join(got, ",") != "eth2,eth0,eth1" {
		t.Fatalf("got %v", got)
	}
	if got := bootInterfaceFirst(sys, ifaces, nil); strings.Join(got, ",") != "eth0,eth1,eth2" {
		t.Fatalf("no mac: %v", got)
	}
	if ifaces[0] != "eth0" {
		t.Fatal("the input was changed")
	}
}
