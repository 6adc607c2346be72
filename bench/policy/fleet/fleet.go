// Package fleet fills a store with a synthetic but realistic fleet for the
// policy-decision benchmark (bench/policy and the Go benchmarks in package
// policy): devices of a few makers and models on a few subnets, bundles
// of every kind, static and dynamic groups with memberships, assignments
// on devices and groups, menu overrides, and an ordered list of rules for
// unregistered devices of which (by design) only one ever matches: the
// one that registers new virtual machines on the "new" subnet.
//
// Everything goes through the store.Store interface, as the API would
// write it, and every expression is checked with rules.Parse first. The
// same Config and Seed give the same fleet.
package fleet

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/preboot/preboot/bundle"
	"github.com/preboot/preboot/config"
	"github.com/preboot/preboot/jobs"
	"github.com/preboot/preboot/policy"
	"github.com/preboot/preboot/rules"
	"github.com/preboot/preboot/store"
)

// Config sizes the fleet.
type Config struct {
	Devices int // devices in the store
	Rules   int // rules for unregistered devices
	Groups  int // groups (static and dynamic)
	// Unregistered is the share of devices not registered yet (they are
	// the share of requests from unregistered devices, too: every device
	// boots once per cycle).
	Unregistered float64
	// DynamicGroups is the share of groups with a match expression.
	DynamicGroups float64
	// DeviceAssignments is the share of devices with an assignment of
	// their own; GroupAssignments the number of (static) groups with one.
	DeviceAssignments float64
	GroupAssignments  int
	// Applied is the share of devices with work due that already ran it
	// (the steady state of a fleet: most assigned work is done).
	Applied float64
	// GroupMenus and DeviceMenus are the numbers of menu overrides.
	GroupMenus, DeviceMenus int
	Seed                    uint64
}

// Default is the fleet of issue 4's benchmark: 10,000 devices, 500 rules,
// 1,000 groups.
func Default() Config {
	return Config{Devices: 10000, Rules: 500, Groups: 1000, Unregistered: 0.2, DynamicGroups: 0.1,
		DeviceAssignments: 0.1, GroupAssignments: 300, Applied: 0.9, GroupMenus: 50, DeviceMenus: 100, Seed: 1}
}

// Small is a fleet for quick runs and the Go benchmarks.
func Small() Config {
	c := Default()
	c.Devices, c.Rules, c.Groups, c.GroupAssignments, c.GroupMenus, c.DeviceMenus = 1000, 50, 100, 30, 5, 10
	return c
}

// Fleet is what Populate made: the boot requests the benchmark cycles
// over and counts of what is stored.
type Fleet struct {
	// Requests are the sightings of one boot of every device, in a
	// shuffled order (registered and unregistered devices mixed).
	Requests []store.Sighting
	// Registered tells, per request, whether the device was registered.
	Registered []bool

	Bundles, DynamicGroups, StaticGroups, Memberships int
	DeviceAssignments, GroupAssignments               int
	RulesEnabled, RulesDisabled                       int
	RegisterRule                                      string // the rule new VMs match, and its position
	RegisterRulePos                                   int
	AppliedSet                                        int // devices whose due work was marked as done
}

// maker is a hardware vendor: its name as SMBIOS gives it, MAC prefixes
// (OUIs) and models.
type maker struct {
	name   string
	ouis   []string
	models []string
	serial func(r *rand.Rand) string
}

