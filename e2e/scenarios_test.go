package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// scenario is one PXE boot in a fresh lab.
type scenario struct {
	topo         topology
	uefi         bool   // OVMF with EDK2's own PXE on virtio-net; else SeaBIOS + QEMU's iPXE e1000 ROM
	uefiBootFile string // ipxe.efi or snponly.efi
	loader       string // "" (iPXE) or "pxelinux"
	assign       bool   // assign kernel+initrd before the boot; else nothing is assigned
	once         bool   // assign with --once
	localDisk    bool   // give the VM the marker disk (second in boot order)
	server       serverOptions
}

// Per-VM deadline for the markers to show (TCG: no KVM here).
const (
	biosDeadline = 180 * time.Second
	uefiDeadline = 240 * time.Second
)

// controlFile is a file every Preboot TFTP root has (copied from Debian's
// ipxe package at start); the guest fetches it to prove TFTP works before
// it asks for the missing boot/updateDrivers.tgz.
const controlFile = "undionly.kpxe"

// bootResult is what a scenario leaves for its specific assertions.
type bootResult struct {
	lab    *lab
	srv    *prebootServer
	vm     *vm
	mac    string
	token  string
	uuid   string // SMBIOS system UUID given to QEMU
	serial string // SMBIOS system serial number given to QEMU
	device *deviceInfo
	vmCfg  vmConfig
}

func runScenario(t *testing.T, sc scenario) *bootResult {
	t.Helper()
	requireRoot(t)
	art, err := sharedArtifacts()
	if err != nil {
		t.Fatal(err)
	}
	l := newLab(t, sc.topo)
	sc.server.UEFIBootFile = sc.uefiBootFile
	srv := l.startPreboot(sc.server, art)
	l.siteDHCP = l.startSiteDHCP()
	t.Cleanup(func() {
		if t.Failed() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			out, err := srv.cli(ctx, "event", "list")
			t.Logf("preboot event list (%v):\n%s", err, out)
		}
	})

	r := &bootResult{
		lab:    l,
		srv:    srv,
		mac:    "52:54:00:" + randomHex(1) + ":" + randomHex(1) + ":" + randomHex(1),
		token:  randomHex(8),
		uuid:   newUUID(),
		serial: "E2E-" + strings.ToUpper(randomHex(4)),
	}
	if sc.assign {
		args := []string{"device", "boot", r.mac,
			"--kernel", "boot/kernel",
			"--initrd", "boot/initrd",
			"--cmdline", guestCmdline(r.token, labServerIP, controlFile)}
		if sc.loader != "" {
			args = append(args, "--loader", sc.loader)
		}
		if sc.once {
			args = append(args, "--once")
		}
		srv.mustCLI(args...)
	}

	var args []string
	deadline := biosDeadline
	if sc.uefi {
		deadline = uefiDeadline
		args = l.addTap("virtio-net-pci,mac=" + r.mac + ",romfile=,bootindex=1")
	} else {
		// QEMU's e1000 option ROM is iPXE (Debian's ipxe-qemu).
		args = l.addTap("e1000,mac=" + r.mac + ",bootindex=0")
	}
	// SMBIOS identity: Preboot should record it from the PXE request
	// (option 97) and from iPXE's policy request.
	args = append(args, "-uuid", r.uuid,
		"-smbios", "type=1,manufacturer="+smbiosManufacturer+",product="+smbiosProduct+",serial="+r.serial)
	if sc.localDisk {
		disk := filepath.Join(l.Dir, "disk.img")
		if err := writeLocalDisk(disk); err != nil {
			t.Fatal(err)
		}
		args = append(args, "-drive", "file="+disk+",format=raw,if=none,id=disk0",
			"-device", "ide-hd,drive=disk0,bootindex=2")
	}
	r.vmCfg = vmConfig{Name: "guest", Dir: l.Dir, Netns: l.NetNS, UEFI: sc.uefi, Args: args}
	r.vm = startVM(t, r.vmCfg)
	if d, err := time.ParseDuration(os.Getenv("PREBOOT_E2E_VM_TIMEOUT")); err == nil && d > 0 {
		deadline = d
	}
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	start := time.Now()
	if sc.assign {
		if err := r.vm.waitFor(ctx, guestMarker+" token="+r.token, guestDone); err != nil {
			t.Fatal(err)
		}
	} else {
		if err := r.vm.waitFor(ctx, localDiskMarker); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("markers after %s", time.Since(start).Round(time.Second))
	r.device = srv.showDevice(r.mac)
	t.Logf("device %s: arch=%q platform=%q uuid=%q ip=%q events:%s", r.device.MAC, r.device.Arch, r.device.Platform,
		r.device.UUID, r.device.IP, r.device.eventSummary())
	if !strings.EqualFold(r.device.MAC, r.mac) {
		t.Errorf("device show %s: mac %q", r.mac, r.device.MAC)
	}
	if !r.device.hasEvent("dhcp") {
		t.Errorf("no dhcp event recorded for %s", r.mac)
	}
	if !strings.EqualFold(r.device.UUID, r.uuid) {
		t.Errorf("uuid %q, want the VM's SMBIOS UUID %q", r.device.UUID, r.uuid)
	}
	return r
}

