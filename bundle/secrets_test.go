package bundle

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/preboot/preboot/store"
)

const secretKernel = `{"kernel":"boot/k","cmdline":"inst.ks=https://ks/x rootpw={{secret:root}} token={{secret:api-1}}",` +
	`"secrets":{"root":"s3cr3t!","api-1":"abc_DEF"},"secrets_in_boot_script":true}`

// TestSecretsValidation: every problem with secrets is listed, and a
// placeholder without secrets_in_boot_script is refused with the reason.
func TestSecretsValidation(t *testing.T) {
	out, err := Normalize(store.KindOSInstall, json.RawMessage(secretKernel))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), `"secrets":{"api-1":"abc_DEF","root":"s3cr3t!"}`) || !strings.Contains(string(out), `"secrets_in_boot_script":true`) {
		t.Fatalf("normalized: %s", out)
	}
	chain := `{"chain":"https://ks.example/boot.ipxe?token={{secret:t}}","secrets":{"t":"x-1"},"secrets_in_boot_script":true}`
	if _, err := Normalize(store.KindOSInstall, json.RawMessage(chain)); err != nil {
		t.Fatalf("chain with a secret: %v", err)
	}

	for _, c := range []struct {
		name, params string
		want         []string
	}{
		{"no opt-in", `{"kernel":"k","cmdline":"pw={{secret:a}}","secrets":{"a":"x"}}`,
			[]string{"secrets_in_boot_script", "any client on the LAN that claims this device's MAC", "hashed password", "HTTPS"}},
		{"no opt-in, chain", `{"chain":"http://x/{{secret:a}}","secrets":{"a":"x"}}`, []string{"secrets_in_boot_script"}},
		{"missing secret", `{"kernel":"k","cmdline":"pw={{secret:a}} b={{secret:b}}","secrets":{"a":"x"},"secrets_in_boot_script":true}`,
			[]string{"{{secret:b}}: no such secret"}},
		{"unused secret", `{"kernel":"k","cmdline":"pw={{secret:a}}","secrets":{"a":"x","b":"y"},"secrets_in_boot_script":true}`,
			[]string{"secret b: not used"}},
		{"CR", `{"kernel":"k","cmdline":"pw={{secret:a}}","secrets":{"a":"x\rshell"},"secrets_in_boot_script":true}`, []string{"secret a: must be one line"}},
		{"LF", `{"kernel":"k","cmdline":"pw={{secret:a}}","secrets":{"a":"x\nshell"},"secrets_in_boot_script":true}`, []string{"secret a: must be one line"}},
		{"dollar ipxe", `{"kernel":"k","cmdline":"pw={{secret:a}}","secrets":{"a":"${net0/mac}"},"secrets_in_boot_script":true}`, []string{"secret a: must not contain $"}},
		{"space", `{"kernel":"k","cmdline":"pw={{secret:a}}","secrets":{"a":"x || shell"},"secrets_in_boot_script":true}`, []string{"secret a: must not contain white space"}},
		{"NUL", `{"kernel":"k","cmdline":"pw={{secret:a}}","secrets":{"a":"x\u0000"},"secrets_in_boot_script":true}`, []string{"control characters"}},
		{"quote in chain", `{"chain":"http://x/?t={{secret:a}}","secrets":{"a":"x\"y"},"secrets_in_boot_script":true}`, []string{"used in chain"}},
		{"marker as value", `{"kernel":"k","cmdline":"pw={{secret:a}}","secrets":{"a":"(secret)"},"secrets_in_boot_script":true}`, []string{"marker"}},
		{"empty value", `{"kernel":"k","cmdline":"pw={{secret:a}}","secrets":{"a":""},"secrets_in_boot_script":true}`, []string{"empty value"}},
		{"bad name", `{"kernel":"k","cmdline":"pw={{secret:a b}}","secrets":{"a b":"x"},"secrets_in_boot_script":true}`, []string{"secret name is", `name "a b"`}},
		{"unterminated", `{"kernel":"k","cmdline":"pw={{secret:a","secrets_in_boot_script":true}`, []string{"unterminated"}},
		{"in kernel", `{"kernel":"k{{secret:a}}","secrets":{"a":"x"},"secrets_in_boot_script":true}`, []string{"only in cmdline and chain"}},
	} {
		_, err := Normalize(store.KindOSInstall, json.RawMessage(c.params))
		if err == nil {
			t.Errorf("%s: accepted %s", c.name, c.params)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error lacks %q:\n%v", c.name, w, err)
			}
		}
	}
	// Every problem at once.
	_, err = Normalize(store.KindOSInstall, json.RawMessage(`{"kernel":"k","cmdline":"a={{secret:a}} b={{secret:b}}","secrets":{"a":"x\n","c":"y"}}`))
	for _, w := range []string{"secret a: must be one line", "secret c: not used", "{{secret:b}}: no such secret", "secrets_in_boot_script"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("all problems: lacks %q: %v", w, err)
		}
	}
	// pxelinux does not expand $.
	if _, err := Normalize(store.KindOSInstall, json.RawMessage(`{"kernel":"k","cmdline":"pw={{secret:a}}","secrets":{"a":"$x"},"secrets_in_boot_script":true,"loader":"pxelinux"}`)); err != nil {
		t.Errorf("pxelinux with $: %v", err)
	}
}

