package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"time"

	"github.com/preboot/preboot/policy"
	"github.com/preboot/preboot/store"
)

// checkMenu validates a menu; bundles it offers must exist.
func (h *Handler) checkMenu(ctx context.Context, m *store.Menu) error {
	var errs []error
	switch m.Mode {
	case "always", "hotkey", "never":
	case "":
		errs = append(errs, errors.New("mode: required: always, hotkey or never"))
	default:
		errs = append(errs, fmt.Errorf("mode %q: want always, hotkey or never", m.Mode))
	}
	if m.Hotkey == "" {
		m.Hotkey = "ctrl-p"
	}
	if !policy.ValidHotkey(m.Hotkey) {
		errs = append(errs, fmt.Errorf("hotkey %q: want a letter, a digit, ctrl-X, esc or space", m.Hotkey))
	}
	if m.Timeout < 0 || time.Duration(m.Timeout) > time.Hour {
		errs = append(errs, fmt.Errorf("timeout %s: want 0 to 1h", time.Duration(m.Timeout)))
	}
	if len(m.Title) > 64 {
		errs = append(errs, errors.New("title: at most 64 characters"))
	}
	seen := map[string]bool{}
	for _, b := range m.Bundles {
		if seen[b] {
			errs = append(errs, fmt.Errorf("bundles: %q listed twice", b))
			continue
		}
		seen[b] = true
		if _, err := h.Store.Bundle(ctx, b); errors.Is(err, store.ErrNotFound) {
			errs = append(errs, fmt.Errorf("bundles: %q does not exist", b))
		} else if err != nil {
			return err
		}
	}
	if err := errors.Join(errs...); err != nil {
		return invalid("%v", err)
	}
	return nil
}

// menuTarget reads and checks the device or group a menu belongs to.
func (h *Handler) menuTarget(w http.ResponseWriter, r *http.Request, scope string) (string, bool) {
	if scope == store.ScopeDevice {
		mac, ok := pathMAC(w, r)
		if !ok {
			return "", false
		}
		if _, err := h.Store.Device(r.Context(), mac); err != nil {
			h.fail(w, r, err)
			return "", false
		}
		return mac, true
	}
	name := r.PathValue("name")
	if _, err := h.Store.Group(r.Context(), name); err != nil {
		h.fail(w, r, err)
		return "", false
	}
	return name, true
}

func (h *Handler) getMenu(scope string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		target, ok := h.menuTarget(w, r, scope)
		if !ok {
			return
		}
		m, err := h.Store.Menu(r.Context(), scope, target)
		if errors.Is(err, store.ErrNotFound) {
			writeError(w, http.StatusNotFound, fmt.Sprintf("%s %s has no menu override (it uses its group's or the server default)", scope, target))
			return
		}
		if err != nil {
			h.fail(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, m)
	}
}

func (h *Handler) putMenu(scope string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		target, ok := h.menuTarget(w, r, scope)
		if !ok {
			return
		}
		var m store.Menu
		if !decode(w, r, &m) {
			return
		}
		if err := h.checkMenu(r.Context(), &m); err != nil {
			h.fail(w, r, err)
			return
		}
		if err := h.Store.SetMenu(r.Context(), scope, target, m); err != nil {
			h.fail(w, r, err)
			return
		}
		h.audit(r, macIf(scope, target), fmt.Sprintf("%s %s menu set: mode %s", scope, target, m.Mode))
		writeJSON(w, http.StatusOK, m)
	}
}

func (h *Handler) deleteMenu(scope string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		target, ok := h.menuTarget(w, r, scope)
		if !ok {
			return
		}
		if err := h.Store.DeleteMenu(r.Context(), scope, target); err != nil {
			h.fail(w, r, err)
			return
		}
		h.audit(r, macIf(scope, target), fmt.Sprintf("%s %s menu override removed", scope, target))
		w.WriteHeader(http.StatusNoContent)
	}
}

func macIf(scope, target string) string {
	if scope == store.ScopeDevice {
		return target
	}
	return ""
}

func (h *Handler) getSettings(w http.ResponseWriter, r *http.Request) {
	s, err := h.Policy.Settings(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, s)
}

// SettingsPatch is the body of PATCH /settings: each section given
// replaces that section.
type SettingsPatch struct {
	Menu         *store.Menu         `json:"menu,omitempty"`
	Unregistered *store.Unregistered `json:"unregistered,omitempty"`
	Naming       *store.Naming       `json:"naming,omitempty"`
	SecureBoot   *store.SecureBoot   `json:"secure_boot,omitempty"`
}

var prefixRE = regexp.MustCompile(`^[A-Za-z0-9._-]{0,32}$`)

