package rules

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

// TestNeverMatches: expressions that can never match are refused, with
// the reason.
func TestNeverMatches(t *testing.T) {
	for _, tc := range []struct {
		in   string
		col  int
		want string
	}{
		// false-like constructs.
		{`false`, 1, "reduces to false"},
		{`not true`, 5, "reduces to false"},
		{`name = a and false`, 1, "reduces to false"},
		{`not (true or name = a)`, 6, "reduces to false"},
		{`mac ^= 52:54 or false`, 17, "one alternative can never hold: false reduces to false"},
		{`ram < 1B`, 1, "ram < 1B never holds"},
		{`ram <= 0B`, 1, "never holds"},
		{`ram = 0`, 7, "never 0"},
		{`ram in (0B, 4GiB)`, 9, "never 0"},
		{`disk > 9223372036854775807B`, 1, "never holds"},
		{`name = ""`, 8, "never empty"},
		{`name in (a, "")`, 13, "never empty"},
		{`name ~= ""`, 1, `name ~= "" never holds`},
		{`ip in ()`, 7, "empty list"},
		// Contradictory numeric bounds in one AND.
		{`ram > 8GiB and ram < 4GiB`, 1, "ram > 8GiB and ram < 4GiB cannot both hold"},
		{`ram >= 4GiB and ram < 4GiB`, 1, "cannot both hold"},
		{`ram > 4GiB and ram <= 4GiB`, 1, "cannot both hold"},
		{`ram = 4GiB and ram = 8GiB`, 1, "cannot both hold"},
		{`ram = 4GiB and ram != 4GiB`, 1, "cannot both hold"},
		{`ram in (4GiB, 8GiB) and ram > 8GiB`, 1, "cannot both hold"},
		{`ram >= 2B and ram <= 3B and ram != 2B and ram != 3B`, 1, "cannot all hold"},
		{`ram > 4GiB and not ram > 2GiB`, 1, "cannot both hold"},
		{`disk < 1TB and (disk > 2TB or disk > 3TB)`, 1, "no alternative can hold"},
		// Two different equalities on one field in one AND.
		{`name = a and name = b`, 1, "name = a and name = b cannot both hold"},
		{`name = a and name in (b, c)`, 1, "cannot both hold"},
		{`mac = 52:54:00:00:00:01 and mac = 52:54:00:00:00:02`, 1, "cannot both hold"},
		{`ip = 10.0.0.1 and ip = 10.0.0.2`, 1, "cannot both hold"},
		{`arch = bios and arch = efi-x64`, 1, "cannot both hold"},
		{`firmware = bios and firmware = efi`, 1, "cannot both hold"},
		{`firmware = bios and arch = efi-x64`, 1, "firmware = bios and arch = efi-x64 cannot both hold"},
		{`firmware = efi and arch in (bios, arch-7)`, 1, "cannot both hold"},
		{`firmware != bios and arch = bios`, 1, "cannot both hold"},
		{`firmware = efi and not arch ^= efi`, 1, "cannot both hold"},
		{`uuid = 4C4C4544004C4A1080313CC04F4D4E32 and uuid != 4c4c4544-004c-4a10-8031-3cc04f4d4e32`, 1, "cannot both hold"},
		// Equality against prefix / suffix / glob.
		{`name = abc and name ^= x`, 1, "cannot both hold"},
		{`name = abc and name $= x`, 1, "cannot both hold"},
		{`name = abc and name ~= "a?"`, 1, "cannot both hold"},
		{`mac = 52:54:00:12:34:56 and mac ^= 52:54:01`, 1, "cannot both hold"},
		{`arch = bios and arch ^= efi`, 1, "cannot both hold"},
		{`name = abc and not name ^= A`, 1, "cannot both hold"},
		// x and not x.
		{`name = x and not name = x`, 1, "cannot both hold"},
		{`maker ^= Dell and not maker ^= dell`, 1, "cannot both hold"},
		{`model ~= "a?c*" and not model ~= "A?C*"`, 1, "cannot both hold"},
		{`ip in 10.0.0.0/8 and not ip in 10.0.0.0/8`, 1, "cannot both hold"},
		{`(ram > 4GiB and name = a) and not (ram > 4GiB and name = a)`, 2, "no alternative can hold"},
		{`serial != x and not serial != x`, 1, "cannot both hold"},
		{`name ^= "" and not name ^= ""`, 1, "cannot both hold"},
		// Prefixes, suffixes, substrings that exclude each other.
		{`maker ^= Dell and maker ^= HP`, 1, "cannot both hold"},
		{`maker $= Inc and maker $= Ltd`, 1, "cannot both hold"},
		{`mac ^= 52:54:00 and mac ^= 00:50:56`, 1, "cannot both hold"},
		{`maker ^= "Dell Inc" and not maker ^= Dell`, 1, "cannot both hold"},
		{`maker ~= "*dell*" and not maker ~= "*ell*"`, 1, "cannot both hold"},
		{`maker ^= "Dell" and not maker ~= "*el*"`, 1, "cannot both hold"},
		{`maker ~= "Dell*" and not maker ^= "D"`, 1, "cannot both hold"},
		{`maker != x and not maker ~= "*"`, 1, "cannot both hold"},
		{`mac ^= 52:54:00:12 and mac $= 00:11:22:33`, 1, "cannot both hold"},
		// Subnets.
		{`ip in 10.0.0.0/8 and ip in 192.168.0.0/16`, 1, "cannot both hold"},
		{`ip in 10.0.0.0/8 and ip in fd00::/8`, 1, "cannot both hold"},
		{`ip in 10.0.0.0/8 and not ip in 10.0.0.0/9 and not ip in 10.128.0.0/9`, 1, "cannot all hold"},
		{`ip = 10.0.0.1 and not ip in 10.0.0.0/24`, 1, "cannot both hold"},
		{`ip != 10.0.0.1 and not ip in 0.0.0.0/0 and not ip in ::/0`, 1, "cannot all hold"},
		// Values a fact never has; comparisons that make no sense.
		{`mac ^= 52:54:00:00:00:00:00`, 8, "6 bytes"},
		{`mac = 52:54:00`, 7, "for a prefix write mac ^= 52:54:00"},
		{`mac in (52:54:00:00:00:01, 52:54)`, 28, "6 bytes"},
		{`arch = efi-x65`, 8, `unknown firmware architecture "efi-x65"`},
		{`arch in (bios, uefi)`, 16, `unknown firmware architecture "uefi"`},
		{`arch = arch-070`, 8, "unknown firmware"},
		{`arch = arch-65536`, 8, "unknown firmware"},
		{`arch ^= uefi`, 9, "no firmware architecture matches"},
		{`arch $= x86`, 9, "no firmware architecture matches"},
		{`arch ~= "*sparc*"`, 9, "no firmware architecture matches"},
		{`firmware = uefi`, 12, "bios or efi"},
		{`firmware ^= e`, 10, "firmware is bios or efi"},
		{`ram = "4GiB"`, 7, "not with the string"},
		{`ram > lots`, 7, "not with \"lots\""},
		{`ram ^= 4GiB`, 5, "ram is a size"},
		{`disk ~= "1*"`, 6, "disk is a size"},
		{`name < 5`, 6, "name is text"},
		{`serial >= abc`, 8, "serial is text"},
		{`ip ^= 10.1.`, 4, "ip is an address"},
		{`ip < 10.0.0.1`, 4, "ip is an address"},
		// One alternative that can never hold.
		{`mac ^= 52:54 or (disk > 1TB and disk < 1GB)`, 18, "one alternative can never hold: disk > 1TB and disk < 1GB cannot both hold"},
		{`not (name = a and (ram > 1GiB or not false))`, 20, "one alternative can never hold: not ram > 1GiB and false reduces to false"},
		{`firmware != efi and not arch = bios`, 1, "cannot both hold"},
	} {
		_, err := Parse(tc.in)
		var pe *Error
		if !errors.As(err, &pe) || !errors.Is(err, ErrNeverMatches) || errors.Is(err, ErrSyntax) {
			t.Errorf("Parse(%q) = %v, want ErrNeverMatches", tc.in, err)
			continue
		}
		if !strings.HasPrefix(err.Error(), "can never match: ") || !strings.Contains(err.Error(), tc.want) || pe.Col != tc.col {
			t.Errorf("Parse(%q) = %v (column %d), want column %d and %q", tc.in, err, pe.Col, tc.col, tc.want)
		}
	}
}

