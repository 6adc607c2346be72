package rules

import (
	"errors"
	"strings"
	"testing"
)

// TestParseCanonical: what is accepted, and its canonical form.
func TestParseCanonical(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`mac ^= "52:54:00" and (ram >= 4GiB or not maker = "Dell") and ip in 10.1.0.0/16`,
			`mac ^= 52:54:00 and (ram >= 4GiB or not maker = Dell) and ip in 10.1.0.0/16`},
		// Keywords, symbols, aliases and case.
		{`MAC ^= 52-54-00 && (RAM>=4 gib || !manufacturer="Dell") AND ip IN (10.1.2.3/16, 10.9.9.9)`,
			`mac ^= 52:54:00 and (ram >= 4GiB or not maker = Dell) and ip in (10.1.0.0/16, 10.9.9.9)`},
		{`product = "OptiPlex 7090" Or Model ~= "Lat*"`, `model = "OptiPlex 7090" or model ~= Lat*`},
		{`name == pc1`, `name = pc1`},
		{`true`, `true`},
		{`TRUE`, `true`},
		// Parentheses: flattened, minimal.
		{`(((name = a)))`, `name = a`},
		{`(name = a and name ^= a) and (serial = b)`, `name = a and name ^= a and serial = b`},
		{`name = a or (name = b or name = c)`, `name = a or name = b or name = c`},
		{`name = a and serial = b or asset = c`, `name = a and serial = b or asset = c`},
		{`name = a and (serial = b or asset = c)`, `name = a and (serial = b or asset = c)`},
		{`not (name = a and serial = b)`, `not (name = a and serial = b)`},
		{`not not name = a`, `not not name = a`},
		{`!(name = a || serial = b)`, `not (name = a or serial = b)`},
		// MAC forms.
		{`mac ^= 525400`, `mac ^= 52:54:00`},
		{`mac ^= 52-54-00`, `mac ^= 52:54:00`},
		{`mac ^= "52:54:00"`, `mac ^= 52:54:00`},
		{`mac = 5254.00AB.CDEF`, `mac = 52:54:00:ab:cd:ef`},
		{`mac $= AB:CD:EF`, `mac $= ab:cd:ef`},
		{`mac in (52:54:00:00:00:01, 525400000002)`, `mac in (52:54:00:00:00:01, 52:54:00:00:00:02)`},
		{`mac ~= 52-54-*`, `mac ~= 52:54:*`},
		// IP forms.
		{`ip = 10.1.2.3`, `ip = 10.1.2.3`},
		{`ip = ::ffff:10.1.2.3`, `ip = 10.1.2.3`},
		{`ip in ::ffff:10.0.0.0/104`, `ip in 10.0.0.0/8`},
		{`ip in fd00::/8`, `ip in fd00::/8`},
		{`ip in 10.1.2.3`, `ip in 10.1.2.3`},
		{`ip != 10.0.0.1`, `ip != 10.0.0.1`},
		// Sizes.
		{`ram >= 4GiB`, `ram >= 4GiB`},
		{`ram >= 4 GiB`, `ram >= 4GiB`},
		{`ram >= 4096MiB`, `ram >= 4GiB`},
		{`ram >= 4gb`, `ram >= 4GB`},
		{`disk > 1.5TB`, `disk > 1500GB`},
		{`ram > 1.5GiB`, `ram > 1536MiB`},
		{`ram > 0`, `ram > 0B`},
		{`ram != 0`, `ram != 0B`},
		{`ram in (4GiB, 8 GiB, 16384MiB)`, `ram in (4GiB, 8GiB, 16GiB)`},
		{`disk < 1000000B`, `disk < 1MB`},
		{`disk < 1024000B`, `disk < 1000KiB`},
		// Strings: quoting, escapes, keywords as values, unicode.
		{`name = "a\"b\\c"`, `name = "a\"b\\c"`},
		{`name = "and"`, `name = "and"`},
		{`maker = "Hewlett-Packard"`, `maker = Hewlett-Packard`},
		{`maker = "Dell Inc."`, `maker = "Dell Inc."`},
		{`name = Größe`, `name = Größe`},
		{`serial ^= ""`, `serial ^= ""`},
		{`asset $= "-7"`, `asset $= -7`},
		// arch, firmware, uuid.
		{`arch = EFI-X64`, `arch = efi-x64`},
		{`arch in (bios, efi-x64)`, `arch in (bios, efi-x64)`},
		{`arch = arch-12`, `arch = arch-12`},
		{`arch $= http`, `arch $= http`},
		{`arch ^= arch-`, `arch ^= arch-`},
		{`arch ~= "efi-*-http"`, `arch ~= efi-*-http`},
		{`firmware = EFI`, `firmware = efi`},
		{`firmware in (bios, efi)`, `firmware in (bios, efi)`},
		{`uuid = 4C4C4544004C4A1080313CC04F4D4E32`, `uuid = 4c4c4544-004c-4a10-8031-3cc04f4d4e32`},
		{`uuid = "{4C4C4544-004C-4A10-8031-3CC04F4D4E32}"`, `uuid = 4c4c4544-004c-4a10-8031-3cc04f4d4e32`},
		{`uuid = not-a-uuid`, `uuid = not-a-uuid`},
		{`uuid ^= 4C4C`, `uuid ^= 4C4C`},
		// Whitespace.
		{"\tname = a\n and\r\n serial = b ", `name = a and serial = b`},
	} {
		e, err := Parse(tc.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.in, err)
			continue
		}
		if got := e.String(); got != tc.want {
			t.Errorf("Parse(%q).String() = %q, want %q", tc.in, got, tc.want)
		}
		e2, err := Parse(e.String())
		if err != nil {
			t.Errorf("Parse(%q) (canonical form of %q): %v", e.String(), tc.in, err)
			continue
		}
		if e2.String() != e.String() {
			t.Errorf("canonical form of %q does not round-trip: %q then %q", tc.in, e.String(), e2.String())
		}
	}
}

