package rules

import (
	"encoding/json"
	"net/netip"
	"testing"

	"github.com/preboot/preboot/store"
)

const (
	gib = int64(1) << 30
	tb  = int64(1e12)
)

// lab is a fully known device.
var lab = Facts{
	MAC:    "52:54:00:12:34:56",
	IP:     netip.MustParseAddr("10.1.2.3"),
	Maker:  "Dell Inc.",
	Model:  "OptiPlex 7090",
	Serial: "ABC123",
	UUID:   "4c4c4544-004c-4a10-8031-3cc04f4d4e32",
	Asset:  "IT-0042",
	Arch:   "efi-x64",
	Name:   "lab-pc-07",
	RAM:    8 * gib,
	Disk:   512 * int64(1e9),
}

func TestMatch(t *testing.T) {
	bios := lab
	bios.Arch = "bios"
	small := lab
	small.RAM = 2 * gib
	hp := lab
	hp.Maker = "HP"
	v6 := lab
	v6.IP = netip.MustParseAddr("fd00::12")
	mapped := lab
	mapped.IP = netip.MustParseAddr("::ffff:10.1.2.3")
	odd := lab
	odd.Arch = "arch-12"
	for _, tc := range []struct {
		expr string
		f    Facts
		want bool
	}{
		{`true`, lab, true},
		{`true`, Facts{}, true},
		// The example of the issue.
		{`mac ^= "52:54:00" and (ram >= 4GiB or not maker = "Dell") and ip in 10.1.0.0/16`, lab, true},
		{`mac ^= "52:54:00" and (ram >= 4GiB or not maker = "Dell") and ip in 10.1.0.0/16`, small, true}, // maker is "Dell Inc."
		{`mac ^= "52:54:00" and (ram >= 4GiB or not maker ^= "Dell") and ip in 10.1.0.0/16`, small, false},
		{`mac ^= "52:54:00" and (ram >= 4GiB or not maker ^= "Dell") and ip in 10.1.0.0/16`, func() Facts { f := small; f.Maker = "HP"; return f }(), true},
		// MAC.
		{`mac ^= 52:54:00`, lab, true},
		{`mac ^= 525400`, lab, true},
		{`mac ^= 52-54-00`, lab, true},
		{`mac ^= 52:54:01`, lab, false},
		{`mac = 52:54:00:12:34:56`, lab, true},
		{`mac = 52-54-00-12-34-56`, lab, true},
		{`mac != 52:54:00:12:34:56`, lab, false},
		{`mac $= 34:56`, lab, true},
		{`mac $= 12:34`, lab, false},
		{`mac ~= "52:54:*:56"`, lab, true},
		{`mac in (52:54:00:00:00:01, 52:54:00:12:34:56)`, lab, true},
		{`mac in (52:54:00:00:00:01, 52:54:00:00:00:02)`, lab, false},
		// IP.
		{`ip in 10.1.0.0/16`, lab, true},
		{`ip in 10.2.0.0/16`, lab, false},
		{`ip in (10.2.0.0/16, 10.1.2.0/24)`, lab, true},
		{`ip = 10.1.2.3`, lab, true},
		{`ip != 10.1.2.3`, lab, false},
		{`ip != 10.1.2.4`, lab, true},
		{`ip in 10.1.0.0/16`, mapped, true},
		{`ip = 10.1.2.3`, mapped, true},
		{`ip in fd00::/8`, v6, true},
		{`ip in 10.0.0.0/8`, v6, false},
		{`ip in 0.0.0.0/0`, v6, false},
		{`ip in ::/0`, lab, false},
		{`ip in 10.1.2.3`, lab, true},
		// Strings: case-insensitive.
		{`maker = "dell inc."`, lab, true},
		{`maker = Dell`, lab, false},
		{`maker ^= dell`, lab, true},
		{`manufacturer ^= DELL`, lab, true},
		{`model $= 7090`, lab, true},
		{`product ~= "optiplex*"`, lab, true},
		{`model ~= "*Plex*"`, lab, true},
		{`model ~= "OptiPlex"`, lab, false}, // a glob matches the whole value
		{`model ~= "OptiPlex ????"`, lab, true},
		{`model ~= "OptiPlex ???"`, lab, false},
		{`serial = abc123`, lab, true},
		{`serial != abc123`, lab, false},
		{`serial in (X, abc123)`, lab, true},
		{`asset ^= it-`, lab, true},
		{`name ~= lab-pc-0?`, lab, true},
		{`uuid = 4C4C4544004C4A1080313CC04F4D4E32`, lab, true},
		{`uuid ^= 4C4C4544`, lab, true},
		// arch and firmware.
		{`arch = efi-x64`, lab, true},
		{`arch = bios`, lab, false},
		{`arch in (bios, efi-x64)`, lab, true},
		{`arch ^= efi`, lab, true},
		{`firmware = efi`, lab, true},
		{`firmware = bios`, lab, false},
		{`firmware = bios`, bios, true},
		{`firmware != bios`, lab, true},
		{`firmware != bios`, bios, false},
		{`firmware in (bios, efi)`, lab, true},
		{`firmware = efi`, odd, false},
		{`firmware != efi`, odd, false},
		{`not firmware = efi`, odd, true},
		{`arch = arch-12`, odd, true},
		// Sizes.
		{`ram >= 8GiB`, lab, true},
		{`ram > 8GiB`, lab, false},
		{`ram >= 8GB`, lab, true},
		{`ram < 8GiB`, lab, false},
		{`ram <= 8GiB`, lab, true},
		{`ram = 8192MiB`, lab, true},
		{`ram != 8GiB`, lab, false},
		{`ram in (4GiB, 8GiB)`, lab, true},
		{`ram < 4GiB`, small, true},
		{`disk >= 500GB and disk < 1TB`, lab, true},
		{`disk > 0`, lab, true},
		// Dell with less than 8 GiB.
		{`maker ^= Dell and ram < 8GiB`, small, true},
		{`maker ^= Dell and ram < 8GiB`, lab, false},
		{`maker ^= Dell and ram < 8GiB`, func() Facts { f := small; f.Maker = "HP"; return f }(), false},
		// Boolean structure.
		{`not maker ^= Dell`, lab, false},
		{`not maker ^= Dell`, hp, true},
		{`not not maker ^= Dell`, lab, true},
		{`maker ^= HP or name ^= lab`, lab, true},
		{`maker ^= HP || name ^= lab && ram < 1GiB`, lab, false},
		{`(maker ^= HP || name ^= lab) && ram > 1GiB`, lab, true},
		{`!(maker ^= HP || name ^= x)`, lab, true},
	} {
		e, err := Parse(tc.expr)
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.expr, err)
			continue
		}
		if got := e.Match(tc.f); got != tc.want {
			t.Errorf("%q.Match(%+v) = %v, want %v", tc.expr, tc.f, got, tc.want)
		}
	}
}

