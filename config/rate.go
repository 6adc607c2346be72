package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// BitRate is a rate in bits per second, written like 500M or 1G (decimal
// units: K = 1,000).
type BitRate int64

// ParseBitRate reads "500M", "1.5G", "20000k", "18mbit" or a plain number
// of bits per second.
func ParseBitRate(s string) (BitRate, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	t = strings.TrimSuffix(strings.TrimSuffix(t, "bit/s"), "bit")
	t = strings.TrimSuffix(t, "bps")
	mult := 1.0
	switch {
	case strings.HasSuffix(t, "k"):
		mult, t = 1e3, t[:len(t)-1]
	case strings.HasSuffix(t, "m"):
		mult, t = 1e6, t[:len(t)-1]
	case strings.HasSuffix(t, "g"):
		mult, t = 1e9, t[:len(t)-1]
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(t), 64)
	if err != nil || v <= 0 || math.IsInf(v, 0) || math.IsNaN(v) || v*mult > 1e12 {
		return 0, fmt.Errorf("%q is not a rate such as 500M (bits per second; units K, M, G)", s)
	}
	return BitRate(v * mult), nil
}

// String writes the rate with the largest unit that divides it.
func (r BitRate) String() string {
	for _, u := range []struct {
		s string
		m int64
	}{{"G", 1e9}, {"M", 1e6}, {"K", 1e3}} {
		if r != 0 && int64(r)%u.m == 0 {
			return strconv.FormatInt(int64(r)/u.m, 10) + u.s
		}
	}
	return strconv.FormatInt(int64(r), 10)
}

// Set implements pflag.Value.
func (r *BitRate) Set(s string) error {
	v, err := ParseBitRate(s)
	if err != nil {
		return err
	}
	*r = v
	return nil
}

// Type implements pflag.Value.
func (r *BitRate) Type() string { return "rate" }

// UnmarshalYAML accepts a number or a string with a unit.
func (r *BitRate) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: want a rate such as 500M", n.Line)
	}
	v, err := ParseBitRate(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*r = v
	return nil
}

// MarshalYAML writes the rate with its unit.
func (r BitRate) MarshalYAML() (any, error) { return r.String(), nil }
