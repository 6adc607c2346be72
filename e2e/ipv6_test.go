package e2e

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv6"

	"github.com/preboot/preboot/e2e/nslab"
)

// pxev6FirmwareArgs leave out OVMF's "UEFI PXEv4" boot options (fw_cfg,
// read by OvmfPkg's platform code), so the NIC's first boot option is
// "UEFI PXEv6".
var pxev6FirmwareArgs = []string{
	"-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=n",
}

// pxev6Start is what OVMF prints when it starts the PXEv6 boot option.
const pxev6Start = ">>Start PXE over IPv6"

// startRouterAdvertisements sends an unsolicited router advertisement
// from the server namespace's eth0 every interval until the test ends:
// the M flag (addresses from DHCPv6) and the lab ULA /64 on-link, not for
// autoconfiguration. Debian has radvd, but the lab does not install it:
// the advertisement is a few bytes.
func (l *lab) startRouterAdvertisements(interval time.Duration) {
	l.t.Helper()
	var conn *icmp.PacketConn
	err := nslab.InNamespace(l.SrvNS, func() error {
		c, err := icmp.ListenPacket("ip6:ipv6-icmp", "::")
		conn = c
		return err
	})
	if err != nil {
		l.t.Fatalf("router advertisements: %v", err)
	}
	p := conn.IPv6PacketConn()
	if err := p.SetMulticastHopLimit(255); err != nil {
		l.t.Fatal(err)
	}
	if err := p.SetHopLimit(255); err != nil {
		l.t.Fatal(err)
	}
	var ifi *net.Interface
	if err := nslab.InNamespace(l.SrvNS, func() (err error) { ifi, err = net.InterfaceByName("eth0"); return err }); err != nil {
		l.t.Fatal(err)
	}
	body := make([]byte, 12+32)
	body[0] = 64                               // cur hop limit
	body[1] = 0x80                             // M: managed address configuration (DHCPv6)
	binary.BigEndian.PutUint16(body[2:], 1800) // router lifetime
	// Prefix information (RFC 4861 4.6.2): L=1, A=0.
	pi := body[12:]
	pi[0], pi[1], pi[2], pi[3] = 3, 4, 64, 0x80
	binary.BigEndian.PutUint32(pi[4:], 86400)
	binary.BigEndian.PutUint32(pi[8:], 14400)
	copy(pi[16:], net.ParseIP(labULA).To16())
	msg, err := (&icmp.Message{Type: ipv6.ICMPTypeRouterAdvertisement, Body: &icmp.RawBody{Data: body}}).Marshal(nil)
	if err != nil {
		l.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		// The interface by index: a zone name would be looked up in this
		// goroutine's namespace, not the socket's.
		dst := &net.IPAddr{IP: net.IPv6linklocalallnodes}
		cm := &ipv6.ControlMessage{IfIndex: ifi.Index, HopLimit: 255}
		for {
			if _, err := p.WriteTo(msg, cm, dst); err != nil && ctx.Err() == nil {
				l.t.Logf("router advertisement: %v", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(interval):
			}
		}
	}()
	l.t.Cleanup(func() { cancel(); <-done; conn.Close() })
}

// Scenario: PXE over IPv6 on a segment where nothing answers DHCPv4
// (no dnsmasq, proxyDHCP off): router advertisements with the M flag,
// Preboot's DHCPv6 server (--dhcp6-range). OVMF's "UEFI PXEv6" asks
// DHCPv6 with vendor class 343 "PXEClient", gets an address and option 59
// tftp://[fd51:7e57:b007::2]/ipxe.efi, downloads it over TFTP/IPv6; iPXE
// then asks DHCPv6 itself (user class "iPXE"), gets the policy's URL
// http://[…]:8080/boot.ipxe and reaches the policy with its MAC: nothing
// is assigned, so a local boot.
func TestPXEv6(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	art, err := sharedArtifacts()
	if err != nil {
		t.Fatal(err)
	}
	l := newLab(t, sameHost)
	l.startRouterAdvertisements(2 * time.Second)
	srv := l.startPreboot(serverOptions{Extra: []string{
		"--proxydhcp=false",
		"--tftp-listen", ":69",
		"--dhcp6-range", labULA + "100-" + labULA + "1ff",
	}}, art)
	mac := "52:54:00:" + randomHex(1) + ":" + randomHex(1) + ":" + randomHex(1)
	srv.logOnFailure(t, nil)
	args := l.addTap("virtio-net-pci,mac=" + mac + ",romfile=,bootindex=1")
	args = append(args, pxev6FirmwareArgs...)
	v := startVM(t, vmConfig{Name: "guest", Dir: l.Dir, Netns: l.NetNS, UEFI: true, Args: args})

	deadline := uefiDeadline
	if d, err := time.ParseDuration(os.Getenv("PREBOOT_E2E_VM_TIMEOUT")); err == nil && d > 0 {
		deadline = d
	}
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	start := time.Now()
	if err := v.waitFor(ctx, pxev6Start); err != nil {
		t.Fatal(err)
	}
	tftpURL := "tftp://[" + labServerIP6 + "]/ipxe.efi"
	scriptURL := "http://[" + labServerIP6 + "]:8080/boot.ipxe"
	var d *deviceInfo
	for {
		// The device exists once the firmware's DHCPv6 request reached
		// the policy.
		if out, err := srv.cli(ctx, "device", "show", mac, "--events", "1000", "-o", "json"); err == nil {
			d = &deviceInfo{}
			if err := json.Unmarshal([]byte(out), d); err != nil {
				t.Fatalf("device show %s: %v", mac, err)
			}
		} else {
			d = &deviceInfo{}
		}
		if d.hasEvent("localboot") {
			break
		}
		if v.exited() {
			t.Fatalf("qemu exited before the policy sent %s to local boot; events:%s", mac, d.eventSummary())
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no localboot event for %s: %v; events:%s\nconsole:\n%s", mac, ctx.Err(), d.eventSummary(), v.serial())
		case <-time.After(time.Second):
		}
	}
	t.Logf("local boot decided after %s; events:%s", time.Since(start).Round(time.Second), d.eventSummary())

	// The DHCPv6 server answered the firmware (PXEClient) with the TFTP
	// URL and iPXE with the script's URL, both with an address.
	var fw, ipxe bool
	for _, rec := range srv.logRecords("dhcp6 answer") {
		if rec["mac"] != mac || rec["type"] != "REPLY" {
			continue
		}
		ip, _ := rec["ip"].(string)
		if !strings.HasPrefix(ip, labULA) {
			continue
		}
		fw = fw || rec["boot_file_url"] == tftpURL
		ipxe = ipxe || rec["boot_file_url"] == scriptURL
	}
	if !fw {
		t.Errorf("no DHCPv6 Reply to %s with an address and %s", mac, tftpURL)
	}
	if !ipxe {
		t.Errorf("no DHCPv6 Reply to %s (iPXE) with an address and %s", mac, scriptURL)
	}
	if !d.eventMatching("dhcp", "port 547, efi-x64, PXEClient → ipxe.efi") {
		t.Errorf("no dhcp event for the firmware's DHCPv6 request")
	}
	// ipxe.efi went over TFTP to an IPv6 peer.
	var tftp6 bool
	for _, rec := range srv.logRecords("tftp transfer") {
		if rec["file"] == "ipxe.efi" && strings.Contains(fmt.Sprint(rec["peer"], rec["client"], rec["remote"]), labULA) {
			tftp6 = true
		}
	}
	if !tftp6 {
		t.Errorf("no TFTP transfer of ipxe.efi to an IPv6 client in the server log")
	}
	// The policy request came over IPv6.
	var http6 bool
	for _, rec := range srv.logRecords("http request") {
		if p, _ := rec["path"].(string); p == "/boot.ipxe" && strings.Contains(fmt.Sprint(rec["remote"]), labULA) {
			http6 = true
		}
	}
	if !http6 {
		t.Errorf("no /boot.ipxe request from an IPv6 address in the server log")
	}
}
