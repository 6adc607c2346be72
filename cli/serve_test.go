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
