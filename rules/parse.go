package rules

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"unicode/utf8"
)

// ErrSyntax is wrapped by the errors of expressions that are not well
// formed: unknown fields or operators, malformed values, unbalanced
// parentheses.
var ErrSyntax = errors.New("syntax error")

// ErrNeverMatches is wrapped by the errors of expressions that are well
// formed but can never match a device (or have a part that never can):
// contradictions such as `ram > 8GiB and ram < 4GiB`, `x and not x`,
// values a fact never has (an unknown arch, a MAC prefix of 7 bytes),
// comparisons that make no sense for the field (ram with a string, a
// string with <).
var ErrNeverMatches = errors.New("can never match")

// Error is the error Parse returns. errors.Is(err, ErrSyntax) or
// errors.Is(err, ErrNeverMatches) tells which kind it is.
type Error struct {
	Col int    // 1-based column (in characters) of the problem
	Msg string // what is wrong, what was expected
	Err error  // ErrSyntax or ErrNeverMatches
}

func (e *Error) Error() string {
	if e.Err == ErrNeverMatches {
		return fmt.Sprintf("can never match: %s (column %d)", e.Msg, e.Col)
	}
	return fmt.Sprintf("column %d: %s", e.Col, e.Msg)
}

// Unwrap returns ErrSyntax or ErrNeverMatches.
func (e *Error) Unwrap() error { return e.Err }

// column converts a byte offset into a 1-based column in characters.
func column(src string, off int) int {
	if off > len(src) {
		off = len(src)
	}
	return utf8.RuneCountInString(src[:off]) + 1
}

func syntaxErr(src string, off int, format string, args ...any) error {
	return &Error{Col: column(src, off), Msg: fmt.Sprintf(format, args...), Err: ErrSyntax}
}

func neverErr(src string, off int, format string, args ...any) error {
	return &Error{Col: column(src, off), Msg: fmt.Sprintf(format, args...), Err: ErrNeverMatches}
}

// MaxLen is the longest expression Parse accepts, in bytes.
const MaxLen = 64 << 10

// maxDepth bounds the nesting of parentheses and nots.
const maxDepth = 64

// Parse compiles an expression. Its error is an *Error that says where
// (column) and what is wrong; it wraps ErrNeverMatches when the
// expression, or one of its alternatives, can never match a device.
func Parse(s string) (*Expr, error) {
	n, err := parse(s)
	if err != nil {
		return nil, err
	}
	if err := check(s, n); err != nil {
		return nil, err
	}
	return &Expr{root: n}, nil
}

// parse compiles an expression without the never-match analysis.
func parse(src string) (*node, error) {
	if len(src) > MaxLen {
		return nil, syntaxErr(src, MaxLen, "the expression is longer than %d bytes", MaxLen)
	}
	for i, r := range src {
		switch {
		case r == utf8.RuneError:
			if _, n := utf8.DecodeRuneInString(src[i:]); n == 1 {
				return nil, syntaxErr(src, i, "invalid UTF-8")
			}
		case r < 0x20 && r != '\t' && r != '\n' && r != '\r', r == 0x7f:
			return nil, syntaxErr(src, i, "control character %U", r)
		}
	}
	toks, err := lex(src)
	if err != nil {
		return nil, err
	}
	if toks[0].kind == tEOF {
		return nil, syntaxErr(src, 0, "empty expression: write true to match every device")
	}
	p := &parser{src: src, toks: toks}
	n, err := p.or()
	if err != nil {
		return nil, err
	}
	if t := p.peek(); t.kind != tEOF {
		return nil, p.errAt(t, "expected and, or or the end of the expression, found %s", t.describe())
	}
	return n, nil
}

type parser struct {
	src   string
	toks  []token
	i     int
	depth int
}

func (p *parser) peek() token { return p.toks[p.i] }

func (p *parser) next() token {
	t := p.toks[p.i]
	if t.kind != tEOF {
		p.i++
	}
	return t
}

func (p *parser) errAt(t token, format string, args ...any) error {
	return syntaxErr(p.src, t.pos, format, args...)
}

func isWord(t token, kw string) bool { return t.kind == tWord && strings.EqualFold(t.text, kw) }