// TestSatisfiable: expressions that look suspicious but can match are
// accepted (never reject wrongly), and a device matching them exists.
func TestSatisfiable(t *testing.T) {
	for _, tc := range []struct {
		in string
		f  Facts
	}{
		// Unknown facts satisfy negated conditions.
		{`not ram > 4GiB and not ram <= 4GiB`, Facts{}},
		{`not name = a and not name != a`, Facts{}},
		{`not ip in 0.0.0.0/0 and not ip in ::/0`, Facts{}},
		{`not maker ^= "" and name = x`, Facts{Name: "x"}},
		{`not firmware = bios and not firmware = efi`, Facts{Arch: "arch-12"}},
		{`firmware != efi and not arch = efi-x64 or name = b`, Facts{Arch: "bios"}},
		// Compatible bounds, prefixes, suffixes.
		{`ram >= 4GiB and ram <= 4GiB`, Facts{RAM: 4 * gib}},
		{`ram > 1B and ram < 3B`, Facts{RAM: 2}},
		{`ram >= 2B and ram <= 3B and ram != 2B`, Facts{RAM: 3}},
		{`ram in (4GiB, 8GiB) and ram != 4GiB`, Facts{RAM: 8 * gib}},
		{`disk >= 8191PiB`, Facts{Disk: 8191 << 50}},
		{`disk >= 9223372036854775807B`, Facts{Disk: 1<<63 - 1}},
		{`maker ^= Dell and maker ^= "Dell Inc"`, Facts{Maker: "Dell Inc."}},
		{`maker ^= ab and maker $= bc`, Facts{Maker: "abc"}},
		{`maker ^= ab and not maker ^= abc`, Facts{Maker: "abd"}},
		{`maker ~= "*dell*" and not maker ~= "*dell inc*"`, Facts{Maker: "dell"}},
		{`maker ~= "a*b" and not maker ~= "a*c"`, Facts{Maker: "ab"}},
		{`name = Abc and name ^= a and name $= C and name ~= "?b?"`, Facts{Name: "abc"}},
		{`mac ^= 52:54:00 and mac $= 00:12:34:56`, Facts{MAC: "52:54:00:12:34:56"}},
		{`mac ^= 52:54:00 and not mac ^= 52:54:00:12`, Facts{MAC: "52:54:00:11:00:00"}},
		{`ip in 10.0.0.0/8 and not ip in 10.0.0.0/9`, Facts{IP: netip.MustParseAddr("10.200.0.1")}},
		{`ip in 10.0.0.0/8 and ip in 10.1.0.0/16 and ip != 10.1.2.4`, lab},
		{`ip != 10.0.0.1 and not ip in 0.0.0.0/0`, Facts{IP: v6addr}},
		{`arch ^= arch-`, Facts{Arch: "arch-1"}},
		{`arch ~= "*-1?"`, Facts{Arch: "arch-12"}},
		// Alternatives that are each possible.
		{`ram < 4GiB or ram > 8GiB`, Facts{RAM: 1}},
		{`(name = a or name = b) and (name = b or name = c)`, Facts{Name: "b"}},
	} {
		e, err := Parse(tc.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.in, err)
			continue
		}
		if !e.Match(tc.f) {
			t.Errorf("%s does not match %+v", tc.in, tc.f)
		}
	}
}