// SMBIOS type 1 strings given to every VM.
const (
	smbiosManufacturer = "PrebootLab"
	smbiosProduct      = "E2E-VM"
)

// newUUID returns a random (version 4) UUID string.
func newUUID() string {
	h := []byte(randomHex(16))
	h[12] = '4'
	h[16] = "89ab"[h[16]%4]
	return fmt.Sprintf("%s-%s-%s-%s-%s", h[0:8], h[8:12], h[12:16], h[16:20], h[20:32])
}

// checkSMBIOS asserts that Preboot recorded the hardware identity iPXE
// read from SMBIOS.
func (r *bootResult) checkSMBIOS(t *testing.T) {
	t.Helper()
	d := r.device
	if d.Serial != r.serial || d.Manufacturer != smbiosManufacturer || d.Product != smbiosProduct {
		t.Errorf("SMBIOS recorded as serial %q manufacturer %q product %q, want %q %q %q",
			d.Serial, d.Manufacturer, d.Product, r.serial, smbiosManufacturer, smbiosProduct)
	}
}

var poolIP = regexp.MustCompile(`PREBOOT-E2E-IP 10\.123\.0\.(\d+)/24`)

// checkGuest asserts on what the marker initrd printed: the token from the
// assigned command line, an address from the site DHCP pool, a working TFTP
// fetch, and "file not found" for boot/updateDrivers.tgz.
func (r *bootResult) checkGuest(t *testing.T) {
	t.Helper()
	out := r.vm.serial()
	if !poolIP.MatchString(out) {
		t.Errorf("guest did not get an address from the site DHCP pool")
	}
	if !strings.Contains(out, guestTFTPControlOK+" "+controlFile) {
		t.Errorf("guest could not fetch %s over TFTP", controlFile)
	}
	if !strings.Contains(out, guestUDMissing+": tftp: server error: (1)") {
		t.Errorf("guest did not get TFTP error 1 (file not found) for boot/updateDrivers.tgz")
	}
	if strings.Contains(out, guestUDPresent) {
		t.Errorf("boot/updateDrivers.tgz unexpectedly present")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.vm.waitExit(ctx); err != nil {
		t.Error(err)
	}
}

// checkWorkBoot asserts that Preboot recorded the policy request and the
// work it handed out.
func (r *bootResult) checkWorkBoot(t *testing.T, platform string) {
	t.Helper()
	for _, kind := range []string{"boot", "work"} {
		if !r.device.hasEvent(kind) {
			t.Errorf("no %q event recorded for %s", kind, r.mac)
		}
	}
	if r.device.hasEvent("localboot") {
		t.Errorf("device with work was sent to local boot")
	}
	if r.device.Platform != platform {
		t.Errorf("platform %q, want %q", r.device.Platform, platform)
	}
	r.checkListed(t)
}

// checkListed asserts that `preboot device list` shows the device with its
// last event.
func (r *bootResult) checkListed(t *testing.T) {
	t.Helper()
	for _, d := range r.srv.listDevices() {
		if strings.EqualFold(d.MAC, r.mac) {
			if d.LastEvent == nil {
				t.Errorf("device list: %s has no last_event", r.mac)
			}
			if d.LastSeen.IsZero() || d.FirstSeen.IsZero() {
				t.Errorf("device list: %s first_seen %v last_seen %v", r.mac, d.FirstSeen, d.LastSeen)
			}
			return
		}
	}
	t.Errorf("device list does not show %s", r.mac)
}

// tftpTransfers returns the server's "tftp transfer" log records for file.
func (r *bootResult) tftpTransfers(file string) []map[string]any {
	var out []map[string]any
	for _, rec := range r.srv.logRecords("tftp transfer") {
		if rec["file"] == file {
			out = append(out, rec)
		}
	}
	return out
}

// checkTFTPServed asserts that the server logged a successful transfer of
// each file.
func (r *bootResult) checkTFTPServed(t *testing.T, files ...string) {
	t.Helper()
	for _, f := range files {
		ok := false
		for _, rec := range r.tftpTransfers(f) {
			if rec["result"] == "ok" {
				ok = true
			}
		}
		if !ok {
			t.Errorf("server log: no successful TFTP transfer of %s (records: %v)", f, r.tftpTransfers(f))
		}
	}
}

// checkUpdateDriversNotFound asserts on the server side of the missing
// updateDrivers.tgz: a logged not_found transfer and the metric.
func (r *bootResult) checkUpdateDriversNotFound(t *testing.T) {
	t.Helper()
	recs := r.tftpTransfers("boot/updateDrivers.tgz")
	found := false
	for _, rec := range recs {
		if rec["result"] == "not_found" {
			found = true
		}
	}
	if !found {
		t.Errorf("server log: no not_found transfer of boot/updateDrivers.tgz (records: %v)", recs)
	}
	m := r.srv.metrics()
	if v := metricValue(m, `preboot_tftp_transfers_total{result="not_found"}`); v < 1 {
		t.Errorf("metric preboot_tftp_transfers_total{result=\"not_found\"} = %v, want >= 1", v)
	}
}

// metricValue returns the value of one Prometheus sample, -1 if absent.
func metricValue(text, series string) float64 {
	for _, line := range strings.Split(text, "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			var v float64
			if _, err := fmt.Sscan(rest, &v); err == nil {
				return v
			}
		}
	}
	return -1
}

