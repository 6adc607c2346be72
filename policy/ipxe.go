package policy

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/preboot/preboot/bundle"
	"github.com/preboot/preboot/store"
)

// Actions an iPXE client can ask for with ?action=. Every choice made at the
// machine comes back to the server, so each one is recorded as an event.
const (
	actionAuto   = "" // first request: apply the menu mode
	actionDef    = "default"
	actionMenu   = "menu"
	actionWork   = "work"
	actionLocal  = "local"
	actionShell  = "shell"
	actionExit   = "exit"
	actionBundle = "bundle" // a custom bundle entry of the menu (&bundle=name)
)

// ServeHTTP answers iPXE's /boot.ipxe requests.
//
// Only network-boot firmware asks for them: a request a web browser makes
// on behalf of a page (an <img src> pointing here) is refused before it
// can register a device or claim its work.
func (e *Engine) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	q := parseQuery(r.URL.RawQuery)
	base := "http://" + r.Host
	if r.TLS != nil {
		base = "https://" + r.Host // asked over HTTPS: the script's own URLs stay on it
	}
	if q.Get("mac") != "" && fromBrowser(r) {
		http.Error(w, "boot scripts are for network-boot firmware (iPXE), not for web browsers", http.StatusForbidden)
		return
	}
	if q.Get("mac") == "" {
		// Bootstrap: ask iPXE to come back with what it knows about the
		// machine (the seed's phase 3 hardware detection).
		writeScript(w, bootstrapScript(base))
		return
	}
	mac, err := store.NormalizeMAC(q.Get("mac"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	seen := hardwareFrom(q, mac, clientIP(r), e.now())
	script, err := e.Script(ctx, base, mac, q.Get("action"), clean(q.Get("bundle")), seen)
	if err != nil {
		e.logger().ErrorContext(ctx, "boot policy failed", "mac", mac, "err", err)
		// The machine must not hang on a server error: tell it, then
		// let it boot its own disk.
		writeScript(w, "#!ipxe\necho Preboot: server error, booting the local disk\nsleep 3\n"+e.localBoot())
		return
	}
	writeScript(w, script)
}

// parseQuery parses a query string as iPXE builds it: ${var:uristring}
// percent-encodes what it must but leaves "+" as is, so "+" is a plus
// (url.ParseQuery would turn "Q35 + ICH9" into "Q35   ICH9"). Malformed
// pairs are skipped.
func parseQuery(raw string) url.Values {
	v := url.Values{}
	for pair := range strings.SplitSeq(raw, "&") {
		if pair == "" {
			continue
		}
		k, val, _ := strings.Cut(pair, "=")
		k, err1 := url.PathUnescape(k)
		val, err2 := url.PathUnescape(val)
		if err1 != nil || err2 != nil {
			continue
		}
		v.Add(k, val)
	}
	return v
}

// fromBrowser reports whether a web browser sent the request (for a page,
// not for firmware): browsers send Origin, Referer or Fetch Metadata
// headers and a Mozilla user agent; iPXE sends none of them.
func fromBrowser(r *http.Request) bool {
	for _, h := range []string{"Origin", "Referer", "Sec-Fetch-Site", "Sec-Fetch-Mode", "Sec-Fetch-Dest"} {
		if r.Header.Get(h) != "" {
			return true
		}
	}
	return strings.HasPrefix(r.Header.Get("User-Agent"), "Mozilla/")
}

func writeScript(w http.ResponseWriter, s string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write([]byte(s))
}

func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return ""
	}
	return host
}

func hardwareFrom(q url.Values, mac, ip string, now time.Time) store.Sighting {
	s := store.Sighting{
		MAC:          mac,
		UUID:         clean(q.Get("uuid")),
		Serial:       clean(q.Get("serial")),
		Manufacturer: clean(q.Get("manufacturer")),
		Product:      clean(q.Get("product")),
		AssetTag:     clean(q.Get("asset")),
		Platform:     clean(q.Get("platform")),
		IP:           ip,
		Time:         now,
	}
	s.Arch = firmwareName(s.Platform, clean(q.Get("arch")))
	return s
}

