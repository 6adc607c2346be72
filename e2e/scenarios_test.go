package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/preboot/preboot/store"
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
	// setup runs after the server started (and the quick task was
	// assigned), before the VM starts.
	setup func(t *testing.T, r *bootResult)
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
	srv.logOnFailure(t, nil)

	r := &bootResult{
		lab:    l,
		srv:    srv,
		mac:    "52:54:00:" + randomHex(1) + ":" + randomHex(1) + ":" + randomHex(1),
		token:  randomHex(8),
		uuid:   newUUID(),
		serial: "E2E-" + strings.ToUpper(randomHex(4)),
	}
	if sc.assign {
		// The quick task makes the os-install bundle boot-<mac> and
		// assigns it to the device (forced; once with --once).
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
	if sc.setup != nil {
		sc.setup(t, r)
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
	if !r.device.hasEvent("work") {
		t.Errorf("no \"work\" event recorded for %s", r.mac)
	}
	// The policy request: a "boot" event at first contact (or in hotkey
	// mode), else part of the decision's event (one event per boot).
	recorded := r.device.hasEvent("boot")
	for _, e := range r.device.Events {
		recorded = recorded || strings.HasPrefix(e.Message, "boot policy request from ")
	}
	if !recorded {
		t.Errorf("the policy request of %s is not recorded", r.mac)
	}
	if r.device.hasEvent("localboot") {
		t.Errorf("device with work was sent to local boot")
	}
	if r.device.Platform != platform {
		t.Errorf("platform %q, want %q", r.device.Platform, platform)
	}
	r.checkQuickBootJob(t)
	r.checkListed(t)
}

// quickBootBundle is the name of the bundle `preboot device boot MAC` makes.
func quickBootBundle(mac string) string {
	return "boot-" + strings.ReplaceAll(strings.ToLower(mac), ":", "")
}

// checkQuickBootJob asserts that the boot made exactly one job: the
// os-install bundle of `device boot`, succeeded when it was handed out
// (an installer does not report back).
func (r *bootResult) checkQuickBootJob(t *testing.T) {
	t.Helper()
	checkOneJob(t, r.srv, r.mac, store.KindOSInstall, quickBootBundle(r.mac))
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
	if len(r.device.Jobs) != 0 {
		t.Errorf("%d jobs although nothing was assigned: %+v", len(r.device.Jobs), r.device.Jobs)
	}
	if r.device.Assignment != nil {
		t.Errorf("assignment %+v although nothing was assigned", r.device.Assignment)
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
	r.checkQuickBootJob(t)
	r.checkTFTPServed(t, "pxelinux.0", "ldlinux.c32", cfg, "boot/kernel", "boot/initrd")
	r.checkUpdateDriversNotFound(t)
	r.checkListed(t)
}

// The Preboot menu in "always" mode on UEFI (EFI iPXE writes to the
// serial console; the BIOS iPXE ROM only to VGA): the server's default
// menu comes from the configuration (always, 3 s), an administrator adds a
// custom bundle entry with `preboot menu set --bundle`; the console shows
// the menu's entries, nobody presses a key, and after the timeout the
// menu's default — the assigned work — runs. Preboot records that the menu
// was shown and that the work was the menu's choice.
func TestMenuAlways(t *testing.T) {
	t.Parallel()
	const entry = "lab-installer" // the custom entry: an os-install bundle
	entryToken := randomHex(8)    // its command line's token: must never reach a kernel
	r := runScenario(t, scenario{topo: separateDHCP, uefi: true, uefiBootFile: "ipxe.efi", assign: true,
		server: serverOptions{MenuMode: "always", MenuTimeout: "3s"},
		setup: func(t *testing.T, r *bootResult) {
			r.srv.mustCLI("bundle", "create", entry, "--kind", store.KindOSInstall,
				"--description", "offered in the menu, never picked",
				"--kernel", "boot/kernel", "--initrd", "boot/initrd",
				"--cmdline", guestCmdline(entryToken, labServerIP, controlFile))
			r.srv.mustCLI("menu", "set", "--bundle", entry)
			// menu set changes only the bundles: mode and timeout are
			// still the configuration's.
			var m store.Menu
			out := r.srv.mustCLI("menu", "show", "-o", "json")
			if err := json.Unmarshal([]byte(out), &m); err != nil {
				t.Fatalf("menu show: %v\n%s", err, out)
			}
			if m.Mode != "always" || time.Duration(m.Timeout) != 3*time.Second || !slices.Equal(m.Bundles, []string{entry}) {
				t.Errorf("server menu %+v, want mode always, timeout 3s (from the configuration), bundles [%s]", m, entry)
			}
		}})
	r.checkGuest(t)
	r.checkWorkBoot(t, "efi")

	console := consoleText(r.vm.serial())
	marker := strings.Index(console, guestMarker+" token="+r.token)
	for _, label := range []string{
		"Preboot - " + strings.ToLower(r.mac), // menu title - MAC
		"Assigned: " + quickBootBundle(r.mac) + " (" + store.KindOSInstall + ")",
		"Start assigned work",
		entry,
		"Boot local disk",
	} {
		i := strings.Index(console, label)
		switch {
		case i < 0:
			t.Errorf("serial console does not show the menu entry %q", label)
		case i > marker:
			t.Errorf("menu entry %q appears on the console after the work's marker", label)
		}
	}
	if strings.Contains(console, entryToken) {
		t.Errorf("the menu's custom entry %s ran, not the default", entry)
	}
	if len(r.device.eventsMatching(store.EventMenu, "menu shown")) != 1 {
		t.Errorf("want one menu event \"menu shown\"")
	}
	if len(r.device.eventsMatching(store.EventWork, "menu choice")) != 1 {
		t.Errorf("want one work event for the menu's choice (its default after the timeout)")
	}
	if len(r.device.eventsMatching(store.EventMenu, "operator picked")) != 0 {
		t.Errorf("a menu entry was picked although nobody pressed a key")
	}
}

// ansiEscape matches the terminal control sequences EFI consoles write
// around text (cursor moves, colours, modes).
var ansiEscape = regexp.MustCompile(`\x1b(\[[0-9;?]*[ -/]*[@-~]|[()][0-9A-Za-z]|[=>78cDEHM])`)

// consoleText is a serial log without terminal control sequences and
// carriage returns, so that text drawn by a menu can be searched for.
func consoleText(s string) string {
	return strings.ReplaceAll(ansiEscape.ReplaceAllString(s, ""), "\r", "")
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
	if d.Assignment != nil {
		t.Errorf("assignment still there after a --once boot: %+v", d.Assignment)
	}
	if d.Decision == nil || d.Decision.Action != "local" {
		t.Errorf("decision for the next boot %+v, want local", d.Decision)
	}
	if n := len(d.eventsMatching(store.EventWork, "")); n != 1 {
		t.Errorf("%d work events, want 1 (the first boot only)", n)
	}
	if d.LastEvent == nil || d.LastEvent.Kind != "localboot" {
		t.Errorf("last event %+v, want localboot", d.LastEvent)
	}
	r.checkQuickBootJob(t) // still one job: the second boot made none
}
