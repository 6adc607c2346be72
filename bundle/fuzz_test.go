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
		`{"image":"a","min_clients":3,"max_wait":60}`, `null`, `[]`, `{"timeout":1e300}`, `{"partitions":[-1]}`} {
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
		}
	})
}
