package rules

import (
	"unicode"
	"unicode/utf8"
)

// The comparisons below are case-insensitive (Unicode simple folding, as
// strings.EqualFold) and never allocate. Unlike strings.EqualFold they
// treat two different invalid UTF-8 bytes as different, so that the
// never-match analysis (which reasons with the same functions) stays
// sound on facts that are not valid UTF-8.

// decode returns the rune at the start of s and its width; an invalid
// byte b is returned as -1-b so that it only equals the same byte.
func decode(s string) (rune, int) {
	if c := s[0]; c < utf8.RuneSelf {
		return rune(c), 1
	}
	r, n := utf8.DecodeRuneInString(s)
	if r == utf8.RuneError && n == 1 {
		return -1 - rune(s[0]), 1
	}
	return r, n
}

// decodeLast is decode for the last rune of s.
func decodeLast(s string) (rune, int) {
	if c := s[len(s)-1]; c < utf8.RuneSelf {
		return rune(c), 1
	}
	r, n := utf8.DecodeLastRuneInString(s)
	if r == utf8.RuneError && n == 1 {
		return -1 - rune(s[len(s)-1]), 1
	}
	return r, n
}

// foldEq reports whether two runes (as returned by decode) are equal
// under simple case folding.
func foldEq(a, b rune) bool {
	if a == b {
		return true
	}
	if a < 0 || b < 0 {
		return false
	}
	if b < a {
		a, b = b, a
	}
	if b < utf8.RuneSelf {
		return 'A' <= a && a <= 'Z' && b == a+'a'-'A'
	}
	r := unicode.SimpleFold(a)
	for r != a && r < b {
		r = unicode.SimpleFold(r)
	}
	return r == b
}

// prefixLen reports whether s starts with p (folded) and, if so, how many
// bytes of s the prefix covers.
func prefixLen(s, p string) (int, bool) {
	// ASCII fast path, byte by byte.
	i := 0
	for i < len(p) && i < len(s) {
		a, b := s[i], p[i]
		if a|b >= utf8.RuneSelf {
			break
		}
		if a != b {
			if 'A' <= a && a <= 'Z' {
				a += 'a' - 'A'
			}
			if 'A' <= b && b <= 'Z' {
				b += 'a' - 'A'
			}
			if a != b {
				return 0, false
			}
		}
		i++
	}
	p = p[i:]
	for len(p) > 0 {
		if i >= len(s) {
			return 0, false
		}
		a, n := decode(s[i:])
		b, m := decode(p)
		if !foldEq(a, b) {
			return 0, false
		}
		i += n
		p = p[m:]
	}
	return i, true
}

// equalFold reports whether s and t are equal under case folding.
func equalFold(s, t string) bool {
	if s == t {
		return true
	}
	n, ok := prefixLen(s, t)
	return ok && n == len(s)
}

// hasPrefixFold reports whether s starts with p, ignoring case.
func hasPrefixFold(s, p string) bool {
	_, ok := prefixLen(s, p)
	return ok
}

// hasSuffixFold reports whether s ends with p, ignoring case.
func hasSuffixFold(s, p string) bool {
	for len(p) > 0 {
		if len(s) == 0 {
			return false
		}
		a, n := decodeLast(s)
		b, m := decodeLast(p)
		if !foldEq(a, b) {
			return false
		}
		s, p = s[:len(s)-n], p[:len(p)-m]
	}
	return true
}

// containsFold reports whether sub occurs in s, ignoring case.
func containsFold(s, sub string) bool {
	for i := 0; ; {
		if hasPrefixFold(s[i:], sub) {
			return true
		}
		if i >= len(s) {
			return false
		}
		_, n := decode(s[i:])
		i += n
	}
}

// globFold reports whether s matches the glob pattern pat as a whole,
// ignoring case: '*' matches any run of characters (also none), '?'
// exactly one character, every other character itself. It runs in
// O(len(pat)·len(s)) without recursion or allocation.
func globFold(pat, s string) bool {
	px, sx := 0, 0
	nextPx, nextSx := 0, -1 // where to resume after the last '*'
	for px < len(pat) || sx < len(s) {
		if px < len(pat) {
			switch c := pat[px]; c {
			case '*':
				nextPx, nextSx = px, sx+1
				if sx < len(s) {
					_, n := decode(s[sx:])
					nextSx = sx + n
				}
				px++
				continue
			case '?':
				if sx < len(s) {
					_, n := decode(s[sx:])
					px, sx = px+1, sx+n
					continue
				}
			default:
				if sx < len(s) {
					a, n := decode(s[sx:])
					b, m := decode(pat[px:])
					if foldEq(a, b) {
						px, sx = px+m, sx+n
						continue
					}
				}
			}
		}
		if nextSx > 0 && nextSx <= len(s) {
			px, sx = nextPx, nextSx
			continue
		}
		return false
	}
	return true
}

// isWild reports whether a glob pattern has wildcards.
func isWild(pat string) bool {
	for i := 0; i < len(pat); i++ {
		if pat[i] == '*' || pat[i] == '?' {
			return true
		}
	}
	return false
}