var makers = []maker{
	{"Dell Inc.", []string{"f8:bc:12", "18:66:da", "b0:83:fe"}, []string{"OptiPlex 7090", "OptiPlex 5000", "Latitude 5420", "Precision 3660", "PowerEdge R650"},
		func(r *rand.Rand) string { return randChars(r, "0123456789BCDFGHJKLMNPQRSTVWXYZ", 7) }},
	{"HP", []string{"3c:d9:2b", "94:57:a5", "70:5a:0f"}, []string{"HP EliteDesk 800 G6", "HP ProBook 450 G8", "HP Z2 G9", "ProLiant DL360 Gen10"},
		func(r *rand.Rand) string { return "CZC" + randChars(r, "0123456789ABCDEFGHJKLMNPQRSTUVWXYZ", 7) }},
	{"LENOVO", []string{"54:ee:75", "8c:16:45", "e8:6a:64"}, []string{"ThinkCentre M70q", "ThinkPad T14 Gen 2", "ThinkStation P360", "ThinkSystem SR630"},
		func(r *rand.Rand) string { return "PF" + randChars(r, "0123456789ABCDEFGHJKLMNPQRSTUVWXYZ", 6) }},
	{"QEMU", []string{"52:54:00"}, []string{"Standard PC (Q35 + ICH9, 2009)", "Standard PC (i440FX + PIIX, 1996)"},
		func(r *rand.Rand) string { return "" }},
	{"Supermicro", []string{"ac:1f:6b", "3c:ec:ef"}, []string{"X11SPi-TF", "X12STH-F", "H12SSL-i"},
		func(r *rand.Rand) string { return "ZM" + randChars(r, "0123456789", 8) }},
}

// makerWeights: Dell and HP dominate, as in most fleets.
var makerWeights = []int{35, 25, 25, 10, 5}

const gib, gb = int64(1) << 30, int64(1000 * 1000 * 1000)

var rams = []int64{4 * gib, 8 * gib, 16 * gib, 32 * gib, 64 * gib}
var disks = []int64{128 * gb, 256 * gb, 512 * gb, 1000 * gb, 2000 * gb}

// Subnets: devices live on 10.1.0.0/16 .. 10.Sites.0.0/16; new VMs boot
// on NewSubnet, which only the registration rule names.
const (
	Sites     = 20
	NewSubnet = "10.99.0.0/16"
	NewOUI    = "52:54:00"
)

func randChars(r *rand.Rand, alphabet string, n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[r.IntN(len(alphabet))]
	}
	return string(b)
}

func pickWeighted(r *rand.Rand, w []int) int {
	total := 0
	for _, x := range w {
		total += x
	}
	n := r.IntN(total)
	for i, x := range w {
		if n < x {
			return i
		}
		n -= x
	}
	return len(w) - 1
}

func uuidOf(r *rand.Rand) string {
	b := make([]byte, 16)
	for i := range b {
		b[i] = byte(r.IntN(256))
	}
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// macOf is the MAC of device number i under an OUI (i < 2^24).
func macOf(oui string, i int) string {
	return fmt.Sprintf("%s:%02x:%02x:%02x", oui, byte(i>>16), byte(i>>8), byte(i))
}

// NewDevice is the sighting of the n-th new virtual machine (first
// contact, on the new subnet): the registration rule matches it.
func NewDevice(n int, now time.Time) store.Sighting {
	i := 0x800000 + n
	return store.Sighting{MAC: macOf(NewOUI, i), UUID: fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i), Manufacturer: "QEMU",
		Product: "Standard PC (Q35 + ICH9, 2009)", Arch: "efi-x64", Platform: "efi",
		IP: fmt.Sprintf("10.99.%d.%d", byte(n>>8), 1+byte(n)%250), Time: now}
}

// Engine returns the policy engine of a benchmark server on st: a job
// service on the same store and a TFTP root (made in dir) with stand-ins
// for the imaging environment, so that agent bundles start jobs the way a
// configured server does.
func Engine(st store.Store, dir string) (*policy.Engine, error) {
	cfg := config.Default()
	for _, f := range []string{cfg.Imaging.Kernel, cfg.Imaging.Initrd} {
		p := filepath.Join(dir, filepath.FromSlash(f))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(p, []byte("stand-in"), 0o644); err != nil {
			return nil, err
		}
	}
	return &policy.Engine{Store: st, Boot: cfg.Boot, DefaultSettings: policy.SettingsFromConfig(cfg.Menu), TFTPRoot: dir,
		HTTPPort: "8080", Jobs: &jobs.Service{Store: st}, Imaging: cfg.Imaging}, nil
}