// clean trims and bounds a client-supplied value and drops control
// characters, so that hardware strings are safe to store and display.
func clean(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > 128 {
		s = s[:128]
	}
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return -1
		}
		return r
	}, s)
}

// firmwareName maps iPXE's ${platform} and ${buildarch} to the names
// ArchName gives option 93 values.
func firmwareName(platform, buildarch string) string {
	switch {
	case platform == "pcbios":
		return "bios"
	case platform == "efi" && buildarch == "x86_64":
		return "efi-x64"
	case platform == "efi" && buildarch == "i386":
		return "efi-ia32"
	case platform == "efi" && buildarch == "arm64":
		return "efi-arm64"
	case platform != "":
		return platform + "-" + buildarch
	}
	return ""
}

func bootstrapScript(base string) string {
	return "#!ipxe\n" +
		"echo Preboot: asking " + base + " for this machine's work\n" +
		"chain " + base + "/boot.ipxe?mac=${mac:hexhyp}&uuid=${uuid}&serial=${serial:uristring}" +
		"&manufacturer=${manufacturer:uristring}&product=${product:uristring}&asset=${asset:uristring}" +
		"&arch=${buildarch}&platform=${platform} || goto failed\n" +
		uefiExit +
		":failed\n" +
		"echo Preboot: the boot policy could not be reached, continuing with the next boot device\n" +
		"sleep 3\n" +
		uefiExit
}

// uefiExit leaves iPXE for the firmware's next boot option. On UEFI the
// status must be an error: a boot option that returns EFI_SUCCESS makes
// EDK2's boot manager stop and show its menu (UEFI 2.x §3.1.1) instead of
// trying the next option, such as the disk's entry the agent created
// after a restore. BIOS firmware moves on either way.
const uefiExit = "iseq ${platform} pcbios || exit 1\nexit\n"

// Script returns the iPXE script for one request of a device and records
// what it decided.
// bundle is the menu entry an operator picked (action "bundle").
//
// The request's events are written together (with its registration, if
// any, else in one statement at the end), before the script is returned:
// also when the request failed, or its client went away.
func (e *Engine) Script(ctx context.Context, base, mac, action, bundle string, seen store.Sighting) (string, error) {
	ctx, _ = store.WithEventBuffer(ctx)
	script, err := e.script(ctx, base, mac, action, bundle, seen)
	if ferr := e.Store.FlushEvents(context.WithoutCancel(ctx)); ferr != nil && err == nil {
		return "", ferr
	}
	return script, err
}

