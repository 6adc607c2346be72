package policy

import (
	"context"
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
	return &Engine{Store: st, Boot: cfg.Boot, Menu: cfg.Menu, TFTPRoot: root, HTTPPort: "8080"}
}

const mac = "52:54:00:12:34:56"

func client(arch iana.Arch, vendor, user string) proxydhcp.Client {
	hw, _ := net.ParseMAC(mac)
	return proxydhcp.Client{MAC: hw, Arch: arch, HasArch: true, VendorClass: vendor, UserClass: user,
		ServerIP: net.IPv4(10, 0, 0, 1), Port: 67}
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

func TestBootForPXELinuxWork(t *testing.T) {
	ctx := context.Background()
	e := newEngine(t, "never")
	if err := e.Store.SetWork(ctx, store.Work{MAC: mac, Kernel: "boot/kernel", Initrd: []string{"boot/initrd"}, Loader: store.LoaderPXELinux}); err != nil {
		t.Fatal(err)
	}
	for _, user := range []string{"", "iPXE"} {
		got, err := e.BootFor(ctx, client(iana.INTEL_X86PC, "PXEClient:Arch:00000:UNDI:002001", user))
		if err != nil || got.Filename != "pxelinux.0" {
			t.Fatalf("user class %q: %+v %v", user, got, err)
		}
	}
	// pxelinux.0 is a BIOS program: UEFI clients keep iPXE.
	got, err := e.BootFor(ctx, client(iana.EFI_X86_64, "PXEClient:Arch:00007:UNDI:003000", ""))
	if err != nil || got.Filename != "ipxe.efi" {
		t.Fatalf("efi with pxelinux work: %+v %v", got, err)
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
	mustContain(t, body, "sanboot --no-describe --drive 0x80", "iseq ${platform} pcbios || exit")
	d, err := e.Store.Device(ctx, mac)
	if err != nil {
		t.Fatal(err)
	}
	if d.Manufacturer != "QEMU" || d.Product != "Standard PC (i440FX)" || d.Serial != "SN 1" || d.Arch != "bios" || d.IP != "10.0.0.50" || d.UUID != "4c4c4544-0001" {
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

func TestScriptWork(t *testing.T) {
	ctx := context.Background()
	e := newEngine(t, "never")
	if err := e.Store.SetWork(ctx, store.Work{MAC: mac, Kernel: "boot/vmlinuz 6", Initrd: []string{"boot/initrd", "http://other/x.img"}, Cmdline: "console=ttyS0 quiet", Once: true}); err != nil {
		t.Fatal(err)
	}
	body := get(t, e, first)
	mustContain(t, body,
		"kernel http://10.0.0.1:8080/files/boot/vmlinuz%206 console=ttyS0 quiet initrd=initrd0 initrd=initrd1 || goto failed",
		"initrd --name initrd0 http://10.0.0.1:8080/files/boot/initrd || goto failed",
		"initrd --name initrd1 http://other/x.img || goto failed",
		"boot || goto failed", ":failed")
	// Once: handed out, so cleared; the next boot is local.
	if _, err := e.Store.Work(ctx, mac); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("once work not cleared: %v", err)
	}
	mustContain(t, get(t, e, first), "sanboot")
}

func TestMenuModes(t *testing.T) {
	ctx := context.Background()
	e := newEngine(t, "hotkey")
	e.Menu.Hotkey, e.Menu.Timeout = "ctrl-b", 2*time.Second
	body := get(t, e, first)
	mustContain(t, body, "prompt --key 0x02 --timeout 2000 Press Ctrl-B", "action=menu", "|| chain http://10.0.0.1:8080/boot.ipxe?mac=52%3A54%3A00%3A12%3A34%3A56&action=default")

	e.Menu.Mode = "always"
	body = get(t, e, first)
	mustContain(t, body, "menu Preboot - 52:54:00:12:34:56", "item shell Maintenance shell", "item local Boot local disk", "item exit Exit",
		"choose --default local --timeout 2000 target", "action=${target}")
	if strings.Contains(body, "item work") {
		t.Fatalf("menu offers work when none is assigned:\n%s", body)
	}
	if err := e.Store.SetWork(ctx, store.Work{MAC: mac, Kernel: "boot/kernel"}); err != nil {
		t.Fatal(err)
	}
	mustContain(t, get(t, e, first), "item work Start assigned work", "choose --default work")
	mustContain(t, get(t, e, "http://h/boot.ipxe?mac="+mac+"&action=work"), "kernel http://h/files/boot/kernel")
	mustContain(t, get(t, e, "http://h/boot.ipxe?mac="+mac+"&action=local"), "sanboot")
	mustContain(t, get(t, e, "http://h/boot.ipxe?mac="+mac+"&action=shell"), "\nshell\n", "action=menu")
	mustContain(t, get(t, e, "http://h/boot.ipxe?mac="+mac+"&action=exit"), "exit")
	evs, _ := e.Store.Events(ctx, store.EventFilter{MAC: mac, Kind: store.EventMenu})
	if len(evs) < 3 {
		t.Fatalf("menu choices not recorded: %+v", evs)
	}

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
	// iPXE work is not pxelinux work.
	if err := e.Store.SetWork(ctx, store.Work{MAC: mac, Kernel: "boot/kernel"}); err != nil {
		t.Fatal(err)
	}
	if _, err := req("pxelinux.cfg/01-52-54-00-12-34-56"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("ipxe work served as pxelinux: %v", err)
	}
	if err := e.Store.SetWork(ctx, store.Work{MAC: mac, Kernel: "boot/kernel", Initrd: []string{"boot/initrd", "/boot/updateDrivers.tgz"}, Cmdline: "console=ttyS0", Loader: store.LoaderPXELinux}); err != nil {
		t.Fatal(err)
	}
	cfg, err := req("pxelinux.cfg/01-52-54-00-12-34-56")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"DEFAULT preboot", "KERNEL /boot/kernel", "INITRD /boot/initrd,/boot/updateDrivers.tgz", "APPEND console=ttyS0"} {
		if !strings.Contains(cfg, want) {
			t.Fatalf("config lacks %q:\n%s", want, cfg)
		}
	}
	evs, _ := e.Store.Events(ctx, store.EventFilter{MAC: mac, Kind: store.EventWork})
	if len(evs) != 1 || !strings.Contains(evs[0].Message, "pxelinux config") {
		t.Fatalf("events: %+v", evs)
	}
}

func TestImagingWorkBootsTheEnvironmentWithAJobToken(t *testing.T) {
	ctx := context.Background()
	e := newEngine(t, "never")
	e.Jobs = &jobs.Service{Store: e.Store}
	e.Imaging = config.Default().Imaging
	w := store.Work{MAC: mac, Kind: store.WorkCapture, Image: "base", After: store.AfterReboot}
	if err := e.Store.SetWork(ctx, w); err != nil {
		t.Fatal(err)
	}
	// No environment built: the job fails at once with a message, the device boots local.
	body := get(t, e, first)
	mustContain(t, body, "imaging environment is missing", "preboot env build", "sanboot")
	js, _ := e.Store.Jobs(ctx, store.JobFilter{MAC: mac})
	if len(js) != 1 || js[0].State != store.JobFailed {
		t.Fatalf("jobs: %+v", js)
	}
	for _, f := range []string{"boot/kernel", "boot/initrd"} {
		if err := os.MkdirAll(filepath.Join(e.TFTPRoot, "boot"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(e.TFTPRoot, f), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	body = get(t, e, first)
	mustContain(t, body, "echo Preboot: job 2: capture base", "kernel http://10.0.0.1:8080/files/boot/kernel console=tty0",
		"preboot.server=http://10.0.0.1:8080 preboot.token=pbj_", "preboot.job=2", "initrd --name initrd0 http://10.0.0.1:8080/files/boot/initrd")
	// The work stays until the job succeeds.
	if _, err := e.Store.Work(ctx, mac); err != nil {
		t.Fatalf("imaging work cleared at hand-out: %v", err)
	}
	// pxelinux path: the generated config carries the same kind of boot.
	w.Loader = store.LoaderPXELinux
	if err := e.Store.SetWork(ctx, w); err != nil {
		t.Fatal(err)
	}
	r, _, err := e.Generate(ctx, tftp.Request{Peer: netip.MustParseAddrPort("10.0.0.9:2000"), Local: netip.MustParseAddr("10.0.0.1"), Filename: "pxelinux.cfg/01-52-54-00-12-34-56"})
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := io.ReadAll(r)
	for _, want := range []string{"KERNEL /boot/kernel", "INITRD /boot/initrd", "preboot.server=http://10.0.0.1:8080", "preboot.job=3"} {
		if !strings.Contains(string(cfg), want) {
			t.Fatalf("pxelinux imaging config lacks %q:\n%s", want, cfg)
		}
	}
}