// TestUnknownFacts: any comparison on an unknown fact is false, its
// negation true.
func TestUnknownFacts(t *testing.T) {
	for _, expr := range []string{
		`mac ^= 52:54:00`, `mac != 52:54:00:12:34:56`, `mac ~= "*"`,
		`ip in 0.0.0.0/0`, `ip != 10.0.0.1`, `ip in ::/0`,
		`maker = Dell`, `maker != Dell`, `maker ^= ""`, `maker $= ""`, `maker ~= "*"`, `maker in (a, b)`,
		`model != x`, `serial != x`, `uuid != x`, `asset != x`, `name != x`,
		`arch != bios`, `arch ^= efi`, `firmware = bios`, `firmware != bios`, `firmware != efi`,
		`ram > 0`, `ram < 1TB`, `ram != 4GiB`, `ram >= 0B`, `disk > 0`, `disk <= 100TB`, `disk in (1TB, 2TB)`,
	} {
		e, err := Parse(expr)
		if err != nil {
			t.Errorf("Parse(%q): %v", expr, err)
			continue
		}
		if e.Match(Facts{}) {
			t.Errorf("%s matches a device with unknown facts", expr)
		}
		not, err := Parse("not (" + expr + ")")
		if err != nil {
			t.Errorf("Parse(not %q): %v", expr, err)
			continue
		}
		if !not.Match(Facts{}) {
			t.Errorf("not %s does not match a device with unknown facts", expr)
		}
	}
	// Known facts elsewhere do not change it.
	e, _ := Parse(`ram < 16GiB`)
	f := lab
	f.RAM = 0
	if e.Match(f) {
		t.Error("ram < 16GiB matched unknown RAM")
	}
	f.RAM = -1
	if e.Match(f) {
		t.Error("ram < 16GiB matched negative RAM")
	}
}

// TestFoldInvalidUTF8: facts that are not valid UTF-8 compare byte by
// byte where invalid.
func TestFoldInvalidUTF8(t *testing.T) {
	e, err := Parse(`name = "�"`)
	if err != nil {
		t.Fatal(err)
	}
	if e.Match(Facts{Name: "\xff"}) || !e.Match(Facts{Name: "\uFFFD"}) {
		t.Error("U+FFFD and an invalid byte compared equal")
	}
	if !equalFold("a\xffB", "A\xffb") || equalFold("\xff", "\xfe") || hasPrefixFold("\xfe", "\xff") {
		t.Error("fold comparisons of invalid bytes")
	}
	// Unicode folding: K (Kelvin) and k, ß does not fold to ss.
	if !equalFold("\u212a", "k") || equalFold("ß", "ss") || !hasSuffixFold("straSSE", "sse") {
		t.Error("unicode folding")
	}
}

