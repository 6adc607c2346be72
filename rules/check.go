package rules

import (
	"fmt"
	"math"
	"net/netip"
	"strings"
)

// The never-match analysis: the expression is put in negation normal form
// (nots only on conditions), then in disjunctive normal form (an OR of
// ANDs of conditions), and each AND is tested for satisfiability field by
// field. The test only says "impossible" when it can prove it; when the
// DNF grows past maxClauses or the work past the budget, the analysis
// gives up and the expression is accepted.
//
// Unknown facts: a condition on an unknown fact is false, so an AND whose
// conditions on a field are all negated is satisfied by a device that did
// not report the field. Only when the AND has a positive condition on the
// field must the field's value satisfy every condition on it.

const (
	maxClauses = 256
	budget     = 1 << 18 // literal copies and evaluations per analysis
)

// nnf is an expression in negation normal form.
type nnf struct {
	kind kind // kTrue, kFalse, kAnd, kOr, kCond
	kids []*nnf
	lit  lit
	pos  int
}

// lit is a condition or its negation.
type lit struct {
	n   *node
	neg bool
}

func (l lit) String() string {
	if l.neg {
		return "not " + l.n.String()
	}
	return l.n.String()
}

func (x *nnf) String() string {
	switch x.kind {
	case kTrue:
		return "true"
	case kFalse:
		return "false"
	case kCond:
		return x.lit.String()
	}
	sep := " and "
	if x.kind == kOr {
		sep = " or "
	}
	parts := make([]string, len(x.kids))
	for i, k := range x.kids {
		parts[i] = k.String()
		if k.kind == kOr && x.kind == kAnd {
			parts[i] = "(" + parts[i] + ")"
		}
	}
	return strings.Join(parts, sep)
}

type checker struct {
	work int // remaining budget
}

func newChecker() *checker { return &checker{work: budget} }

// toNNF pushes nots down to the conditions (negating n if neg) and
// replaces firmware conditions by the arch conditions they stand for.
func toNNF(n *node, neg bool) *nnf {
	switch n.kind {
	case kTrue, kFalse:
		if (n.kind == kTrue) != neg {
			return &nnf{kind: kTrue, pos: n.pos}
		}
		return &nnf{kind: kFalse, pos: n.pos}
	case kNot:
		return toNNF(n.kids[0], !neg)
	case kAnd, kOr:
		k := n.kind
		if neg {
			k = kAnd + kOr - k
		}
		x := &nnf{kind: k, pos: n.pos}
		for _, c := range n.kids {
			x.kids = append(x.kids, toNNF(c, neg))
		}
		return x
	}
	if n.field == fFirmware {
		return firmwareNNF(n, neg)
	}
	return &nnf{kind: kCond, lit: lit{n: n, neg: neg}, pos: n.pos}
}

// firmwareNNF rewrites a firmware condition as arch conditions: firmware
// is bios exactly when arch = bios, efi exactly when arch ^= "efi-".
func firmwareNNF(n *node, neg bool) *nnf {
	arch := func(v string) *nnf {
		a := &node{kind: kCond, field: fArch, op: opEq, str: "bios", pos: n.pos, src: n}
		if v == "efi" {
			a.op, a.str = opPrefix, "efi-"
		}
		return &nnf{kind: kCond, lit: lit{n: a, neg: neg}, pos: n.pos}
	}
	switch n.op {
	case opEq:
		return arch(n.str)
	case opNe: // known and not v: the other one
		if n.str == "bios" {
			return arch("efi")
		}
		return arch("bios")
	}
	x := &nnf{kind: kOr, pos: n.pos}
	if neg {
		x.kind = kAnd
	}
	for _, v := range n.strs {
		x.kids = append(x.kids, arch(v))
	}
	return x
}

