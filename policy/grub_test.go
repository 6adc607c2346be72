package policy

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/iana"

	"github.com/preboot/preboot/bootfiles"
	"github.com/preboot/preboot/proxydhcp"
	"github.com/preboot/preboot/store"
	"github.com/preboot/preboot/tftp"
)

// stageFakeSigned puts placeholder files under the names of the signed
// programs: the policy only checks they are staged.
func stageFakeSigned(t testing.TB, e *Engine) {
	t.Helper()
	for _, n := range []string{bootfiles.ShimName, bootfiles.GRUBName, "boot/kernel", "boot/initrd"} {
		p := filepath.Join(e.TFTPRoot, n)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func setSecureBoot(t testing.TB, e *Engine, sb store.SecureBoot) {
	t.Helper()
	set, _, err := e.Store.Settings(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	set.SecureBoot = sb
	if err := e.Store.SetSettings(context.Background(), set); err != nil {
		t.Fatal(err)
	}
}

func grubFile(t testing.TB, e *Engine, name string) (string, error) {
	t.Helper()
	r, _, err := e.Generate(context.Background(), tftp.Request{
		Peer: netip.MustParseAddrPort("10.0.0.9:2000"), Local: netip.MustParseAddr("10.0.0.1"), Filename: name, Mode: "octet"})
	if err != nil {
		return "", err
	}
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b), nil
}

func events(t testing.TB, e *Engine, kind string) []store.Event {
	t.Helper()
	evs, err := e.Store.Events(context.Background(), store.EventFilter{MAC: mac, Kind: kind})
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

func TestSecureBootSettings(t *testing.T) {
	ctx := context.Background()
	efi := client(iana.EFI_X86_64, "PXEClient:Arch:00007:UNDI:003000", "")
	for _, tc := range []struct {
		name string
		sb   store.SecureBoot
		want string
	}{
		{"unset", store.SecureBoot{}, "ipxe.efi"},
		{"default on", store.SecureBoot{Default: "on"}, bootfiles.ShimName},
		{"device off wins over default on", store.SecureBoot{Default: "on", Devices: map[string]string{mac: "off"}}, "ipxe.efi"},
		{"group on wins over default off", store.SecureBoot{Default: "off", Groups: map[string]string{"lab": "on"}}, bootfiles.ShimName},
		{"device auto falls through to the group", store.SecureBoot{Devices: map[string]string{mac: "auto"}, Groups: map[string]string{"lab": "on"}}, bootfiles.ShimName},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEngine(t, "never")
			stageFakeSigned(t, e)
			if _, err := e.Store.CreateGroup(ctx, store.Group{Name: "lab", Priority: 1}); err != nil {
				t.Fatal(err)
			}
			if _, err := e.Store.CreateDevice(ctx, store.Device{MAC: mac, Registered: true}); err != nil {
				t.Fatal(err)
			}
			if err := e.Store.AddMember(ctx, "lab", mac); err != nil {
				t.Fatal(err)
			}
			setSecureBoot(t, e, tc.sb)
			b, err := e.BootFor(ctx, efi)
			if err != nil {
				t.Fatal(err)
			}
			if b.Filename != tc.want {
				t.Fatalf("boot file %q, want %q", b.Filename, tc.want)
			}
			// BIOS clients never get shim.
			bios, err := e.BootFor(ctx, client(iana.INTEL_X86PC, "PXEClient:Arch:00000:UNDI:002001", ""))
			if err != nil || bios.Filename != "undionly.kpxe" {
				t.Fatalf("BIOS client: %+v %v", bios, err)
			}
		})
	}
}

func TestSecureBootRuleSetting(t *testing.T) {
	ctx := context.Background()
	e := newEngine(t, "never")
	stageFakeSigned(t, e)
	if _, err := e.Store.CreateRule(ctx, store.Rule{Name: "qemu", Enabled: true, Match: `mac ^= "52:54:00"`}); err != nil {
		t.Fatal(err)
	}
	setSecureBoot(t, e, store.SecureBoot{Rules: map[string]string{"qemu": "on"}})
	b, err := e.BootFor(ctx, client(iana.EFI_X86_64, "PXEClient:Arch:00007:UNDI:003000", ""))
	if err != nil || b.Filename != bootfiles.ShimName {
		t.Fatalf("unregistered device matching rule qemu: %+v %v", b, err)
	}
}

// A device that needs Secure Boot while the signed programs are missing
// gets no answer and an event, never unsigned iPXE.
func TestSecureBootMissingPrograms(t *testing.T) {
	ctx := context.Background()
	e := newEngine(t, "never")
	setSecureBoot(t, e, store.SecureBoot{Default: "on"})
	_, err := e.BootFor(ctx, client(iana.EFI_X86_64, "PXEClient:Arch:00007:UNDI:003000", ""))
	if !errors.Is(err, proxydhcp.ErrIgnore) || !errors.Is(err, bootfiles.ErrSignedMissing) {
		t.Fatalf("err %v, want ErrIgnore and ErrSignedMissing", err)
	}
	evs := events(t, e, store.EventSecureBoot)
	if len(evs) != 1 || !strings.Contains(evs[0].Message, "not staged") {
		t.Fatalf("events %+v", evs)
	}
}

// secure_boot auto: a firmware handed iPXE that comes back to DHCP later
// without asking for the policy is learnt to enforce Secure Boot; one
// whose iPXE reached the policy is not.
func TestSecureBootLearnt(t *testing.T) {
	ctx := context.Background()
	efi := client(iana.EFI_X86_64, "PXEClient:Arch:00007:UNDI:003000", "")
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	e := newEngine(t, "never")
	e.Now = func() time.Time { return now }
	stageFakeSigned(t, e)

	for _, port := range []int{67, 4011} { // one boot asks twice
		efi.Port = port
		if b, err := e.BootFor(ctx, efi); err != nil || b.Filename != "ipxe.efi" {
			t.Fatalf("first boot: %+v %v", b, err)
		}
		now = now.Add(2 * time.Second)
	}
	now = now.Add(2 * time.Minute) // the firmware refused it and tried again later
	// The API's view says so without recording anything.
	dev, err := e.Store.Device(ctx, mac)
	if err != nil {
		t.Fatal(err)
	}
	d, err := e.Decide(ctx, dev)
	if err != nil {
		t.Fatal(err)
	}
	if p, err := e.BootPathFor(ctx, dev, d); err != nil || p == nil || !p.SecureBoot || p.Program != bootfiles.ShimName {
		t.Fatalf("boot path %+v %v", p, err)
	}
	if evs := events(t, e, store.EventSecureBoot); len(evs) != 0 {
		t.Fatalf("BootPathFor recorded %+v", evs)
	}
	b, err := e.BootFor(ctx, efi)
	if err != nil || b.Filename != bootfiles.ShimName {
		t.Fatalf("second boot: %+v %v, want shim", b, err)
	}
	if p, err := e.BootPathFor(ctx, dev, d); err != nil || !strings.Contains(p.Reason, "Secure Boot on (learnt)") {
		t.Fatalf("boot path after learning: %+v %v", p, err)
	}
	if evs := events(t, e, store.EventSecureBoot); len(evs) != 1 || !strings.HasPrefix(evs[0].Message, "Secure Boot on (learnt)") {
		t.Fatalf("events %+v", evs)
	}
	// Learnt for good: the GRUB path's own events do not undo it.
	if _, err := grubFile(t, e, "grub/grub.cfg-"+mac); err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Hour)
	if b, err := e.BootFor(ctx, efi); err != nil || b.Filename != bootfiles.ShimName {
		t.Fatalf("third boot: %+v %v, want shim", b, err)
	}
	// The imaging environment saying otherwise settles it.
	if err := e.RecordSecureBootState(ctx, mac, false, ""); err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Second)
	if b, err := e.BootFor(ctx, efi); err != nil || b.Filename != "ipxe.efi" {
		t.Fatalf("after the report: %+v %v, want ipxe.efi", b, err)
	}

	// Another device: its iPXE reached the policy, nothing is learnt.
	e2 := newEngine(t, "never")
	e2.Now = e.Now
	stageFakeSigned(t, e2)
	if b, err := e2.BootFor(ctx, efi); err != nil || b.Filename != "ipxe.efi" {
		t.Fatal(b, err)
	}
	if _, err := e2.Script(ctx, "http://10.0.0.1:8080", mac, "", "", store.Sighting{MAC: mac, Time: now}); err != nil {
		t.Fatal(err)
	}
	now = now.Add(10 * time.Minute)
	if b, err := e2.BootFor(ctx, efi); err != nil || b.Filename != "ipxe.efi" {
		t.Fatalf("iPXE ran: %+v %v, want ipxe.efi again", b, err)
	}
}

