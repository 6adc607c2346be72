package rules

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

type tokKind uint8

const (
	tEOF    tokKind = iota
	tWord           // a bare word: field name, keyword or value
	tString         // a double-quoted string (text is unescaped)
	tLParen
	tRParen
	tComma
	tAnd // &&
	tOr  // ||
	tNot // !
	tOp  // comparison operator; text is its canonical spelling
)

type token struct {
	kind tokKind
	text string
	pos  int // byte offset in the source
}

// describe names a token for error messages.
func (t token) describe() string {
	switch t.kind {
	case tEOF:
		return "the end of the expression"
	case tWord:
		return "\"" + t.text + "\""
	case tString:
		return "the string " + quote(t.text)
	case tLParen:
		return "\"(\""
	case tRParen:
		return "\")\""
	case tComma:
		return "\",\""
	case tAnd:
		return "\"&&\""
	case tOr:
		return "\"||\""
	case tNot:
		return "\"!\""
	default:
		return "\"" + t.text + "\""
	}
}

// bareRune reports whether r may appear in a bare (unquoted) word.
func bareRune(r rune) bool {
	return r < utf8.RuneSelf && ('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || strings.ContainsRune("._:/-*?+@#%", r)) ||
		r >= utf8.RuneSelf && (unicode.IsLetter(r) || unicode.IsDigit(r))
}

// lex splits src into tokens, ending with a tEOF token.
func lex(src string) ([]token, error) {
	var toks []token
	for i := 0; i < len(src); {
		c := src[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '(':
			toks = append(toks, token{kind: tLParen, text: "(", pos: i})
			i++
		case c == ')':
			toks = append(toks, token{kind: tRParen, text: ")", pos: i})
			i++
		case c == ',':
			toks = append(toks, token{kind: tComma, text: ",", pos: i})
			i++
		case c == '"':
			t, n, err := lexString(src, i)
			if err != nil {
				return nil, err
			}
			toks = append(toks, t)
			i += n
		case c == '&' || c == '|':
			if i+1 >= len(src) || src[i+1] != c {
				return nil, syntaxErr(src, i, "expected %q, found a single %q", string([]byte{c, c}), string(c))
			}
			k := tAnd
			if c == '|' {
				k = tOr
			}
			toks = append(toks, token{kind: k, text: src[i : i+2], pos: i})
			i += 2
		case c == '!':
			if i+1 < len(src) && src[i+1] == '=' {
				toks = append(toks, token{kind: tOp, text: "!=", pos: i})
				i += 2
			} else {
				toks = append(toks, token{kind: tNot, text: "!", pos: i})
				i++
			}
		case c == '=':
			n := 1
			if i+1 < len(src) && src[i+1] == '=' {
				n = 2 // "==" is accepted for "="
			}
			toks = append(toks, token{kind: tOp, text: "=", pos: i})
			i += n
		case c == '<' || c == '>':
			if i+1 < len(src) && src[i+1] == '=' {
				toks = append(toks, token{kind: tOp, text: src[i : i+2], pos: i})
				i += 2
			} else {
				toks = append(toks, token{kind: tOp, text: src[i : i+1], pos: i})
				i++
			}
		case c == '^' || c == '$' || c == '~':
			if i+1 >= len(src) || src[i+1] != '=' {
				return nil, syntaxErr(src, i, "expected \"%c=\", found %q alone", c, string(c))
			}
			toks = append(toks, token{kind: tOp, text: src[i : i+2], pos: i})
			i += 2
		default:
			r, n := utf8.DecodeRuneInString(src[i:])
			if !bareRune(r) {
				if r == '\'' {
					return nil, syntaxErr(src, i, "unexpected \"'\": strings are written in double quotes")
				}
				return nil, syntaxErr(src, i, "unexpected character %q: quote values that contain it", r)
			}
			start := i
			for i += n; i < len(src); i += n {
				r, n = utf8.DecodeRuneInString(src[i:])
				if !bareRune(r) {
					break
				}
			}
			toks = append(toks, token{kind: tWord, text: src[start:i], pos: start})
		}
	}
	return append(toks, token{kind: tEOF, pos: len(src)}), nil
}

// lexString reads the double-quoted string starting at src[start]; it
// returns the token and the number of source bytes it spans. The only
// escapes are \" and \\.
func lexString(src string, start int) (token, int, error) {
	var b strings.Builder
	for i := start + 1; i < len(src); i++ {
		switch c := src[i]; c {
		case '"':
			return token{kind: tString, text: b.String(), pos: start}, i + 1 - start, nil
		case '\\':
			if i+1 < len(src) && (src[i+1] == '"' || src[i+1] == '\\') {
				b.WriteByte(src[i+1])
				i++
				continue
			}
			return token{}, 0, syntaxErr(src, i, "unknown escape in string: only \\\" and \\\\ are allowed")
		default:
			b.WriteByte(c)
		}
	}
	return token{}, 0, syntaxErr(src, start, "unterminated string: expected a closing '\"'")
}

// quote writes s as a double-quoted string.
func quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' || s[i] == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	b.WriteByte('"')
	return b.String()
}

// isKeyword reports whether s is a keyword; keywords may not be bare
// values.
func isKeyword(s string) bool {
	if len(s) > 5 {
		return false
	}
	switch strings.ToLower(s) {
	case "and", "or", "not", "in", "true", "false":
		return true
	}
	return false
}

// value writes a string value bare when it reads back as the same bare
// word, quoted otherwise.
func value(s string) string {
	if s == "" || isKeyword(s) {
		return quote(s)
	}
	for _, r := range s {
		if !bareRune(r) {
			return quote(s)
		}
	}
	return s
}