// Populate writes the fleet into an empty store. progress (may be nil)
// is told what is being written.
func Populate(ctx context.Context, st store.Store, c Config, progress func(string)) (*Fleet, error) {
	if progress == nil {
		progress = func(string) {}
	}
	if c.Devices < 10 || c.Devices >= 1<<22 || c.Groups < 10 || c.Rules < 1 {
		return nil, fmt.Errorf("fleet: want 10..4M devices, at least 10 groups and 1 rule (got %d, %d, %d)", c.Devices, c.Groups, c.Rules)
	}
	r := rand.New(rand.NewPCG(c.Seed, 0x9e3779b97f4a7c15))
	f := &Fleet{}
	now := time.Now()

	// Settings: no menu by default (overrides below), unregistered
	// devices boot their disk, devices registered by a rule are named
	// after their serial.
	if err := st.SetSettings(ctx, store.Settings{
		Menu:         store.Menu{Mode: "never", Timeout: store.Duration(3 * time.Second), Title: "Preboot", Shell: true},
		Unregistered: store.Unregistered{Action: store.UnregisteredLocal},
		Naming:       store.Naming{Prefix: "pc-", From: store.NameFromSerial},
	}); err != nil {
		return nil, fmt.Errorf("settings: %w", err)
	}

	progress("bundles")
	bundles, err := makeBundles(ctx, st)
	if err != nil {
		return nil, err
	}
	f.Bundles = len(bundles)
	var local, work []store.Bundle
	for _, b := range bundles {
		if b.Kind == store.KindLocalBoot {
			local = append(local, b)
		} else {
			work = append(work, b)
		}
	}
	pickBundle := func() store.Bundle {
		if r.IntN(5) == 0 {
			return local[r.IntN(len(local))]
		}
		return work[r.IntN(len(work))]
	}

	progress(fmt.Sprintf("%d devices", c.Devices))
	type dev struct {
		s          store.Sighting
		registered bool
	}
	devs := make([]dev, c.Devices)
	for i := range devs {
		m := makers[pickWeighted(r, makerWeights)]
		s := store.Sighting{MAC: macOf(m.ouis[r.IntN(len(m.ouis))], i), UUID: uuidOf(r), Serial: m.serial(r),
			Manufacturer: m.name, Product: m.models[r.IntN(len(m.models))],
			IP: fmt.Sprintf("10.%d.%d.%d", 1+r.IntN(Sites), r.IntN(256), 1+r.IntN(254)), Time: now}
		if r.IntN(10) < 3 {
			s.Arch, s.Platform = "bios", "pcbios"
		} else {
			s.Arch, s.Platform = "efi-x64", "efi"
		}
		if r.IntN(2) == 0 {
			s.AssetTag = fmt.Sprintf("AT%06d", i)
		}
		ram, disk := rams[r.IntN(len(rams))], disks[r.IntN(len(disks))]
		d := dev{s: s, registered: r.Float64() >= c.Unregistered}
		if d.registered {
			if _, err := st.CreateDevice(ctx, store.Device{MAC: s.MAC, Name: fmt.Sprintf("pc-%05d", i), UUID: s.UUID, Serial: s.Serial,
				Manufacturer: s.Manufacturer, Product: s.Product, Arch: s.Arch, Platform: s.Platform, IP: s.IP, AssetTag: s.AssetTag,
				FirstSeen: now.Add(-time.Duration(r.IntN(1000)) * time.Hour), RAMBytes: ram, DiskBytes: disk}); err != nil {
				return nil, fmt.Errorf("device %d: %w", i, err)
			}
		} else {
			if _, _, err := st.SeeDevice(ctx, s); err != nil {
				return nil, fmt.Errorf("device %d: %w", i, err)
			}
			// Half of them ran the unregistered default's inventory
			// once: their RAM and disk are known.
			if r.IntN(2) == 0 {
				if err := st.SetDeviceInfo(ctx, s.MAC, json.RawMessage(`{"source":"bench"}`), ram, disk); err != nil {
					return nil, fmt.Errorf("device %d: %w", i, err)
				}
			}
		}
		devs[i] = d
	}

	progress(fmt.Sprintf("%d groups", c.Groups))
	nDyn := int(float64(c.Groups) * c.DynamicGroups)
	var static []string
	// Dynamic and static groups interleave in priority.
	prio := r.Perm(c.Groups)
	for i := range c.Groups {
		g := store.Group{Priority: 10 * (prio[i] + 1)}
		if i < nDyn {
			g.Name, g.Match = fmt.Sprintf("dyn-%04d", i), dynamicExpr(r, i)
			if _, err := rules.Parse(g.Match); err != nil {
				return nil, fmt.Errorf("group expression %q: %w", g.Match, err)
			}
			f.DynamicGroups++
		} else {
			g.Name = fmt.Sprintf("site-%02d-room-%04d", 1+i%Sites, i)
			if i == nDyn {
				g.Name = "new-vms" // the registration rule's group
			}
			static = append(static, g.Name)
			f.StaticGroups++
		}
		g.Description = "benchmark group"
		if _, err := st.CreateGroup(ctx, g); err != nil {
			return nil, fmt.Errorf("group %s: %w", g.Name, err)
		}
	}
	progress("memberships")
	for _, d := range devs {
		if !d.registered {
			continue
		}
		n := 1 + r.IntN(3)
		seen := map[string]bool{}
		for range n {
			g := static[1+r.IntN(len(static)-1)] // never new-vms
			if seen[g] {
				continue
			}
			seen[g] = true
			if err := st.AddMember(ctx, g, d.s.MAC); err != nil {
				return nil, fmt.Errorf("member %s of %s: %w", d.s.MAC, g, err)
			}
			f.Memberships++
		}
	}

	progress("assignments")
	var registered []int
	for i, d := range devs {
		if d.registered {
			registered = append(registered, i)
		}
	}
	r.Shuffle(len(registered), func(i, j int) { registered[i], registered[j] = registered[j], registered[i] })
	nDev := min(int(float64(c.Devices)*c.DeviceAssignments), len(registered))
	for _, i := range registered[:nDev] {
		b := pickBundle()
		a := store.Assignment{BundleID: b.ID, MAC: devs[i].s.MAC, Once: r.IntN(2) == 0, Force: r.IntN(20) == 0}
		if _, err := st.CreateAssignment(ctx, a); err != nil {
			return nil, fmt.Errorf("assign %s to %s: %w", b.Name, a.MAC, err)
		}
		f.DeviceAssignments++
	}
	// Group assignments on static groups only: a dynamic group's
	// assignment would take over the unregistered devices it matches
	// before any rule is tried, and the benchmark wants them to walk the
	// rules.
	perm := r.Perm(len(static) - 1)
	for _, k := range perm[:min(c.GroupAssignments, len(perm))] {
		b := pickBundle()
		a := store.Assignment{BundleID: b.ID, Group: static[1+k], Once: r.IntN(4) == 0, Force: r.IntN(50) == 0}
		if _, err := st.CreateAssignment(ctx, a); err != nil {
			return nil, fmt.Errorf("assign %s to group %s: %w", b.Name, a.Group, err)
		}
		f.GroupAssignments++
	}

	progress("menus")
	menuOf := func() store.Menu {
		m := store.Menu{Mode: "never", Timeout: store.Duration(5 * time.Second), Title: "Lab menu", Shell: r.IntN(2) == 0}
		switch r.IntN(10) {
		case 0, 1, 2, 3:
			m.Mode = "always"
		case 4:
			m.Mode, m.Hotkey = "hotkey", "f"
		}
		for range r.IntN(3) {
			m.Bundles = append(m.Bundles, work[r.IntN(len(work))].Name)
		}
		return m
	}
	for _, k := range r.Perm(len(static) - 1)[:min(c.GroupMenus, len(static)-1)] {
		if err := st.SetMenu(ctx, store.ScopeGroup, static[1+k], menuOf()); err != nil {
			return nil, fmt.Errorf("group menu: %w", err)
		}
	}
	for _, k := range r.Perm(len(registered))[:min(c.DeviceMenus, len(registered))] {
		if err := st.SetMenu(ctx, store.ScopeDevice, devs[registered[k]].s.MAC, menuOf()); err != nil {
			return nil, fmt.Errorf("device menu: %w", err)
		}
	}

	progress(fmt.Sprintf("%d rules", c.Rules))
	f.RegisterRulePos = max(1, c.Rules*4/5)
	for pos := 1; pos <= c.Rules; pos++ {
		ru := store.Rule{Name: fmt.Sprintf("rule-%04d", pos), Enabled: r.IntN(20) != 0, Match: ruleExpr(r, pos)}
		if pos == f.RegisterRulePos {
			ru = store.Rule{Name: "new-vms", Enabled: true, Match: `mac ^= ` + NewOUI + ` and ip in ` + NewSubnet + ` and firmware = efi`,
				Bundle: "inventory-1", Group: "new-vms"}
			f.RegisterRule = ru.Match
		}
		if _, err := rules.Parse(ru.Match); err != nil {
			return nil, fmt.Errorf("rule expression %q: %w", ru.Match, err)
		}
		if _, err := st.CreateRule(ctx, ru); err != nil {
			return nil, fmt.Errorf("rule %s: %w", ru.Name, err)
		}
		if ru.Enabled {
			f.RulesEnabled++
		} else {
			f.RulesDisabled++
		}
	}

	for _, i := range r.Perm(len(devs)) {
		s := devs[i].s
		s.Time = time.Time{}
		f.Requests = append(f.Requests, s)
		f.Registered = append(f.Registered, devs[i].registered)
	}
	return f, nil
}

