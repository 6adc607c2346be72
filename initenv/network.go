package initenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/jsimonetti/rtnetlink/rtnl"
	"golang.org/x/sys/unix"
)

// VendorClass is the DHCP option 60 the environment sends: not
// "PXEClient", so proxyDHCP servers (Preboot's included) leave it alone.
const VendorClass = "PrebootEnv"

// ethernetInterfaces lists the Ethernet interfaces in sysDir/class/net
// (type 1, not loopback, not a virtual device's slave), sorted by name.
func ethernetInterfaces(sysDir string) []string {
	ents, err := os.ReadDir(filepath.Join(sysDir, "class", "net"))
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range ents {
		dir := filepath.Join(sysDir, "class", "net", e.Name())
		t, err := os.ReadFile(filepath.Join(dir, "type"))
		if err != nil || strings.TrimSpace(string(t)) != "1" {
			continue
		}
		// Only interfaces backed by hardware (a "device" link): skips
		// bridges, bonds, and the like that could only be here by accident.
		if _, err := os.Stat(filepath.Join(dir, "device")); err != nil {
			continue
		}
		out = append(out, e.Name())
	}
	sort.Strings(out)
	return out
}

// bootInterfaceFirst moves the interface whose address is mac (the one
// the machine booted from, preboot.mac=) to the front: its lease is the
// address the job's token is bound to.
func bootInterfaceFirst(sysDir string, ifaces []string, mac net.HardwareAddr) []string {
	if len(mac) == 0 {
		return ifaces
	}
	out := slices.Clone(ifaces)
	for i, name := range out {
		b, err := os.ReadFile(filepath.Join(sysDir, "class", "net", name, "address"))
		if err != nil {
			continue
		}
		if a, err := net.ParseMAC(strings.TrimSpace(string(b))); err == nil && bytes.Equal(a, mac) {
			copy(out[1:i+1], out[:i])
			out[0] = name
			break
		}
	}
	return out
}