// TestParseErrors: malformed expressions say where and what.
func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		in   string
		col  int
		want string // substring of the message
	}{
		{``, 1, "empty expression"},
		{`   `, 1, "empty expression"},
		{`ramm > 4GiB`, 1, `unknown field "ramm"`},
		{`name`, 5, "expected an operator"},
		{`name a`, 6, "expected an operator"},
		{`name not in (a)`, 6, "put not before it"},
		{`name =`, 7, "expected a value after name ="},
		{`name = and`, 8, `quote it`},
		{`name = (a)`, 8, "expected a value"},
		{`name = a serial = b`, 10, "expected and, or or the end"},
		{`name = a and`, 13, "expected a condition"},
		{`(name = a`, 10, `expected ")" to close the "(" at column 1`},
		{`name = a)`, 9, "expected and, or or the end"},
		{`name in (a, b`, 14, `expected "," or ")" in the list opened at column 9`},
		{`name in (a b)`, 12, `expected "," or ")"`},
		{`name in (a,)`, 12, "expected a value"},
		{`name = "abc`, 8, "unterminated string"},
		{`name = "a\nb"`, 10, "unknown escape"},
		{`name = 'a'`, 8, "double quotes"},
		{`name = a & serial = b`, 10, `expected "&&"`},
		{`name = a | serial = b`, 10, `expected "||"`},
		{`name ^ a`, 6, `expected "^="`},
		{`name = a;`, 9, "unexpected character"},
		{`mac ^= 52:54:0`, 8, "invalid MAC"},
		{`mac ^= 52:5g`, 8, "invalid MAC"},
		{`mac ^= 525`, 8, "invalid MAC"},
		{`mac ^= 52:54-00`, 8, "mixes separators"},
		{`mac ~= 52:54:zz*`, 8, "MAC pattern"},
		{`ip = 10.1.0.0/16`, 6, "write ip in 10.1.0.0/16"},
		{`ip = 10.1`, 6, "not an IP address"},
		{`ip in 10.1.0.0/33`, 7, "not a subnet"},
		{`ip = fe80::1%eth0`, 6, "zones"},
		{`ram > 4`, 7, "needs a unit"},
		{`ram > 4XB`, 7, `unknown size unit "XB"`},
		{`ram > 4G`, 7, `unknown size unit "G"`},
		{`ram > 1.5B`, 7, "whole number of bytes"},
		{`ram > 1.`, 7, "not a size"},
		{`disk > 99999999999PiB`, 8, "too large"},
		{`é = a`, 1, `unknown field "é"`},
		{`name = ` + "\x00", 8, "control character"},
		{`name = ` + "\xff", 8, "invalid UTF-8"},
		{`ip in 10.0.0.0/8 or é = x`, 21, `unknown field`},
		{strings.Repeat("(", 70) + "true" + strings.Repeat(")", 70), 65, "nests deeper"},
		{strings.Repeat("not ", 70) + "true", 257, "nests deeper"},
		{"name = " + strings.Repeat("a", MaxLen), MaxLen + 1, "longer than"},
	} {
		_, err := Parse(tc.in)
		var pe *Error
		if !errors.As(err, &pe) {
			t.Errorf("Parse(%.40q) = %v, want an *Error", tc.in, err)
			continue
		}
		if !errors.Is(err, ErrSyntax) || errors.Is(err, ErrNeverMatches) {
			t.Errorf("Parse(%.40q) = %v, want a syntax error", tc.in, err)
		}
		if pe.Col != tc.col || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%.40q) = %v (column %d), want column %d and %q", tc.in, err, pe.Col, tc.col, tc.want)
		}
	}
}

// TestErrorText: the message carries the column.
func TestErrorText(t *testing.T) {
	_, err := Parse(`name = a and ramm > 1GiB`)
	if err == nil || !strings.HasPrefix(err.Error(), "column 14: unknown field") {
		t.Errorf("got %v", err)
	}
	_, err = Parse(`name = a and ram > 8GiB and ram < 4GiB`)
	if err == nil || err.Error() != "can never match: ram > 8GiB and ram < 4GiB cannot both hold (column 14)" {
		t.Errorf("got %v", err)
	}
	// Columns count characters, not bytes.
	_, err = Parse(`name = "ééé" and x = 1`)
	var pe *Error
	if !errors.As(err, &pe) || pe.Col != 18 {
		t.Errorf("got %v", err)
	}
}

// TestKeywordsAsValues: a keyword is a value only when quoted, and the
// canonical form quotes it again.
func TestKeywordsAsValues(t *testing.T) {
	for _, kw := range []string{"and", "OR", "not", "in", "true", "False"} {
		if _, err := Parse("name = " + kw); err == nil {
			t.Errorf("name = %s parsed", kw)
		}
		e, err := Parse(`name = "` + kw + `"`)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := e.String(), `name = "`+kw+`"`; got != want {
			t.Errorf("got %s, want %s", got, want)
		}
		if !e.Match(Facts{Name: strings.ToUpper(kw)}) {
			t.Errorf("%s does not match %s", e, strings.ToUpper(kw))
		}
	}
}

func TestNilExpr(t *testing.T) {
	var e *Expr
	if e.Match(Facts{Name: "x"}) || e.String() != "" || e.MatchesEverything() {
		t.Error("nil Expr should match nothing")
	}
}
