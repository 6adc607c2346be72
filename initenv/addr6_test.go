package initenv

import (
	"bytes"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv6"
)

func TestServerAddr(t *testing.T) {
	for _, c := range []struct {
		server string
		want   string // "" = not an IP literal
	}{
		{"https://10.0.0.2:8443", "10.0.0.2"},
		{"https://[fd51:7e57:b007::2]:8443", "fd51:7e57:b007::2"},
		{"https://[fd51:7e57:b007::2]", "fd51:7e57:b007::2"},
		{"http://[::ffff:10.0.0.2]:8080", "10.0.0.2"},
		{"https://[fe80::2%25eth0]:8443", "fe80::2%eth0"},
		{"https://preboot.example:8443", ""},
		{"fd00::1", ""},
		{"", ""},
		{"https://[fd00::1:8443", ""},
	} {
		a, ok := serverAddr(c.server)
		got := ""
		if ok {
			got = a.String()
		}
		if got != c.want {
			t.Errorf("serverAddr(%q) = %q, want %q", c.server, got, c.want)
		}
	}
}

// The environment comes up on IPv6 when the machine booted over IPv6,
// or, without preboot.ip=, when the server is an IPv6 literal.
func TestWantsIPv6(t *testing.T) {
	for _, c := range []struct {
		cmdline string
		want    bool
	}{
		{"preboot.server=https://10.0.0.2:8443 preboot.ip=10.0.0.150", false},
		{"preboot.server=https://[fd00::2]:8443 preboot.ip=fd00::150", true},
		{"preboot.server=https://[fd00::2]:8443", true},
		{"preboot.server=https://10.0.0.2:8443", false},
		{"preboot.server=https://preboot.example:8443", false},
		// What the machine booted with decides: the token is bound to it.
		{"preboot.server=https://preboot.example:8443 preboot.ip=fd00::150", true},
		{"preboot.server=https://[fd00::2]:8443 preboot.ip=10.0.0.150", false},
	} {
		env := ParseCmdline(c.cmdline)
		if got := env.wantsIPv6(); got != c.want {
			t.Errorf("%q: wantsIPv6 %v, want %v", c.cmdline, got, c.want)
		}
	}
}

// A link-local server address gets the zone of the environment's own
// interface; everything else is left alone.
func TestServerOnLink(t *testing.T) {
	for _, c := range []struct{ server, iface, want string }{
		{"https://[fe80::2%25br0]:8443", "eth0", "https://[fe80::2%25eth0]:8443"},
		{"https://[fe80::2]:8443", "enp1s0", "https://[fe80::2%25enp1s0]:8443"},
		{"https://[fe80::2]", "eth0", "https://[fe80::2%25eth0]"},
		{"https://[fd00::2]:8443", "eth0", "https://[fd00::2]:8443"},
		{"https://10.0.0.2:8443", "eth0", "https://10.0.0.2:8443"},
		{"https://preboot.example:8443", "eth0", "https://preboot.example:8443"},
		{"https://[fe80::2]:8443", "", "https://[fe80::2]:8443"},
	} {
		got := serverOnLink(c.server, c.iface)
		if got != c.want {
			t.Errorf("serverOnLink(%q, %q) = %q, want %q", c.server, c.iface, got, c.want)
		}
		// What comes out is a URL Go's HTTP client dials.
		if a, ok := serverAddr(got); ok && a.Is6() && a.IsLinkLocalUnicast() && a.Zone() != c.iface && c.iface != "" {
			t.Errorf("serverOnLink(%q): zone %q", c.server, a.Zone())
		}
	}
}

// crc32le is iPXE's crc32_le (src/crypto/crc32.c), bit by bit.
func crc32le(seed uint32, data []byte) uint32 {
	crc := seed
	for _, b := range data {
		crc ^= uint32(b)
		for range 8 {
			mult := uint32(0)
			if crc&1 != 0 {
				mult = 0xedb88320
			}
			crc = crc>>1 ^ mult
		}
	}
	return crc
}