func (h *Handler) patchSettings(w http.ResponseWriter, r *http.Request) {
	var p SettingsPatch
	if !decode(w, r, &p) {
		return
	}
	s, err := h.Policy.Settings(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	var errs []error
	if p.Menu != nil {
		if err := h.checkMenu(r.Context(), p.Menu); err != nil {
			h.fail(w, r, err)
			return
		}
		s.Menu = *p.Menu
	}
	if u := p.Unregistered; u != nil {
		switch u.Action {
		case store.UnregisteredLocal, store.UnregisteredMenu, store.UnregisteredIgnore:
			if u.Bundle != "" {
				errs = append(errs, fmt.Errorf("unregistered.bundle: only with action %q", store.UnregisteredBundle))
			}
		case store.UnregisteredBundle:
			if u.Bundle == "" {
				errs = append(errs, errors.New("unregistered.bundle: required with action bundle (e.g. an inventory bundle)"))
			} else if b, err := h.Store.Bundle(r.Context(), u.Bundle); errors.Is(err, store.ErrNotFound) {
				errs = append(errs, fmt.Errorf("unregistered.bundle: %q does not exist", u.Bundle))
			} else if err != nil {
				h.fail(w, r, err)
				return
			} else if b.Kind == store.KindWipe {
				errs = append(errs, fmt.Errorf("unregistered.bundle: %q is a wipe bundle; wiping every unknown machine that boots is refused", u.Bundle))
			}
		default:
			errs = append(errs, fmt.Errorf("unregistered.action %q: want local, menu, bundle or ignore", u.Action))
		}
		s.Unregistered = *u
	}
	if n := p.Naming; n != nil {
		switch n.From {
		case store.NameFromNone, store.NameFromSerial, store.NameFromAsset, store.NameFromMAC, store.NameFromSequence:
		default:
			errs = append(errs, fmt.Errorf("naming.from %q: want serial, asset, mac, sequence or empty", n.From))
		}
		if !prefixRE.MatchString(n.Prefix) {
			errs = append(errs, fmt.Errorf("naming.prefix %q: at most 32 letters, digits, '.', '_' or '-'", n.Prefix))
		}
		s.Naming = *n
	}
	if sb := p.SecureBoot; sb != nil {
		norm, err := checkSecureBoot(*sb)
		if err != nil {
			errs = append(errs, err)
		}
		s.SecureBoot = norm
	}
	if err := errors.Join(errs...); err != nil {
		h.fail(w, r, invalid("%v", err))
		return
	}
	if err := h.Store.SetSettings(r.Context(), s); err != nil {
		h.fail(w, r, err)
		return
	}
	b, _ := json.Marshal(p)
	h.audit(r, "", "settings changed: "+string(b))
	writeJSON(w, http.StatusOK, s)
}

func (h *Handler) getDefaultMenu(w http.ResponseWriter, r *http.Request) {
	s, err := h.Policy.Settings(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, s.Menu)
}

func (h *Handler) putDefaultMenu(w http.ResponseWriter, r *http.Request) {
	var m store.Menu
	if !decode(w, r, &m) {
		return
	}
	if err := h.checkMenu(r.Context(), &m); err != nil {
		h.fail(w, r, err)
		return
	}
	s, err := h.Policy.Settings(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	s.Menu = m
	if err := h.Store.SetSettings(r.Context(), s); err != nil {
		h.fail(w, r, err)
		return
	}
	h.audit(r, "", "server default menu set: mode "+m.Mode)
	writeJSON(w, http.StatusOK, m)
}

// checkSecureBoot validates secure_boot settings and normalises their
// MACs; "auto" entries of devices, groups and rules are dropped (auto is
// what no entry means).
func checkSecureBoot(sb store.SecureBoot) (store.SecureBoot, error) {
	var errs []error
	if !store.ValidSecureBootMode(sb.Default) {
		errs = append(errs, fmt.Errorf("secure_boot.default %q: want auto, on or off", sb.Default))
	}
	if sb.Default == store.SecureBootAuto {
		sb.Default = ""
	}
	out := store.SecureBoot{Default: sb.Default}
	keep := func(section, key, mode string, m *map[string]string) {
		if !store.ValidSecureBootMode(mode) {
			errs = append(errs, fmt.Errorf("secure_boot.%s[%q] %q: want auto, on or off", section, key, mode))
			return
		}
		if mode == "" || mode == store.SecureBootAuto {
			return
		}
		if *m == nil {
			*m = map[string]string{}
		}
		(*m)[key] = mode
	}
	for k, v := range sb.Devices {
		mac, err := store.NormalizeMAC(k)
		if err != nil {
			errs = append(errs, fmt.Errorf("secure_boot.devices: %w", err))
			continue
		}
		keep("devices", mac, v, &out.Devices)
	}
	for k, v := range sb.Groups {
		keep("groups", k, v, &out.Groups)
	}
	for k, v := range sb.Rules {
		keep("rules", k, v, &out.Rules)
	}
	return out, errors.Join(errs...)
}