func TestGRUBBootstrapAndLocal(t *testing.T) {
	e := newEngine(t, "never")
	cfg, err := grubFile(t, e, "grub/grub.cfg")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(cfg, "configfile /grub/grub.cfg-${net_default_mac}\n") {
		t.Fatalf("bootstrap:\n%s", cfg)
	}
	cfg, err = grubFile(t, e, "grub/grub.cfg-"+mac)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"search --no-floppy --file --set=preboot_esp $preboot_loader", "    set root=$preboot_esp\n    chainloader ($preboot_esp)$preboot_loader\n", "/EFI/Microsoft/Boot/bootmgfw.efi", "/EFI/debian/shimx64.efi", "\nexit\n"} {
		if !strings.Contains(cfg, want) {
			t.Errorf("local boot config lacks %q:\n%s", want, cfg)
		}
	}
	if evs := events(t, e, store.EventLocalBoot); len(evs) != 1 || !strings.Contains(evs[0].Message, "Secure Boot path") {
		t.Fatalf("events %+v", evs)
	}
	// GRUB's probes and other names are not generated.
	for _, name := range []string{"grub/x86_64-efi/command.lst", "grub/grub.cfg-01-52-54-00-12-34-56", "grub/grub.cfg-" + mac + "x", "grub/grub.cfg-" + mac + "-nope", "grub/grub.cfg-" + mac + "-b7"} {
		if _, err := grubFile(t, e, name); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s: err %v, want not found", name, err)
		}
	}
}

