package proxydhcp

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// secondNetwork adds a second client network to the lab: a veth from the
// server namespace (10.214.X.1/24) to a new client namespace (.2). It
// returns the client namespace, its interface and its MAC.
func (l *lab) secondNetwork(t *testing.T) (ns, ifname string, mac net.HardwareAddr) {
	t.Helper()
	ns = l.cliNS + "2"
	srv2If, cli2If := l.srvIf+"b", l.cliIf+"b"
	run(t, "ip", "netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	run(t, "ip", "link", "add", srv2If, "netns", l.srvNS, "type", "veth", "peer", "name", cli2If, "netns", ns)
	run(t, "ip", "-n", l.srvNS, "addr", "add", net.IPv4(10, 214, l.srvIP[2], 1).String()+"/24", "dev", srv2If)
	run(t, "ip", "-n", l.srvNS, "link", "set", srv2If, "up")
	run(t, "ip", "-n", ns, "addr", "add", net.IPv4(10, 214, l.srvIP[2], 2).String()+"/24", "dev", cli2If)
	run(t, "ip", "-n", ns, "link", "set", cli2If, "up")
	run(t, "ip", "-n", ns, "link", "set", "lo", "up")
	out := run(t, "ip", "-n", ns, "-o", "link", "show", cli2If)
	for _, f := range strings.Fields(out) {
		if m, err := net.ParseMAC(f); err == nil && len(m) == 6 && f != "ff:ff:ff:ff:ff:ff" {
			return ns, cli2If, m
		}
	}
	t.Fatalf("no MAC for %s in %q", cli2If, out)
	return
}

// udhcpcPXE runs busybox udhcpc as a BIOS PXE client in ns and reports
// whether it received the proxy's offer from server.
func udhcpcPXE(t *testing.T, ns, ifname string, server net.IP) bool {
	t.Helper()
	if _, err := exec.LookPath("udhcpc"); err != nil {
		t.Fatal("udhcpc is needed for this test (apt-get install udhcpc)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", ns, "udhcpc", "-f", "-n", "-q", "-t", "2", "-T", "1", "-A", "1",
		"-V", "PXEClient:Arch:00000:UNDI:002001", "-x", "0x5d:0000", "-O", "43", "-O", "60", "-O", "67",
		"-i", ifname, "-s", "/bin/true").CombinedOutput()
	t.Logf("udhcpc in %s: %v\n%s", ns, err, out)
	if !strings.Contains(string(out), "discover") {
		t.Fatal("udhcpc sent no discover")
	}
	return strings.Contains(string(out), "select for 0.0.0.0, server "+server.String())
}

// loopbackNoAnswer sends a PXE DISCOVER to 127.0.0.1 inside the server's
// namespace, on both ports: the server must see it and stay silent.
func (l *lab) loopbackNoAnswer(t *testing.T) {
	t.Helper()
	k := pxeKinds[0]
	for i, port := range []int{DHCPPort, PXEPort} {
		mac := net.HardwareAddr{0x52, 0x54, 0x00, 0x10, 0x0f, byte(i)}
		var c *net.UDPConn
		if err := inNetns(l.srvNS, func() error {
			var err error
			c, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		typ := dhcpv4.MessageTypeDiscover
		if port == PXEPort {
			typ = dhcpv4.MessageTypeRequest
		}
		req := pxeRequest(k, mac, uint32(0x10f00+i), typ)
		if _, err := c.WriteToUDP(req.ToBytes(), &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}); err != nil {
			t.Fatal(err)
		}
		l.waitLog(t, "proxydhcp ignored", mac.String(), ResultIgnoredInterface)
		c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		if _, _, err := c.ReadFromUDP(make([]byte, 1500)); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("answer on loopback (port %d): %v", port, err)
		}
		if a := l.logsFor("proxydhcp answer", mac.String()); len(a) != 0 {
			t.Fatalf("server answered on loopback: %v", a)
		}
	}
}

// With proxydhcp.subnets, a client on a listed network gets its answer, one
// on another network none, and loopback never.
func TestNetnsOnlyListedSubnets(t *testing.T) {
	l := newLab(t)
	ns2, if2, mac2 := l.secondNetwork(t)
	l.startServer(t, "", "PREBOOT_PROXYDHCP_SUBNETS="+l.srvIP.Mask(net.CIDRMask(24, 32)).String()+"/24")

	l.loopbackNoAnswer(t)
	if !udhcpcPXE(t, l.cliNS, l.cliIf, l.srvIP) {
		t.Fatal("the client on the listed subnet got no offer")
	}
	l.waitLog(t, "proxydhcp answer", l.cliMAC.String(), "")
	if udhcpcPXE(t, ns2, if2, net.IPv4(10, 214, l.srvIP[2], 1)) {
		t.Fatal("the client on an unlisted subnet got an offer")
	}
	l.waitLog(t, "proxydhcp ignored", mac2.String(), ResultIgnoredSubnet)
	if a := l.logsFor("proxydhcp answer", mac2.String()); len(a) != 0 {
		t.Fatalf("server answered the unlisted subnet: %v", a)
	}
}

// With proxydhcp.interfaces, only the listed interface's clients are
// answered; with nothing configured, every interface with an IPv4
// address but loopback.
func TestNetnsOnlyListedInterfaces(t *testing.T) {
	l := newLab(t)
	ns2, if2, mac2 := l.secondNetwork(t)
	l.startServer(t, "", "PREBOOT_PROXYDHCP_IFACES="+l.srvIf)

	l.loopbackNoAnswer(t)
	if !udhcpcPXE(t, l.cliNS, l.cliIf, l.srvIP) {
		t.Fatal("the client on the listed interface got no offer")
	}
	if udhcpcPXE(t, ns2, if2, net.IPv4(10, 214, l.srvIP[2], 1)) {
		t.Fatal("the client on an unlisted interface got an offer")
	}
	l.waitLog(t, "proxydhcp ignored", mac2.String(), ResultIgnoredInterface)
}

// Nothing configured: both networks are answered, loopback is not.
func TestNetnsDefaultNeverLoopback(t *testing.T) {
	l := newLab(t)
	ns2, if2, _ := l.secondNetwork(t)
	l.startServer(t, "")
	l.loopbackNoAnswer(t)
	if !udhcpcPXE(t, l.cliNS, l.cliIf, l.srvIP) {
		t.Fatal("client 1 got no offer")
	}
	if !udhcpcPXE(t, ns2, if2, net.IPv4(10, 214, l.srvIP[2], 1)) {
		t.Fatal("client 2 got no offer")
	}
}