// Settle brings the fleet to a steady state: of the devices that have
// work due, the share c.Applied is marked as having run it (their next
// boot is local), then every device boots once through e.Script, which
// starts the remaining work, registers what a rule matches and clears
// apply-once assignments of handed-out installs, as a server does.
func Settle(ctx context.Context, e *policy.Engine, f *Fleet, c Config) error {
	r := rand.New(rand.NewPCG(c.Seed, 2))
	for _, s := range f.Requests {
		dev, err := e.Store.Device(ctx, s.MAC)
		if err != nil {
			return err
		}
		d, err := e.Decide(ctx, dev)
		if err != nil {
			return fmt.Errorf("decide %s: %w", s.MAC, err)
		}
		if d.Action != policy.ActionBundle || d.Bundle == nil || r.Float64() >= c.Applied {
			continue
		}
		a := store.Applied{BundleID: d.Bundle.ID, Bundle: d.Bundle.Name, BundleVersion: d.Bundle.Version, Time: time.Now()}
		if d.Assignment != nil {
			a.AssignmentID = d.Assignment.ID
		}
		if err := e.Store.SetApplied(ctx, s.MAC, a); err != nil {
			return err
		}
		f.AppliedSet++
	}
	for _, s := range f.Requests {
		s.Time = time.Now()
		if _, err := e.Script(ctx, "http://10.0.0.1:8080", s.MAC, "", "", s); err != nil {
			return fmt.Errorf("settle: boot %s: %w", s.MAC, err)
		}
	}
	return nil
}