func TestIPXEIAID(t *testing.T) {
	for _, m := range []string{"52:54:00:12:34:56", "00:00:00:00:00:00", "ff:ff:ff:ff:ff:ff", "52:54:00:9a:bc:de"} {
		mac, _ := net.ParseMAC(m)
		v := crc32le(0, mac)
		want := [4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}
		if got := ipxeIAID(mac); got != want {
			t.Errorf("%s: IAID %x, want %x", m, got, want)
		}
	}
}

func TestIPXEDUID(t *testing.T) {
	mac, _ := net.ParseMAC("52:54:00:12:34:56")
	d := ipxeDUID("7C6A1E2D-0B3F-4A5E-9C8D-112233445566\n", mac)
	u, ok := d.(*dhcpv6.DUIDUUID)
	if !ok {
		t.Fatalf("DUID %v, want DUID-UUID", d)
	}
	want := []byte{0x7c, 0x6a, 0x1e, 0x2d, 0x0b, 0x3f, 0x4a, 0x5e, 0x9c, 0x8d, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66}
	if !bytes.Equal(u.UUID[:], want) {
		t.Errorf("UUID bytes %x, want %x (the text order)", u.UUID, want)
	}
	if got := d.ToBytes(); !bytes.Equal(got[:2], []byte{0, 4}) || len(got) != 18 {
		t.Errorf("DUID bytes %x, want type 4 and 16 bytes", got)
	}
	for _, bad := range []string{"", "not-a-uuid", "00000000-0000-0000-0000-000000000000", "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF", "7c6a1e2d0b3f4a5e9c8d112233445566", "7c6a1e2d-0b3f-4a5e-9c8d-1122334455zz"} {
		d := ipxeDUID(bad, mac)
		ll, ok := d.(*dhcpv6.DUIDLL)
		if !ok || !bytes.Equal(ll.LinkLayerAddr, mac) {
			t.Errorf("UUID %q: DUID %v, want DUID-LL of the MAC", bad, d)
		}
	}
}

func TestParseIfInet6(t *testing.T) {
	in := `00000000000000000000000000000001 01 80 10 80       lo
fd517e57b00700000000000000000150 02 40 00 00     eth0
fe80000000000000505400fffe123456 02 40 20 80     eth0
fd517e57b00700000000000000000151 02 80 00 40     eth0
fd517e57b00700000000000000000152 03 40 00 48     eth1
`
	as, err := parseIfInet6(strings.NewReader(in), "eth0")
	if err != nil {
		t.Fatal(err)
	}
	if len(as) != 3 {
		t.Fatalf("%d addresses of eth0, want 3: %+v", len(as), as)
	}
	if as[0].Addr != netip.MustParseAddr("fd51:7e57:b007::150") || as[0].PrefixLen != 64 || as[0].Tentative() || as[0].DADFailed() {
		t.Errorf("first: %+v", as[0])
	}
	if !as[1].Addr.IsLinkLocalUnicast() {
		t.Errorf("second: %+v", as[1])
	}
	if as[2].PrefixLen != 128 || !as[2].Tentative() {
		t.Errorf("third: %+v, want /128, tentative", as[2])
	}
	all, err := parseIfInet6(strings.NewReader(in), "")
	if err != nil || len(all) != 5 || !all[4].DADFailed() || all[4].Iface != "eth1" {
		t.Fatalf("all: %+v %v", all, err)
	}
	for _, bad := range []string{
		"fd51 02 40 00 80 eth0\n",
		"fd517e57b00700000000000000000150 02 40 00 80\n",
		"zz517e57b00700000000000000000150 02 40 00 80 eth0\n",
		"fd517e57b00700000000000000000150 02 ff 00 80 eth0\n",
		"fd517e57b00700000000000000000150 02 40 00 xx eth0\n",
	} {
		if _, err := parseIfInet6(strings.NewReader(bad), ""); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}
