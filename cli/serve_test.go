package cli

import (
	"reflect"
	"testing"

	"github.com/spf13/pflag"

	"github.com/preboot/preboot/config"
)

// Every configuration key must also be settable by a flag.
func TestEveryConfigKeyHasAFlag(t *testing.T) {
	var c config.Config
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	serveFlags(fs, &c)
	bound := map[uintptr]bool{}
	fs.VisitAll(func(f *pflag.Flag) {
		bound[reflect.ValueOf(f.Value).Pointer()] = true
		// Slice flags (pflag's stringSliceValue...) hold a pointer to the field.
		if v := reflect.ValueOf(f.Value).Elem(); v.Kind() == reflect.Struct {
			if p := v.FieldByName("value"); p.IsValid() && p.Kind() == reflect.Pointer {
				bound[p.Pointer()] = true
			}
		}
	})
	var walk func(v reflect.Value, path string)
	walk = func(v reflect.Value, path string) {
		for i := range v.NumField() {
			f, ft := v.Field(i), v.Type().Field(i)
			p := path + ft.Tag.Get("yaml")
			if f.Kind() == reflect.Struct {
				walk(f, p+".")
				continue
			}
			if !bound[f.Addr().Pointer()] {
				t.Errorf("config key %s has no flag", p)
			}
		}
	}
	walk(reflect.ValueOf(&c).Elem(), "")
}

func TestWakeRelayFlag(t *testing.T) {
	var c config.Config
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	serveFlags(fs, &c)
	err := fs.Parse([]string{
		"--wake-relay", "10.2.0.0/24=https://10.2.0.5:8443,fingerprint=sha256:ab,token-file=/etc/relay.token",
		"--wake-relay", "10.3.0.0/24=https://10.3.0.5:8443",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []config.WakeRelay{
		{Subnet: "10.2.0.0/24", URL: "https://10.2.0.5:8443", Fingerprint: "sha256:ab", TokenFile: "/etc/relay.token"},
		{Subnet: "10.3.0.0/24", URL: "https://10.3.0.5:8443"},
	}
	if !reflect.DeepEqual(c.Wake.Relays, want) {
		t.Fatalf("relays = %+v, want %+v", c.Wake.Relays, want)
	}
	for _, bad := range []string{"10.2.0.0/24", "=https://x", "10.2.0.0/24=https://x,pin", "10.2.0.0/24=https://x,color=red"} {
		fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
		var c config.Config
		serveFlags(fs, &c)
		if err := fs.Parse([]string{"--wake-relay", bad}); err == nil {
			t.Errorf("--wake-relay %q accepted", bad)
		}
	}
}
