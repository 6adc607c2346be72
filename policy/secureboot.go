package policy

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/preboot/preboot/bootfiles"
	"github.com/preboot/preboot/store"
)

// learnAfter is how long after a UEFI firmware was handed iPXE a new DHCP
// request of the same device, with no boot policy request in between,
// means the firmware refused iPXE (Secure Boot): the same boot asks again
// within seconds (port 67, then 4011, retransmissions).
const learnAfter = time.Minute

const (
	sbLearntOn  = store.SecureBootStateOn
	sbLearntOff = store.SecureBootStateOff
)

// secureBoot says whether the device takes the Secure Boot path (shim →
// GRUB) and why. Settings of the device, its groups (by priority), the
// rule that took charge of it and the server default win in this order;
// auto is what the server learnt of the device.
func (e *Engine) secureBoot(ctx context.Context, dev store.Device, d Decision) (bool, string, error) {
	return e.secureBootMode(ctx, dev, d, true)
}

// secureBootMode is secureBoot; record says whether what is learnt is
// recorded (the DHCP stage) or only read (the API's view).
func (e *Engine) secureBootMode(ctx context.Context, dev store.Device, d Decision, record bool) (bool, string, error) {
	set, err := e.Settings(ctx)
	if err != nil {
		return false, "", err
	}
	sb := set.SecureBoot
	if m := sb.Devices[dev.MAC]; isSet(m) {
		return m == store.SecureBootOn, "device setting secure_boot " + m, nil
	}
	for _, g := range d.Groups {
		if m := sb.Groups[g]; isSet(m) {
			return m == store.SecureBootOn, "group " + g + " setting secure_boot " + m, nil
		}
	}
	if r, ok := strings.CutPrefix(d.Source, "rule:"); ok {
		if m := sb.Rules[r]; isSet(m) {
			return m == store.SecureBootOn, "rule " + r + " setting secure_boot " + m, nil
		}
	}
	if isSet(sb.Default) {
		return sb.Default == store.SecureBootOn, "server default secure_boot " + sb.Default, nil
	}
	return e.learntSecureBoot(ctx, dev.MAC, record)
}

func isSet(m string) bool { return m == store.SecureBootOn || m == store.SecureBootOff }

// learntSecureBoot is secure_boot auto: the newest EventSecureBoot that
// carries a state (from the imaging environment's report, or learnt here
// before) decides; without one, a UEFI firmware that was handed iPXE and
// came back to DHCP without ever asking for the boot policy refused it
// (Secure Boot): that is learnt, and recorded.
func (e *Engine) learntSecureBoot(ctx context.Context, mac string, record bool) (bool, string, error) {
	evs, err := e.Store.Events(ctx, store.EventFilter{MAC: mac, Kind: store.EventSecureBoot, Limit: 20})
	if err != nil {
		return false, "", fmt.Errorf("secure boot state of %s: %w", mac, err)
	}
	for _, ev := range evs {
		switch {
		case strings.HasPrefix(ev.Message, sbLearntOn):
			return true, "learnt: " + ev.Message, nil
		case strings.HasPrefix(ev.Message, sbLearntOff):
			return false, "learnt: " + ev.Message, nil
		}
	}
	recent, err := e.Store.Events(ctx, store.EventFilter{MAC: mac, Limit: 30})
	if err != nil {
		return false, "", fmt.Errorf("secure boot state of %s: %w", mac, err)
	}
	handedIPXE := ", PXEClient → " + e.Boot.UEFI
	for _, ev := range recent {
		switch ev.Kind {
		case store.EventBoot, store.EventMenu, store.EventLocalBoot, store.EventWork:
			return false, "auto: iPXE reached the boot policy", nil
		case store.EventDHCP:
			if strings.Contains(ev.Message, ", iPXE → ") {
				return false, "auto: iPXE ran", nil
			}
			if strings.HasSuffix(ev.Message, handedIPXE) && e.now().Sub(ev.Time) >= learnAfter {
				if !record {
					return true, "auto: the firmware refused iPXE (learnt at its next DHCP request)", nil
				}
				msg := fmt.Sprintf("%s (learnt): the firmware was handed %s at %s and came back to DHCP without asking for the boot policy — it refuses unsigned iPXE; from now on it boots Debian's signed shim → GRUB",
					sbLearntOn, e.Boot.UEFI, ev.Time.UTC().Format(time.RFC3339))
				if _, err := e.Store.AddEvent(ctx, store.Event{MAC: mac, Time: e.now(), Kind: store.EventSecureBoot, Message: msg}); err != nil {
					return false, "", err
				}
				return true, "learnt: " + msg, nil
			}
		}
	}
	return false, "auto: nothing learnt yet", nil
}

// RecordSecureBootState records what the imaging environment read from
// the firmware (the SecureBoot EFI variable): it settles secure_boot auto
// for the device.
func (e *Engine) RecordSecureBootState(ctx context.Context, mac string, on bool, lockdown string) error {
	msg := sbLearntOff + " (imaging environment: the firmware's SecureBoot variable is 0)"
	if on {
		msg = sbLearntOn + " (imaging environment: the firmware's SecureBoot variable is 1"
		if lockdown != "" {
			msg += ", kernel lockdown " + lockdown
		}
		msg += ")"
	}
	_, err := e.Store.AddEvent(ctx, store.Event{MAC: mac, Time: e.now(), Kind: store.EventSecureBoot, Message: msg})
	return err
}

// BootPath is which boot program a UEFI x64 PXE device gets at its next
// network boot, and why.
type BootPath struct {
	Program    string `json:"program"`     // shimx64.efi or the UEFI boot file (ipxe.efi)
	SecureBoot bool   `json:"secure_boot"` // the Secure Boot path: shim → GRUB
	Reason     string `json:"reason"`
}

// BootPathFor says which path a UEFI x64 device takes (nil for other
// firmware), reading only.
func (e *Engine) BootPathFor(ctx context.Context, dev store.Device, d Decision) (*BootPath, error) {
	if dev.Arch != "efi-x64" {
		return nil, nil
	}
	sb, why, err := e.secureBootMode(ctx, dev, d, false)
	if err != nil {
		return nil, err
	}
	if sb {
		return &BootPath{Program: bootfiles.ShimName, SecureBoot: true, Reason: why}, nil
	}
	return &BootPath{Program: e.Boot.UEFI, Reason: why}, nil
}
