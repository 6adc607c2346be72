package initenv

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"
)

// serverAddr returns the IP literal of a preboot.server URL's host
// ("https://[fd00::2]:8443", "http://10.0.0.1:8080", "https://[fe80::2%25eth0]:8443"),
// with its zone; false when the host is a name or the URL is not one.
func serverAddr(server string) (netip.Addr, bool) {
	u, err := url.Parse(server)
	if err != nil || u.Host == "" {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(u.Hostname())
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

// wantsIPv6 says whether the environment must come up on IPv6: the
// machine booted over IPv6 (preboot.ip= is an IPv6 address: the job's
// token works only from it) or the server URL names an IPv6 address.
func (env *Env) wantsIPv6() bool {
	if env.WantIP.Is6() {
		return true
	}
	if env.WantIP.Is4() {
		return false
	}
	a, ok := serverAddr(env.Server)
	return ok && a.Is6()
}

// serverOnLink returns the server URL to use from interface iface: a
// link-local IPv6 literal only means something with the zone of the
// interface it is reached through, and the zone the server saw (its own
// interface's name) means nothing here, so it is replaced by iface. Other
// URLs are returned as they are.
func serverOnLink(server, iface string) string {
	a, ok := serverAddr(server)
	if !ok || !a.Is6() || !a.IsLinkLocalUnicast() || iface == "" {
		return server
	}
	u, err := url.Parse(server)
	if err != nil {
		return server
	}
	host := a.WithZone(iface).String()
	if p := u.Port(); p != "" {
		u.Host = net.JoinHostPort(host, p)
	} else {
		u.Host = "[" + host + "]"
	}
	return u.String()
}

// ipxeIAID is the IAID iPXE puts in its DHCPv6 IA_NA: crc32_le(0, MAC),
// the reflected CRC-32 polynomial without the usual initial and final
// inversion (src/net/udp/dhcpv6.c, src/crypto/crc32.c).
func ipxeIAID(mac net.HardwareAddr) [4]byte {
	v := ^crc32.Update(^uint32(0), crc32.IEEETable, mac)
	return [4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}
}

// ipxeDUID is the client DUID iPXE sends in DHCPv6: DUID-UUID (RFC 6355)
// of the SMBIOS system UUID, in the byte order the UUID is written in
// (iPXE swaps the first three fields of SMBIOS 2.6+, as Linux does when
// it prints /sys/class/dmi/id/product_uuid). Without a usable UUID: a
// DUID-LL of the MAC. Asking with the same DUID and IAID as iPXE, the
// environment is the same client to the DHCPv6 server and gets the
// address it booted with.
func ipxeDUID(productUUID string, mac net.HardwareAddr) dhcpv6.DUID {
	if u, ok := parseUUID(productUUID); ok {
		return &dhcpv6.DUIDUUID{UUID: u}
	}
	return &dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: mac}
}

// parseUUID parses the text form of a UUID (8-4-4-4-12 hexadecimal
// digits) into its 16 bytes in that order. The all-zero and all-ones
// values firmware leaves when it has no UUID are refused.
func parseUUID(s string) ([16]byte, bool) {
	var u [16]byte
	s = strings.TrimSpace(s)
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return u, false
	}
	b, err := hex.DecodeString(s[:8] + s[9:13] + s[14:18] + s[19:23] + s[24:])
	if err != nil {
		return u, false
	}
	copy(u[:], b)
	if u == [16]byte{} || u == [16]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff} {
		return u, false
	}
	return u, true
}

// Address flags of /proc/net/if_inet6 (include/uapi/linux/if_addr.h).
const (
	ifaFDADFailed = 0x08
	ifaFTentative = 0x40
)

// ifAddr6 is one line of /proc/net/if_inet6.
type ifAddr6 struct {
	Addr      netip.Addr
	PrefixLen int
	Flags     uint32
	Iface     string
}

// Tentative: duplicate address detection is not done; the address
// cannot be bound to yet.
func (a ifAddr6) Tentative() bool { return a.Flags&ifaFTentative != 0 }

// DADFailed: another node on the link uses the address.
func (a ifAddr6) DADFailed() bool { return a.Flags&ifaFDADFailed != 0 }

// parseIfInet6 reads /proc/net/if_inet6 ("ADDR32HEX IFINDEX PLEN SCOPE
// FLAGS NAME", hexadecimal numbers) and returns the addresses of iface
// ("" = every interface). Malformed lines are an error.
func parseIfInet6(r io.Reader, iface string) ([]ifAddr6, error) {
	var out []ifAddr6
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		if len(f) != 6 || len(f[0]) != 32 {
			return nil, fmt.Errorf("if_inet6 line %d: %q: want 6 fields", n, sc.Text())
		}
		if iface != "" && f[5] != iface {
			continue
		}
		b, err := hex.DecodeString(f[0])
		if err != nil {
			return nil, fmt.Errorf("if_inet6 line %d: address %q: %w", n, f[0], err)
		}
		plen, err := strconv.ParseUint(f[2], 16, 8)
		if err != nil || plen > 128 {
			return nil, fmt.Errorf("if_inet6 line %d: prefix length %q", n, f[2])
		}
		flags, err := strconv.ParseUint(f[4], 16, 32)
		if err != nil {
			return nil, fmt.Errorf("if_inet6 line %d: flags %q: %w", n, f[4], err)
		}
		out = append(out, ifAddr6{Addr: netip.AddrFrom16([16]byte(b)), PrefixLen: int(plen), Flags: uint32(flags), Iface: f[5]})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("if_inet6: %w", err)
	}
	return out, nil
}
