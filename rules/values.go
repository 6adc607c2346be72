package rules

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
)

// archNames are the firmware architectures policy.ArchName names (other
// architectures are named arch-<number>), and the EFI ones the iPXE stage
// names from iPXE's ${buildarch} that ArchName has no name for.
func archNames() []string {
	return []string{"bios", "efi-ia32", "efi-x64", "efi-arm32", "efi-arm64", "efi-x64-http", "efi-arm64-http",
		"efi-riscv32", "efi-riscv64", "efi-loong64"}
}

// validArch reports whether a (lower case) is an architecture name
// policy.ArchName can produce.
func validArch(a string) bool {
	for _, n := range archNames() {
		if a == n {
			return true
		}
	}
	d, ok := strings.CutPrefix(a, "arch-")
	if !ok || d == "" {
		return false
	}
	v, err := strconv.ParseUint(d, 10, 16)
	return err == nil && strconv.FormatUint(v, 10) == d
}

// archPossible reports whether some architecture name satisfies pred.
func archPossible(pat string, pred func(string) bool) bool {
	for _, n := range archNames() {
		if pred(n) {
			return true
		}
	}
	// arch-<number>: only worth trying if the pattern could be part of one.
	if strings.ContainsFunc(pat, func(r rune) bool { return !strings.ContainsRune("arch-0123456789*?", r) }) {
		return false
	}
	for v := 0; v <= math.MaxUint16; v++ {
		if pred("arch-" + strconv.Itoa(v)) {
			return true
		}
	}
	return false
}

// parseMAC parses a MAC address or a part of one: hex bytes separated by
// ':' or '-' (two digits each), '.' (four digits each, as 5254.0012.3456)
// or nothing. It returns the bytes in the normalised form aa:bb:cc and
// their number.
func parseMAC(s string) (string, int, error) {
	sep := byte(0)
	for _, c := range []byte{':', '-', '.'} {
		if strings.IndexByte(s, c) >= 0 {
			if sep != 0 {
				return "", 0, errors.New("mixes separators")
			}
			sep = c
		}
	}
	var hex string
	switch sep {
	case 0:
		hex = s
	default:
		group := 2
		if sep == '.' {
			group = 4
		}
		for _, g := range strings.Split(s, string(sep)) {
			if len(g) != group {
				return "", 0, fmt.Errorf("groups separated by %q must have %d hex digits", sep, group)
			}
		}
		hex = strings.ReplaceAll(s, string(sep), "")
	}
	if hex == "" || len(hex)%2 != 0 {
		return "", 0, errors.New("needs whole bytes (an even number of hex digits)")
	}
	var b strings.Builder
	for i := 0; i < len(hex); i += 2 {
		if !isHex(hex[i]) || !isHex(hex[i+1]) {
			return "", 0, fmt.Errorf("%q is not a hex byte", hex[i:i+2])
		}
		if i > 0 {
			b.WriteByte(':')
		}
		b.WriteString(strings.ToLower(hex[i : i+2]))
	}
	return b.String(), len(hex) / 2, nil
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// normalizeUUID returns a UUID (32 hex digits, with or without dashes and
// braces) in lower case 8-4-4-4-12 form.
func normalizeUUID(s string) (string, bool) {
	s = strings.TrimSuffix(strings.TrimPrefix(s, "{"), "}")
	hex := strings.ReplaceAll(s, "-", "")
	if len(hex) != 32 {
		return "", false
	}
	for i := 0; i < len(hex); i++ {
		if !isHex(hex[i]) {
			return "", false
		}
	}
	if len(s) != 32 && (len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-') {
		return "", false
	}
	h := strings.ToLower(hex)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32], true
}

// sizeUnits are the size units, largest first for formatSize.
func sizeUnits() []struct {
	name string
	mult int64
} {
	return []struct {
		name string
		mult int64
	}{
		{"PiB", 1 << 50}, {"PB", 1e15}, {"TiB", 1 << 40}, {"TB", 1e12}, {"GiB", 1 << 30}, {"GB", 1e9},
		{"MiB", 1 << 20}, {"MB", 1e6}, {"KiB", 1 << 10}, {"KB", 1e3}, {"B", 1},
	}
}

// unitMult returns the multiplier of a size unit (case-insensitive).
func unitMult(u string) (int64, bool) {
	for _, x := range sizeUnits() {
		if strings.EqualFold(u, x.name) {
			return x.mult, true
		}
	}
	return 0, false
}

const unitHelp = "B, KB, MB, GB, TB, PB (powers of 1000) or KiB, MiB, GiB, TiB, PiB (powers of 1024)"

// errNoUnit is returned by parseSize for a bare number.
var errNoUnit = errors.New("no unit")

// parseSize parses a size: a decimal number (fractions allowed if the
// result is a whole number of bytes) followed by a unit. A bare number
// returns its value and errNoUnit.
func parseSize(s string) (int64, error) {
	i := 0
	for i < len(s) && ('0' <= s[i] && s[i] <= '9' || s[i] == '.') {
		i++
	}
	num, unit := s[:i], s[i:]
	if num == "" || num[0] == '.' || strings.Count(num, ".") > 1 || strings.HasSuffix(num, ".") {
		return 0, fmt.Errorf("%q is not a size such as 8GiB", s)
	}
	mult := int64(1)
	if unit != "" {
		m, ok := unitMult(unit)
		if !ok {
			return 0, fmt.Errorf("unknown size unit %q: use %s", unit, unitHelp)
		}
		mult = m
	}
	if len(num) > 40 {
		return 0, fmt.Errorf("%q is too large", s)
	}
	r, ok := new(big.Rat).SetString(num)
	if !ok {
		return 0, fmt.Errorf("%q is not a size such as 8GiB", s)
	}
	r.Mul(r, new(big.Rat).SetInt64(mult))
	if !r.IsInt() {
		return 0, fmt.Errorf("%q is not a whole number of bytes", s)
	}
	if !r.Num().IsInt64() {
		return 0, fmt.Errorf("%q is too large", s)
	}
	v := r.Num().Int64()
	if unit == "" {
		return v, errNoUnit
	}
	return v, nil
}

// formatSize writes a size with the largest unit that divides it.
func formatSize(v int64) string {
	if v == 0 {
		return "0B"
	}
	for _, u := range sizeUnits() {
		if v%u.mult == 0 {
			return strconv.FormatInt(v/u.mult, 10) + u.name
		}
	}
	return strconv.FormatInt(v, 10) + "B"
}