func TestGRUBImagingJob(t *testing.T) {
	ctx := context.Background()
	e := newEngine(t, "never")
	stageFakeSigned(t, e)
	b := mkBundle(t, e.Store, "inv", store.KindInventory, `{}`)
	assign(t, e.Store, store.Assignment{BundleID: b.ID, MAC: mac, Once: true})
	cfg, err := grubFile(t, e, "grub/grub.cfg-"+mac)
	if err != nil {
		t.Fatal(err)
	}
	js, err := e.Store.Jobs(ctx, store.JobFilter{MAC: mac})
	if err != nil || len(js) != 1 {
		t.Fatalf("jobs %+v %v", js, err)
	}
	for _, want := range []string{
		"if linux (tftp,10.0.0.1)/boot/kernel console=tty0 console=ttyS0,115200 quiet preboot.server=http://10.0.0.1:8080 preboot.token=",
		" preboot.job=", " preboot.ip=10.0.0.9 preboot.mac=" + mac,
		"  initrd (tftp,10.0.0.1)/boot/initrd\n  boot\nfi\n",
	} {
		if !strings.Contains(cfg, want) {
			t.Errorf("config lacks %q:\n%s", want, cfg)
		}
	}
	if evs := events(t, e, store.EventWork); len(evs) != 1 || !strings.Contains(evs[0].Message, "signed kernel") {
		t.Fatalf("work events %+v", evs)
	}
}

func TestGRUBMenu(t *testing.T) {
	ctx := context.Background()
	e := newEngine(t, "always")
	stageFakeSigned(t, e)
	inv := mkBundle(t, e.Store, "inv", store.KindInventory, `{}`)
	mkBundle(t, e.Store, "it's $(evil)", store.KindInventory, `{}`)
	assign(t, e.Store, store.Assignment{BundleID: inv.ID, MAC: mac, Once: true})
	set, _, _ := e.Store.Settings(ctx)
	set.Menu = store.Menu{Mode: "always", Timeout: store.Duration(5 * time.Second), Bundles: []string{"it's $(evil)"}}
	if err := e.Store.SetSettings(ctx, set); err != nil {
		t.Fatal(err)
	}
	cfg, err := grubFile(t, e, "grub/grub.cfg-"+mac)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"set timeout_style=menu\nset timeout=5\nset default=1\n",
		"menuentry 'Start assigned work: inv (inventory)' {\n  configfile /grub/grub.cfg-" + mac + "-work\n}",
		"menuentry 'Bundle its $(evil)' {\n  configfile /grub/grub.cfg-" + mac + "-b0\n}",
		"configfile /grub/grub.cfg-" + mac + "-local\n", "configfile /grub/grub.cfg-" + mac + "-exit\n",
	} {
		if !strings.Contains(cfg, want) {
			t.Errorf("menu lacks %q:\n%s", want, cfg)
		}
	}
	if js, _ := e.Store.Jobs(ctx, store.JobFilter{MAC: mac}); len(js) != 0 {
		t.Fatalf("the menu started a job: %+v", js)
	}
	work, err := grubFile(t, e, "grub/grub.cfg-"+mac+"-work")
	if err != nil || !strings.Contains(work, "preboot.token=") {
		t.Fatalf("work: %v\n%s", err, work)
	}
	exit, err := grubFile(t, e, "grub/grub.cfg-"+mac+"-exit")
	if err != nil || exit != "exit\n" {
		t.Fatalf("exit: %v %q", err, exit)
	}
}