// appendFlat appends k to kids, or k's children if k is of the same kind.
func appendFlat(kids []*node, k *node, kd kind) []*node {
	if k.kind == kd {
		return append(kids, k.kids...)
	}
	return append(kids, k)
}

// or := and { ("or" | "||") and }
func (p *parser) or() (*node, error) {
	first, err := p.and()
	if err != nil {
		return nil, err
	}
	kids := appendFlat(nil, first, kOr)
	for t := p.peek(); t.kind == tOr || isWord(t, "or"); t = p.peek() {
		p.next()
		k, err := p.and()
		if err != nil {
			return nil, err
		}
		kids = appendFlat(kids, k, kOr)
	}
	if len(kids) == 1 {
		return first, nil
	}
	return &node{kind: kOr, kids: kids, pos: first.pos}, nil
}

// and := unary { ("and" | "&&") unary }
func (p *parser) and() (*node, error) {
	first, err := p.unary()
	if err != nil {
		return nil, err
	}
	kids := appendFlat(nil, first, kAnd)
	for t := p.peek(); t.kind == tAnd || isWord(t, "and"); t = p.peek() {
		p.next()
		k, err := p.unary()
		if err != nil {
			return nil, err
		}
		kids = appendFlat(kids, k, kAnd)
	}
	if len(kids) == 1 {
		return first, nil
	}
	return &node{kind: kAnd, kids: kids, pos: first.pos}, nil
}

// unary := ("not" | "!") unary | primary
func (p *parser) unary() (*node, error) {
	t := p.peek()
	if t.kind != tNot && !isWord(t, "not") {
		return p.primary()
	}
	p.next()
	if p.depth++; p.depth > maxDepth {
		return nil, p.errAt(t, "the expression nests deeper than %d levels", maxDepth)
	}
	k, err := p.unary()
	p.depth--
	if err != nil {
		return nil, err
	}
	return &node{kind: kNot, kids: []*node{k}, pos: t.pos}, nil
}

// primary := "(" or ")" | "true" | "false" | field op value
func (p *parser) primary() (*node, error) {
	t := p.next()
	switch {
	case t.kind == tLParen:
		if p.depth++; p.depth > maxDepth {
			return nil, p.errAt(t, "the expression nests deeper than %d levels", maxDepth)
		}
		n, err := p.or()
		p.depth--
		if err != nil {
			return nil, err
		}
		if c := p.next(); c.kind != tRParen {
			return nil, p.errAt(c, "expected \")\" to close the \"(\" at column %d, found %s", column(p.src, t.pos), c.describe())
		}
		return n, nil
	case isWord(t, "true"):
		return &node{kind: kTrue, pos: t.pos}, nil
	case isWord(t, "false"):
		return &node{kind: kFalse, pos: t.pos}, nil
	case t.kind == tWord && !isKeyword(t.text):
		f, ok := lookupField(t.text)
		if !ok {
			return nil, p.errAt(t, "unknown field %q: the fields are %s", t.text, fieldList)
		}
		return p.cond(t, f)
	}
	return nil, p.errAt(t, "expected a condition such as mac ^= 52:54:00, \"(\", not or true, found %s", t.describe())
}

const opList = "=, !=, ^=, $=, ~=, <, <=, >, >= or in"

// cond := field op value | field "in" ( value | "(" value { "," value } ")" )
func (p *parser) cond(ft token, f field) (*node, error) {
	o := p.next()
	n := &node{kind: kCond, field: f, pos: ft.pos}
	switch {
	case o.kind == tOp:
		n.op, _ = lookupOp(o.text)
	case isWord(o, "in"):
		n.op = opIn
	case o.kind == tNot || isWord(o, "not"):
		return nil, p.errAt(o, "expected an operator (%s) after %s, found %s: to negate a condition put not before it, as in not %s in (…)", opList, f, o.describe(), f)
	default:
		return nil, p.errAt(o, "expected an operator (%s) after %s, found %s", opList, f, o.describe())
	}
	if err := p.checkOp(n, o); err != nil {
		return nil, err
	}
	if n.op != opIn || p.peek().kind != tLParen {
		v, err := p.value(n, o)
		if err != nil {
			return nil, err
		}
		return n, p.set(n, []val{v})
	}
	lp := p.next()
	if p.peek().kind == tRParen {
		return nil, neverErr(p.src, lp.pos, "%s in () has an empty list, which matches nothing", f)
	}
	var vals []val
	for {
		v, err := p.value(n, o)
		if err != nil {
			return nil, err
		}
		vals = append(vals, v)
		t := p.next()
		if t.kind == tRParen {
			break
		}
		if t.kind != tComma {
			return nil, p.errAt(t, "expected \",\" or \")\" in the list opened at column %d, found %s", column(p.src, lp.pos), t.describe())
		}
	}
	return n, p.set(n, vals)
}

