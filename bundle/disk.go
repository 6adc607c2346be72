package bundle

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
)

// DiskRule selects the target disk of a restore, multicast or capture
// among the machine's whole disks. Every field set must match (they are
// ANDed). Removable and USB disks are only ever chosen when the rule
// names them by Serial or WWN. Exactly one disk must match, else the job
// fails before anything is written.
type DiskRule struct {
	// Serial is the disk's serial number, exactly (case-insensitive).
	Serial string `json:"serial,omitempty"`
	// WWN is the disk's World Wide Name as lsblk shows it (0x5000c500…)
	// or as sysfs does (naa.5000c500…, eui.…); case-insensitive.
	WWN string `json:"wwn,omitempty"`
	// Model is the disk's model, exactly or as a glob with * and ?
	// (case-insensitive; surrounding white space is ignored).
	Model string `json:"model,omitempty"`
	// Size is a size rule: ">=200G", "<=1T", ">100G", "<2T",
	// "200G-600G" (inclusive), "largest" or "smallest". Units: K, M, G,
	// T, P (also KiB…) are powers of 1024; KB, MB, GB, TB, PB powers of
	// 1000; none means bytes. "largest"/"smallest" pick among the disks
	// the other fields allow, and a tie fails.
	Size string `json:"size,omitempty"`
}

// IsZero reports whether the rule selects nothing (the default disk).
func (r *DiskRule) IsZero() bool {
	return r == nil || (r.Serial == "" && r.WWN == "" && r.Model == "" && r.Size == "")
}

// Explicit reports whether the rule names one disk by identity (serial or
// WWN): only such rules may choose a removable or USB disk.
func (r *DiskRule) Explicit() bool {
	return r != nil && (r.Serial != "" || r.WWN != "")
}

// String is the rule as it appears in messages: serial=… wwn=… model=… size=….
func (r *DiskRule) String() string {
	if r.IsZero() {
		return "(no rule: the first fixed disk)"
	}
	var parts []string
	for _, kv := range [][2]string{{"serial", r.Serial}, {"wwn", r.WWN}, {"model", r.Model}, {"size", r.Size}} {
		if kv[1] != "" {
			parts = append(parts, kv[0]+"="+strconv.Quote(kv[1]))
		}
	}
	return strings.Join(parts, " ")
}

var diskIdentRE = regexp.MustCompile(`^[\x21-\x7e]([\x20-\x7e]{0,126}[\x21-\x7e])?$`)

// Validate checks the rule; every problem is listed.
func (r *DiskRule) Validate() error {
	if r == nil {
		return nil
	}
	var errs []error
	if r.IsZero() {
		errs = append(errs, errors.New("disk: an empty rule; set serial, wwn, model or size, or leave disk out for the first fixed disk"))
	}
	for _, kv := range [][2]string{{"serial", r.Serial}, {"wwn", r.WWN}, {"model", r.Model}} {
		if kv[1] != "" && !diskIdentRE.MatchString(kv[1]) {
			errs = append(errs, fmt.Errorf("disk.%s %q: want 1-128 printable ASCII characters, no leading or trailing space", kv[0], kv[1]))
		}
	}
	if r.WWN != "" && strings.ContainsAny(r.WWN, "*?[") {
		errs = append(errs, fmt.Errorf("disk.wwn %q: a WWN is matched exactly (no globs)", r.WWN))
	}
	if r.Serial != "" && strings.ContainsAny(r.Serial, "*?[") {
		errs = append(errs, fmt.Errorf("disk.serial %q: a serial is matched exactly (no globs); use model for patterns", r.Serial))
	}
	if r.Size != "" {
		if _, err := ParseSizeRule(r.Size); err != nil {
			errs = append(errs, fmt.Errorf("disk.size: %w", err))
		}
	}
	return errors.Join(errs...)
}

// SizeRule is a parsed DiskRule.Size.
type SizeRule struct {
	// Pick is "largest", "smallest" or "" (a bounds rule).
	Pick string
	// Min and Max bound the size in bytes, inclusive (0 and MaxInt64
	// when open).
	Min, Max int64
}

// Match reports whether a disk of size bytes passes the bounds (a Pick
// rule passes every size; the caller picks).
func (s SizeRule) Match(size int64) bool {
	return size >= s.Min && size <= s.Max
}