var v6addr = netip.MustParseAddr("fd00::1")

// TestDNFBound: past the clause bound the analysis gives up and accepts.
func TestDNFBound(t *testing.T) {
	// 2^9 = 512 clauses once distributed, all impossible because of the
	// last condition; the check gives up rather than grow.
	var parts []string
	for i := range 9 {
		parts = append(parts, "(name = a"+string(rune('0'+i))+" or serial = b"+string(rune('0'+i))+")")
	}
	big := strings.Join(parts, " and ") + " and false"
	if _, err := Parse(big); !errors.Is(err, ErrNeverMatches) {
		t.Errorf("a false inside the AND: got %v, want ErrNeverMatches", err)
	}
	bigRAM := strings.Join(parts, " and ") + " and ram > 8GiB and ram < 4GiB"
	if _, err := Parse(bigRAM); err != nil {
		t.Errorf("expected the analysis to give up on %d clauses, got %v", 512, err)
	}
	// A long AND of single conditions stays one clause: found.
	var many []string
	for i := range 1500 {
		many = append(many, fmt.Sprintf("name ^= n and serial != s%d", i))
	}
	if _, err := Parse(strings.Join(many, " and ") + " and serial = s7"); !errors.Is(err, ErrNeverMatches) || !strings.Contains(err.Error(), "more conditions") {
		t.Errorf("long AND: got %v, want ErrNeverMatches", err)
	}
	small := strings.Join(parts[:8], " and ") + " and ram > 8GiB and ram < 4GiB"
	if _, err := Parse(small); !errors.Is(err, ErrNeverMatches) {
		t.Errorf("256 clauses: got %v, want ErrNeverMatches", err)
	}
}

func TestMatchesEverything(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want bool
	}{
		{`true`, true},
		{`not false`, true},
		{`ram > 4GiB or not ram > 4GiB`, true},
		{`name = a or true`, true},
		{`not (name = a and not name = a)`, true},
		{`firmware = bios or not arch = bios`, true},
		{`mac ^= 52:54:00 or not mac ^= 52:54:00`, true},
		{`ip in 10.0.0.0/8 or not ip in 10.0.0.0/9`, true},
		// Unknown facts match neither side.
		{`ram > 4GiB or ram <= 4GiB`, false},
		{`firmware = bios or firmware = efi`, false},
		{`mac ^= 52:54:00`, false},
		{`not mac ^= 52:54:00`, false},
	} {
		e, err := Parse(tc.in)
		if err != nil {
			if tc.want || !errors.Is(err, ErrNeverMatches) {
				t.Errorf("Parse(%q): %v", tc.in, err)
			}
			continue
		}
		if got := e.MatchesEverything(); got != tc.want {
			t.Errorf("%s: MatchesEverything() = %v, want %v", tc.in, got, tc.want)
		}
		if tc.want && (!e.Match(Facts{}) || !e.Match(lab)) {
			t.Errorf("%s matches everything but not every device", tc.in)
		}
	}
}