// dnf returns the clauses (ANDs of literals) whose OR is x; ok is false
// when the analysis gave up.
func (c *checker) dnf(x *nnf) (clauses [][]lit, ok bool) {
	switch x.kind {
	case kTrue:
		return [][]lit{{}}, true
	case kFalse:
		return nil, true
	case kCond:
		c.work--
		return [][]lit{{x.lit}}, c.work > 0
	case kOr:
		var out [][]lit
		for _, k := range x.kids {
			d, ok := c.dnf(k)
			if !ok {
				return nil, false
			}
			out = append(out, d...)
			if len(out) > maxClauses {
				return nil, false
			}
		}
		return out, true
	}
	// kAnd: the product of the children's clauses.
	parts := make([][][]lit, 0, len(x.kids))
	gaveUp := false
	for _, k := range x.kids {
		d, ok := c.dnf(k)
		switch {
		case !ok:
			gaveUp = true
		case len(d) == 0:
			return nil, true // one child is impossible: so is the AND
		}
		parts = append(parts, d)
	}
	if gaveUp {
		return nil, false
	}
	out := [][]lit{nil} // each clause owns its backing array
	for _, d := range parts {
		if len(d) == 1 { // extend every clause in place
			for i := range out {
				if c.work -= len(d[0]) + 1; c.work <= 0 {
					return nil, false
				}
				out[i] = append(out[i], d[0]...)
			}
			continue
		}
		if len(out)*len(d) > maxClauses {
			return nil, false
		}
		next := make([][]lit, 0, len(out)*len(d))
		for _, a := range out {
			for _, b := range d {
				cl := make([]lit, 0, len(a)+len(b))
				cl = append(append(cl, a...), b...)
				if c.work -= len(cl) + 1; c.work <= 0 {
					return nil, false
				}
				next = append(next, cl)
			}
		}
		out = next
	}
	return out, true
}

// impossible reports whether x can never hold, with the reason ("" when x
// reduces to false) and the byte offset to point at. It says false when
// it cannot tell.
func (c *checker) impossible(x *nnf) (bool, string, int) {
	clauses, ok := c.dnf(x)
	if !ok {
		return false, "", 0
	}
	if len(clauses) == 0 {
		return true, "", x.pos
	}
	var reasons []string
	pos := -1
	for _, cl := range clauses {
		bad, reason, p := c.clauseImpossible(cl)
		if !bad {
			return false, "", 0
		}
		if pos < 0 {
			pos = p
		}
		if len(reasons) < 3 {
			reasons = append(reasons, reason)
		} else if len(reasons) == 3 {
			reasons = append(reasons, "…")
		}
	}
	if len(reasons) == 1 {
		return true, reasons[0], pos
	}
	return true, "no alternative can hold: " + strings.Join(reasons, "; "), pos
}

// check refuses an expression that can never match, or one of whose
// alternatives (operands of an or, after nots are pushed down to the
// conditions) can never match.
func check(src string, root *node) error {
	c := newChecker()
	x := toNNF(root, false)
	if bad, reason, pos := c.impossible(x); bad {
		if reason == "" {
			reason = "the expression reduces to false"
		}
		return neverErr(src, pos, "%s", reason)
	}
	var walk func(x *nnf) error
	walk = func(x *nnf) error {
		for _, k := range x.kids {
			if x.kind == kOr {
				if bad, reason, pos := c.impossible(k); bad {
					if reason == "" {
						reason = k.String() + " reduces to false"
					}
					return neverErr(src, pos, "one alternative can never hold: %s", reason)
				}
			}
			if err := walk(k); err != nil {
				return err
			}
		}
		return nil
	}
	return walk(x)
}

// MatchesEverything reports whether the expression provably matches every
// device, known facts or not (true, `ram > 4GiB or not ram > 4GiB`). It is
// meant for a warning: a rule that matches everything makes the rules
// after it unreachable. It may say false for an expression that does
// match everything but is too complex to tell.
func (e *Expr) MatchesEverything() bool {
	if e == nil || e.root == nil {
		return false
	}
	c := newChecker()
	x := toNNF(e.root, true)
	clauses, ok := c.dnf(x)
	if !ok {
		return false
	}
	for _, cl := range clauses {
		if bad, _, _ := c.clauseImpossible(cl); !bad {
			return false
		}
	}
	return true
}

