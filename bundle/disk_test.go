package bundle

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
)

func TestParseSizeRule(t *testing.T) {
	const G, T = 1 << 30, 1 << 40
	for _, c := range []struct {
		in       string
		min, max int64
		pick     string
	}{
		{">=200G", 200 * G, math.MaxInt64, ""},
		{"<=1T", 0, T, ""},
		{"200G-600G", 200 * G, 600 * G, ""},
		{"200GB-600GB", 200e9, 600e9, ""},
		{">100GiB", 100*G + 1, math.MaxInt64, ""},
		{"<1.5T", 0, 3*T/2 - 1, ""},
		{" >= 500 MB ", 500e6, math.MaxInt64, ""},
		{"1024-2048", 1024, 2048, ""},
		{"largest", 0, math.MaxInt64, "largest"},
		{"Smallest", 0, math.MaxInt64, "smallest"},
		{"10K-1M", 10 << 10, 1 << 20, ""},
		{"1TB-1P", 1e12, 1 << 50, ""},
	} {
		r, err := ParseSizeRule(c.in)
		if err != nil {
			t.Errorf("%q: %v", c.in, err)
			continue
		}
		if r.Min != c.min || r.Max != c.max || r.Pick != c.pick {
			t.Errorf("%q: got %+v, want min %d max %d pick %q", c.in, r, c.min, c.max, c.pick)
		}
	}
	for in, want := range map[string]string{
		"":                        "empty",
		"200G":                    "a bare size matches no real disk",
		"600G-200G":               "low end",
		">=200X":                  "want a number",
		"<0":                      "smaller than 0",
		">=-5G":                   "want a number",
		"biggest":                 "a bare size",
		">=5i":                    "a unit without",
		">=1e3G":                  "want a number",
		">=99999999999999999999T": "too large",
	} {
		_, err := ParseSizeRule(in)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want an error with %q", in, err, want)
		}
	}
}

func TestSizeRuleMatch(t *testing.T) {
	r, _ := ParseSizeRule("200G-600G")
	if r.Match(200<<30-1) || !r.Match(200<<30) || !r.Match(600<<30) || r.Match(600<<30+1) {
		t.Fatalf("range bounds are not inclusive: %+v", r)
	}
}

func TestDiskRuleValidate(t *testing.T) {
	for raw, want := range map[string]string{
		`{"image":"a","disk":{}}`:                                                "disk: an empty rule",
		`{"image":"a","disk":{"size":"big"}}`:                                    "disk.size: \"big\"",
		`{"image":"a","disk":{"serial":"S*"}}`:                                   "disk.serial \"S*\": a serial is matched exactly",
		`{"image":"a","disk":{"wwn":"0x5?"}}`:                                    "disk.wwn \"0x5?\"",
		`{"image":"a","disk":{"model":" Samsung"}}`:                              "disk.model \" Samsung\": want 1-128 printable",
		`{"image":"a","disk":{"serial":"a\nb"}}`:                                 "disk.serial",
		`{"image":"a","disk":{"model":"x"},"partitions":[1],"personalize":true}`: "personalize: only with a whole-disk restore",
		`{"image":"a","disk":{"colour":"red"}}`:                                  "unknown field \"colour\"",
	} {
		_, err := Normalize("image-restore", json.RawMessage(raw))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want an error with %q", raw, err, want)
		}
	}
	for _, kind := range []string{"image-restore", "image-capture", "multicast"} {
		raw := `{"image":"a","disk":{"serial":"S3Z9NX0M123456","wwn":"0x5002538e40a1b2c3","model":"Samsung SSD 8?0*","size":">=200G"}}`
		switch kind {
		case "image-capture":
			raw = `{"image":"a","disk":{"model":"Samsung*","size":"largest"}}`
		case "multicast":
			raw = `{"image":"a","min_clients":2,"personalize":true,"disk":{"size":"<=1TB"}}`
		}
		out, err := Normalize(kind, json.RawMessage(raw))
		if err != nil {
			t.Fatalf("%s: %v", kind, err)
		}
		if !strings.Contains(string(out), `"disk":{`) {
			t.Errorf("%s: the disk rule was dropped: %s", kind, out)
		}
	}
	out, err := Normalize("image-restore", json.RawMessage(`{"image":"a","personalize":true}`))
	if err != nil || !strings.Contains(string(out), `"personalize":true`) {
		t.Fatalf("personalize: %s %v", out, err)
	}
}

func TestDiskRuleString(t *testing.T) {
	r := &DiskRule{Serial: "S1", Size: "largest"}
	if got := r.String(); got != `serial="S1" size="largest"` {
		t.Errorf("got %s", got)
	}
	var z *DiskRule
	if !z.IsZero() || z.Explicit() || !strings.Contains(z.String(), "first fixed disk") {
		t.Error("nil rule")
	}
	if !(&DiskRule{WWN: "x"}).Explicit() || (&DiskRule{Model: "x"}).Explicit() {
		t.Error("Explicit")
	}
}

func TestValidHostname(t *testing.T) {
	for in, want := range map[string]string{
		"Lab PC 12":                    "lab-pc-12",
		"--web_01.example.com--":       "web-01-example-com",
		"ÄÖÜ":                          "",
		"a" + strings.Repeat("b", 80):  "a" + strings.Repeat("b", 62),
		strings.Repeat("x", 62) + "-y": strings.Repeat("x", 62),
		"":                             "",
	} {
		if got := ValidHostname(in); got != want {
			t.Errorf("ValidHostname(%q) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string]string{
		"lab-workstation-0042": "LAB-WORKSTATION",
		"Lab PC 12":            "LAB-PC-12",
		"12345":                "PC-12345",
		"abcdefghijklmn-p":     "ABCDEFGHIJKLMN",
	} {
		if got := NetBIOSName(in); got != want {
			t.Errorf("NetBIOSName(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzParseSizeRule: a size rule comes from an API client; it never
// panics, and what parses is a sane interval.
func FuzzParseSizeRule(f *testing.F) {
	for _, s := range []string{">=200G", "<=1T", "200G-600G", "largest", "<1.5TB", ">0", "1-1", "99999999999999999999P-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseSizeRule(s)
		if err != nil {
			return
		}
		if r.Min < 0 || r.Max < r.Min {
			t.Fatalf("%q: bad interval %+v", s, r)
		}
		if _, err := ParseSize(s); err == nil && r.Pick == "" && !strings.ContainsAny(s, "<>-") {
			t.Fatalf("%q: a bare size was accepted as a rule", s)
		}
	})
}