// checkOp refuses operators that make no sense for the field.
func (p *parser) checkOp(n *node, o token) error {
	switch f := n.field; {
	case f.isSize():
		if n.op == opPrefix || n.op == opSuffix || n.op == opGlob {
			return neverErr(p.src, o.pos, "%s is a size: compare it with =, !=, <, <=, >, >= or in and a value such as 8GiB, not with %s", f, n.op)
		}
	case f == fIP:
		if n.op != opEq && n.op != opNe && n.op != opIn {
			return neverErr(p.src, o.pos, "ip is an address: use =, != or in (as in ip in 10.1.0.0/16), not %s", n.op)
		}
	case f == fFirmware:
		if n.op != opEq && n.op != opNe && n.op != opIn {
			return neverErr(p.src, o.pos, "firmware is bios or efi: use =, != or in, not %s (or test arch)", n.op)
		}
	default:
		if n.op == opLt || n.op == opLe || n.op == opGt || n.op == opGe {
			return neverErr(p.src, o.pos, "%s is text: %s only compares sizes (ram, disk)", f, n.op)
		}
	}
	return nil
}

// val is a value as written.
type val struct {
	text   string
	quoted bool
	pos    int
}

// value reads one value; for sizes a unit written apart ("4 GiB") is
// joined to its number.
func (p *parser) value(n *node, o token) (val, error) {
	t := p.next()
	switch t.kind {
	case tString:
		return val{text: t.text, quoted: true, pos: t.pos}, nil
	case tWord:
		if isKeyword(t.text) {
			return val{}, p.errAt(t, "expected a value after %s %s, found the keyword %q (quote it to mean the word: %s)", n.field, o.text, t.text, quote(t.text))
		}
		v := val{text: t.text, pos: t.pos}
		if n.field.isSize() {
			if _, err := parseSize(t.text); errors.Is(err, errNoUnit) {
				if u := p.peek(); u.kind == tWord {
					if _, ok := unitMult(u.text); ok {
						p.next()
						v.text += u.text
					}
				}
			}
		}
		return v, nil
	}
	return val{}, p.errAt(t, "expected a value after %s %s, found %s", n.field, o.text, t.describe())
}

