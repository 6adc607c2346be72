package bundle

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"unicode"

	"github.com/preboot/preboot/store"
)

// Secrets of os-install bundles.
//
// An os-install bundle may hold secrets (Secrets: NAME → value) that its
// kernel command line and chain URL name as {{secret:NAME}}. The boot
// script and the pxelinux config that carry them are served to any client
// that claims the device's MAC, so a bundle whose cmdline or chain names a
// secret must say so (SecretsInBootScript); Expand substitutes the values
// there and nowhere else. Everywhere else a bundle's parameters leave the
// server (API answers, job records, the console, the CLI) they go through
// Redact, which replaces every value with SecretMarker; an update that
// sends the marker back keeps the stored value (KeepSecrets).

// SecretMarker stands for a secret's value in everything the server
// writes out except a boot script or pxelinux config.
const SecretMarker = "(secret)"

const secretPrefix = "{{secret:"

var (
	placeholderRE = regexp.MustCompile(`\{\{secret:([^{}]*)\}\}`)
	secretNameRE  = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
)

// Expand returns s (the bundle's cmdline or chain URL) with every
// {{secret:NAME}} replaced by the secret's value, for the boot script or
// pxelinux config of a hand-out. A bundle that did not opt in
// (SecretsInBootScript) gets nothing substituted: validation refuses such
// a bundle, so this only guards parameters stored without it.
func (o *OSInstall) Expand(s string) string {
	if !o.SecretsInBootScript || len(o.Secrets) == 0 {
		return s
	}
	return placeholderRE.ReplaceAllStringFunc(s, func(m string) string {
		if v, ok := o.Secrets[placeholderRE.FindStringSubmatch(m)[1]]; ok {
			return v
		}
		return m
	})
}

// placeholders returns the secret names s refers to, and an error for a
// {{secret: that is not a well-formed placeholder.
func placeholders(field, s string) ([]string, error) {
	var names []string
	var errs []error
	for _, m := range placeholderRE.FindAllStringSubmatch(s, -1) {
		if !secretNameRE.MatchString(m[1]) {
			errs = append(errs, fmt.Errorf("%s: %q: a secret name is 1-64 letters, digits, '_' or '-'", field, m[0]))
			continue
		}
		names = append(names, m[1])
	}
	if strings.Count(s, secretPrefix) != len(placeholderRE.FindAllString(s, -1)) {
		errs = append(errs, fmt.Errorf("%s: an unterminated %sNAME}} placeholder", field, secretPrefix))
	}
	return names, errors.Join(errs...)
}

