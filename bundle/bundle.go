// Package bundle defines the parameters of each bundle kind — what a
// device is told to do at its next network boot — and validates them, so
// that the API refuses a bundle that could never run with a message that
// says what to fix.
package bundle

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/preboot/preboot/store"
)

// Restore is the parameters of image-restore bundles.
type Restore struct {
	Image string `json:"image"`
	// Partitions restores only these partition numbers (1-based) of the
	// image onto a disk whose partition table already matches the
	// image's; empty restores the whole disk (table included).
	Partitions []int  `json:"partitions,omitempty"`
	Device     string `json:"device,omitempty"` // a /dev path; "" = the first fixed disk
	After      string `json:"after,omitempty"`  // reboot (default) or poweroff
	// Disk selects the target disk by serial, WWN, model or size (see
	// DiskRule); Device, when set, wins.
	Disk *DiskRule `json:"disk,omitempty"`
	// Personalize writes the device record's name (hostname, Windows
	// computer name in a sysprep unattend.xml) and a fresh machine-id
	// into the restored system. Off by default.
	Personalize bool `json:"personalize,omitempty"`
	Resize
}

// Resize is how a whole-disk restore fits a disk of another size and
// boots on UEFI; restore and multicast bundles share it.
type Resize struct {
	// GrowPartition names the partition that takes a larger disk's
	// space, or gives up what a smaller disk lacks; partitions after it
	// move with it. 0 = the largest partition holding a filesystem the
	// agent resizes (never an ESP, MSR or Recovery partition).
	GrowPartition int `json:"grow_partition,omitempty"`
	// BootEntry is "auto" (default: on a UEFI machine, create the boot
	// entry of the restored OS's loader in NVRAM, network boot kept
	// first), "disk-first" (the same, the disk ahead of network boot) or
	// "off".
	BootEntry string `json:"boot_entry,omitempty"`
}

func (r Resize) validate(parts []int) error {
	var errs []error
	if r.GrowPartition < 0 || r.GrowPartition > 128 {
		errs = append(errs, fmt.Errorf("grow_partition %d: want a partition number 1..128, or 0 for automatic", r.GrowPartition))
	}
	if r.GrowPartition > 0 && len(parts) > 0 {
		errs = append(errs, errors.New("grow_partition: only with a whole-disk restore (a partition restore keeps the disk's table)"))
	}
	switch r.BootEntry {
	case "", "auto", "disk-first", "off":
	default:
		errs = append(errs, fmt.Errorf("boot_entry %q: want auto, disk-first or off", r.BootEntry))
	}
	return errors.Join(errs...)
}

// Capture is the parameters of image-capture bundles.
type Capture struct {
	Image       string `json:"image"`
	Compression int    `json:"compression,omitempty"` // zstd level 1..19, 0 = default (3)
	Device      string `json:"device,omitempty"`
	After       string `json:"after,omitempty"`
	// Force captures filesystems that are not safe to image as they
	// stand (a hibernated or dirty NTFS: Fast Startup leaves one) instead
	// of failing the job; the image carries a warning.
	Force bool `json:"force,omitempty"`
	// Disk selects the source disk (see DiskRule); Device, when set, wins.
	Disk *DiskRule `json:"disk,omitempty"`
}

// Script is the parameters of script bundles: a shell script the agent
// runs with /bin/sh in the imaging environment; its output goes to the job
// log, a non-zero exit fails the job.
type Script struct {
	Script  string         `json:"script"`
	Timeout store.Duration `json:"timeout,omitempty"` // 0 = 1h
	After   string         `json:"after,omitempty"`
}

// Multicast is the parameters of multicast bundles. The session starts
// when MinClients devices joined, or MaxWait after the last join.
type Multicast struct {
	Image      string         `json:"image"`
	Partitions []int          `json:"partitions,omitempty"`
	Device     string         `json:"device,omitempty"`
	MinClients int            `json:"min_clients,omitempty"`
	MaxWait    store.Duration `json:"max_wait,omitempty"`
	After      string         `json:"after,omitempty"`
	// Disk, Personalize and Resize are as in Restore.
	Disk        *DiskRule `json:"disk,omitempty"`
	Personalize bool      `json:"personalize,omitempty"`
	Resize
}