// makeBundles creates five bundles of every kind, with parameters
// validated by bundle.Normalize.
func makeBundles(ctx context.Context, st store.Store) ([]store.Bundle, error) {
	images := []string{"win11-23h2", "win10-22h2", "ubuntu-24.04", "debian-12", "rhel-9.4"}
	params := func(kind string, i int) string {
		img := images[i%len(images)]
		switch kind {
		case store.KindImageRestore:
			if i%2 == 0 {
				return fmt.Sprintf(`{"image":%q}`, img)
			}
			return fmt.Sprintf(`{"image":%q,"partitions":[2,3],"after":"poweroff"}`, img)
		case store.KindImageCapture:
			return fmt.Sprintf(`{"image":"%s-capture-%d","compression":%d}`, img, i, 1+i*3)
		case store.KindScript:
			return fmt.Sprintf(`{"script":"#!/bin/sh\nset -e\necho bundle %d\nlsblk\ndmidecode -t system\n","timeout":"10m"}`, i)
		case store.KindMulticast:
			return fmt.Sprintf(`{"image":%q,"min_clients":%d,"max_wait":"5m"}`, img, 5+i*5)
		case store.KindOSInstall:
			switch i % 3 {
			case 0:
				return `{"kernel":"debian/linux","initrd":["debian/initrd.gz"],"cmdline":"auto=true priority=critical url=http://10.0.0.1/preseed.cfg"}`
			case 1:
				return `{"chain":"http://10.0.0.1/ks/rhel9.ipxe"}`
			}
			return `{"kernel":"wimboot","initrd":["winpe/BCD","winpe/boot.sdi","winpe/boot.wim"]}`
		case store.KindWipe:
			if i%2 == 0 {
				return `{"confirm":true}`
			}
			return `{"mode":"discard","disks":["/dev/nvme0n1"],"confirm":true}`
		case store.KindInventory:
			return `{}`
		}
		return `{}`
	}
	var out []store.Bundle
	for _, kind := range store.BundleKinds {
		for i := 1; i <= 5; i++ {
			p, err := bundle.Normalize(kind, json.RawMessage(params(kind, i)))
			if err != nil {
				return nil, fmt.Errorf("bundle %s %d: %w", kind, i, err)
			}
			b, err := st.CreateBundle(ctx, store.Bundle{Name: fmt.Sprintf("%s-%d", kind, i), Kind: kind, Params: p,
				Description: "benchmark bundle"})
			if err != nil {
				return nil, err
			}
			out = append(out, b)
		}
	}
	return out, nil
}

