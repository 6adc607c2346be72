package replica

import (
	"fmt"
	"path"
	"strings"

	"github.com/preboot/preboot/image/httpstore"
)

// Selector says which upstream images a site keeps: every image, or those
// matching any of a list of terms. A term is an image name or a shell
// pattern on names (lab-*), or label:KEY=VALUE, which matches images whose
// current version's source metadata (the manifest's "source": mac,
// hostname, device_id…) has KEY set to VALUE.
type Selector struct {
	all   bool
	terms []term
}

type term struct {
	pattern    string // name or glob
	key, value string // label:KEY=VALUE when key != ""
}

// ParseSelector parses "all" or a comma-separated list of terms
// (NAME, PATTERN, label:KEY=VALUE). The empty string is "all".
func ParseSelector(s string) (Selector, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "all" {
		return Selector{all: true}, nil
	}
	var sel Selector
	for _, raw := range strings.Split(s, ",") {
		t := strings.TrimSpace(raw)
		if t == "" {
			continue
		}
		if t == "all" {
			return Selector{all: true}, nil
		}
		if rest, ok := strings.CutPrefix(t, "label:"); ok {
			k, v, found := strings.Cut(rest, "=")
			if !found || k == "" {
				return Selector{}, fmt.Errorf("replicate: %q: want label:KEY=VALUE", t)
			}
			sel.terms = append(sel.terms, term{key: k, value: v})
			continue
		}
		if _, err := path.Match(t, ""); err != nil {
			return Selector{}, fmt.Errorf("replicate: %q: bad pattern: %w", t, err)
		}
		sel.terms = append(sel.terms, term{pattern: t})
	}
	if len(sel.terms) == 0 {
		return Selector{}, fmt.Errorf("replicate: %q names no image", s)
	}
	return sel, nil
}

// All reports whether the selector takes every image.
func (s Selector) All() bool { return s.all }

// Match reports whether the image described by info is selected.
func (s Selector) Match(info httpstore.ImageInfo) bool {
	if s.all {
		return true
	}
	for _, t := range s.terms {
		if t.key != "" {
			if v, ok := info.Source[t.key]; ok && v == t.value {
				return true
			}
			continue
		}
		if ok, _ := path.Match(t.pattern, info.Name); ok {
			return true
		}
	}
	return false
}

// String is the selector as ParseSelector reads it.
func (s Selector) String() string {
	if s.all {
		return "all"
	}
	parts := make([]string, 0, len(s.terms))
	for _, t := range s.terms {
		if t.key != "" {
			parts = append(parts, "label:"+t.key+"="+t.value)
		} else {
			parts = append(parts, t.pattern)
		}
	}
	return strings.Join(parts, ",")
}
