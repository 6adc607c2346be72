package policy

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/iana"

	"github.com/preboot/preboot/bundle"
	"github.com/preboot/preboot/config"
	"github.com/preboot/preboot/jobs"
	"github.com/preboot/preboot/proxydhcp"
	"github.com/preboot/preboot/store"
	"github.com/preboot/preboot/store/sqlite"
	"github.com/preboot/preboot/tftp"
)

func newEngine(t testing.TB, mode string) *Engine {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "p.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cfg := config.Default()
	cfg.Menu.Mode = mode
	root := t.TempDir()
	return &Engine{Store: st, Boot: cfg.Boot, DefaultSettings: SettingsFromConfig(cfg.Menu), TFTPRoot: root, HTTPPort: "8080",
		Jobs: &jobs.Service{Store: st}, Imaging: cfg.Imaging}
}

const mac = "52:54:00:12:34:56"

func client(arch iana.Arch, vendor, user string) proxydhcp.Client {
	hw, _ := net.ParseMAC(mac)
	return proxydhcp.Client{MAC: hw, Arch: arch, HasArch: true, VendorClass: vendor, UserClass: user,
		ServerIP: net.IPv4(10, 0, 0, 1), Port: 67}
}

// mkBundle creates a bundle with validated params.
func mkBundle(t testing.TB, st store.Store, name, kind, params string) store.Bundle {
	t.Helper()
	p, err := bundle.Normalize(kind, json.RawMessage(params))
	if err != nil {
		t.Fatal(err)
	}
	b, err := st.CreateBundle(context.Background(), store.Bundle{Name: name, Kind: kind, Params: p})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func assign(t testing.TB, st store.Store, a store.Assignment) store.Assignment {
	t.Helper()
	if a.MAC != "" {
		if _, err := st.Device(context.Background(), a.MAC); errors.Is(err, store.ErrNotFound) {
			if _, err := st.CreateDevice(context.Background(), store.Device{MAC: a.MAC, Registered: true}); err != nil {
				t.Fatal(err)
			}
		}
	}
	a, err := st.CreateAssignment(context.Background(), a)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func osInstall(t testing.TB, st store.Store, name, params string) store.Bundle {
	return mkBundle(t, st, name, store.KindOSInstall, params)
}

func TestBootForPicksProgramByFirmware(t *testing.T) {
	ctx := context.Background()
	e := newEngine(t, "never")
	cases := []struct {
		name string
		c    proxydhcp.Client
		want proxydhcp.Boot
	}{
		{"bios", client(iana.INTEL_X86PC, "PXEClient:Arch:00000:UNDI:002001", ""), proxydhcp.Boot{Filename: "undionly.kpxe"}},
		{"efi x64 (7)", client(iana.EFI_X86_64, "PXEClient:Arch:00007:UNDI:003000", ""), proxydhcp.Boot{Filename: "ipxe.efi"}},
		{"efi x64 (9)", client(iana.EFI_BC, "PXEClient:Arch:00009:UNDI:003000", ""), proxydhcp.Boot{Filename: "ipxe.efi"}},
		{"uefi http", client(iana.EFI_X86_64_HTTP, "HTTPClient:Arch:00016:UNDI:003000", ""), proxydhcp.Boot{Filename: "http://10.0.0.1:8080/files/ipxe.efi", HTTPClient: true}},
		{"ipxe bios", client(iana.INTEL_X86PC, "PXEClient:Arch:00000:UNDI:002001", "iPXE"), proxydhcp.Boot{Filename: "http://10.0.0.1:8080/boot.ipxe"}},
		{"ipxe efi", client(iana.EFI_X86_64, "PXEClient:Arch:00007:UNDI:003000", "iPXE"), proxydhcp.Boot{Filename: "http://10.0.0.1:8080/boot.ipxe"}},
	}
	for _, tc := range cases {
		got, err := e.BootFor(ctx, tc.c)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if got != tc.want {
			t.Errorf("%s: got %+v, want %+v", tc.name, got, tc.want)
		}
	}
	// ARM64: only when the program exists in the TFTP root.
	if _, err := e.BootFor(ctx, client(iana.EFI_ARM64, "PXEClient:Arch:00011:UNDI:003000", "")); !errors.Is(err, proxydhcp.ErrIgnore) {
		t.Fatalf("arm64 without a boot program: %v", err)
	}
	if err := os.WriteFile(filepath.Join(e.TFTPRoot, "ipxe-arm64.efi"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := e.BootFor(ctx, client(iana.EFI_ARM64, "PXEClient:Arch:00011:UNDI:003000", "")); err != nil || got.Filename != "ipxe-arm64.efi" {
		t.Fatalf("arm64 with a boot program: %+v %v", got, err)
	}
	if _, err := e.BootFor(ctx, client(iana.EFI_ITANIUM, "PXEClient:Arch:00002:UNDI:003000", "")); !errors.Is(err, proxydhcp.ErrIgnore) {
		t.Fatalf("itanium: %v", err)
	}
	// The DHCP stage registered the device and recorded each answer.
	d, err := e.Store.Device(ctx, mac)
	if err != nil || d.Arch != "bios" {
		t.Fatalf("device after DHCP: %+v %v", d, err)
	}
	evs, _ := e.Store.Events(ctx, store.EventFilter{MAC: mac, Kind: store.EventDHCP})
	if len(evs) != len(cases)+1 {
		t.Fatalf("got %d dhcp events, want %d", len(evs), len(cases)+1)
	}
}

func TestBootForPXELinuxBundle(t *testing.T) {
	ctx := context.Background()
	e := newEngine(t, "never")
	b := osInstall(t, e.Store, "inst", `{"kernel":"boot/kernel","initrd":["boot/initrd"],"loader":"pxelinux"}`)
	assign(t, e.Store, store.Assignment{BundleID: b.ID, MAC: mac})
	for _, user := range []string{"", "iPXE"} {
		got, err := e.BootFor(ctx, client(iana.INTEL_X86PC, "PXEClient:Arch:00000:UNDI:002001", user))
		if err != nil || got.Filename != "pxelinux.0" {
			t.Fatalf("user class %q: %+v %v", user, got, err)
		}
	}
	// pxelinux.0 is a BIOS program: UEFI clients keep iPXE.
	got, err := e.BootFor(ctx, client(iana.EFI_X86_64, "PXEClient:Arch:00007:UNDI:003000", ""))
	if err != nil || got.Filename != "ipxe.efi" {
		t.Fatalf("efi with a pxelinux bundle: %+v %v", got, err)
	}
}

func get(t *testing.T, h http.Handler, url string) string {
	t.Helper()
	req := httptest.NewRequest("GET", url, nil)
	req.RemoteAddr = "10.0.0.50:1234"
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != 200 {
		t.Fatalf("GET %s: %d %s", url, rec.Code, rec.Body)
	}
	body := rec.Body.String()
	if !strings.HasPrefix(body, "#!ipxe\n") {
		t.Fatalf("GET %s: not an iPXE script:\n%s", url, body)
	}
	return body
}

func mustContain(t *testing.T, body string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(body, w) {
			t.Fatalf("script lacks %q:\n%s", w, body)
		}
	}
}

const first = "http://10.0.0.1:8080/boot.ipxe?mac=52-54-00-12-34-56&uuid=4c4c4544-0001&serial=SN%201&manufacturer=QEMU&product=Standard%20PC%20%28i440FX%29&arch=i386&platform=pcbios"

func TestScriptRegistersAndBootsLocal(t *testing.T) {
	ctx := context.Background()
	e := newEngine(t, "never")
	body := get(t, e, "http://10.0.0.1:8080/boot.ipxe")
	mustContain(t, body, "chain http://10.0.0.1:8080/boot.ipxe?mac=${mac:hexhyp}", "${manufacturer:uristring}", "${platform}")

	body = get(t, e, first)
	mustContain(t, body, "sanboot --no-describe --drive 0x80", "iseq ${platform} pcbios || exit", "unregistered default")
	d, err := e.Store.Device(ctx, mac)
	if err != nil {
		t.Fatal(err)
	}
	if d.Manufacturer != "QEMU" || d.Product != "Standard PC (i440FX)" || d.Serial != "SN 1" || d.Arch != "bios" || d.IP != "10.0.0.50" || d.UUID != "4c4c4544-0001" || d.Registered {
		t.Fatalf("registered device: %+v", d)
	}
	evs, _ := e.Store.Events(ctx, store.EventFilter{MAC: mac})
	if len(evs) != 2 || evs[0].Kind != store.EventLocalBoot || evs[1].Kind != store.EventBoot || !strings.Contains(evs[1].Message, "first contact") {
		t.Fatalf("events: %+v", evs)
	}
	e.Boot.LocalBootBIOS = "exit"
	body = get(t, e, first)
	if strings.Contains(body, "sanboot") || !strings.Contains(body, "\nexit\n") {
		t.Fatalf("exit local boot:\n%s", body)
	}
}

func TestScriptOSInstallOnce(t *testing.T) {
	ctx := context.Background()
	e := newEngine(t, "never")
	b := osInstall(t, e.Store, "debian", `{"kernel":"boot/vmlinuz6","initrd":["boot/initrd","http://other/x.img"],"cmdline":"console=ttyS0 quiet"}`)
	assign(t, e.Store, store.Assignment{BundleID: b.ID, MAC: mac, Once: true})
	body := get(t, e, first)
	mustContain(t, body,
		"kernel http://10.0.0.1:8080/files/boot/vmlinuz6 console=ttyS0 quiet initrd=initrd0 initrd=initrd1 || goto failed",
		"initrd --name initrd0 http://10.0.0.1:8080/files/boot/initrd || goto failed",
		"initrd --name initrd1 http://other/x.img || goto failed",
		"boot || goto failed", ":failed", "job 1: bundle debian")
	// Handed out: the job succeeded, the once assignment is cleared, the
	// next boot is local.
	js, _ := e.Store.Jobs(ctx, store.JobFilter{MAC: mac})
	if len(js) != 1 || js[0].State != store.JobSucceeded || js[0].Bundle != "debian" {
		t.Fatalf("jobs: %+v", js)
	}
	if as, _ := e.Store.Assignments(ctx, store.AssignmentFilter{MAC: mac}); len(as) != 0 {
		t.Fatalf("once assignment not cleared: %+v", as)
	}
	mustContain(t, get(t, e, first), "sanboot")

	// Chain URL bundles chain.
	c := osInstall(t, e.Store, "ks", `{"chain":"http://10.0.0.1/ks.ipxe"}`)
	assign(t, e.Store, store.Assignment{BundleID: c.ID, MAC: mac, Force: true})
	mustContain(t, get(t, e, first), "chain http://10.0.0.1/ks.ipxe || goto failed")
	// Always + force: again at the next boot.
	mustContain(t, get(t, e, first), "chain http://10.0.0.1/ks.ipxe")
}

func TestAlwaysAssignmentRunsOncePerVersionUnlessForced(t *testing.T) {
	ctx := context.Background()
	e := newEngine(t, "never")
	b := osInstall(t, e.Store, "inst", `{"kernel":"boot/k"}`)
	a := assign(t, e.Store, store.Assignment{BundleID: b.ID, MAC: mac})
	mustContain(t, get(t, e, first), "kernel http://10.0.0.1:8080/files/boot/k")
	body := get(t, e, first)
	mustContain(t, body, "sanboot", "last one applied")
	// A changed bundle (new version) applies again.
	if _, err := e.Store.UpdateBundle(ctx, "inst", func(b *store.Bundle) error {
		b.Params = json.RawMessage(`{"kernel":"boot/k2","loader":"ipxe"}`)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	mustContain(t, get(t, e, first), "files/boot/k2")
	mustContain(t, get(t, e, first), "sanboot")
	// Force re-applies every time.
	if err := e.Store.DeleteAssignment(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	assign(t, e.Store, store.Assignment{BundleID: b.ID, MAC: mac, Force: true})
	mustContain(t, get(t, e, first), "files/boot/k2")
	mustContain(t, get(t, e, first), "files/boot/k2")
}

func TestDecisionPrecedence(t *testing.T) {
	ctx := context.Background()
	e := newEngine(t, "never")
	st := e.Store
	get(t, e, first) // register the device (unregistered)
	dev := func() store.Device {
		d, err := st.Device(ctx, mac)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	decide := func() Decision {
		t.Helper()
		d, err := e.Decide(ctx, dev())
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	if d := decide(); d.Action != ActionLocal || d.Source != "unregistered-default" {
		t.Fatalf("nothing configured: %+v", d)
	}
	inv := mkBundle(t, st, "inv", store.KindInventory, `{}`)
	lab := osInstall(t, st, "lab", `{"kernel":"boot/lab"}`)
	qemu := osInstall(t, st, "qemu", `{"kernel":"boot/qemu"}`)
	dev1 := osInstall(t, st, "dev1", `{"kernel":"boot/dev1"}`)
	// A rule for unregistered devices by MAC prefix.
	if _, err := st.CreateRule(ctx, store.Rule{Name: "other", Match: `mac ^= "00:11:22"`, Bundle: "lab", Enabled: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateRule(ctx, store.Rule{Name: "qemu-vms", Match: `mac ^= "52:54:00" and maker = "qemu"`, Bundle: "inv", Enabled: true}); err != nil {
		t.Fatal(err)
	}
	if d := decide(); d.Action != ActionBundle || d.Source != "rule:qemu-vms" || d.Bundle.ID != inv.ID || !d.Register {
		t.Fatalf("rule: %+v", d)
	}
	// Dynamic group by expression, and a static group with a lower
	// priority number: the static one (priority 10) wins.
	if _, err := st.CreateGroup(ctx, store.Group{Name: "qemus", Priority: 20, Match: `maker = "QEMU"`}); err != nil {
		t.Fatal(err)
	}
	assign(t, st, store.Assignment{BundleID: qemu.ID, Group: "qemus"})
	if d := decide(); d.Source != "group:qemus" || d.Bundle.ID != qemu.ID {
		t.Fatalf("dynamic group: %+v", d)
	}
	if _, err := st.CreateGroup(ctx, store.Group{Name: "lab", Priority: 10}); err != nil {
		t.Fatal(err)
	}
	assign(t, st, store.Assignment{BundleID: lab.ID, Group: "lab"})
	if err := st.AddMember(ctx, "lab", mac); err != nil {
		t.Fatal(err)
	}
	if d := decide(); d.Source != "group:lab" || d.Bundle.ID != lab.ID || strings.Join(d.Groups, ",") != "lab,qemus" {
		t.Fatalf("group priority: %+v", d)
	}
	// The device's own assignment beats its groups.
	assign(t, st, store.Assignment{BundleID: dev1.ID, MAC: mac})
	if d := decide(); d.Source != "device" || d.Bundle.ID != dev1.ID {
		t.Fatalf("device level: %+v", d)
	}
}

func TestRuleRegistersNamesAndRunsOnce(t *testing.T) {
	ctx := context.Background()
	e := newEngine(t, "never")
	st := e.Store
	writeEnv(t, e)
	mkBundle(t, st, "inv", store.KindInventory, `{}`)
	if _, err := st.CreateGroup(ctx, store.Group{Name: "vms"}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateRule(ctx, store.Rule{Name: "vms", Match: `mac ^= "525400"`, Bundle: "inv", Group: "vms", Enabled: true}); err != nil {
		t.Fatal(err)
	}
	if err := st.SetSettings(ctx, store.Settings{Menu: e.DefaultSettings.Menu, Naming: store.Naming{Prefix: "lab-", From: store.NameFromSerial}}); err != nil {
		t.Fatal(err)
	}
	body := get(t, e, first)
	mustContain(t, body, "job 1: inventory inv", "preboot.job=1", "preboot.token=pbj_")
	d, _ := st.Device(ctx, mac)
	if !d.Registered || d.Name != "lab-SN-1" {
		t.Fatalf("registered device: %+v", d)
	}
	if gs, _ := st.DeviceGroups(ctx, mac); len(gs) != 1 || gs[0].Name != "vms" {
		t.Fatalf("groups: %+v", gs)
	}
	as, _ := st.Assignments(ctx, store.AssignmentFilter{MAC: mac})
	if len(as) != 1 || !as[0].Once || as[0].Bundle != "inv" {
		t.Fatalf("rule's once assignment: %+v", as)
	}
	// Booted again from the same address before its agent started: the
	// same job with a fresh token (the device is registered now, but its
	// once assignment stays until success).
	again := get(t, e, first)
	mustContain(t, again, "job 1: inventory inv")
	if tokenIn(t, again) == tokenIn(t, body) {
		t.Fatal("the same token handed out twice")
	}
	if j, _ := st.Job(ctx, 1); j.State != store.JobPending || j.Boots != 2 {
		t.Fatalf("job booted again: %+v", j)
	}
	if _, err := e.Jobs.Finish(ctx, 1, true, ""); err != nil {
		t.Fatal(err)
	}
	if as, _ := st.Assignments(ctx, store.AssignmentFilter{MAC: mac}); len(as) != 0 {
		t.Fatalf("once assignment kept after success: %+v", as)
	}
	d, _ = st.Device(ctx, mac)
	if d.Applied == nil || d.Applied.Bundle != "inv" || d.Applied.Job != 1 {
		t.Fatalf("applied: %+v", d.Applied)
	}
	// Registered: rules no longer apply; nothing assigned: local.
	mustContain(t, get(t, e, first), "sanboot", "nothing is assigned")
}

func TestUnregisteredDefaults(t *testing.T) {
	ctx := context.Background()
	e := newEngine(t, "never")
	st := e.Store
	set := func(u store.Unregistered) {
		if err := st.SetSettings(ctx, store.Settings{Menu: e.DefaultSettings.Menu, Unregistered: u}); err != nil {
			t.Fatal(err)
		}
	}
	set(store.Unregistered{Action: store.UnregisteredIgnore})
	if _, err := e.BootFor(ctx, client(iana.INTEL_X86PC, "PXEClient:Arch:00000:UNDI:002001", "")); !errors.Is(err, proxydhcp.ErrIgnore) {
		t.Fatalf("ignore: %v", err)
	}
	mustContain(t, get(t, e, first), "exit")
	set(store.Unregistered{Action: store.UnregisteredMenu})
	mustContain(t, get(t, e, first), "menu Preboot")
	// A registered device is not concerned.
	if _, err := st.UpdateDevice(ctx, mac, func(d *store.Device) error { d.Registered = true; return nil }); err != nil {
		t.Fatal(err)
	}
	mustContain(t, get(t, e, first), "sanboot")
}

func TestMenuModes(t *testing.T) {
	ctx := context.Background()
	e := newEngine(t, "hotkey")
	e.DefaultSettings.Menu.Hotkey, e.DefaultSettings.Menu.Timeout = "ctrl-b", store.Duration(2*time.Second)
	body := get(t, e, first)
	mustContain(t, body, "prompt --key 0x02 --timeout 2000 Press Ctrl-B", "action=menu", "|| chain http://10.0.0.1:8080/boot.ipxe?mac=52%3A54%3A00%3A12%3A34%3A56&action=default")

	m := e.DefaultSettings.Menu
	m.Mode = "always"
	if err := e.Store.SetSettings(ctx, store.Settings{Menu: m}); err != nil {
		t.Fatal(err)
	}
	body = get(t, e, first)
	mustContain(t, body, "menu Preboot - 52:54:00:12:34:56", "item shell Maintenance shell", "item local Boot local disk", "item exit Exit",
		"choose --default local --timeout 2000 target", "action=${target}")
	if strings.Contains(body, "item work") {
		t.Fatalf("menu offers work when none is assigned:\n%s", body)
	}
	b := osInstall(t, e.Store, "inst", `{"kernel":"boot/kernel"}`)
	assign(t, e.Store, store.Assignment{BundleID: b.ID, MAC: mac})
	mustContain(t, get(t, e, first), "item --gap Assigned: inst (os-install)", "item work Start assigned work", "choose --default work")
	mustContain(t, get(t, e, "http://h/boot.ipxe?mac="+mac+"&action=work"), "kernel http://h/files/boot/kernel")
	mustContain(t, get(t, e, "http://h/boot.ipxe?mac="+mac+"&action=local"), "sanboot")
	mustContain(t, get(t, e, "http://h/boot.ipxe?mac="+mac+"&action=shell"), "\nshell\n", "action=menu")
	mustContain(t, get(t, e, "http://h/boot.ipxe?mac="+mac+"&action=exit"), "exit")
	evs, _ := e.Store.Events(ctx, store.EventFilter{MAC: mac, Kind: store.EventMenu})
	if len(evs) < 3 {
		t.Fatalf("menu choices not recorded: %+v", evs)
	}

	// A device override: custom bundle entries, no shell, no timeout.
	rescue := osInstall(t, e.Store, "rescue", `{"kernel":"boot/rescue"}`)
	if err := e.Store.SetMenu(ctx, store.ScopeDevice, mac, store.Menu{Mode: "always", Title: "Lab", Bundles: []string{"rescue"}}); err != nil {
		t.Fatal(err)
	}
	body = get(t, e, first)
	mustContain(t, body, "menu Lab - ", "item --gap Bundles", "item b0 rescue", "iseq ${target} b0 && chain http://10.0.0.1:8080/boot.ipxe?mac=52%3A54%3A00%3A12%3A34%3A56&action=bundle&bundle=rescue")
	if strings.Contains(body, "item shell") || strings.Contains(body, "--timeout") {
		t.Fatalf("override not applied:\n%s", body)
	}
	mustContain(t, get(t, e, "http://h/boot.ipxe?mac="+mac+"&action=bundle&bundle=rescue"), "files/boot/rescue")
	if js, _ := e.Store.Jobs(ctx, store.JobFilter{MAC: mac, Bundle: rescue.Name}); len(js) != 1 || js[0].AssignmentID != 0 {
		t.Fatalf("menu-picked job: %+v", js)
	}
	mustContain(t, get(t, e, "http://h/boot.ipxe?mac="+mac+"&action=bundle&bundle=inst"), "not offered", "sanboot")
	mustContain(t, get(t, e, "http://h/boot.ipxe?mac="+mac+"&action=shell"), "not offered", "sanboot")

	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, httptest.NewRequest("GET", "http://h/boot.ipxe?mac=zz", nil))
	if rec.Code != http.StatusBadRequest {
		t.Fatalf("bad mac: %d", rec.Code)
	}
	rec = httptest.NewRecorder()
	e.ServeHTTP(rec, httptest.NewRequest("GET", "http://h/boot.ipxe?mac="+mac+"&action=bogus", nil))
	if !strings.Contains(rec.Body.String(), "server error") {
		t.Fatalf("unknown action must fall back to local boot with a message: %s", rec.Body)
	}
}

func TestHotkeyNames(t *testing.T) {
	for name, want := range map[string]int{"ctrl-p": 0x10, "Ctrl-B": 0x02, "esc": 0x1b, "m": 'm', "7": '7', "space": ' '} {
		if got, _ := hotkey(name); got != want || !ValidHotkey(name) {
			t.Errorf("hotkey(%q) = %#x, want %#x", name, got, want)
		}
	}
	for _, bad := range []string{"f8", "ctrl-", "", "alt-x"} {
		if ValidHotkey(bad) {
			t.Errorf("ValidHotkey(%q) = true", bad)
		}
	}
}

func TestHardwareStringsAreCleaned(t *testing.T) {
	ctx := context.Background()
	e := newEngine(t, "never")
	get(t, e, "http://h/boot.ipxe?mac="+mac+"&serial=a%0Ab%1B[31m&product="+strings.Repeat("x", 300))
	d, _ := e.Store.Device(ctx, mac)
	if d.Serial != "ab[31m" || len(d.Product) != 128 {
		t.Fatalf("cleaned: serial %q, product length %d", d.Serial, len(d.Product))
	}
}

func TestPXELinuxConfigs(t *testing.T) {
	ctx := context.Background()
	e := newEngine(t, "never")
	req := func(name string) (string, error) {
		r, n, err := e.Generate(ctx, tftp.Request{Peer: netip.MustParseAddrPort("10.0.0.9:2000"), Filename: name, Mode: "octet"})
		if err != nil {
			return "", err
		}
		b, _ := io.ReadAll(r)
		if int64(len(b)) != n {
			t.Fatalf("%s: size %d, content %d bytes", name, n, len(b))
		}
		return string(b), nil
	}
	if _, err := req("pxelinux.cfg/01-52-54-00-12-34-56"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("no work: %v", err)
	}
	def, err := req("pxelinux.cfg/default")
	if err != nil || !strings.Contains(def, "LOCALBOOT 0") {
		t.Fatalf("default: %q %v", def, err)
	}
	for _, other := range []string{"pxelinux.0", "pxelinux.cfg/C0A80001", "pxelinux.cfg/01-zz-54-00-12-34-56", "boot/kernel"} {
		if _, err := req(other); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("%s: %v", other, err)
		}
	}
	// An iPXE bundle is not a pxelinux one.
	b := osInstall(t, e.Store, "ipxe", `{"kernel":"boot/kernel"}`)
	a := assign(t, e.Store, store.Assignment{BundleID: b.ID, MAC: mac, Force: true})
	if _, err := req("pxelinux.cfg/01-52-54-00-12-34-56"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("ipxe bundle served as pxelinux: %v", err)
	}
	if err := e.Store.DeleteAssignment(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	p := osInstall(t, e.Store, "pxe", `{"kernel":"boot/kernel","initrd":["boot/initrd","/boot/updateDrivers.tgz"],"cmdline":"console=ttyS0","loader":"pxelinux"}`)
	assign(t, e.Store, store.Assignment{BundleID: p.ID, MAC: mac, Once: true})
	cfg, err := req("pxelinux.cfg/01-52-54-00-12-34-56")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"DEFAULT preboot", "KERNEL /boot/kernel", "INITRD /boot/initrd,/boot/updateDrivers.tgz", "APPEND console=ttyS0"} {
		if !strings.Contains(cfg, want) {
			t.Fatalf("config lacks %q:\n%s", want, cfg)
		}
	}
	if _, err := req("pxelinux.cfg/01-52-54-00-12-34-56"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("once pxelinux bundle served twice: %v", err)
	}
	evs, _ := e.Store.Events(ctx, store.EventFilter{MAC: mac, Kind: store.EventJob})
	if len(evs) < 2 || !strings.Contains(evs[0].Message, "succeeded: bundle pxe") {
		t.Fatalf("events: %+v", evs)
	}
}

func writeEnv(t *testing.T, e *Engine) {
	t.Helper()
	for _, f := range []string{"boot/kernel", "boot/initrd"} {
		if err := os.MkdirAll(filepath.Join(e.TFTPRoot, "boot"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(e.TFTPRoot, f), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestImagingBundleBootsTheEnvironmentWithAJobToken(t *testing.T) {
	ctx := context.Background()
	e := newEngine(t, "never")
	b := mkBundle(t, e.Store, "cap", store.KindImageCapture, `{"image":"base"}`)
	assign(t, e.Store, store.Assignment{BundleID: b.ID, MAC: mac, Once: true})
	// No environment built: the job fails at once with a message, the device boots local.
	body := get(t, e, first)
	mustContain(t, body, "imaging environment is missing", "preboot env build", "sanboot")
	js, _ := e.Store.Jobs(ctx, store.JobFilter{MAC: mac})
	if len(js) != 1 || js[0].State != store.JobFailed {
		t.Fatalf("jobs: %+v", js)
	}
	writeEnv(t, e)
	body = get(t, e, first)
	mustContain(t, body, "echo Preboot: job 2: image-capture cap", "kernel http://10.0.0.1:8080/files/boot/kernel console=tty0",
		"preboot.server=http://10.0.0.1:8080 preboot.token=pbj_", "preboot.job=2", "initrd --name initrd0 http://10.0.0.1:8080/files/boot/initrd")
	j, _ := e.Store.Job(ctx, 2)
	if j.Image != "base" || j.Kind != store.KindImageCapture || j.After != store.AfterReboot || j.Bundle != "cap" {
		t.Fatalf("job: %+v", j)
	}
	// The assignment stays until the job succeeds.
	if as, _ := e.Store.Assignments(ctx, store.AssignmentFilter{MAC: mac}); len(as) != 1 {
		t.Fatalf("assignment cleared at hand-out: %+v", as)
	}
}

func TestRuleWithOnlyAGroupRegisters(t *testing.T) {
	ctx := context.Background()
	e := newEngine(t, "never")
	st := e.Store
	if _, err := st.CreateGroup(ctx, store.Group{Name: "seen"}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateRule(ctx, store.Rule{Name: "all", Match: "true", Group: "seen", Enabled: true}); err != nil {
		t.Fatal(err)
	}
	mustContain(t, get(t, e, first), "sanboot", "nothing to run")
	d, _ := st.Device(ctx, mac)
	if !d.Registered {
		t.Fatalf("not registered: %+v", d)
	}
	if gs, _ := st.DeviceGroups(ctx, mac); len(gs) != 1 || gs[0].Name != "seen" {
		t.Fatalf("groups: %+v", gs)
	}
	// The group's assignment now applies at the next boot.
	b := osInstall(t, st, "inst", `{"kernel":"boot/k"}`)
	assign(t, st, store.Assignment{BundleID: b.ID, Group: "seen"})
	mustContain(t, get(t, e, first), "files/boot/k")
}

func TestGroupOnceAssignmentRunsOncePerDevice(t *testing.T) {
	ctx := context.Background()
	e := newEngine(t, "never")
	st := e.Store
	if _, err := st.CreateGroup(ctx, store.Group{Name: "lab", Match: "true"}); err != nil {
		t.Fatal(err)
	}
	b := osInstall(t, st, "inst", `{"kernel":"boot/k"}`)
	assign(t, st, store.Assignment{BundleID: b.ID, Group: "lab", Once: true, Force: true})
	if _, err := st.CreateDevice(ctx, store.Device{MAC: mac, Registered: true}); err != nil {
		t.Fatal(err)
	}
	mustContain(t, get(t, e, first), "files/boot/k")
	// Handed out = succeeded: the group's assignment stays (other
	// devices), but this device does not run it again, force or not.
	if as, _ := st.Assignments(ctx, store.AssignmentFilter{Group: "lab"}); len(as) != 1 {
		t.Fatalf("group assignment: %+v", as)
	}
	mustContain(t, get(t, e, first), "sanboot", "apply-once and already succeeded")
}

func TestEveryBootIsOneEvent(t *testing.T) {
	ctx := context.Background()
	e := newEngine(t, "never")
	get(t, e, first) // first contact: a boot event, then the decision
	get(t, e, first) // later boots: one event with the request and the decision
	evs, _ := e.Store.Events(ctx, store.EventFilter{MAC: mac})
	if len(evs) != 3 || evs[0].Kind != store.EventLocalBoot || !strings.HasPrefix(evs[0].Message, "boot policy request from 10.0.0.50 (QEMU Standard PC (i440FX), bios): ") {
		t.Fatalf("events: %+v", evs)
	}
	// Hotkey mode: the prompt's request records the boot, the choice
	// records the decision.
	m := e.DefaultSettings.Menu
	m.Mode = "hotkey"
	if err := e.Store.SetSettings(ctx, store.Settings{Menu: m}); err != nil {
		t.Fatal(err)
	}
	get(t, e, first)
	evs, _ = e.Store.Events(ctx, store.EventFilter{MAC: mac, Limit: 1})
	if evs[0].Kind != store.EventBoot || !strings.HasPrefix(evs[0].Message, "boot policy request") {
		t.Fatalf("hotkey boot event: %+v", evs[0])
	}
}