// dynamicExpr is the match expression of dynamic group i: by model, by
// RAM or disk, by subnet, by firmware, by MAC prefix.
func dynamicExpr(r *rand.Rand, i int) string {
	m := makers[r.IntN(len(makers))]
	switch i % 6 {
	case 0:
		return fmt.Sprintf(`maker = %q and model = %q`, m.name, m.models[r.IntN(len(m.models))])
	case 1:
		return fmt.Sprintf(`ram >= %dGiB and disk >= %dGB`, 8<<r.IntN(4), 256<<r.IntN(3))
	case 2:
		return fmt.Sprintf(`ip in 10.%d.%d.0/20`, 1+r.IntN(Sites), 16*r.IntN(16))
	case 3:
		return fmt.Sprintf(`firmware = bios and maker = %q`, m.name)
	case 4:
		return fmt.Sprintf(`mac ^= %s and ram < 8GiB`, m.ouis[r.IntN(len(m.ouis))])
	}
	return fmt.Sprintf(`model ~= "%s*" and not arch = bios`, strings.Fields(m.models[0])[0])
}

// ruleExpr is the match expression of rule pos: the shapes admins write
// (MAC prefixes, maker/model, RAM/disk, subnets, serials, UUIDs, MAC
// lists), none of which a device of the fleet satisfies. The values are
// near misses: the makers exist, the models and subnets do not.
func ruleExpr(r *rand.Rand, pos int) string {
	m := makers[r.IntN(len(makers))]
	switch pos % 8 {
	case 0:
		return fmt.Sprintf(`mac ^= "00:1a:%02x"`, r.IntN(256))
	case 1:
		return fmt.Sprintf(`maker = %q and model = "%s %d"`, m.name, strings.Fields(m.models[0])[0], 9000+pos)
	case 2:
		return fmt.Sprintf(`ram >= %dGiB and disk >= %dTB`, 128<<r.IntN(3), 4+r.IntN(8))
	case 3:
		return fmt.Sprintf(`ip in 172.%d.0.0/16`, 16+r.IntN(16))
	case 4:
		return fmt.Sprintf(`serial ^= "ZZ%03d" or asset = "X-%d"`, pos, pos)
	case 5:
		return fmt.Sprintf(`(maker = "LENOVO" or maker = "HP") and ip in 10.%d.0.0/16 and not arch = bios`, 150+pos%100)
	case 6:
		return fmt.Sprintf(`uuid = %s`, uuidOf(r))
	}
	return fmt.Sprintf(`mac in (%s, %s, %s) and model = %q`, macOf("02:00:5e", pos), macOf("02:00:5e", pos+1), macOf("02:00:5e", pos+2), m.models[0])
}
