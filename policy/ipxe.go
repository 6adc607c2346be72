package policy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/preboot/preboot/store"
)

// Actions an iPXE client can ask for with ?action=. Every choice made at the
// machine comes back to the server, so each one is recorded as an event.
const (
	actionAuto  = "" // first request: apply the menu mode
	actionDef   = "default"
	actionMenu  = "menu"
	actionWork  = "work"
	actionLocal = "local"
	actionShell = "shell"
	actionExit  = "exit"
)

// ServeHTTP answers iPXE's /boot.ipxe requests.
func (e *Engine) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	q := r.URL.Query()
	base := "http://" + r.Host
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
	script, err := e.Script(ctx, base, mac, q.Get("action"), hardwareFrom(q, mac, clientIP(r), e.now()))
	if err != nil {
		e.logger().ErrorContext(ctx, "boot policy failed", "mac", mac, "err", err)
		// The machine must not hang on a server error: tell it, then
		// let it boot its own disk.
		writeScript(w, "#!ipxe\necho Preboot: server error, booting the local disk\nsleep 3\n"+e.localBoot())
		return
	}
	writeScript(w, script)
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
		"exit\n" +
		":failed\n" +
		"echo Preboot: the boot policy could not be reached, continuing with the next boot device\n" +
		"sleep 3\n" +
		"exit\n"
}

// Script returns the iPXE script for one request of a device and records
// what it decided.
func (e *Engine) Script(ctx context.Context, base, mac, action string, seen store.Sighting) (string, error) {
	if action == actionAuto {
		dev, created, err := e.Store.SeeDevice(ctx, seen)
		if err != nil {
			return "", err
		}
		msg := fmt.Sprintf("boot policy request from %s (%s %s, %s)", seen.IP, dev.Manufacturer, dev.Product, dev.Arch)
		if created {
			msg = "first contact: " + msg
		}
		if err := e.event(ctx, mac, store.EventBoot, msg); err != nil {
			return "", err
		}
	}
	work, err := e.Store.Work(ctx, mac)
	hasWork := err == nil
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return "", err
	}
	self := base + "/boot.ipxe?mac=" + url.QueryEscape(mac) + "&action="

	switch action {
	case actionAuto:
		switch e.Menu.Mode {
		case "always":
			return e.menuScript(ctx, mac, self, hasWork, work)
		case "hotkey":
			key, label := hotkey(e.Menu.Hotkey)
			return "#!ipxe\n" +
				fmt.Sprintf("prompt --key 0x%02x --timeout %d Press %s for the %s menu... && chain %s || chain %s\n",
					key, e.Menu.Timeout.Milliseconds(), label, e.title(), self+actionMenu, self+actionDef), nil
		}
		return e.defaultScript(ctx, base, mac, hasWork, work)
	case actionDef:
		return e.defaultScript(ctx, base, mac, hasWork, work)
	case actionMenu:
		return e.menuScript(ctx, mac, self, hasWork, work)
	case actionWork:
		if !hasWork {
			return e.localScript(ctx, mac, "menu: start assigned work, but none is assigned")
		}
		return e.workScript(ctx, base, mac, work, "menu choice")
	case actionLocal:
		return e.localScript(ctx, mac, "menu: boot local disk")
	case actionShell:
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
	return e.Store.AddEvent(ctx, store.Event{MAC: mac, Time: e.now(), Kind: kind, Message: msg})
}

func (e *Engine) title() string {
	if e.Menu.Title == "" {
		return "Preboot"
	}
	return e.Menu.Title
}

func (e *Engine) defaultScript(ctx context.Context, base, mac string, hasWork bool, work store.Work) (string, error) {
	if hasWork {
		return e.workScript(ctx, base, mac, work, "assigned")
	}
	return e.localScript(ctx, mac, "no work assigned")
}

