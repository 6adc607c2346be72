package rules

import (
	"errors"
	"hash/fnv"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzParse: Parse never panics; its errors say where; what it accepts
// round-trips through String and evaluates the same; what it refuses as
// never matching matches none of the devices built from the expression's
// own values; what MatchesEverything claims holds for all of them. The
// seed corpus is in testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	f.Add(`mac ^= "52:54:00" and (ram >= 4GiB or not maker = "Dell") and ip in 10.1.0.0/16`)
	f.Fuzz(func(t *testing.T, s string) {
		e, err := Parse(s)
		n, perr := parse(s)
		if err != nil {
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("Parse(%q) = %v, not an *Error", s, err)
			}
			if errors.Is(err, ErrSyntax) == errors.Is(err, ErrNeverMatches) {
				t.Fatalf("Parse(%q) = %v: neither or both kinds", s, err)
			}
			if pe.Col < 1 || pe.Col > utf8.RuneCountInString(s)+1 {
				t.Fatalf("Parse(%q) = %v: column %d out of range", s, err, pe.Col)
			}
		}
		if perr != nil {
			if err == nil {
				t.Fatalf("Parse accepted %q, parse refused it: %v", s, perr)
			}
			return
		}
		facts := sampleFacts(n, s)
		x := toNNF(n, false)
		for _, fa := range facts {
			if evalNNF(x, &fa) != eval(n, &fa) {
				t.Fatalf("%q: negation normal form %s disagrees on %+v", s, x, fa)
			}
		}
		// Whatever the analysis calls impossible must match no device.
		c := newChecker()
		var impossibleParts []*nnf
		if bad, _, _ := c.impossible(x); bad {
			impossibleParts = append(impossibleParts, x)
		}
		var walk func(x *nnf)
		walk = func(x *nnf) {
			for _, k := range x.kids {
				if x.kind == kOr {
					if bad, _, _ := c.impossible(k); bad {
						impossibleParts = append(impossibleParts, k)
					}
				}
				walk(k)
			}
		}
		walk(x)
		for _, part := range impossibleParts {
			for _, fa := range facts {
				if evalNNF(part, &fa) {
					t.Fatalf("%q: %s was found impossible but matches %+v", s, part, fa)
				}
			}
		}
		if err != nil {
			if !errors.Is(err, ErrNeverMatches) {
				t.Fatalf("parse accepted %q but Parse says %v", s, err)
			}
			return
		}
		if len(impossibleParts) > 0 {
			t.Fatalf("Parse accepted %q with impossible part %s", s, impossibleParts[0])
		}
		canon := e.String()
		e2, err := Parse(canon)
		if err != nil {
			t.Fatalf("Parse(%q) = %s, which does not parse: %v", s, canon, err)
		}
		if e2.String() != canon {
			t.Fatalf("Parse(%q): canonical %q re-parses as %q", s, canon, e2.String())
		}
		all := e.MatchesEverything()
		for _, fa := range facts {
			m := e.Match(fa)
			if m != e2.Match(fa) {
				t.Fatalf("%q and its canonical form %q disagree on %+v", s, canon, fa)
			}
			if all && !m {
				t.Fatalf("%q: MatchesEverything, but not %+v", s, fa)
			}
		}
	})
}

// evalNNF evaluates a negation normal form.
func evalNNF(x *nnf, f *Facts) bool {
	switch x.kind {
	case kTrue:
		return true
	case kFalse:
		return false
	case kCond:
		return evalCond(x.lit.n, f) != x.lit.neg
	case kAnd:
		for _, k := range x.kids {
			if !evalNNF(k, f) {
				return false
			}
		}
		return true
	}
	for _, k := range x.kids {
		if evalNNF(k, f) {
			return true
		}
	}
	return false
}

// sampleFacts builds devices from the values in an expression: each value,
// values next to it, values that match its patterns, unknown facts, mixed
// at random (seeded by the expression, so failures reproduce).
func sampleFacts(root *node, s string) []Facts {
	var strs [nFields][]string
	var sizes [2][]int64
	var ips []netip.Addr
	for i := range strs {
		strs[i] = []string{""}
	}
	sizes[0], sizes[1] = []int64{0}, []int64{0}
	ips = []netip.Addr{{}, netip.MustParseAddr("10.1.2.3"), netip.MustParseAddr("fd00::1")}
	strs[fArch] = append(strs[fArch], archNames()...)
	strs[fArch] = append(strs[fArch], "arch-12")
	var visit func(n *node)
	visit = func(n *node) {
		for _, k := range n.kids {
			visit(k)
		}
		if n.kind != kCond {
			return
		}
		switch n.field {
		case fRAM, fDisk:
			i := 0
			if n.field == fDisk {
				i = 1
			}
			for _, v := range append([]int64{n.num}, n.nums...) {
				sizes[i] = append(sizes[i], v-1, v, v+1)
			}
		case fIP:
			addrs := []netip.Addr{n.addr}
			for _, p := range n.pfxs {
				first := p.Addr()
				last := first
				for b := p.Bits(); b < first.BitLen(); b++ {
					last = setBit(last, b)
				}
				addrs = append(addrs, first, last, first.Prev(), last.Next())
			}
			for _, a := range addrs {
				if a.IsValid() {
					ips = append(ips, a)
				}
			}
		case fFirmware:
		default:
			for _, v := range append([]string{n.str}, n.strs...) {
				vs := []string{v, strings.ToUpper(v), v + "x", "x" + v, "x" + v + "x"}
				if n.op == opGlob {
					vs = append(vs, strings.NewReplacer("*", "", "?", "q").Replace(v), strings.NewReplacer("*", "zz", "?", "Q").Replace(v))
				}
				if n.field == fMAC {
					// Whole MACs around a prefix or suffix.
					vs = append(vs, (v + ":00:00:00:00:00:00")[:17])
					if len(v) <= 17 {
						vs = append(vs, "00:00:00:00:00:00"[:17-len(v)]+v)
					}
				}
				strs[n.field] = append(strs[n.field], vs...)
			}
		}
	}
	visit(root)
	h := fnv.New64a()
	h.Write([]byte(s))
	rng := rand.New(rand.NewPCG(h.Sum64(), 1))
	pick := func(l []string) string { return l[rng.IntN(len(l))] }
	out := []Facts{{}, lab}
	for range 300 {
		out = append(out, Facts{
			MAC: pick(strs[fMAC]), IP: ips[rng.IntN(len(ips))], Maker: pick(strs[fMaker]), Model: pick(strs[fModel]),
			Serial: pick(strs[fSerial]), UUID: pick(strs[fUUID]), Asset: pick(strs[fAsset]), Arch: pick(strs[fArch]),
			Name: pick(strs[fName]), RAM: sizes[0][rng.IntN(len(sizes[0]))], Disk: sizes[1][rng.IntN(len(sizes[1]))],
		})
	}
	return out
}