// validateSecrets checks the secrets of an os-install bundle and the
// placeholders of its cmdline and chain; every problem is listed.
func (o *OSInstall) validateSecrets() error {
	var errs []error
	for _, p := range append([]string{o.Kernel}, o.Initrd...) {
		if strings.Contains(p, secretPrefix) {
			errs = append(errs, fmt.Errorf("%q: secrets can be named only in cmdline and chain", p))
		}
	}
	inCmdline, err := placeholders("cmdline", o.Cmdline)
	errs = append(errs, err)
	inChain, err := placeholders("chain", o.Chain)
	errs = append(errs, err)

	names := make([]string, 0, len(o.Secrets))
	for n := range o.Secrets {
		names = append(names, n)
	}
	slices.Sort(names)
	ipxe := o.Loader != store.LoaderPXELinux
	for _, n := range names {
		v := o.Secrets[n]
		if !secretNameRE.MatchString(n) {
			errs = append(errs, fmt.Errorf("secrets: name %q: want 1-64 letters, digits, '_' or '-'", n))
		}
		switch {
		case v == "":
			errs = append(errs, fmt.Errorf("secret %s: empty value", n))
		case v == SecretMarker:
			errs = append(errs, fmt.Errorf("secret %s: %q is the marker that stands for a stored value in what the server shows; send the value itself (or, when editing the bundle, send the marker back to keep the stored value)", n, SecretMarker))
		case strings.ContainsAny(v, "\r\n"):
			errs = append(errs, fmt.Errorf("secret %s: must be one line (no CR or LF)", n))
		case strings.IndexFunc(v, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0:
			errs = append(errs, fmt.Errorf("secret %s: must not contain white space or control characters (a value is one argument of the command line: a space would split it)", n))
		case slices.Contains(inChain, n) && strings.ContainsAny(v, "\"'`$;"):
			errs = append(errs, fmt.Errorf("secret %s: used in chain: must not contain quotes, $ or ; (as paths and URLs)", n))
		case ipxe && strings.Contains(v, "$"):
			errs = append(errs, fmt.Errorf("secret %s: must not contain $ with loader ipxe (iPXE expands ${...} in its script)", n))
		}
		if !slices.Contains(inCmdline, n) && !slices.Contains(inChain, n) {
			errs = append(errs, fmt.Errorf("secret %s: not used: name it in cmdline or chain as %s%s}}, or remove it", n, secretPrefix, n))
		}
	}
	var missing []string
	for _, n := range append(inCmdline, inChain...) {
		if _, ok := o.Secrets[n]; !ok && !slices.Contains(missing, n) {
			missing = append(missing, n)
			errs = append(errs, fmt.Errorf("%s%s}}: no such secret (add it to secrets)", secretPrefix, n))
		}
	}
	if len(inCmdline)+len(inChain) > 0 && !o.SecretsInBootScript {
		errs = append(errs, errors.New("secrets_in_boot_script: cmdline or chain names a secret, which puts its value in the boot script "+
			"(iPXE script or pxelinux config): any client on the LAN that claims this device's MAC can read it. "+
			"Set secrets_in_boot_script to true to accept that; safer: put only a hashed password in the installer's "+
			"configuration, or let the installer fetch its secrets over HTTPS with credentials of its own"))
	}
	return errors.Join(errs...)
}

// Redact returns a bundle's (or a job's) parameters with every secret
// value replaced by SecretMarker: what the API, the console, the CLI and
// job records show. Parameters without secrets are returned as they are.
func Redact(kind string, params json.RawMessage) json.RawMessage {
	if kind != store.KindOSInstall || len(bytes.TrimSpace(params)) == 0 {
		return params
	}
	var o OSInstall
	if err := json.Unmarshal(params, &o); err == nil {
		if len(o.Secrets) == 0 {
			return params
		}
		for n := range o.Secrets {
			o.Secrets[n] = SecretMarker
		}
		out, err := json.Marshal(o)
		if err == nil {
			return out
		}
	}
	// Not the expected shape: redact what can be read, never pass a value
	// through.
	var m map[string]json.RawMessage
	if err := json.Unmarshal(params, &m); err != nil {
		return json.RawMessage("{}")
	}
	for k, s := range m {
		if !strings.EqualFold(k, "secrets") {
			continue
		}
		var names map[string]json.RawMessage
		if json.Unmarshal(s, &names) != nil {
			m[k] = json.RawMessage(`"` + SecretMarker + `"`)
			continue
		}
		red := map[string]string{}
		for n := range names {
			red[n] = SecretMarker
		}
		m[k], _ = json.Marshal(red)
	}
	out, err := json.Marshal(m)
	if err != nil {
		return json.RawMessage("{}")
	}
	return out
}

// KeepSecrets prepares the parameters an update sends (newParams) for a
// bundle whose stored parameters are oldParams: a secret whose value is
// SecretMarker keeps its stored value, and parameters that leave out
// secrets or secrets_in_boot_script keep the stored ones (so a client that
// edits other fields — a GET, edit, PATCH round trip, or the console's
// form — never loses a secret nor writes the marker over it; send
// "secrets": {} to remove them all). Other kinds, and parameters that are
// not a JSON object, are returned unchanged (Normalize judges them).
func KeepSecrets(kind string, newParams, oldParams json.RawMessage) (json.RawMessage, error) {
	if kind != store.KindOSInstall {
		return newParams, nil
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(newParams, &m) != nil || m == nil {
		return newParams, nil
	}
	var old struct {
		Secrets             map[string]string `json:"secrets"`
		SecretsInBootScript *bool             `json:"secrets_in_boot_script"`
	}
	_ = json.Unmarshal(oldParams, &old)
	if _, ok := field(m, "secrets_in_boot_script"); !ok && old.SecretsInBootScript != nil && *old.SecretsInBootScript {
		m["secrets_in_boot_script"] = json.RawMessage("true")
	}
	key, ok := field(m, "secrets")
	if !ok {
		if len(old.Secrets) == 0 {
			return newParams, nil
		}
		m["secrets"], _ = json.Marshal(old.Secrets)
		return json.Marshal(m)
	}
	var secrets map[string]string
	if json.Unmarshal(m[key], &secrets) != nil || secrets == nil {
		return newParams, nil // not an object of strings: Normalize says why
	}
	var errs []error
	for n, v := range secrets {
		if v != SecretMarker {
			continue
		}
		stored, ok := old.Secrets[n]
		if !ok {
			errs = append(errs, fmt.Errorf("secret %s: %q stands for a stored value, and this bundle has no secret %s: send its value", n, SecretMarker, n))
			continue
		}
		secrets[n] = stored
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	m[key], _ = json.Marshal(secrets)
	return json.Marshal(m)
}

// field finds a key of a JSON object as encoding/json matches struct
// fields: exactly, or else case-insensitively.
func field(m map[string]json.RawMessage, name string) (string, bool) {
	if _, ok := m[name]; ok {
		return name, true
	}
	for k := range m {
		if strings.EqualFold(k, name) {
			return k, true
		}
	}
	return "", false
}