// set interprets the values for the node's field and operator.
func (p *parser) set(n *node, vals []val) error {
	for _, v := range vals {
		var err error
		switch {
		case n.field.isSize():
			err = p.setSize(n, v)
		case n.field == fIP:
			err = p.setIP(n, v)
		default:
			err = p.setString(n, v)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (p *parser) setSize(n *node, v val) error {
	if v.quoted {
		return neverErr(p.src, v.pos, "%s is a size: compare it with a size such as 8GiB, not with the string %s", n.field, quote(v.text))
	}
	x, err := parseSize(v.text)
	switch {
	case errors.Is(err, errNoUnit) && x != 0:
		return syntaxErr(p.src, v.pos, "%s needs a unit: %sGiB or %sGB, say (%sB for bytes)", v.text, v.text, v.text, v.text)
	case errors.Is(err, errNoUnit):
	case err != nil && v.text[0] >= '0' && v.text[0] <= '9':
		return syntaxErr(p.src, v.pos, "%v", err)
	case err != nil:
		return neverErr(p.src, v.pos, "%s is a size: compare it with a size such as 8GiB, not with %q", n.field, v.text)
	}
	if x == 0 && (n.op == opEq || n.op == opIn) {
		return neverErr(p.src, v.pos, "%s %s 0: a known %s is never 0 (0 means unknown, and comparisons with unknown facts are false)", n.field, n.op, n.field)
	}
	if n.op == opIn {
		n.nums = append(n.nums, x)
	} else {
		n.num = x
	}
	return nil
}

func (p *parser) setIP(n *node, v val) error {
	if n.op != opIn {
		if strings.Contains(v.text, "/") {
			return syntaxErr(p.src, v.pos, "%q is a subnet: write ip in %s", v.text, v.text)
		}
		a, err := parseAddr(v.text)
		if err != nil {
			return syntaxErr(p.src, v.pos, "%v", err)
		}
		n.addr = a
		return nil
	}
	var pf netip.Prefix
	if strings.Contains(v.text, "/") {
		var err error
		if pf, err = netip.ParsePrefix(v.text); err != nil {
			return syntaxErr(p.src, v.pos, "%q is not a subnet such as 10.1.0.0/16", v.text)
		}
		if a := pf.Addr(); a.Is4In6() && pf.Bits() >= 96 {
			pf = netip.PrefixFrom(a.Unmap(), pf.Bits()-96)
		}
		pf = pf.Masked()
	} else {
		a, err := parseAddr(v.text)
		if err != nil {
			return syntaxErr(p.src, v.pos, "%v", err)
		}
		pf = netip.PrefixFrom(a, a.BitLen())
	}
	n.pfxs = append(n.pfxs, pf)
	return nil
}

func parseAddr(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%q is not an IP address", s)
	}
	if a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("%q: IPv6 zones are not compared, leave out %%%s", s, a.Zone())
	}
	return a.Unmap(), nil
}

func (p *parser) setString(n *node, v val) error {
	s := v.text
	switch n.field {
	case fMAC:
		if n.op == opGlob {
			s = strings.ReplaceAll(strings.ToLower(s), "-", ":")
			if i := strings.IndexFunc(s, func(r rune) bool { return !strings.ContainsRune("0123456789abcdef:*?", r) }); i >= 0 {
				return syntaxErr(p.src, v.pos, "MAC pattern %q: only hex digits, ':', * and ? are allowed", v.text)
			}
			break
		}
		m, nb, err := parseMAC(s)
		if err != nil {
			return syntaxErr(p.src, v.pos, "invalid MAC %q: %v", v.text, err)
		}
		switch {
		case nb > 6:
			return neverErr(p.src, v.pos, "a MAC address has 6 bytes, %s has %d", v.text, nb)
		case nb < 6 && (n.op == opEq || n.op == opNe || n.op == opIn):
			return neverErr(p.src, v.pos, "mac %s %s compares the whole address, which has 6 bytes: for a prefix write mac ^= %s", n.op, v.text, m)
		}
		s = m
	case fArch:
		s = strings.ToLower(s)
		switch n.op {
		case opEq, opNe, opIn:
			if !validArch(s) {
				return neverErr(p.src, v.pos, "unknown firmware architecture %q: expected one of %s or arch-<number>", v.text, strings.Join(archNames(), ", "))
			}
		default:
			probe := &node{kind: kCond, field: fArch, op: n.op, str: s}
			if !archPossible(s, func(a string) bool { return evalCond(probe, &Facts{Arch: a}) }) {
				return neverErr(p.src, v.pos, "no firmware architecture matches arch %s %s (they are %s and arch-<number>)", n.op, value(s), strings.Join(archNames(), ", "))
			}
		}
	case fFirmware:
		s = strings.ToLower(s)
		if s != "bios" && s != "efi" {
			return neverErr(p.src, v.pos, "firmware is bios or efi, never %q", v.text)
		}
	case fUUID:
		if n.op == opEq || n.op == opNe || n.op == opIn {
			if u, ok := normalizeUUID(s); ok {
				s = u
			}
		}
	}
	if s == "" && (n.op == opEq || n.op == opIn) {
		return neverErr(p.src, v.pos, "%s %s \"\": a known %s is never empty (to match devices that did not report it, write not %s ^= \"\")", n.field, n.op, n.field, n.field)
	}
	if n.op == opIn {
		n.strs = append(n.strs, s)
	} else {
		n.str = s
	}
	return nil
}
