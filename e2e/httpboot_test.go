package e2e

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

// httpBootFirmwareArgs make OVMF boot the NIC by UEFI HTTP boot: Debian's
// OVMF (edk2 2022.11) is built with HTTP boot and offers, per NIC, "UEFI
// PXEv4", "UEFI PXEv6", "UEFI HTTPv4" and "UEFI HTTPv6" in that order;
// these fw_cfg switches (read by OvmfPkg's platform code) leave out both
// PXE entries, so the NIC's first boot option is HTTPv4.
var httpBootFirmwareArgs = []string{
	"-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=n",
	"-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=n",
}

// httpBootStart is what OVMF prints on the console when it starts the
// HTTPv4 boot option.
const httpBootStart = ">>Start HTTP Boot over IPv4"

// Scenario: UEFI HTTP boot. OVMF (PXE off) sends its DHCPDISCOVER with
// option 60 "HTTPClient:Arch:00016" and option 93 = 16; the site's dnsmasq
// gives it an address and Preboot's proxyDHCP the URL of ipxe.efi on its
// HTTP port; EDK2 fetches it over HTTP (no TFTP), iPXE asks DHCP again and
// chains to /boot.ipxe; nothing is assigned, so the policy records the
// request with the VM's MAC and sends it to its local disk ("localboot").
func TestUEFIHTTPBoot(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	art, err := sharedArtifacts()
	if err != nil {
		t.Fatal(err)
	}
	l := newLab(t, separateDHCP)
	srv := l.startPreboot(serverOptions{}, art)
	l.siteDHCP = l.startSiteDHCP()
	mac := "52:54:00:" + randomHex(1) + ":" + randomHex(1) + ":" + randomHex(1)
	uuid := newUUID()
	srv.logOnFailure(t, nil)

	args := l.addTap("virtio-net-pci,mac=" + mac + ",romfile=,bootindex=1")
	args = append(args, httpBootFirmwareArgs...)
	args = append(args, "-uuid", uuid,
		"-smbios", "type=1,manufacturer="+smbiosManufacturer+",product="+smbiosProduct+",serial=E2E-HTTP")
	v := startVM(t, vmConfig{Name: "guest", Dir: l.Dir, Netns: l.NetNS, UEFI: true, Args: args})

	deadline := uefiDeadline
	if d, err := time.ParseDuration(os.Getenv("PREBOOT_E2E_VM_TIMEOUT")); err == nil && d > 0 {
		deadline = d
	}
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	start := time.Now()
	if err := v.waitFor(ctx, httpBootStart); err != nil {
		t.Fatal(err)
	}
	// The end of the chain is on the server: the policy's answer for the
	// VM's MAC (iPXE's exit leaves nothing certain on the console).
	var d *deviceInfo
	for {
		d = srv.showDevice(mac)
		if d.hasEvent("localboot") {
			break
		}
		if v.exited() {
			t.Fatalf("qemu exited before the policy sent %s to local boot; events:%s", mac, d.eventSummary())
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no localboot event for %s: %v; events:%s", mac, ctx.Err(), d.eventSummary())
		case <-time.After(time.Second):
		}
	}
	t.Logf("local boot decided after %s; device %s arch=%q platform=%q events:%s",
		time.Since(start).Round(time.Second), d.MAC, d.Arch, d.Platform, d.eventSummary())

	url := "http://" + labServerIP + ":8080/files/ipxe.efi"
	// proxyDHCP answered the firmware's HTTP boot request with the URL ...
	if !d.eventMatching("dhcp", "efi-x64-http, HTTPClient → "+url) {
		t.Errorf("no dhcp event hands %s to the HTTP boot client", url)
	}
	// ... and then iPXE (which it loaded) with the policy script.
	if !d.eventMatching("dhcp", "iPXE → http://"+labServerIP+":8080/boot.ipxe") {
		t.Errorf("no dhcp event hands /boot.ipxe to iPXE")
	}
	recorded := d.hasEvent("boot")
	for _, e := range d.Events {
		recorded = recorded || strings.HasPrefix(e.Message, "boot policy request from ")
	}
	if !recorded {
		t.Errorf("the policy request of %s is not recorded", mac)
	}
	if d.hasEvent("work") || len(d.Jobs) != 0 {
		t.Errorf("work handed out although nothing was assigned (jobs %+v)", d.Jobs)
	}
	if !strings.EqualFold(d.UUID, uuid) {
		t.Errorf("uuid %q, want the VM's SMBIOS UUID %q", d.UUID, uuid)
	}
	if d.Serial != "E2E-HTTP" || d.Manufacturer != smbiosManufacturer {
		t.Errorf("SMBIOS recorded as serial %q manufacturer %q", d.Serial, d.Manufacturer)
	}

	// The firmware fetched ipxe.efi from the HTTP server, not TFTP, and
	// got no redirect on the way.
	var methods []string
	for _, rec := range srv.logRecords("http request") {
		p, _ := rec["path"].(string)
		status, _ := rec["status"].(float64)
		if strings.HasSuffix(p, "ipxe.efi") {
			methods = append(methods, rec["method"].(string))
			if status != 200 {
				t.Errorf("%s %s: status %v", rec["method"], p, status)
			}
		}
	}
	t.Logf("firmware's requests for ipxe.efi: %v", methods)
	if !strings.Contains(strings.Join(methods, " "), "GET") {
		t.Errorf("no HTTP GET of ipxe.efi in the server log (requests: %v)", methods)
	}
	for _, rec := range srv.logRecords("tftp transfer") {
		if rec["file"] == "ipxe.efi" {
			t.Errorf("ipxe.efi went over TFTP: %v", rec)
		}
	}
	out := v.serial()
	if strings.Contains(out, "Start PXE") {
		t.Errorf("the firmware tried PXE although it was switched off")
	}
	if !strings.Contains(strings.ToLower(out), "ipxe") {
		t.Errorf("no iPXE output on the console")
	}
	if !strings.Contains(l.siteDHCP.logText(), "HTTPClient:Arch:00016") {
		t.Errorf("dnsmasq did not see the HTTPClient vendor class")
	}
}