func (e *Engine) script(ctx context.Context, base, mac, action, bundle string, seen store.Sighting) (string, error) {
	ctx = withClient(ctx, seen.IP)
	ctx = withScriptServer(ctx, hostOnly(base))
	var dev store.Device
	var err error
	if action == actionAuto {
		var created bool
		ctx = store.WithVersionSlot(ctx) // the sighting may read the policy version too
		dev, created, err = e.Store.SeeDevice(ctx, seen)
		if err != nil {
			return "", err
		}
		msg := "boot policy request from " + seen.IP
		if hw := strings.Join(nonEmpty(strings.TrimSpace(dev.Manufacturer+" "+dev.Product), dev.Arch), ", "); hw != "" {
			msg += " (" + hw + ")"
		}
		if created {
			ctx = withNewDevice(ctx, mac)
			if err := e.event(ctx, mac, store.EventBoot, "first contact: "+msg); err != nil {
				return "", err
			}
		} else {
			// One event per boot: the request goes into the event of
			// what the policy decided (a boot writes ~2 rows less).
			ctx = withBootNote(ctx, msg)
		}
	} else if dev, err = e.Store.Device(ctx, mac); err != nil {
		return "", err
	}
	d, err := e.Decide(ctx, dev)
	if err != nil {
		return "", err
	}
	self := base + "/boot.ipxe?mac=" + url.QueryEscape(mac) + "&action="

	switch action {
	case actionAuto:
		if d.Action == ActionIgnore {
			if err := e.event(ctx, mac, store.EventPolicy, d.Reason); err != nil {
				return "", err
			}
			return "#!ipxe\nexit\n", nil
		}
		switch d.Menu.Mode {
		case "always":
			return e.menuScript(ctx, mac, self, d)
		case "hotkey":
			// The decision is recorded by the next request (default or
			// menu); this one records the boot itself.
			if n, ok := ctx.Value(bootNoteKey{}).(*bootNote); ok && !n.used {
				n.used = true
				if _, err := e.Store.AddEvent(ctx, store.Event{MAC: mac, Time: e.now(), Kind: store.EventBoot, Message: n.text}); err != nil {
					return "", err
				}
			}
			key, label := hotkey(d.Menu.Hotkey)
			return "#!ipxe\n" +
				fmt.Sprintf("prompt --key 0x%02x --timeout %d Press %s for the %s menu... && chain %s || chain %s\n",
					key, time.Duration(d.Menu.Timeout).Milliseconds(), label, title(d.Menu), self+actionMenu, self+actionDef), nil
		}
		return e.defaultScript(ctx, base, self, dev, d)
	case actionDef:
		return e.defaultScript(ctx, base, self, dev, d)
	case actionMenu:
		return e.menuScript(ctx, mac, self, d)
	case actionWork:
		if d.Action != ActionBundle {
			return e.localScript(ctx, mac, "menu: start assigned work, but none is due ("+d.Reason+")")
		}
		return e.run(ctx, base, dev, d, "menu choice")
	case actionBundle:
		return e.menuBundle(ctx, base, dev, d, bundle)
	case actionLocal:
		return e.localScriptWith(ctx, mac, "menu: boot local disk", d.Bundle)
	case actionShell:
		if !d.Menu.Shell {
			return e.localScript(ctx, mac, "menu: the maintenance shell is not offered to this device")
		}
		if err := e.event(ctx, mac, store.EventMenu, "maintenance shell opened"); err != nil {
			return "", err
		}
		return "#!ipxe\necho Preboot maintenance shell: type 'exit' to return to the menu\nshell\nchain " + self + actionMenu + "\n", nil
	case actionExit:
		if err := e.event(ctx, mac, store.EventMenu, "menu: exit to the firmware"); err != nil {
			return "", err
		}
		return "#!ipxe\nexit\n", nil
	}
	return "", fmt.Errorf("unknown action %q", action)
}

func (e *Engine) event(ctx context.Context, mac, kind, msg string) error {
	_, err := e.Store.AddEvent(ctx, store.Event{MAC: mac, Time: e.now(), Kind: kind, Message: e.takeNote(ctx) + msg})
	return err
}

// takeNote returns the request's boot note as the prefix of the first
// event the request records ("" once taken, or when there is none).
func (e *Engine) takeNote(ctx context.Context) string {
	if n, ok := ctx.Value(bootNoteKey{}).(*bootNote); ok && !n.used {
		n.used = true
		return n.text + ": "
	}
	return ""
}

// bootNote carries a boot request's description to the first event the
// request records.
type bootNote struct {
	text string
	used bool
}

type bootNoteKey struct{}

type clientKey struct{}

// withClient carries the address a boot request came from: the job it
// starts is bound to it.
func withClient(ctx context.Context, ip string) context.Context {
	return context.WithValue(ctx, clientKey{}, ip)
}

func clientFrom(ctx context.Context) string {
	ip, _ := ctx.Value(clientKey{}).(string)
	return ip
}

func withBootNote(ctx context.Context, text string) context.Context {
	return context.WithValue(ctx, bootNoteKey{}, &bootNote{text: text})
}

func title(m store.Menu) string {
	if m.Title == "" {
		return "Preboot"
	}
	return m.Title
}

