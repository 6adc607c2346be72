package bundle

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/preboot/preboot/store"
)

func TestNormalize(t *testing.T) {
	for _, c := range []struct {
		kind, params string
		want         []string // substrings of the result, or of the error when bad
		bad          bool
	}{
		{store.KindImageRestore, `{"image":"win11"}`, []string{`"after":"reboot"`}, false},
		{store.KindImageRestore, `{"image":"win11","partitions":[2,3],"device":"/dev/nvme0n1","after":"poweroff"}`, []string{`"partitions":[2,3]`, `"poweroff"`}, false},
		{store.KindImageRestore, `{}`, []string{"image: required"}, true},
		{store.KindImageRestore, `{"image":"../etc"}`, []string{"image name"}, true},
		{store.KindImageRestore, `{"image":"a","partitions":[0]}`, []string{"not a partition number"}, true},
		{store.KindImageRestore, `{"image":"a","partitions":[1,1]}`, []string{"twice"}, true},
		{store.KindImageRestore, `{"image":"a","device":"sda"}`, []string{"/dev path"}, true},
		{store.KindImageRestore, `{"image":"a","after":"dance"}`, []string{"after"}, true},
		{store.KindImageRestore, `{"image":"a","colour":"red"}`, []string{"unknown field"}, true},
		{store.KindImageCapture, `{"image":"base","compression":25}`, []string{"compression 25"}, true},
		{store.KindScript, `{"script":"  "}`, []string{"script: required"}, true},
		{store.KindScript, `{"script":"echo hi","timeout":"2m"}`, []string{`"timeout":"2m0s"`}, false},
		{store.KindScript, `{"script":"echo hi"}`, []string{`"timeout":"1h0m0s"`}, false},
		{store.KindMulticast, `{"image":"a"}`, []string{"never starts"}, true},
		{store.KindMulticast, `{"image":"a","min_clients":5}`, []string{`"min_clients":5`}, false},
		{store.KindOSInstall, `{}`, []string{"one is required"}, true},
		{store.KindOSInstall, `{"kernel":"k","chain":"http://x"}`, []string{"not both"}, true},
		{store.KindOSInstall, `{"chain":"ftp://x"}`, []string{"want an http"}, true},
		{store.KindOSInstall, `{"chain":"http://x/a.ipxe","cmdline":"q"}`, []string{"only with kernel"}, true},
		{store.KindOSInstall, `{"kernel":"boot/k;shell"}`, []string{"must not contain"}, true},
		{store.KindOSInstall, `{"kernel":"../../k"}`, []string{"inside the TFTP root"}, true},
		{store.KindOSInstall, `{"kernel":"k","cmdline":"a\nb"}`, []string{"one line"}, true},
		{store.KindOSInstall, `{"chain":"http://x/a.ipxe","loader":"pxelinux"}`, []string{"cannot chain"}, true},
		{store.KindOSInstall, `{"kernel":"boot/k","initrd":["boot/i"]}`, []string{`"loader":"ipxe"`}, false},
		{store.KindWipe, `{"mode":"zero"}`, []string{"set confirm to true"}, true},
		{store.KindWipe, `{"mode":"shred","confirm":true}`, []string{"mode"}, true},
		{store.KindWipe, `{"confirm":true,"disks":["/dev/sda"]}`, []string{`"mode":"zero"`}, false},
		{store.KindInventory, ``, []string{`"after":"reboot"`}, false},
		{store.KindLocalBoot, `null`, []string{`{}`}, false},
		{store.KindLocalBoot, `{"x":1}`, []string{"unknown field"}, true},
		{store.KindLocalBoot, `{"method":"exit"}`, []string{`{"method":"exit"}`}, false},
		{store.KindLocalBoot, `{"method":"sanboot"}`, []string{`{"method":"sanboot"}`}, false},
		{store.KindLocalBoot, `{"method":"grub"}`, []string{`{"method":"grub"}`}, false},
		{store.KindLocalBoot, `{"method":""}`, []string{`{}`}, false},
		{store.KindLocalBoot, `{"method":"reboot"}`, []string{"method \"reboot\""}, true},
		{"teleport", `{}`, []string{"kind \"teleport\""}, true},
	} {
		out, err := Normalize(c.kind, json.RawMessage(c.params))
		text := string(out)
		if err != nil {
			text = err.Error()
		}
		if (err != nil) != c.bad {
			t.Errorf("%s %s: err %v, out %s", c.kind, c.params, err, out)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(text, w) {
				t.Errorf("%s %s: %q lacks %q", c.kind, c.params, text, w)
			}
		}
	}
}

func TestEveryKindHasParams(t *testing.T) {
	for _, k := range store.BundleKinds {
		if _, err := New(k); err != nil {
			t.Errorf("%s: %v", k, err)
		}
	}
	if name, reads := Image(store.KindImageRestore, json.RawMessage(`{"image":"x"}`)); name != "x" || !reads {
		t.Errorf("Image(restore) = %q %v", name, reads)
	}
	if name, reads := Image(store.KindImageCapture, json.RawMessage(`{"image":"x"}`)); name != "x" || reads {
		t.Errorf("Image(capture) = %q %v", name, reads)
	}
	for _, bad := range []string{"", "a b", "-x", strings.Repeat("a", 65), "a/b"} {
		if ValidName("bundle", bad) == nil {
			t.Errorf("ValidName(%q) accepted", bad)
		}
	}
}
