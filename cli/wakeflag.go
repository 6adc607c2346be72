package cli

import (
	"fmt"
	"strings"

	"github.com/preboot/preboot/config"
)

// wakeRelaysFlag is --wake-relay, repeatable:
// SUBNET=URL[,fingerprint=sha256:HEX][,token-file=FILE] adds one of
// wake.relays. Its address is the config field's, so the flag writes it.
type wakeRelaysFlag []config.WakeRelay

func (f *wakeRelaysFlag) Type() string { return "SUBNET=URL[,fingerprint=…][,token-file=…]" }

func (f *wakeRelaysFlag) String() string {
	parts := make([]string, 0, len(*f))
	for _, r := range *f {
		s := r.Subnet + "=" + r.URL
		if r.Fingerprint != "" {
			s += ",fingerprint=" + r.Fingerprint
		}
		if r.TokenFile != "" {
			s += ",token-file=" + r.TokenFile
		}
		parts = append(parts, s)
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// Set parses one relay; the values themselves are checked with the rest
// of the configuration (config.Wake's check), which names the field.
func (f *wakeRelaysFlag) Set(v string) error {
	subnet, rest, ok := strings.Cut(v, "=")
	if !ok || subnet == "" || rest == "" {
		return fmt.Errorf("%q: want SUBNET=URL[,fingerprint=sha256:HEX][,token-file=FILE]", v)
	}
	fields := strings.Split(rest, ",")
	r := config.WakeRelay{Subnet: strings.TrimSpace(subnet), URL: strings.TrimSpace(fields[0])}
	for _, kv := range fields[1:] {
		k, val, ok := strings.Cut(kv, "=")
		switch k = strings.TrimSpace(k); {
		case !ok:
			return fmt.Errorf("%q: %q is not KEY=VALUE (fingerprint or token-file)", v, kv)
		case k == "fingerprint":
			r.Fingerprint = strings.TrimSpace(val)
		case k == "token-file":
			r.TokenFile = strings.TrimSpace(val)
		default:
			return fmt.Errorf("%q: unknown key %q (want fingerprint or token-file)", v, k)
		}
	}
	*f = append(*f, r)
	return nil
}