// OSInstall is the parameters of os-install bundles: boot Kernel with
// Initrd and Cmdline (paths under the TFTP root or http(s) URLs), or
// chain to an iPXE script URL (Chain: kickstart, autoyast, preseed,
// WinPE via wimboot...).
type OSInstall struct {
	Kernel  string   `json:"kernel,omitempty"`
	Initrd  []string `json:"initrd,omitempty"`
	Cmdline string   `json:"cmdline,omitempty"`
	Chain   string   `json:"chain,omitempty"`
	Loader  string   `json:"loader,omitempty"` // ipxe (default) or pxelinux
	// Secrets are values Cmdline and Chain name as {{secret:NAME}}:
	// substituted only in the boot script or pxelinux config of a
	// hand-out (Expand), shown as SecretMarker everywhere else (Redact).
	Secrets map[string]string `json:"secrets,omitempty"`
	// SecretsInBootScript accepts that the secrets named in Cmdline or
	// Chain are readable by any client that claims the device's MAC:
	// without it a bundle that names a secret is refused.
	SecretsInBootScript bool `json:"secrets_in_boot_script,omitempty"`
}

// Wipe is the parameters of wipe bundles: every listed disk (all fixed
// disks when empty) is zeroed or discarded. Confirm must be true.
type Wipe struct {
	Mode    string   `json:"mode,omitempty"` // zero (default) or discard
	Disks   []string `json:"disks,omitempty"`
	Confirm bool     `json:"confirm"`
	After   string   `json:"after,omitempty"`
}

// Inventory is the parameters of inventory bundles (collect hardware).
type Inventory struct {
	After string `json:"after,omitempty"`
}

// LocalBoot is the parameters of local-boot bundles: how iPXE hands the
// machine to its own disk. Assigned to a group, or picked by a rule that
// matches a model, it sets the method for those machines only (FOG's
// longest-running UEFI complaint: `exit` hangs or loops on some firmware).
type LocalBoot struct {
	// Method: "" (the server's default: sanboot of drive 0x80 on BIOS, or
	// exit with --local-boot-bios exit; exit on UEFI), "exit" (back to the
	// firmware's boot order, every firmware) or "sanboot" (BIOS: boot
	// drive 0x80's MBR; falls back to exit when that fails and on UEFI,
	// where iPXE cannot sanboot a local drive) or "grub" (UEFI: iPXE
	// chains Debian's network GRUB, which chains the boot loader it finds
	// on the disk's ESP; sanboot on BIOS).
	Method string `json:"method,omitempty"`
}

// Local-boot methods.
const (
	LocalBootExit    = "exit"
	LocalBootSanboot = "sanboot"
	LocalBootGRUB    = "grub"
)

// Wipe modes.
const (
	WipeZero    = "zero"
	WipeDiscard = "discard"
)

// New returns a pointer to the zero parameters of a kind.
func New(kind string) (any, error) {
	switch kind {
	case store.KindImageRestore:
		return &Restore{}, nil
	case store.KindImageCapture:
		return &Capture{}, nil
	case store.KindScript:
		return &Script{}, nil
	case store.KindMulticast:
		return &Multicast{}, nil
	case store.KindOSInstall:
		return &OSInstall{}, nil
	case store.KindWipe:
		return &Wipe{}, nil
	case store.KindInventory:
		return &Inventory{}, nil
	case store.KindLocalBoot:
		return &LocalBoot{}, nil
	}
	return nil, fmt.Errorf("kind %q: want one of %s", kind, strings.Join(store.BundleKinds, ", "))
}