// clauseImpossible reports whether an AND of literals can never hold.
func (c *checker) clauseImpossible(cl []lit) (bool, string, int) {
	var byField [nFields][]lit
	for _, l := range cl {
		byField[l.n.field] = append(byField[l.n.field], l)
	}
	for f, lits := range byField {
		known := false
		for _, l := range lits {
			known = known || !l.neg
		}
		if !known {
			continue // an unknown fact satisfies negated conditions
		}
		var bad bool
		switch field(f) {
		case fRAM, fDisk:
			bad = sizeImpossible(lits)
		case fIP:
			bad = c.ipImpossible(lits)
		default:
			bad = c.stringImpossible(field(f), lits)
		}
		if bad {
			return true, describe(lits), lits[0].n.pos
		}
	}
	return false, "", 0
}

// describe says that the literals cannot all hold.
func describe(lits []lit) string {
	seen := map[string]bool{}
	var parts []string
	for _, l := range lits {
		if s := l.String(); !seen[s] {
			seen[s] = true
			parts = append(parts, s)
		}
	}
	if len(parts) > 4 {
		parts = append(parts[:4], fmt.Sprintf("%d more conditions", len(parts)-4))
	}
	switch len(parts) {
	case 1:
		return parts[0] + " never holds"
	case 2:
		return parts[0] + " and " + parts[1] + " cannot both hold"
	}
	return strings.Join(parts, " and ") + " cannot all hold"
}

// sizeImpossible: known sizes are 1 … MaxInt64 bytes.
func sizeImpossible(lits []lit) bool {
	lo, hi := int64(1), int64(math.MaxInt64)
	var set []int64
	hasSet := false
	var excl []int64
	restrict := func(vals []int64) {
		if !hasSet {
			set, hasSet = append([]int64(nil), vals...), true
			return
		}
		var keep []int64
		for _, v := range set {
			for _, w := range vals {
				if v == w {
					keep = append(keep, v)
					break
				}
			}
		}
		set = keep
	}
	below := func(v int64) { // x < v
		if v-1 < hi {
			hi = v - 1
		}
	}
	atMost := func(v int64) {
		if v < hi {
			hi = v
		}
	}
	above := func(v int64) { // x > v
		if v == math.MaxInt64 {
			lo, hi = 1, 0
			return
		}
		if v+1 > lo {
			lo = v + 1
		}
	}
	atLeast := func(v int64) {
		if v > lo {
			lo = v
		}
	}
	for _, l := range lits {
		n, pos := l.n, !l.neg
		switch {
		case n.op == opEq && pos, n.op == opNe && !pos:
			restrict([]int64{n.num})
		case n.op == opNe && pos, n.op == opEq && !pos:
			excl = append(excl, n.num)
		case n.op == opIn && pos:
			restrict(n.nums)
		case n.op == opIn:
			excl = append(excl, n.nums...)
		case n.op == opLt && pos, n.op == opGe && !pos:
			below(n.num)
		case n.op == opLe && pos, n.op == opGt && !pos:
			atMost(n.num)
		case n.op == opGt && pos, n.op == opLe && !pos:
			above(n.num)
		case n.op == opGe && pos, n.op == opLt && !pos:
			atLeast(n.num)
		}
	}
	excluded := func(v int64) bool {
		for _, x := range excl {
			if x == v {
				return true
			}
		}
		return false
	}
	if hasSet {
		for _, v := range set {
			if lo <= v && v <= hi && !excluded(v) {
				return false
			}
		}
		return true
	}
	if lo > hi {
		return true
	}
	inside := map[int64]bool{}
	for _, x := range excl {
		if lo <= x && x <= hi {
			inside[x] = true
		}
	}
	return uint64(hi-lo) < uint64(len(inside)) // hi-lo+1 values, all excluded
}

