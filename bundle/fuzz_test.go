package bundle

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/preboot/preboot/store"
)

// FuzzNormalize feeds arbitrary JSON — what an API client can send as a
// bundle's params — to every kind: no panic, and what Normalize accepts
// normalizes to itself (the stored form is stable).
func FuzzNormalize(f *testing.F) {
	for _, s := range []string{`{"image":"win11","partitions":[1,2]}`, `{"script":"echo hi","timeout":"5m"}`,
		`{"kernel":"boot/k","initrd":["a","b"],"cmdline":"x"}`, `{"chain":"http://x/y.ipxe"}`, `{"confirm":true,"mode":"discard"}`,
		`{"image":"a","min_clients":3,"max_wait":60}`, `null`, `[]`, `{"timeout":1e300}`, `{"partitions":[-1]}`,
		`{"kernel":"k","cmdline":"pw={{secret:pw}}","secrets":{"pw":"x"},"secrets_in_boot_script":true}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		for _, kind := range store.BundleKinds {
			out, err := Normalize(kind, json.RawMessage(raw))
			if err != nil {
				continue
			}
			again, err := Normalize(kind, out)
			if err != nil {
				t.Fatalf("%s: normalized params %s refused: %v", kind, out, err)
			}
			if !bytes.Equal(out, again) {
				t.Fatalf("%s: not stable: %s then %s", kind, out, again)
			}
			// Secrets: redacted, every value is the marker; sent back
			// over the stored params, they normalize to the stored form.
			red := Redact(kind, out)
			if p, err := Decode(kind, red); err != nil {
				t.Fatalf("%s: redacted params %s refused: %v", kind, red, err)
			} else if o, ok := p.(*OSInstall); ok {
				for n, v := range o.Secrets {
					if v != SecretMarker {
						t.Fatalf("secret %s not redacted: %s", n, red)
					}
				}
			}
			kept, err := KeepSecrets(kind, red, out)
			if err != nil {
				t.Fatalf("%s: redacted params %s not kept: %v", kind, red, err)
			}
			if back, err := Normalize(kind, kept); err != nil || !bytes.Equal(back, out) {
				t.Fatalf("%s: round trip %s → %s → %s (%v)", kind, out, red, back, err)
			}
		}
	})
}