func TestGRUBOSInstall(t *testing.T) {
	e := newEngine(t, "never")
	b := mkBundle(t, e.Store, "deb", store.KindOSInstall, `{"kernel":"deb/linux","initrd":["deb/initrd.gz"],"cmdline":"auto=true priority=critical url=http://10.0.0.1/p;x"}`)
	assign(t, e.Store, store.Assignment{BundleID: b.ID, MAC: mac})
	cfg, err := grubFile(t, e, "grub/grub.cfg-"+mac)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(cfg, "if linux (tftp,10.0.0.1)/deb/linux auto=true priority=critical 'url=http://10.0.0.1/p;x'; then\n  initrd (tftp,10.0.0.1)/deb/initrd.gz\n") {
		t.Fatalf("os-install:\n%s", cfg)
	}
	// A chain (iPXE) is not possible: local boot, with the reason.
	e2 := newEngine(t, "never")
	c := mkBundle(t, e2.Store, "ks", store.KindOSInstall, `{"chain":"http://10.0.0.1/ks.ipxe"}`)
	assign(t, e2.Store, store.Assignment{BundleID: c.ID, MAC: mac})
	cfg, err = grubFile(t, e2, "grub/grub.cfg-"+mac)
	if err != nil || !strings.Contains(cfg, "not possible on the Secure Boot path") || !strings.Contains(cfg, "chainloader") {
		t.Fatalf("chain bundle: %v\n%s", err, cfg)
	}
}

func TestGRUBWord(t *testing.T) {
	for in, want := range map[string]string{
		"console=ttyS0,115200": "console=ttyS0,115200",
		"a;b":                  "'a;b'",
		"it's":                 `'it'\''s'`,
		"$x":                   "'$x'",
		"":                     "''",
	} {
		if got := grubWord(in); got != want {
			t.Errorf("grubWord(%q) = %q, want %q", in, got, want)
		}
	}
}

// A client that fetched shim and GRUB but never asked for its
// configuration gets an event that says to fix the site DHCP's
// next-server.
func TestGRUBNeverAskedForConfig(t *testing.T) {
	ctx := context.Background()
	e := newEngine(t, "never")
	stageFakeSigned(t, e)
	e.GRUBConfigWait = time.Millisecond
	setSecureBoot(t, e, store.SecureBoot{Default: "on"})
	if _, err := e.BootFor(ctx, client(iana.EFI_X86_64, "PXEClient:Arch:00007:UNDI:003000", "")); err != nil {
		t.Fatal(err)
	}
	if _, err := grubFile(t, e, bootfiles.GRUBName); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("grubx64.efi is a file of the root, not generated: %v", err)
	}
	for {
		evs := events(t, e, store.EventSecureBoot)
		if len(evs) > 0 {
			if !strings.Contains(evs[0].Message, "next-server") {
				t.Fatalf("event %q", evs[0].Message)
			}
			break
		}
		time.Sleep(10 * time.Millisecond) // the test's deadline bounds this
	}
	// A client that asks for its configuration is not reported.
	e2 := newEngine(t, "never")
	stageFakeSigned(t, e2)
	e2.GRUBConfigWait = 50 * time.Millisecond
	setSecureBoot(t, e2, store.SecureBoot{Default: "on"})
	if _, err := e2.BootFor(ctx, client(iana.EFI_X86_64, "PXEClient:Arch:00007:UNDI:003000", "")); err != nil {
		t.Fatal(err)
	}
	if _, err := grubFile(t, e2, bootfiles.GRUBName); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	if _, err := grubFile(t, e2, "grub/grub.cfg-"+mac); err != nil {
		t.Fatal(err)
	}
	e2.grub.mu.Lock()
	_, waiting := e2.grub.pending[mac]
	e2.grub.mu.Unlock()
	if waiting {
		t.Fatal("still waiting for a configuration request that came")
	}
}

// Hotkey mode: the menu stays hidden for the timeout (Esc opens it) and
// its default continues with the decision; nothing starts before.
func TestGRUBMenuHotkey(t *testing.T) {
	ctx := context.Background()
	e := newEngine(t, "hotkey")
	stageFakeSigned(t, e)
	inv := mkBundle(t, e.Store, "inv", store.KindInventory, `{}`)
	assign(t, e.Store, store.Assignment{BundleID: inv.ID, MAC: mac, Once: true})
	cfg, err := grubFile(t, e, "grub/grub.cfg-"+mac)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"set timeout_style=hidden\nset timeout=3\n", "echo 'Press Esc for the Preboot menu...'\n", "set default=1\n",
		"menuentry 'Continue (device assignment (once): run bundle inv (inventory))' {\n  configfile /grub/grub.cfg-" + mac + "-default\n}",
	} {
		if !strings.Contains(cfg, want) {
			t.Errorf("hotkey menu lacks %q:\n%s", want, cfg)
		}
	}
	if js, _ := e.Store.Jobs(ctx, store.JobFilter{MAC: mac}); len(js) != 0 {
		t.Fatalf("the hidden menu started a job: %+v", js)
	}
	if evs := events(t, e, store.EventBoot); len(evs) != 1 {
		t.Fatalf("boot events %+v", evs)
	}
	def, err := grubFile(t, e, "grub/grub.cfg-"+mac+"-default")
	if err != nil || !strings.Contains(def, "preboot.token=") {
		t.Fatalf("default: %v\n%s", err, def)
	}
}