func (e *Engine) menuScript(ctx context.Context, mac, self string, hasWork bool, work store.Work) (string, error) {
	if err := e.event(ctx, mac, store.EventMenu, "menu shown"); err != nil {
		return "", err
	}
	var b strings.Builder
	def := actionLocal
	b.WriteString("#!ipxe\n")
	fmt.Fprintf(&b, "menu %s - %s\n", e.title(), mac)
	if hasWork {
		def = actionWork
		fmt.Fprintf(&b, "item --gap Assigned: boot %s\n", path.Base(work.Kernel))
		b.WriteString("item work Start assigned work\n")
	} else {
		b.WriteString("item --gap No work assigned\n")
	}
	b.WriteString("item shell Maintenance shell\n")
	b.WriteString("item local Boot local disk\n")
	b.WriteString("item exit Exit\n")
	timeout := ""
	if e.Menu.Timeout > 0 {
		timeout = " --timeout " + strconv.FormatInt(e.Menu.Timeout.Milliseconds(), 10)
	}
	fmt.Fprintf(&b, "choose --default %s%s target || set target %s\n", def, timeout, def)
	fmt.Fprintf(&b, "chain %s${target}\n", self)
	return b.String(), nil
}

func (e *Engine) workScript(ctx context.Context, base, mac string, w store.Work, why string) (string, error) {
	if w.Loader == store.LoaderPXELinux {
		// A pxelinux device that reaches the HTTP policy (e.g. it is
		// already iPXE and was handed pxelinux.0 by name) runs pxelinux
		// from TFTP, which then asks for its generated config.
		if err := e.event(ctx, mac, store.EventWork, "chain pxelinux ("+why+")"); err != nil {
			return "", err
		}
		host := hostOnly(base)
		return "#!ipxe\nset 210:string tftp://" + host + "/\nchain tftp://" + host + "/" + e.Boot.PXELinux + "\n", nil
	}
	var b strings.Builder
	b.WriteString("#!ipxe\n")
	if IsImaging(w) {
		boot, err := e.imagingBoot(ctx, base, w)
		if err != nil {
			return e.localScript(ctx, mac, err.Error())
		}
		w.Kernel, w.Initrd, w.Cmdline = boot.Kernel, boot.Initrd, boot.Cmdline
		fmt.Fprintf(&b, "echo Preboot: job %d: %s %s\n", boot.Job, w.Kind, w.Image)
	} else {
		fmt.Fprintf(&b, "echo Preboot: %s work for %s: %s\n", why, mac, path.Base(w.Kernel))
	}
	names := make([]string, len(w.Initrd))
	cmdline := w.Cmdline
	for i := range w.Initrd {
		names[i] = fmt.Sprintf("initrd%d", i)
		// EFI iPXE (2019) hands initrds to the kernel's EFI stub by
		// name: the command line must name them.
		cmdline = strings.TrimSpace(cmdline + " initrd=" + names[i])
	}
	fmt.Fprintf(&b, "kernel %s %s || goto failed\n", fileURL(base, w.Kernel), cmdline)
	for i, in := range w.Initrd {
		fmt.Fprintf(&b, "initrd --name %s %s || goto failed\n", names[i], fileURL(base, in))
	}
	b.WriteString("boot || goto failed\n")
	b.WriteString(":failed\necho Preboot: the assigned work could not be started, booting the local disk\nsleep 5\n")
	b.WriteString(e.localBoot())
	if IsImaging(w) {
		return b.String(), nil // the job records itself
	}
	msg := fmt.Sprintf("%s: kernel %s, initrd %s, cmdline %q", why, w.Kernel, strings.Join(w.Initrd, ","), w.Cmdline)
	if err := e.handOut(ctx, mac, w, msg); err != nil {
		return "", err
	}
	return b.String(), nil
}

// handOut records that work left the server and clears apply-once work.
func (e *Engine) handOut(ctx context.Context, mac string, w store.Work, msg string) error {
	if w.Once {
		if err := e.Store.ClearWork(ctx, mac); err != nil {
			return err
		}
		msg += " (once: cleared)"
	}
	return e.event(ctx, mac, store.EventWork, msg)
}

func (e *Engine) localScript(ctx context.Context, mac, why string) (string, error) {
	if err := e.event(ctx, mac, store.EventLocalBoot, why); err != nil {
		return "", err
	}
	return "#!ipxe\necho Preboot: " + why + ", booting the local disk\n" + e.localBoot(), nil
}

// localBoot is the seed's step 10: leave the network boot for the
// machine's own OS.
func (e *Engine) localBoot() string {
	if e.Boot.LocalBootBIOS == "exit" {
		return "exit\n"
	}
	return "iseq ${platform} pcbios || exit\nsanboot --no-describe --drive 0x80 || exit\n"
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