// bringUpNetwork waits for an Ethernet interface (loading drivers for
// devices that show up late), brings every one up and runs DHCPv4 on each
// in turn until one gets a lease, which it configures (address, default
// route, /etc/resolv.conf). A machine that booted over IPv6 (preboot.ip=
// or the server URL an IPv6 address) comes up on IPv6 instead
// (bringUpIPv6: router advertisement, then DHCPv6 or SLAAC).
func bringUpNetwork(ctx context.Context, logger *slog.Logger, loader *Loader, env *Env, opts Options) (string, error) {
	rt, err := rtnl.Dial(nil)
	if err != nil {
		return "", fmt.Errorf("netlink: %w", err)
	}
	defer rt.Close()
	if lo, err := net.InterfaceByName("lo"); err == nil {
		_ = rt.LinkUp(lo)
	}

	nicDeadline := time.Now().Add(opts.NICTimeout)
	var ifaces []string
	for {
		ifaces = ethernetInterfaces("/sys")
		if len(ifaces) > 0 || time.Now().After(nicDeadline) {
			break
		}
		if mods, err := loader.Pass(ctx); err == nil && len(mods) > 0 {
			env.Modules = append(env.Modules, mods...)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	if len(ifaces) == 0 {
		return "", fmt.Errorf("no network interface after %s: no driver for this NIC in the environment (add it with updateDrivers.tgz or --extra-module)", opts.NICTimeout)
	}
	for _, name := range ifaces {
		ifc, err := net.InterfaceByName(name)
		if err != nil {
			continue
		}
		if err := rt.LinkUp(ifc); err != nil {
			logger.Warn("link up", "interface", name, "err", err)
		}
	}
	ifaces = bootInterfaceFirst("/sys", ifaces, env.BootMAC)
	logger.Info("network interfaces", "interfaces", strings.Join(ifaces, ","))

	waitEntropy(ctx, logger)
	if env.wantsIPv6() {
		// The machine booted over IPv6: the job's token works only
		// from that address, and the link may have no DHCPv4 at all.
		return bringUpIPv6(ctx, logger, rt, ifaces, env, opts)
	}
	deadline := time.Now().Add(opts.DHCPTimeout)
	for round := 1; time.Now().Before(deadline); round++ {
		for _, name := range ifaces {
			if err := ctx.Err(); err != nil {
				return "", err
			}
			waitCarrier(ctx, name, 5*time.Second)
			lease, err := dhcp(ctx, name, 4*time.Second, env.WantIP)
			if err != nil {
				logger.Info("no DHCP lease", "interface", name, "round", round, "err", err)
				continue
			}
			if err := configure(rt, name, lease.ACK, env); err != nil {
				return "", fmt.Errorf("configure %s: %w", name, err)
			}
			logger.Info("DHCP lease", "interface", name, "addr", env.Addr, "gateway", env.Gateway, "server", lease.ACK.ServerIPAddr)
			if env.WantIP.IsValid() && env.Addr.Addr() != env.WantIP {
				logger.Warn("the DHCP server gave another address than the one this machine booted with: the job's token works only from "+
					env.WantIP.String()+", so the server will refuse the job (give this MAC a fixed address, or keep leases per MAC)",
					"got", env.Addr.Addr(), "want", env.WantIP)
			}
			return name, nil
		}
	}
	return "", fmt.Errorf("no DHCP lease on %s within %s", strings.Join(ifaces, ","), opts.DHCPTimeout)
}

// waitCarrier waits until the interface reports a carrier (or timeout).
func waitCarrier(ctx context.Context, name string, timeout time.Duration) {
	end := time.Now().Add(timeout)
	for time.Now().Before(end) && ctx.Err() == nil {
		b, err := os.ReadFile(filepath.Join("/sys/class/net", name, "carrier"))
		if err == nil && strings.TrimSpace(string(b)) == "1" {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// dhcp gets a lease on iface. It identifies itself as iPXE and the
// firmware do (client identifier: hardware type 1 and the MAC), so that
// the site's DHCP server sees the same client, and asks for want (the
// address the machine booted with, preboot.ip=) in its DISCOVER: the
// job's token works only from that address.
func dhcp(ctx context.Context, iface string, timeout time.Duration, want netip.Addr) (*nclient4.Lease, error) {
	c, err := nclient4.New(iface, nclient4.WithTimeout(timeout), nclient4.WithRetry(2))
	if err != nil {
		return nil, err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, 3*timeout)
	defer cancel()
	mods := []dhcpv4.Modifier{
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier(VendorClass)),
		dhcpv4.WithOption(dhcpv4.OptHostName("preboot")),
		dhcpv4.WithRequestedOptions(dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter, dhcpv4.OptionDomainNameServer),
	}
	if ifc, err := net.InterfaceByName(iface); err == nil && len(ifc.HardwareAddr) > 0 {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptClientIdentifier(append([]byte{1}, ifc.HardwareAddr...))))
	}
	discover := mods
	if want.Is4() {
		// Only in the DISCOVER: the REQUEST names what was offered.
		discover = append(slices.Clip(mods), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(want.AsSlice())))
	}
	offer, err := c.DiscoverOffer(ctx, discover...)
	if err != nil {
		return nil, fmt.Errorf("no offer: %w", err)
	}
	return c.RequestFromOffer(ctx, offer, mods...)
}

// configure applies a DHCP ACK to the interface and records it in env.
func configure(rt *rtnl.Conn, name string, ack *dhcpv4.DHCPv4, env *Env) error {
	ifc, err := net.InterfaceByName(name)
	if err != nil {
		return err
	}
	ip := ack.YourIPAddr.To4()
	if ip == nil || ip.IsUnspecified() {
		return errors.New("lease without an address")
	}
	mask := ack.SubnetMask()
	if mask == nil {
		mask = ip.DefaultMask()
	}
	ones, _ := mask.Size()
	ipn := &net.IPNet{IP: ip, Mask: mask}
	if err := rt.AddrAdd(ifc, ipn); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("add address %s: %w", ipn, err)
	}
	addr, _ := netip.AddrFromSlice(ip)
	env.Addr = netip.PrefixFrom(addr, ones)
	env.Interface = name
	env.MAC = ifc.HardwareAddr
	if routers := ack.Router(); len(routers) > 0 {
		gw := routers[0].To4()
		dst := net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
		if err := rt.RouteReplace(ifc, dst, gw, rtnl.WithRouteSrc(ipn)); err != nil {
			return fmt.Errorf("default route via %s: %w", gw, err)
		}
		env.Gateway, _ = netip.AddrFromSlice(gw)
	}
	var resolv strings.Builder
	for _, d := range ack.DNS() {
		if a, ok := netip.AddrFromSlice(d.To4()); ok {
			env.DNS = append(env.DNS, a)
			resolv.WriteString("nameserver " + a.String() + "\n")
		}
	}
	_ = os.WriteFile("/etc/resolv.conf", []byte(resolv.String()), 0o644)
	_ = os.WriteFile("/run/preboot-net", []byte("INTERFACE="+name+"\nADDR="+env.Addr.String()+"\nGATEWAY="+env.Gateway.String()+"\nMTU="+strconv.Itoa(ifc.MTU)+"\n"), 0o644)
	return nil
}

// waitEntropy reports when the kernel's random number generator is not
// ready: the DHCP client's transaction ids come from getrandom(2), which
// blocks until it is. Machines with RDRAND or a TPM are ready at once; VMs
// need a virtio-rng device (QEMU: -device virtio-rng-pci) or -cpu max.
func waitEntropy(ctx context.Context, logger *slog.Logger) {
	buf := make([]byte, 1)
	if _, err := unix.Getrandom(buf, unix.GRND_NONBLOCK); err == nil {
		return
	}
	logger.Warn("waiting for the kernel's random number generator (no hardware RNG: in a VM add virtio-rng-pci or -cpu max)")
	start := time.Now()
	for ctx.Err() == nil {
		if _, err := unix.Getrandom(buf, unix.GRND_NONBLOCK); err == nil {
			logger.Info("random number generator ready", "waited", time.Since(start).Round(time.Millisecond))
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}