func TestSecretsExpandOnlyWhenOptedIn(t *testing.T) {
	p, err := Decode(store.KindOSInstall, json.RawMessage(secretKernel))
	if err != nil {
		t.Fatal(err)
	}
	o := p.(*OSInstall)
	if got := o.Expand(o.Cmdline); got != "inst.ks=https://ks/x rootpw=s3cr3t! token=abc_DEF" {
		t.Fatalf("expanded: %q", got)
	}
	o.SecretsInBootScript = false
	if got := o.Expand(o.Cmdline); got != o.Cmdline {
		t.Fatalf("expanded without opt-in: %q", got)
	}
	// A value that looks like a placeholder is not expanded again.
	o = &OSInstall{Cmdline: "a={{secret:a}}", Secrets: map[string]string{"a": "{{secret:b}}", "b": "no"}, SecretsInBootScript: true}
	if got := o.Expand(o.Cmdline); got != "a={{secret:b}}" {
		t.Fatalf("expanded twice: %q", got)
	}
}

func TestRedactAndKeepSecrets(t *testing.T) {
	stored, err := Normalize(store.KindOSInstall, json.RawMessage(secretKernel))
	if err != nil {
		t.Fatal(err)
	}
	red := Redact(store.KindOSInstall, stored)
	if strings.Contains(string(red), "s3cr3t!") || strings.Contains(string(red), "abc_DEF") ||
		!strings.Contains(string(red), `"secrets":{"api-1":"(secret)","root":"(secret)"}`) || !strings.Contains(string(red), "rootpw={{secret:root}}") {
		t.Fatalf("redacted: %s", red)
	}
	// Other kinds and bundles without secrets are untouched.
	for _, c := range [][2]string{{store.KindScript, `{"script":"echo (secret)","secrets":1}`}, {store.KindOSInstall, `{"kernel":"k","loader":"ipxe"}`}, {store.KindOSInstall, ``}} {
		if got := Redact(c[0], json.RawMessage(c[1])); string(got) != c[1] {
			t.Errorf("Redact(%s, %s) = %s", c[0], c[1], got)
		}
	}
	// Unexpected shapes never pass a value through.
	for _, raw := range []string{`{"secrets":{"a":1,"b":"v4lue"},"kernel":7}`, `{"SECRETS":{"b":"v4lue"}}`, `{"secrets":"v4lue","kernel":1}`, `["v4lue"`} {
		if got := Redact(store.KindOSInstall, json.RawMessage(raw)); strings.Contains(string(got), "v4lue") {
			t.Errorf("Redact(%s) = %s", raw, got)
		}
	}

	// GET → edit → PATCH: the marker keeps the stored value.
	edited := strings.Replace(string(red), "inst.ks=https://ks/x", "inst.ks=https://ks/y", 1)
	kept, err := KeepSecrets(store.KindOSInstall, json.RawMessage(edited), stored)
	if err != nil {
		t.Fatal(err)
	}
	norm, err := Normalize(store.KindOSInstall, kept)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(norm), `"root":"s3cr3t!"`) || !strings.Contains(string(norm), `"api-1":"abc_DEF"`) || !strings.Contains(string(norm), "ks/y") {
		t.Fatalf("kept: %s", norm)
	}
	// A new value replaces; params without secrets keep them and the opt-in.
	kept, _ = KeepSecrets(store.KindOSInstall, json.RawMessage(`{"kernel":"k","cmdline":"rootpw={{secret:root}} token={{secret:api-1}}","secrets":{"root":"n3w","api-1":"(secret)"}}`), stored)
	if norm, err = Normalize(store.KindOSInstall, kept); err != nil || !strings.Contains(string(norm), `"root":"n3w"`) || !strings.Contains(string(norm), `"api-1":"abc_DEF"`) {
		t.Fatalf("replaced: %s %v", norm, err)
	}
	kept, _ = KeepSecrets(store.KindOSInstall, json.RawMessage(`{"kernel":"k2","cmdline":"rootpw={{secret:root}} token={{secret:api-1}}"}`), stored)
	if norm, err = Normalize(store.KindOSInstall, kept); err != nil || !strings.Contains(string(norm), `"root":"s3cr3t!"`) || !strings.Contains(string(norm), `"secrets_in_boot_script":true`) {
		t.Fatalf("left out: %s %v", norm, err)
	}
	// Removing them takes an explicit empty object (and a cmdline without placeholders).
	kept, _ = KeepSecrets(store.KindOSInstall, json.RawMessage(`{"kernel":"k","secrets":{},"secrets_in_boot_script":false}`), stored)
	if norm, err = Normalize(store.KindOSInstall, kept); err != nil || strings.Contains(string(norm), "secret") {
		t.Fatalf("removed: %s %v", norm, err)
	}
	// The marker for a secret the bundle does not have is refused.
	if _, err := KeepSecrets(store.KindOSInstall, json.RawMessage(`{"kernel":"k","cmdline":"x={{secret:new}}","secrets":{"new":"(secret)"}}`), stored); err == nil || !strings.Contains(err.Error(), "no secret new") {
		t.Fatalf("marker for a new secret: %v", err)
	}
	// Creating a bundle with the marker as a value is refused.
	if _, err := KeepSecrets(store.KindOSInstall, json.RawMessage(`{"kernel":"k","cmdline":"x={{secret:a}}","secrets":{"a":"(secret)"}}`), nil); err == nil {
		t.Fatal("marker kept without a stored value")
	}
}