func (e *Engine) defaultScript(ctx context.Context, base, self string, dev store.Device, d Decision) (string, error) {
	if d.Register && d.Action != ActionBundle {
		// A rule that only adds the device to a group (with nothing
		// to run) still registers it.
		var err error
		if d, err = e.register(ctx, dev, d); err != nil {
			return "", err
		}
	}
	switch d.Action {
	case ActionBundle:
		return e.run(ctx, base, dev, d, "assigned")
	case ActionMenu:
		return e.menuScript(ctx, dev.MAC, self, d)
	}
	return e.localScriptWith(ctx, dev.MAC, d.Reason, d.Bundle)
}

// menuBundle runs a bundle an operator picked from the menu's custom
// entries (only bundles the device's menu offers).
func (e *Engine) menuBundle(ctx context.Context, base string, dev store.Device, d Decision, name string) (string, error) {
	// The name comes from the client: it goes to the event log, never
	// into the script.
	if err := e.event(ctx, dev.MAC, store.EventMenu, fmt.Sprintf("menu: operator picked bundle %q", name)); err != nil {
		return "", err
	}
	if !slices.Contains(d.Menu.Bundles, name) {
		return e.localScript(ctx, dev.MAC, "menu: the picked bundle is not offered to this device")
	}
	b, ok, err := e.bundleByName(ctx, name)
	if err != nil {
		return "", err
	}
	if !ok {
		return e.localScript(ctx, dev.MAC, "menu: the picked bundle no longer exists")
	}
	pick := Decision{Action: ActionBundle, Bundle: &b, Source: "menu", Reason: "picked at the device's menu", Menu: d.Menu}
	if b.Kind == store.KindLocalBoot {
		return e.localScriptWith(ctx, dev.MAC, "menu: bundle "+name+" boots the local disk", &b)
	}
	return e.run(ctx, base, dev, pick, "menu choice")
}

func (e *Engine) menuScript(ctx context.Context, mac, self string, d Decision) (string, error) {
	if err := e.event(ctx, mac, store.EventMenu, "menu shown"); err != nil {
		return "", err
	}
	var b strings.Builder
	def := actionLocal
	b.WriteString("#!ipxe\n")
	fmt.Fprintf(&b, "menu %s - %s\n", menuText(title(d.Menu)), mac)
	if d.Action == ActionBundle && d.Bundle != nil {
		def = actionWork
		fmt.Fprintf(&b, "item --gap Assigned: %s (%s)\n", menuText(d.Bundle.Name), d.Bundle.Kind)
		b.WriteString("item work Start assigned work\n")
	} else {
		b.WriteString("item --gap No work assigned\n")
	}
	if len(d.Menu.Bundles) > 0 {
		b.WriteString("item --gap Bundles\n")
		for i, name := range d.Menu.Bundles {
			fmt.Fprintf(&b, "item b%d %s\n", i, menuText(name))
		}
	}
	if d.Menu.Shell {
		b.WriteString("item shell Maintenance shell\n")
	}
	b.WriteString("item local Boot local disk\n")
	b.WriteString("item exit Exit\n")
	timeout := ""
	if d.Menu.Timeout > 0 {
		timeout = " --timeout " + strconv.FormatInt(time.Duration(d.Menu.Timeout).Milliseconds(), 10)
	}
	fmt.Fprintf(&b, "choose --default %s%s target || set target %s\n", def, timeout, def)
	for i, name := range d.Menu.Bundles {
		fmt.Fprintf(&b, "iseq ${target} b%d && chain %s%s&bundle=%s ||\n", i, self, actionBundle, url.QueryEscape(name))
	}
	fmt.Fprintf(&b, "chain %s${target}\n", self)
	return b.String(), nil
}

// menuText keeps names safe inside an iPXE script line.
func menuText(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '$' || r == '\n' || r == '\r' || unicode.IsControl(r) {
			return -1
		}
		return r
	}, s)
}

func (e *Engine) localScript(ctx context.Context, mac, why string) (string, error) {
	return e.localScriptWith(ctx, mac, why, nil)
}

