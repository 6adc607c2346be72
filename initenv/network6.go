package initenv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/dhcpv6/nclient6"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/jsimonetti/rtnetlink/rtnl"
)

// lease6 is an IPv6 address the environment got on an interface.
type lease6 struct {
	Addr   netip.Prefix // the address, with the on-link prefix length (128: none)
	How    string       // "dhcpv6" or "slaac"
	Server string       // the DHCPv6 server's DUID (dhcpv6) or the router (slaac)
	DNS    []netip.Addr
}

// net6 are the places the IPv6 bring-up reads and writes; the zero value
// is the real system.
type net6 struct {
	procDir string // /proc
	sysDir  string // /sys
}

func (n net6) proc(p string) string {
	if n.procDir == "" {
		return filepath.Join("/proc", p)
	}
	return filepath.Join(n.procDir, p)
}

func (n net6) sys(p string) string {
	if n.sysDir == "" {
		return filepath.Join("/sys", p)
	}
	return filepath.Join(n.sysDir, p)
}

// addrs returns the IPv6 addresses of iface.
func (n net6) addrs(iface string) ([]ifAddr6, error) {
	f, err := os.Open(n.proc("net/if_inet6"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parseIfInet6(f, iface)
}

// waitAddr waits until an address of iface for which match is true has
// finished duplicate address detection, and returns it. An address whose
// detection failed is an error at once.
func (n net6) waitAddr(ctx context.Context, iface string, timeout time.Duration, what string, match func(ifAddr6) bool) (ifAddr6, error) {
	end := time.Now().Add(timeout)
	for {
		as, err := n.addrs(iface)
		if err != nil {
			return ifAddr6{}, fmt.Errorf("%s: %w", iface, err)
		}
		var tentative bool
		for _, a := range as {
			if !match(a) {
				continue
			}
			if a.DADFailed() {
				return ifAddr6{}, fmt.Errorf("%s: %s %s is already used by another machine on the link (duplicate address detection failed)", iface, what, a.Addr)
			}
			if !a.Tentative() {
				return a, nil
			}
			tentative = true
		}
		if time.Now().After(end) {
			if tentative {
				return ifAddr6{}, fmt.Errorf("%s: %s still tentative (duplicate address detection) after %s", iface, what, timeout)
			}
			return ifAddr6{}, fmt.Errorf("%s: no %s after %s", iface, what, timeout)
		}
		select {
		case <-ctx.Done():
			return ifAddr6{}, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// enable makes sure the kernel runs IPv6 on iface with router
// advertisements and SLAAC (the kernel's defaults; written in case a
// command line or an overlay changed them).
func (n net6) enable(iface string) {
	for k, v := range map[string]string{"disable_ipv6": "0", "accept_ra": "1", "autoconf": "1"} {
		_ = os.WriteFile(n.proc(filepath.Join("sys/net/ipv6/conf", iface, k)), []byte(v+"\n"), 0o644)
	}
}

// up6 brings iface up on IPv6 the way the network says: it waits for the
// interface's link-local address, for a router advertisement, then gets
// an address by DHCPv6 (M flag) or waits for the kernel's SLAAC address
// (an autonomous prefix), and waits for its duplicate address detection.
// want is the address the machine booted with (preboot.ip=): DHCPv6 asks
// for it as iPXE's client (same DUID and IAID), SLAAC forms it again from
// the MAC. The kernel installs the on-link prefixes and the default route
// of the advertisement itself.
func (n net6) up6(ctx context.Context, logger *slog.Logger, rt *rtnl.Conn, iface string, want netip.Addr, timeout time.Duration) (lease6, routerAdvert, netip.Addr, error) {
	ifc, err := net.InterfaceByName(iface)
	if err != nil {
		return lease6{}, routerAdvert{}, netip.Addr{}, err
	}
	n.enable(iface)
	if _, err := n.waitAddr(ctx, iface, 10*time.Second, "IPv6 link-local address", func(a ifAddr6) bool { return a.Addr.IsLinkLocalUnicast() }); err != nil {
		return lease6{}, routerAdvert{}, netip.Addr{}, err
	}
	ra, router, err := waitRouterAdvert(ctx, ifc, timeout)
	if err != nil {
		return lease6{}, routerAdvert{}, netip.Addr{}, fmt.Errorf("%w (the imaging environment takes its IPv6 configuration from the link's router advertisements: M flag for DHCPv6, or a prefix for SLAAC)", err)
	}
	logger.Info("IPv6 router advertisement", "interface", iface, "router", router, "managed", ra.Managed, "other", ra.Other,
		"prefixes", prefixList(ra), "router_lifetime", ra.RouterLifetime)
	want = want.WithZone("")
	var l lease6
	switch {
	case ra.Managed:
		productUUID, _ := os.ReadFile(n.sys("class/dmi/id/product_uuid"))
		duid := ipxeDUID(string(productUUID), ifc.HardwareAddr)
		iaid := ipxeIAID(ifc.HardwareAddr)
		l, err = dhcp6(ctx, iface, duid, iaid, want, 4*time.Second)
		if err != nil {
			return lease6{}, ra, router, fmt.Errorf("DHCPv6 on %s (the router advertisement has the M flag): %w", iface, err)
		}
		l.Addr = netip.PrefixFrom(l.Addr.Addr(), ra.onLinkPrefixLen(l.Addr.Addr()))
		ipn := &net.IPNet{IP: l.Addr.Addr().AsSlice(), Mask: net.CIDRMask(l.Addr.Bits(), 128)}
		if err := rt.AddrAdd(ifc, ipn); err != nil && !errors.Is(err, os.ErrExist) {
			return lease6{}, ra, router, fmt.Errorf("add address %s: %w", ipn, err)
		}
		if _, err := n.waitAddr(ctx, iface, 10*time.Second, "address "+l.Addr.Addr().String(), func(a ifAddr6) bool { return a.Addr == l.Addr.Addr() }); err != nil {
			return lease6{}, ra, router, err
		}
	case ra.autonomous():
		// The kernel forms the address from the prefix and the MAC
		// (EUI-64), as iPXE did.
		global := func(a ifAddr6) bool { return a.Addr.IsGlobalUnicast() && !a.Addr.IsLinkLocalUnicast() }
		var a ifAddr6
		err := errors.New("no address to wait for")
		if want.Is6() {
			a, err = n.waitAddr(ctx, iface, 10*time.Second, "SLAAC address "+want.String(), func(a ifAddr6) bool { return a.Addr == want })
		}
		if err != nil {
			// Another one (privacy or stable addresses): the caller
			// warns that the job's token will not work from it.
			if a, err = n.waitAddr(ctx, iface, 10*time.Second, "SLAAC address", global); err != nil {
				return lease6{}, ra, router, err
			}
		}
		l = lease6{Addr: netip.PrefixFrom(a.Addr, a.PrefixLen), How: "slaac", Server: router.String()}
	default:
		return lease6{}, ra, router, fmt.Errorf("%s: the router advertisement from %s has neither the M flag (DHCPv6) nor a prefix for SLAAC: no way to get an IPv6 address", iface, router)
	}
	l.DNS = append(l.DNS, ra.DNS...)
	return l, ra, router, nil
}

func prefixList(ra routerAdvert) string {
	var s []string
	for _, p := range ra.Prefixes {
		f := ""
		if p.OnLink {
			f += "L"
		}
		if p.Autonomous {
			f += "A"
		}
		s = append(s, p.Prefix.String()+"("+f+")")
	}
	return strings.Join(s, ",")
}

// dhcp6 gets an address by DHCPv6 (Solicit, Advertise, Request, Reply)
// on iface as the client duid with IA_NA iaid, asking for want when it is
// valid.
func dhcp6(ctx context.Context, iface string, duid dhcpv6.DUID, iaid [4]byte, want netip.Addr, timeout time.Duration) (lease6, error) {
	c, err := nclient6.New(iface, nclient6.WithTimeout(timeout), nclient6.WithRetry(2))
	if err != nil {
		return lease6{}, err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, 3*timeout)
	defer cancel()
	mods := []dhcpv6.Modifier{
		dhcpv6.WithClientID(duid),
		dhcpv6.WithIAID(iaid),
		dhcpv6.WithFQDN(0, "preboot"),
	}
	if want.Is6() {
		mods = append(mods, dhcpv6.WithIANA(dhcpv6.OptIAAddress{IPv6Addr: want.AsSlice()}))
	}
	adv, err := c.Solicit(ctx, mods...)
	if err != nil {
		return lease6{}, fmt.Errorf("no advertise: %w", err)
	}
	if _, err := addrFrom6(adv, iaid); err != nil {
		return lease6{}, fmt.Errorf("advertise: %w", err)
	}
	reply, err := c.Request(ctx, adv)
	if err != nil {
		return lease6{}, fmt.Errorf("no reply to the request: %w", err)
	}
	return leaseFrom6(reply, iaid)
}

// leaseFrom6 reads the address of IA_NA iaid, the server and the DNS
// servers from a DHCPv6 Reply.
func leaseFrom6(m *dhcpv6.Message, iaid [4]byte) (lease6, error) {
	if m.Type() != dhcpv6.MessageTypeReply {
		return lease6{}, fmt.Errorf("%s instead of a reply", m.Type())
	}
	a, err := addrFrom6(m, iaid)
	if err != nil {
		return lease6{}, err
	}
	l := lease6{Addr: netip.PrefixFrom(a, 128), How: "dhcpv6"}
	if sid := m.Options.ServerID(); sid != nil {
		l.Server = sid.String()
	}
	for _, d := range m.Options.DNS() {
		if x, ok := netip.AddrFromSlice(d); ok && x.Is6() {
			l.DNS = append(l.DNS, x)
		}
	}
	return l, nil
}

// addrFrom6 returns the first address of IA_NA iaid with a non-zero
// valid lifetime in an Advertise or Reply, or the server's reason why
// there is none (status codes of the message and of the IA).
func addrFrom6(m *dhcpv6.Message, iaid [4]byte) (netip.Addr, error) {
	if st := m.Options.Status(); st != nil && st.StatusCode != iana.StatusSuccess {
		return netip.Addr{}, fmt.Errorf("server status %s: %q", st.StatusCode, st.StatusMessage)
	}
	for _, ia := range m.Options.IANA() {
		if ia.IaId != iaid {
			continue
		}
		if st := ia.Options.Status(); st != nil && st.StatusCode != iana.StatusSuccess {
			return netip.Addr{}, fmt.Errorf("IA_NA status %s: %q", st.StatusCode, st.StatusMessage)
		}
		for _, ad := range ia.Options.Addresses() {
			a, ok := netip.AddrFromSlice(ad.IPv6Addr)
			if !ok || !a.Is6() || a.Is4In6() || !a.IsGlobalUnicast() || ad.ValidLifetime == 0 {
				continue
			}
			return a, nil
		}
		return netip.Addr{}, errors.New("IA_NA without a usable address")
	}
	return netip.Addr{}, fmt.Errorf("no IA_NA %x in the answer", iaid)
}

// bringUpIPv6 gets an IPv6 address on the first interface (the boot
// interface first) where the router advertisement and DHCPv6 or SLAAC
// give one within the rounds of opts.DHCPTimeout, and records it in env.
func bringUpIPv6(ctx context.Context, logger *slog.Logger, rt *rtnl.Conn, ifaces []string, env *Env, opts Options) (string, error) {
	var n net6
	deadline := time.Now().Add(opts.DHCPTimeout)
	var lastErr error
	for round := 1; time.Now().Before(deadline); round++ {
		for _, name := range ifaces {
			if err := ctx.Err(); err != nil {
				return "", err
			}
			waitCarrier(ctx, name, 5*time.Second)
			l, ra, router, err := n.up6(ctx, logger, rt, name, env.WantIP, 15*time.Second)
			if err != nil {
				lastErr = err
				logger.Info("no IPv6 address", "interface", name, "round", round, "err", err)
				continue
			}
			if err := record6(name, l, ra, router, env); err != nil {
				return "", fmt.Errorf("configure %s: %w", name, err)
			}
			logger.Info("IPv6 address", "interface", name, "addr", env.Addr, "how", l.How, "server", l.Server, "gateway", env.Gateway)
			if env.WantIP.IsValid() && env.Addr.Addr() != env.WantIP.WithZone("") {
				logger.Warn("got another IPv6 address than the one this machine booted with: the job's token works only from "+
					env.WantIP.String()+", so the server will refuse the job (give this machine a fixed address, or keep leases per DUID and IAID)",
					"got", env.Addr.Addr(), "want", env.WantIP)
			}
			return name, nil
		}
	}
	if lastErr != nil {
		return "", fmt.Errorf("no IPv6 address on %s within %s: %w", strings.Join(ifaces, ","), opts.DHCPTimeout, lastErr)
	}
	return "", fmt.Errorf("no IPv6 address on %s within %s", strings.Join(ifaces, ","), opts.DHCPTimeout)
}

// record6 records an IPv6 lease in env and in /etc/resolv.conf and
// /run/preboot-net, as configure does for DHCPv4.
func record6(name string, l lease6, ra routerAdvert, router netip.Addr, env *Env) error {
	ifc, err := net.InterfaceByName(name)
	if err != nil {
		return err
	}
	env.Addr = l.Addr
	env.Interface = name
	env.MAC = ifc.HardwareAddr
	if ra.RouterLifetime > 0 {
		env.Gateway = router
	}
	var resolv strings.Builder
	for _, d := range l.DNS {
		env.DNS = append(env.DNS, d)
		resolv.WriteString("nameserver " + d.String() + "\n")
	}
	_ = os.WriteFile("/etc/resolv.conf", []byte(resolv.String()), 0o644)
	_ = os.WriteFile("/run/preboot-net", []byte("INTERFACE="+name+"\nADDR="+env.Addr.String()+"\nGATEWAY="+env.Gateway.String()+
		"\nMTU="+strconv.Itoa(ifc.MTU)+"\nFAMILY=6\n"), 0o644)
	return nil
}