func TestGlob(t *testing.T) {
	for _, tc := range []struct {
		pat, s string
		want   bool
	}{
		{"", "", true}, {"", "a", false}, {"*", "", true}, {"*", "abc", true}, {"?", "", false}, {"?", "é", true},
		{"a*", "ABC", true}, {"*c", "abC", true}, {"*b*", "abc", true}, {"*x*", "abc", false},
		{"a?c", "abc", true}, {"a?c", "ac", false}, {"a*b*c", "aXbYc", true}, {"a*b*c", "acb", false},
		{"*a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false}, {"**", "x", true}, {"É*", "éa", true},
	} {
		if got := globFold(tc.pat, tc.s); got != tc.want {
			t.Errorf("globFold(%q, %q) = %v", tc.pat, tc.s, got)
		}
	}
}

func TestFactsOf(t *testing.T) {
	d := store.Device{
		MAC: "52-54-00-12-34-56", IP: "::ffff:10.1.2.3", Manufacturer: " Dell Inc. ", Product: "OptiPlex 7090",
		Serial: "ABC123", UUID: "4C4C4544-004C-4A10-8031-3CC04F4D4E32", AssetTag: "IT-0042", Arch: "EFI-X64",
		Name: "lab-pc-07", RAMBytes: 8 * gib, DiskBytes: 512 * int64(1e9), Platform: "efi",
	}
	if got := FactsOf(d); got != lab {
		t.Errorf("FactsOf = %+v, want %+v", got, lab)
	}
	if got := FactsOf(store.Device{MAC: "junk", IP: "junk", RAMBytes: -5}); got != (Facts{}) {
		t.Errorf("FactsOf(junk) = %+v, want unknown facts", got)
	}
	if got := FactsOf(store.Device{MAC: "02:00:5e:10:00:00:00:01"}); got.MAC != "" {
		t.Errorf("FactsOf(junk) = %+v, want unknown facts", got)
	}
	b, err := json.Marshal(lab)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"mac":"52:54:00:12:34:56","ip":"10.1.2.3","maker":"Dell Inc.","model":"OptiPlex 7090","serial":"ABC123",` +
		`"uuid":"4c4c4544-004c-4a10-8031-3cc04f4d4e32","asset":"IT-0042","arch":"efi-x64","name":"lab-pc-07",` +
		`"ram":8589934592,"disk":512000000000}`; string(b) != want {
		t.Errorf("JSON %s, want %s", b, want)
	}
	if b, _ := json.Marshal(Facts{}); string(b) != "{}" {
		t.Errorf("JSON of unknown facts: %s", b)
	}
}

// TestMatchAllocs: Match never allocates.
func TestMatchAllocs(t *testing.T) {
	for _, expr := range benchExprs {
		e, err := Parse(expr)
		if err != nil {
			t.Fatal(err)
		}
		f := lab
		if n := testing.AllocsPerRun(100, func() { e.Match(f) }); n != 0 {
			t.Errorf("%s: %v allocations per Match", expr, n)
		}
	}
}

var benchExprs = []string{
	`mac ^= 52:54:00`,
	`mac ^= "52:54:00" and (ram >= 4GiB or not maker = "Dell") and ip in 10.1.0.0/16`,
	`maker ~= "*dell*" and model ~= "optiplex ????" and firmware = efi`,
	`mac in (52:54:00:00:00:01, 52:54:00:00:00:02, 52:54:00:00:00:03, 52:54:00:00:00:04, 52:54:00:12:34:56)`,
	`true`,
}

func BenchmarkMatch(b *testing.B) {
	for _, expr := range benchExprs {
		e, err := Parse(expr)
		if err != nil {
			b.Fatal(err)
		}
		name := expr
		if len(name) > 40 {
			name = name[:40]
		}
		b.Run(name, func(b *testing.B) {
			f := lab
			b.ReportAllocs()
			n := 0
			for b.Loop() {
				if e.Match(f) {
					n++
				}
			}
			if n == 0 {
				b.Fatal("no match")
			}
		})
	}
}

func BenchmarkParse(b *testing.B) {
	for b.Loop() {
		if _, err := Parse(benchExprs[1]); err != nil {
			b.Fatal(err)
		}
	}
}