// Decode reads raw parameters of a kind strictly (unknown fields are an
// error) into its type.
func Decode(kind string, raw json.RawMessage) (any, error) {
	p, err := New(kind)
	if err != nil {
		return nil, err
	}
	if len(bytes.TrimSpace(raw)) == 0 || string(bytes.TrimSpace(raw)) == "null" {
		raw = json.RawMessage("{}")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(p); err != nil {
		return nil, fmt.Errorf("params of a %s bundle: %w", kind, err)
	}
	return p, nil
}

// Normalize validates raw parameters of a kind, fills defaults and
// returns them re-encoded. Every problem is listed, one per line.
func Normalize(kind string, raw json.RawMessage) (json.RawMessage, error) {
	p, err := Decode(kind, raw)
	if err != nil {
		return nil, err
	}
	var errs []error
	switch v := p.(type) {
	case *Restore:
		errs = append(errs, imageRef("image", v.Image), partitions(v.Partitions), device("device", v.Device), after(&v.After), v.Disk.Validate(),
			v.Resize.validate(v.Partitions))
		if v.Personalize && len(v.Partitions) > 0 {
			errs = append(errs, errors.New("personalize: only with a whole-disk restore (no partitions)"))
		}
	case *Capture:
		errs = append(errs, imageName("image", v.Image), device("device", v.Device), after(&v.After), v.Disk.Validate())
		if v.Compression < 0 || v.Compression > 19 {
			errs = append(errs, fmt.Errorf("compression %d: want 1..19, or 0 for the default (3)", v.Compression))
		}
	case *Script:
		if strings.TrimSpace(v.Script) == "" {
			errs = append(errs, errors.New("script: required (the shell script to run in the imaging environment)"))
		}
		if len(v.Script) > 256<<10 {
			errs = append(errs, fmt.Errorf("script: %d bytes, at most 256 KiB", len(v.Script)))
		}
		if v.Timeout < 0 || time.Duration(v.Timeout) > 24*time.Hour {
			errs = append(errs, fmt.Errorf("timeout %s: want 0 (1h) up to 24h", time.Duration(v.Timeout)))
		}
		if v.Timeout == 0 {
			v.Timeout = store.Duration(time.Hour)
		}
		errs = append(errs, after(&v.After))
	case *Multicast:
		errs = append(errs, imageRef("image", v.Image), partitions(v.Partitions), device("device", v.Device), after(&v.After), v.Disk.Validate(), v.Resize.validate(v.Partitions))
		if v.Personalize && len(v.Partitions) > 0 {
			errs = append(errs, errors.New("personalize: only with a whole-disk restore (no partitions)"))
		}
		if v.MinClients < 0 || v.MinClients > 10000 {
			errs = append(errs, fmt.Errorf("min_clients %d: want 1..10000 (0 = start on max_wait only)", v.MinClients))
		}
		if v.MaxWait < 0 || time.Duration(v.MaxWait) > 24*time.Hour {
			errs = append(errs, fmt.Errorf("max_wait %s: want up to 24h", time.Duration(v.MaxWait)))
		}
		if v.MinClients == 0 && v.MaxWait == 0 {
			errs = append(errs, errors.New("min_clients, max_wait: set at least one, or the session never starts"))
		}
	case *OSInstall:
		errs = append(errs, v.validate())
	case *Wipe:
		switch v.Mode {
		case "":
			v.Mode = WipeZero
		case WipeZero, WipeDiscard:
		default:
			errs = append(errs, fmt.Errorf("mode %q: want zero or discard", v.Mode))
		}
		for _, d := range v.Disks {
			if d == "" {
				errs = append(errs, errors.New("disks: an empty name"))
			} else {
				errs = append(errs, device("disks", d))
			}
		}
		if !v.Confirm {
			errs = append(errs, errors.New("confirm: a wipe destroys every listed disk's data (all fixed disks when disks is empty): set confirm to true"))
		}
		errs = append(errs, after(&v.After))
	case *Inventory:
		errs = append(errs, after(&v.After))
	case *LocalBoot:
		switch v.Method {
		case "", LocalBootExit, LocalBootSanboot, LocalBootGRUB:
		default:
			errs = append(errs, fmt.Errorf("method %q: want exit, sanboot or grub (or none: the server's default)", v.Method))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	out, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (o *OSInstall) validate() error {
	var errs []error
	switch {
	case o.Kernel == "" && o.Chain == "":
		errs = append(errs, errors.New("kernel or chain: one is required (a kernel to boot, or an iPXE script URL to chain to)"))
	case o.Kernel != "" && o.Chain != "":
		errs = append(errs, errors.New("kernel and chain: set one, not both"))
	}
	if o.Chain != "" {
		if !strings.HasPrefix(o.Chain, "http://") && !strings.HasPrefix(o.Chain, "https://") && !strings.HasPrefix(o.Chain, "tftp://") {
			errs = append(errs, fmt.Errorf("chain %q: want an http://, https:// or tftp:// URL", o.Chain))
		}
		if len(o.Initrd) > 0 || o.Cmdline != "" {
			errs = append(errs, errors.New("initrd, cmdline: only with kernel (a chained script loads its own)"))
		}
	}
	for _, p := range append([]string{o.Kernel, o.Chain}, o.Initrd...) {
		if p == "" {
			continue
		}
		if strings.ContainsAny(p, " \t\r\n\"'`$;") {
			errs = append(errs, fmt.Errorf("%q: paths and URLs must not contain white space, quotes, $ or ;", p))
		}
		if strings.Contains(p, "..") && !strings.Contains(p, "://") {
			errs = append(errs, fmt.Errorf("%q: paths must stay inside the TFTP root", p))
		}
	}
	if strings.ContainsAny(o.Cmdline, "\r\n") {
		errs = append(errs, errors.New("cmdline: must be one line"))
	}
	errs = append(errs, o.validateSecrets())
	switch o.Loader {
	case "":
		o.Loader = store.LoaderIPXE
	case store.LoaderIPXE:
	case store.LoaderPXELinux:
		if o.Chain != "" {
			errs = append(errs, errors.New("loader pxelinux: cannot chain an iPXE script; use loader ipxe"))
		}
	default:
		errs = append(errs, fmt.Errorf("loader %q: want ipxe or pxelinux", o.Loader))
	}
	return errors.Join(errs...)
}

var imageRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// ValidImageName is the rule image names follow (they are directory names
// in the repository and appear in URLs).
func ValidImageName(name string) error {
	if !imageRE.MatchString(name) || strings.Contains(name, "..") {
		return fmt.Errorf("image name %q: want 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit", name)
	}
	return nil
}

func imageName(field, name string) error {
	if name == "" {
		return fmt.Errorf("%s: required (an image name)", field)
	}
	if err := ValidImageName(name); err != nil {
		return fmt.Errorf("%s: %w", field, err)
	}
	return nil
}

// ValidImageRef is the rule for the image a restore names: NAME (its
// current version when the job starts) or NAME@VERSION (that version).
func ValidImageRef(ref string) error {
	name, v, found := strings.Cut(ref, "@")
	if err := ValidImageName(name); err != nil {
		return err
	}
	if found {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || strconv.Itoa(n) != v {
			return fmt.Errorf("image %q: want NAME or NAME@VERSION (a version number from 1)", ref)
		}
	}
	return nil
}

// imageRef checks the image of a restore: NAME or NAME@VERSION.
func imageRef(field, ref string) error {
	if ref == "" {
		return fmt.Errorf("%s: required (an image name, or NAME@VERSION)", field)
	}
	if err := ValidImageRef(ref); err != nil {
		return fmt.Errorf("%s: %w", field, err)
	}
	return nil
}

func partitions(ps []int) error {
	seen := map[int]bool{}
	for _, p := range ps {
		if p < 1 || p > 128 {
			return fmt.Errorf("partitions: %d is not a partition number (1..128)", p)
		}
		if seen[p] {
			return fmt.Errorf("partitions: %d listed twice", p)
		}
		seen[p] = true
	}
	return nil
}

func device(field, d string) error {
	if d != "" && (!strings.HasPrefix(d, "/dev/") || strings.Contains(d, "..") || strings.ContainsAny(d, " \t\r\n")) {
		return fmt.Errorf("%s %q: want a /dev path (e.g. /dev/sda) or nothing for the first fixed disk", field, d)
	}
	return nil
}

func after(a *string) error {
	switch *a {
	case "":
		*a = store.AfterReboot
	case store.AfterReboot, store.AfterPoweroff:
	default:
		return fmt.Errorf("after %q: want reboot or poweroff", *a)
	}
	return nil
}

// Image returns the image a bundle's parameters name ("" for none), and
// whether the bundle reads it (restore, multicast) rather than writes it.
func Image(kind string, raw json.RawMessage) (name string, reads bool) {
	p, err := Decode(kind, raw)
	if err != nil {
		return "", false
	}
	switch v := p.(type) {
	case *Restore:
		return v.Image, true
	case *Multicast:
		return v.Image, true
	case *Capture:
		return v.Image, false
	}
	return "", false
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// ValidName is the rule names of bundles, groups, rules and tokens
// follow: they appear in URLs and command lines.
func ValidName(what, name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("%s name %q: want 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit", what, name)
	}
	return nil
}