// Scenario 1: BIOS VM (QEMU's iPXE ROM) -> Preboot proxyDHCP beside a
// separate plain DHCP server -> boot policy -> kernel+initrd -> marker.
func TestBIOSProxyDHCP(t *testing.T) {
	t.Parallel()
	r := runScenario(t, scenario{topo: separateDHCP, assign: true})
	r.checkGuest(t)
	r.checkWorkBoot(t, "pcbios")
	r.checkSMBIOS(t)
	r.checkUpdateDriversNotFound(t)
}

// Scenario 2: UEFI VM with EDK2's own PXE (OVMF) -> TFTP ipxe.efi (or
// snponly.efi) -> boot policy -> marker.
func TestUEFIPXE(t *testing.T) {
	t.Parallel()
	for _, bootFile := range []string{"ipxe.efi", "snponly.efi"} {
		t.Run(bootFile, func(t *testing.T) {
			t.Parallel()
			r := runScenario(t, scenario{topo: separateDHCP, uefi: true, uefiBootFile: bootFile, assign: true})
			r.checkGuest(t)
			r.checkWorkBoot(t, "efi")
			r.checkSMBIOS(t)
			// EDK2's PXE (not iPXE) was told the boot program, then fetched it.
			if !r.device.eventMatching("dhcp", bootFile) {
				t.Errorf("no dhcp event names %s", bootFile)
			}
			r.checkTFTPServed(t, bootFile)
			if !strings.Contains(r.device.Arch, "efi") {
				t.Errorf("arch %q, want an EFI architecture", r.device.Arch)
			}
		})
	}
}