// localScriptWith is localScript with the method of b when b is a
// local-boot bundle that sets one (the bundle assigned to the device or
// its group, or picked by a rule or at the menu); else the server's
// default.
func (e *Engine) localScriptWith(ctx context.Context, mac, why string, b *store.Bundle) (string, error) {
	method := localBootMethod(b)
	if method != "" {
		why += " (method " + method + ")"
	}
	if err := e.event(ctx, mac, store.EventLocalBoot, why); err != nil {
		return "", err
	}
	if method == bundle.LocalBootGRUB {
		return "#!ipxe\necho Preboot: " + menuText(why) + ", booting the local disk\n" + grubChain(scriptServer(ctx)), nil
	}
	return "#!ipxe\necho Preboot: " + menuText(why) + ", booting the local disk\n" + e.localBootBy(method), nil
}

// localBootMethod is the method a local-boot bundle sets, "" for none
// (or for any other bundle).
func localBootMethod(b *store.Bundle) string {
	if b == nil || b.Kind != store.KindLocalBoot {
		return ""
	}
	p, err := bundle.Decode(b.Kind, b.Params)
	if err != nil {
		return ""
	}
	lb, _ := p.(*bundle.LocalBoot)
	if lb == nil {
		return ""
	}
	return lb.Method
}

// localBootBy is the iPXE commands of a local-boot method ("" = the
// server's default, localBoot).
func (e *Engine) localBootBy(method string) string {
	switch method {
	case bundle.LocalBootExit:
		return "exit\n"
	case bundle.LocalBootSanboot:
		return sanbootLocal
	case bundle.LocalBootGRUB:
		return grubChain("")
	}
	return e.localBoot()
}

// sanbootLocal boots drive 0x80's MBR on BIOS; EFI iPXE cannot sanboot a
// local drive, so UEFI (and a failed sanboot) exits to the firmware.
const sanbootLocal = "iseq ${platform} pcbios || exit\nsanboot --no-describe --drive 0x80 || exit\n"

// localBoot is the seed's step 10: leave the network boot for the
// machine's own OS.
func (e *Engine) localBoot() string {
	if e.Boot.LocalBootBIOS == "exit" {
		return "exit\n"
	}
	return sanbootLocal
}

func fileURL(base, p string) string {
	if strings.HasPrefix(p, "http://") || strings.HasPrefix(p, "https://") || strings.HasPrefix(p, "tftp://") {
		return p
	}
	segs := strings.Split(strings.TrimPrefix(path.Clean("/"+p), "/"), "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return base + "/files/" + strings.Join(segs, "/")
}

func hostOnly(base string) string {
	u, err := url.Parse(base)
	if err != nil {
		return base
	}
	return u.Hostname()
}

// hotkey maps a key name to iPXE's key code and a label for the prompt.
// Supported: a single letter or digit, "ctrl-X", "esc", "space".
func hotkey(name string) (int, string) {
	n := strings.ToLower(strings.TrimSpace(name))
	switch {
	case n == "esc" || n == "escape":
		return 0x1b, "Esc"
	case n == "space":
		return 0x20, "Space"
	case len(n) == 6 && strings.HasPrefix(n, "ctrl-") && n[5] >= 'a' && n[5] <= 'z':
		return int(n[5]-'a') + 1, "Ctrl-" + strings.ToUpper(n[5:])
	case len(n) == 1 && (n[0] >= 'a' && n[0] <= 'z' || n[0] >= '0' && n[0] <= '9'):
		return int(n[0]), strings.ToUpper(n)
	}
	return 0x10, "Ctrl-P"
}

// ValidHotkey reports whether hotkey understands name.
func ValidHotkey(name string) bool {
	n := strings.ToLower(strings.TrimSpace(name))
	k, _ := hotkey(n)
	return k != 0x10 || n == "ctrl-p"
}

func nonEmpty(ss ...string) []string {
	var out []string
	for _, s := range ss {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}
