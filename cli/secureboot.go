package cli

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/spf13/pflag"

	"github.com/preboot/preboot/store"
)

// secureBootFlags are `preboot settings set`'s Secure Boot flags.
type secureBootFlags struct {
	def                    string
	devices, groups, rules []string
}

func (f *secureBootFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.def, "secure-boot", "", "which UEFI x64 clients boot Debian's signed shim → GRUB instead of iPXE, by default: auto (learnt per device), on or off")
	fs.StringArrayVar(&f.devices, "secure-boot-device", nil, "MAC=auto|on|off: the Secure Boot path of one device (repeatable; auto removes the setting)")
	fs.StringArrayVar(&f.groups, "secure-boot-group", nil, "GROUP=auto|on|off: the Secure Boot path of a group's devices (repeatable)")
	fs.StringArrayVar(&f.rules, "secure-boot-rule", nil, "RULE=auto|on|off: the Secure Boot path of the unregistered devices a rule takes charge of (repeatable)")
}

func (f *secureBootFlags) changed(fs *pflag.FlagSet) bool {
	return fs.Changed("secure-boot") || fs.Changed("secure-boot-device") || fs.Changed("secure-boot-group") || fs.Changed("secure-boot-rule")
}

// apply changes sb by the given flags; the server validates the result.
func (f *secureBootFlags) apply(fs *pflag.FlagSet, sb *store.SecureBoot) error {
	if fs.Changed("secure-boot") {
		sb.Default = f.def
	}
	for _, x := range []struct {
		flag string
		vals []string
		m    *map[string]string
	}{{"secure-boot-device", f.devices, &sb.Devices}, {"secure-boot-group", f.groups, &sb.Groups}, {"secure-boot-rule", f.rules, &sb.Rules}} {
		for _, v := range x.vals {
			k, mode, ok := strings.Cut(v, "=")
			if !ok || k == "" {
				return fmt.Errorf("--%s %q: want NAME=auto|on|off", x.flag, v)
			}
			if *x.m == nil {
				*x.m = map[string]string{}
			}
			if mode == store.SecureBootAuto {
				delete(*x.m, k)
				if x.flag == "secure-boot-device" {
					if mac, err := store.NormalizeMAC(k); err == nil {
						delete(*x.m, mac)
					}
				}
				continue
			}
			(*x.m)[k] = mode
		}
	}
	return nil
}

// secureBootText is the settings' Secure Boot line.
func secureBootText(sb store.SecureBoot) string {
	def := sb.Default
	if def == "" {
		def = store.SecureBootAuto
	}
	out := "default " + def
	for _, x := range []struct {
		name string
		m    map[string]string
	}{{"device", sb.Devices}, {"group", sb.Groups}, {"rule", sb.Rules}} {
		for _, k := range slices.Sorted(maps.Keys(x.m)) {
			out += fmt.Sprintf(", %s %s %s", x.name, k, x.m[k])
		}
	}
	return out
}