// ipImpossible: the address must lie in every positive set and in none of
// the negative ones.
func (c *checker) ipImpossible(lits []lit) bool {
	var cands []netip.Prefix
	restricted := false
	var excl []netip.Prefix
	single := func(a netip.Addr) []netip.Prefix { return []netip.Prefix{netip.PrefixFrom(a, a.BitLen())} }
	for _, l := range lits {
		n, pos := l.n, !l.neg
		var set []netip.Prefix
		switch {
		case n.op == opEq && pos, n.op == opNe && !pos:
			set = single(n.addr)
		case n.op == opNe && pos, n.op == opEq && !pos:
			excl = append(excl, single(n.addr)...)
			continue
		case n.op == opIn && pos:
			set = n.pfxs
		default:
			excl = append(excl, n.pfxs...)
			continue
		}
		if !restricted {
			cands, restricted = append([]netip.Prefix(nil), set...), true
			continue
		}
		var keep []netip.Prefix
		for _, a := range cands {
			for _, b := range set {
				if c.work--; c.work <= 0 {
					return false
				}
				if a.Overlaps(b) {
					if a.Bits() >= b.Bits() {
						keep = append(keep, a)
					} else {
						keep = append(keep, b)
					}
				}
			}
		}
		cands = keep
	}
	if !restricted {
		cands = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}
	}
	for _, p := range cands {
		if !c.covered(p, excl) {
			return false
		}
	}
	return true
}

// covered reports whether the prefixes in excl cover all of p (or the
// budget ran out: then it says false).
func (c *checker) covered(p netip.Prefix, excl []netip.Prefix) bool {
	var inside []netip.Prefix
	for _, e := range excl {
		if c.work--; c.work <= 0 {
			return false
		}
		if !e.Overlaps(p) {
			continue
		}
		if e.Bits() <= p.Bits() {
			return true // e contains p
		}
		inside = append(inside, e)
	}
	if len(inside) == 0 || p.Bits() >= p.Addr().BitLen() {
		return false
	}
	lo := netip.PrefixFrom(p.Addr(), p.Bits()+1)
	hi := netip.PrefixFrom(setBit(p.Addr(), p.Bits()), p.Bits()+1)
	return c.covered(lo, inside) && c.covered(hi, inside)
}

// setBit sets bit i (0 = most significant) of a.
func setBit(a netip.Addr, i int) netip.Addr {
	if a.Is4() {
		b := a.As4()
		b[i/8] |= 0x80 >> (i % 8)
		return netip.AddrFrom4(b)
	}
	b := a.As16()
	b[i/8] |= 0x80 >> (i % 8)
	return netip.AddrFrom16(b)
}

