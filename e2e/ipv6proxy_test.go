package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// startSiteDHCP6 runs Debian's dnsmasq in the lab's DHCP namespace as the
// site's DHCPv6 server: addresses from ::1000-::10ff of the lab ULA, no
// DHCPv4, no router advertisements (the test sends them), no boot file for
// PXE firmware. iPXE (user class "iPXE") gets option 59 with Preboot's
// script URL: iPXE's DHCPv6 takes only an Advertise with an address, so a
// proxy cannot give it one (docs/ipv6.md).
func (l *lab) startSiteDHCP6() *process {
	l.t.Helper()
	p := l.startProcess(l.DHCPNS, "dnsmasq6",
		"/usr/sbin/dnsmasq",
		"--no-daemon",
		"--conf-file=/dev/null",
		"--port=0", // no DNS
		"--interface=eth0",
		"--bind-interfaces",
		"--user=root",
		"--pid-file="+filepath.Join(l.Dir, "dnsmasq6.pid"),
		"--leasefile-ro",
		"--log-facility=-",
		"--log-dhcp",
		"--dhcp-range="+labULA+"1000,"+labULA+"10ff,64,10m",
		"--dhcp-userclass=set:ipxe,iPXE",
		"--dhcp-option=tag:ipxe,option6:bootfile-url,http://["+labServerIP6+"]:8080/boot.ipxe",
	)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.waitLog(ctx, "DHCPv6, IP range"); err != nil {
		l.t.Fatal(err)
	}
	return p
}

// Scenario: PXE over IPv6 where the site's DHCPv6 server (dnsmasq, in its
// own namespace) hands out the addresses and Preboot runs the DHCPv6 proxy
// (--dhcp6-proxy, no range): OVMF's "UEFI PXEv6" takes its address from
// dnsmasq's Advertise and Preboot's Advertise (no address, vendor class
// 343 "PXEClient", option 59) as a proxy offer, asks Preboot on UDP 4011
// for its boot file, downloads ipxe.efi over TFTP/IPv6; iPXE reaches the
// policy at /boot.ipxe over IPv6, nothing is assigned: local boot.
func TestPXEv6Proxy(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	art, err := sharedArtifacts()
	if err != nil {
		t.Fatal(err)
	}
	l := newLab(t, separateDHCP)
	l.startRouterAdvertisements(2 * time.Second)
	site := l.startSiteDHCP6()
	srv := l.startPreboot(serverOptions{Extra: []string{
		"--proxydhcp=false",
		"--tftp-listen", ":69",
		"--dhcp6-proxy",
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
	var d *deviceInfo
	for {
		d = &deviceInfo{}
		if out, err := srv.cli(ctx, "device", "show", mac, "--events", "1000", "-o", "json"); err == nil {
			if err := json.Unmarshal([]byte(out), d); err != nil {
				t.Fatalf("device show %s: %v", mac, err)
			}
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

	// Preboot answered the firmware twice, never with an address: the
	// Advertise on 547 and the Reply on 4011, both with the TFTP URL.
	tftpURL := "tftp://[" + labServerIP6 + "]/ipxe.efi"
	var advertised, binl bool
	for _, rec := range srv.logRecords("dhcp6 answer") {
		if rec["mac"] != mac {
			continue
		}
		if rec["ip"] != nil {
			t.Errorf("the proxy handed out an address: %v", rec)
		}
		port := fmt.Sprint(rec["port"])
		advertised = advertised || rec["type"] == "ADVERTISE" && port == "547" && rec["boot_file_url"] == tftpURL
		// EDK2 asks port 4011 from the address the site server gave it.
		binl = binl || rec["type"] == "REPLY" && port == "4011" && rec["boot_file_url"] == tftpURL &&
			strings.HasPrefix(fmt.Sprint(rec["peer"]), "["+labULA)
	}
	if !advertised {
		t.Errorf("no proxy Advertise on port 547 to %s with %s", mac, tftpURL)
	}
	if !binl {
		t.Errorf("no Reply on port 4011 to %s at its site address with %s (EDK2's boot-service request)", mac, tftpURL)
	}
	if !d.eventMatching("dhcp", "port 547, efi-x64, PXEClient → ipxe.efi") || !d.eventMatching("dhcp", "port 4011, efi-x64, PXEClient → ipxe.efi") {
		t.Errorf("no dhcp events for the firmware's messages on 547 and 4011")
	}
	// The addresses came from the site server: the firmware's and iPXE's
	// Replies are in dnsmasq's log.
	siteLog := site.logText()
	if n := strings.Count(siteLog, "DHCPREPLY("); n < 2 {
		t.Errorf("dnsmasq replied %d times (want the firmware's and iPXE's requests)", n)
	}
	// ipxe.efi went over TFTP to an IPv6 peer; /boot.ipxe was asked
	// over IPv6.
	var tftp6, http6 bool
	for _, rec := range srv.logRecords("tftp transfer") {
		if rec["file"] == "ipxe.efi" && strings.Contains(fmt.Sprint(rec["peer"], rec["client"], rec["remote"]), labULA) {
			tftp6 = true
		}
	}
	for _, rec := range srv.logRecords("http request") {
		if p, _ := rec["path"].(string); p == "/boot.ipxe" && strings.Contains(fmt.Sprint(rec["remote"]), labULA) {
			http6 = true
		}
	}
	if !tftp6 {
		t.Errorf("no TFTP transfer of ipxe.efi to an IPv6 client in the server log")
	}
	if !http6 {
		t.Errorf("no /boot.ipxe request from an IPv6 address in the server log")
	}
}