// ParseSizeRule reads a size rule (see DiskRule.Size).
func ParseSizeRule(s string) (SizeRule, error) {
	all := SizeRule{Min: 0, Max: math.MaxInt64}
	t := strings.ToLower(strings.TrimSpace(s))
	bad := func(err error) (SizeRule, error) {
		return SizeRule{}, fmt.Errorf("%q: %w (want >=SIZE, <=SIZE, >SIZE, <SIZE, MIN-MAX, largest or smallest; SIZE like 200G, 1T, 500GB)", s, err)
	}
	switch {
	case t == "":
		return bad(errors.New("empty"))
	case t == "largest" || t == "smallest":
		all.Pick = t
		return all, nil
	case strings.HasPrefix(t, ">="), strings.HasPrefix(t, "<="):
		n, err := ParseSize(t[2:])
		if err != nil {
			return bad(err)
		}
		if t[0] == '>' {
			all.Min = n
		} else {
			all.Max = n
		}
		return all, nil
	case strings.HasPrefix(t, ">"), strings.HasPrefix(t, "<"):
		n, err := ParseSize(t[1:])
		if err != nil {
			return bad(err)
		}
		if t[0] == '>' {
			if n == math.MaxInt64 {
				return bad(errors.New("no size is larger"))
			}
			all.Min = n + 1
		} else {
			if n == 0 {
				return bad(errors.New("no size is smaller than 0"))
			}
			all.Max = n - 1
		}
		return all, nil
	}
	lo, hi, ok := strings.Cut(t, "-")
	if !ok {
		return bad(errors.New("a bare size matches no real disk exactly; give a range such as 230G-240G or a bound such as >=200G"))
	}
	a, err := ParseSize(lo)
	if err != nil {
		return bad(err)
	}
	b, err := ParseSize(hi)
	if err != nil {
		return bad(err)
	}
	if a > b {
		return bad(fmt.Errorf("the range's low end %d is above its high end %d", a, b))
	}
	all.Min, all.Max = a, b
	return all, nil
}

var sizeRE = regexp.MustCompile(`^([0-9]{1,20})(\.[0-9]{1,9})?\s*([kmgtp]?)(i?b?)$`)

// ParseSize reads a size: a number (decimals allowed) with an optional
// unit: K/M/G/T/P or KiB… are powers of 1024, KB/MB/GB/TB/PB powers of
// 1000, B or none bytes.
func ParseSize(s string) (int64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	m := sizeRE.FindStringSubmatch(t)
	if m == nil {
		return 0, fmt.Errorf("size %q: want a number with an optional unit (K, M, G, T, P: powers of 1024; KB, MB, GB, TB, PB: powers of 1000)", s)
	}
	unit, suffix := m[3], m[4]
	mult := 1.0
	if unit != "" {
		base := 1024.0
		if suffix == "b" {
			base = 1000
		}
		mult = math.Pow(base, float64(strings.Index("kmgtp", unit)+1))
	} else if suffix == "i" || suffix == "ib" {
		return 0, fmt.Errorf("size %q: a unit without K, M, G, T or P", s)
	}
	v, err := strconv.ParseFloat(m[1]+m[2], 64)
	if err != nil {
		return 0, fmt.Errorf("size %q: %w", s, err)
	}
	n := math.Round(v * mult)
	if n >= math.MaxInt64 {
		return 0, fmt.Errorf("size %q: too large", s)
	}
	return int64(n), nil
}

// ValidHostname makes name a valid RFC 1123 host label: lower-case
// letters, digits and '-', at most 63 characters, not starting or ending
// with '-'. Other characters become '-' (runs collapse); "" when nothing
// is left. Windows computer names are cut further (NetBIOSName).
func ValidHostname(name string) string {
	var b strings.Builder
	dash := false
	for _, c := range strings.ToLower(name) {
		if b.Len() >= 64 {
			break
		}
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
			b.WriteRune(c)
			dash = false
		default:
			if !dash && b.Len() > 0 {
				b.WriteByte('-')
				dash = true
			}
		}
	}
	out := strings.Trim(b.String(), "-")
	if len(out) > 63 {
		out = out[:63]
	}
	return strings.TrimRight(out, "-")
}

// NetBIOSName is a host label cut to the 15 characters a Windows computer
// name may have (and not all digits, which Windows refuses), upper-case.
func NetBIOSName(name string) string {
	h := ValidHostname(name)
	if len(h) > 15 {
		h = strings.TrimRight(h[:15], "-")
	}
	if h != "" && strings.Trim(h, "0123456789") == "" {
		h = "pc-" + h
		if len(h) > 15 {
			h = h[:15]
		}
	}
	return strings.ToUpper(h)
}