// stringImpossible: case-insensitive text. With equalities the candidate
// values are tried against every condition (exact); without, only
// contradictions between prefixes, suffixes and substrings are proven.
func (c *checker) stringImpossible(f field, lits []lit) bool {
	var eqSets [][]string
	var prefixes, suffixes, contains, globs []string     // positive
	var nPrefixes, nSuffixes, nContains, nGlobs []string // negative
	for _, l := range lits {
		n, pos := l.n, !l.neg
		switch op, s := n.op, n.str; {
		case op == opEq && pos, op == opNe && !pos, op == opGlob && pos && !isWild(s):
			eqSets = append(eqSets, []string{s})
		case op == opIn && pos:
			eqSets = append(eqSets, n.strs)
		case op == opEq, op == opNe, op == opIn, op == opGlob && !isWild(s):
			// not equal to some values: infinitely many others remain
		case op == opPrefix && pos:
			prefixes = append(prefixes, s)
		case op == opPrefix:
			nPrefixes = append(nPrefixes, s)
		case op == opSuffix && pos:
			suffixes = append(suffixes, s)
		case op == opSuffix:
			nSuffixes = append(nSuffixes, s)
		case op == opGlob && pos:
			globs = append(globs, s)
			runs := strings.FieldsFunc(s, func(r rune) bool { return r == '*' || r == '?' })
			if len(runs) > 0 && !strings.HasPrefix(s, "*") && !strings.HasPrefix(s, "?") {
				prefixes = append(prefixes, runs[0])
			}
			if len(runs) > 0 && !strings.HasSuffix(s, "*") && !strings.HasSuffix(s, "?") {
				suffixes = append(suffixes, runs[len(runs)-1])
			}
			contains = append(contains, runs...)
		default: // negative glob
			if strings.Contains(s, "?") {
				nGlobs = append(nGlobs, s)
				break
			}
			lead, trail := strings.HasPrefix(s, "*"), strings.HasSuffix(s, "*")
			runs := strings.FieldsFunc(s, func(r rune) bool { return r == '*' })
			switch {
			case len(runs) == 0: // only stars: matches every known value
				nPrefixes = append(nPrefixes, "")
			case len(runs) > 1:
				nGlobs = append(nGlobs, s)
			case !lead && trail:
				nPrefixes = append(nPrefixes, runs[0])
			case lead && !trail:
				nSuffixes = append(nSuffixes, runs[0])
			default:
				nContains = append(nContains, runs[0])
			}
		}
	}

	if len(eqSets) > 0 {
		cands := eqSets[0]
		for _, set := range eqSets[1:] {
			var keep []string
			for _, a := range cands {
				for _, b := range set {
					if c.work--; c.work <= 0 {
						return false
					}
					if equalFold(a, b) {
						keep = append(keep, a)
						break
					}
				}
			}
			cands = keep
		}
		for _, v := range cands {
			if v == "" {
				continue
			}
			var facts Facts
			setStringFact(&facts, f, v)
			all := true
			for _, l := range lits {
				if c.work--; c.work <= 0 {
					return false
				}
				if evalCond(l.n, &facts) == l.neg {
					all = false
					break
				}
			}
			if all {
				return false
			}
		}
		return true
	}

	for i, a := range prefixes {
		for _, b := range prefixes[i+1:] {
			if !hasPrefixFold(a, b) && !hasPrefixFold(b, a) {
				return true
			}
		}
	}
	for i, a := range suffixes {
		for _, b := range suffixes[i+1:] {
			if !hasSuffixFold(a, b) && !hasSuffixFold(b, a) {
				return true
			}
		}
	}
	if f == fMAC { // a MAC has 17 characters: an overlapping prefix and suffix must agree
		for _, p := range prefixes {
			for _, s := range suffixes {
				if over := len(p) + len(s) - 17; over > 0 && len(p) <= 17 && len(s) <= 17 && !equalFold(p[len(p)-over:], s[:over]) {
					return true
				}
			}
		}
	}
	for _, np := range nPrefixes {
		if np == "" {
			return true
		}
		for _, p := range prefixes {
			if hasPrefixFold(p, np) {
				return true
			}
		}
	}
	for _, ns := range nSuffixes {
		if ns == "" {
			return true
		}
		for _, s := range suffixes {
			if hasSuffixFold(s, ns) {
				return true
			}
		}
	}
	for _, nc := range nContains {
		for _, list := range [][]string{prefixes, suffixes, contains} {
			for _, s := range list {
				if containsFold(s, nc) {
					return true
				}
			}
		}
	}
	for _, ng := range nGlobs {
		for _, g := range globs {
			if equalFold(g, ng) {
				return true
			}
		}
	}
	return false
}

// setStringFact sets a string-valued fact.
func setStringFact(f *Facts, fl field, v string) {
	switch fl {
	case fMAC:
		f.MAC = v
	case fMaker:
		f.Maker = v
	case fModel:
		f.Model = v
	case fSerial:
		f.Serial = v
	case fUUID:
		f.UUID = v
	case fAsset:
		f.Asset = v
	case fArch, fFirmware:
		f.Arch = v
	case fName:
		f.Name = v
	}
}