// Scenario 3: site DHCP server on the same host as Preboot, answering with
// option 60 "PXEClient"; the client asks Preboot on port 4011. BIOS (iPXE
// ROM, from port 68) and UEFI (EDK2, which sends from port 4011).
func TestSameHostDHCP(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		uefi     bool
		platform string
	}{
		{"bios", false, "pcbios"},
		{"uefi", true, "efi"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := runScenario(t, scenario{topo: sameHost, uefi: tc.uefi, assign: true})
			r.checkGuest(t)
			r.checkWorkBoot(t, tc.platform)
			r.checkSMBIOS(t)
			// Preboot does not listen on 67 here: the client must have come to
			// 4011 because dnsmasq's answer carried option 60 "PXEClient".
			if !r.device.eventMatching("dhcp", "4011") {
				t.Errorf("no dhcp event on port 4011")
			}
			if !strings.Contains(r.lab.siteDHCP.logText(), "option: 60 vendor-class") {
				t.Errorf("dnsmasq log: no option 60 sent")
			}
		})
	}
}

// Scenario 4: nothing assigned -> the policy sends the VM to its own disk,
// whose boot sector prints PREBOOT-LOCAL-DISK; Preboot records "localboot".
func TestLocalBoot(t *testing.T) {
	t.Parallel()
	r := runScenario(t, scenario{topo: separateDHCP, localDisk: true})
	if strings.Contains(r.vm.serial(), guestMarker) {
		t.Errorf("the Linux marker ran although nothing was assigned")
	}
	if !r.device.hasEvent("localboot") {
		t.Errorf("no localboot event recorded for %s", r.mac)
	}
	if r.device.hasEvent("work") {
		t.Errorf("work handed out although nothing was assigned")
	}
	if r.device.LastEvent == nil || r.device.LastEvent.Kind != "localboot" {
		t.Errorf("last event %+v, want localboot", r.device.LastEvent)
	}
	r.checkSMBIOS(t)
	r.checkListed(t)
}

// Scenario 5: the seed's pxelinux path: proxyDHCP hands pxelinux.0, TFTP
// serves it, ldlinux.c32, the generated per-device config and the kernel
// and initrd; boot/updateDrivers.tgz is "file not found" and boot goes on.
func TestPXELinux(t *testing.T) {
	t.Parallel()
	r := runScenario(t, scenario{topo: separateDHCP, assign: true, loader: "pxelinux", localDisk: false})
	r.checkGuest(t)
	cfg := "pxelinux.cfg/01-" + strings.ReplaceAll(strings.ToLower(r.mac), ":", "-")
	if !r.device.eventMatching("dhcp", "pxelinux.0") {
		t.Errorf("no dhcp event hands out pxelinux.0")
	}
	if !r.device.hasEvent("work") {
		t.Errorf("no work event recorded for %s", r.mac)
	}
	r.checkTFTPServed(t, "pxelinux.0", "ldlinux.c32", cfg, "boot/kernel", "boot/initrd")
	r.checkUpdateDriversNotFound(t)
	r.checkListed(t)
}

// The Preboot menu in "always" mode: nobody presses a key, the menu's
// default after its timeout is the assigned work, and Preboot records that
// the menu was shown.
func TestMenuAlways(t *testing.T) {
	t.Parallel()
	r := runScenario(t, scenario{topo: separateDHCP, assign: true,
		server: serverOptions{MenuMode: "always", MenuTimeout: "2s"}})
	r.checkGuest(t)
	r.checkWorkBoot(t, "pcbios")
	if !r.device.hasEvent("menu") {
		t.Errorf("no menu event recorded for %s", r.mac)
	}
}

// Work assigned with --once is handed out once: the first boot runs it, the
// next boot of the same machine goes to its local disk.
func TestOnceThenLocal(t *testing.T) {
	t.Parallel()
	r := runScenario(t, scenario{topo: separateDHCP, assign: true, once: true, localDisk: true})
	r.checkGuest(t) // waits for the poweroff
	r.checkWorkBoot(t, "pcbios")

	cfg := r.vmCfg
	cfg.Name = "guest-second-boot"
	v := startVM(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), biosDeadline)
	defer cancel()
	if err := v.waitFor(ctx, localDiskMarker); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(v.serial(), guestMarker) {
		t.Errorf("second boot ran the work again")
	}
	d := r.srv.showDevice(r.mac)
	t.Logf("events after the second boot:%s", d.eventSummary())
	if len(d.Work) != 0 && string(d.Work) != "null" {
		t.Errorf("work still assigned after a --once boot: %s", d.Work)
	}
	if d.LastEvent == nil || d.LastEvent.Kind != "localboot" {
		t.Errorf("last event %+v, want localboot", d.LastEvent)
	}
}
