// Package store defines what Preboot remembers — devices, their boot events and
// the work assigned to them — behind one interface, so that the protocol and
// policy code never see a database.
package store

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
)

// ErrNotFound is returned (wrapped) when a looked-up record does not exist.
var ErrNotFound = errors.New("not found")

// Device is a machine that has booted from the network at least once, or
// that an administrator registered by hand.
type Device struct {
	ID           int64     `json:"id"`
	MAC          string    `json:"mac"`
	Name         string    `json:"name,omitempty"`
	UUID         string    `json:"uuid,omitempty"`
	Serial       string    `json:"serial,omitempty"`
	Manufacturer string    `json:"manufacturer,omitempty"`
	Product      string    `json:"product,omitempty"`
	Arch         string    `json:"arch,omitempty"`     // firmware architecture, e.g. "bios", "efi-x64"
	Platform     string    `json:"platform,omitempty"` // iPXE's ${platform}: pcbios, efi
	IP           string    `json:"ip,omitempty"`
	FirstSeen    time.Time `json:"first_seen"`
	LastSeen     time.Time `json:"last_seen"`
	LastEvent    *Event    `json:"last_event,omitempty"`
}

// Sighting is what a boot-time request told us about a device. Empty fields
// leave the stored values unchanged.
type Sighting struct {
	MAC          string
	UUID         string
	Serial       string
	Manufacturer string
	Product      string
	Arch         string
	Platform     string
	IP           string
	Time         time.Time
	// FillOnly sets a value only where none is stored yet: the DHCP stage
	// knows less, and less reliably, than the iPXE stage.
	FillOnly bool
}

// Event kinds recorded by the server.
const (
	EventDHCP      = "dhcp"      // proxyDHCP answered the device
	EventBoot      = "boot"      // the device asked the boot policy what to do
	EventLocalBoot = "localboot" // the policy sent the device to its own disk
	EventWork      = "work"      // the policy handed out assigned work
	EventMenu      = "menu"      // the policy showed the Preboot menu
	EventAdmin     = "admin"     // an administrator changed something
)

// Event is one thing that happened to a device.
type Event struct {
	ID      int64     `json:"id"`
	MAC     string    `json:"mac"`
	Time    time.Time `json:"time"`
	Kind    string    `json:"kind"`
	Message string    `json:"message"`
}

// EventFilter selects events; zero values mean "any".
type EventFilter struct {
	MAC   string
	Kind  string
	Since time.Time
	Limit int // 0 = a default of 100
}

// Loaders a device can be sent through.
const (
	LoaderIPXE     = "ipxe"     // HTTP boot script (default)
	LoaderPXELinux = "pxelinux" // pxelinux.0 over TFTP with a generated config
)

// Work is a boot of a given kernel, initrd and command line assigned to one
// device. Kernel and Initrd are paths under the TFTP root or http(s) URLs.
type Work struct {
	MAC       string    `json:"mac"`
	Kernel    string    `json:"kernel"`
	Initrd    []string  `json:"initrd,omitempty"`
	Cmdline   string    `json:"cmdline,omitempty"`
	Loader    string    `json:"loader"`
	Once      bool      `json:"once"`
	CreatedAt time.Time `json:"created_at"`
}

// Store is the persistence boundary of Preboot.
type Store interface {
	// SeeDevice records a sighting, creating the device on first contact.
	SeeDevice(ctx context.Context, s Sighting) (dev Device, created bool, err error)
	Device(ctx context.Context, mac string) (Device, error)
	Devices(ctx context.Context) ([]Device, error)

	AddEvent(ctx context.Context, e Event) error
	Events(ctx context.Context, f EventFilter) ([]Event, error)

	// SetWork assigns work to a device, registering the device if needed.
	SetWork(ctx context.Context, w Work) error
	// Work returns the device's assigned work or an error wrapping ErrNotFound.
	Work(ctx context.Context, mac string) (Work, error)
	// ClearWork removes the device's work; clearing nothing is not an error.
	ClearWork(ctx context.Context, mac string) error

	Close() error
}

// NormalizeMAC returns the canonical lower-case, colon-separated form of a
// MAC address given with colons, dashes, dots or no separators at all.
func NormalizeMAC(s string) (string, error) {
	s = strings.TrimSpace(s)
	if hw, err := net.ParseMAC(s); err == nil {
		return hw.String(), nil
	}
	clean := strings.NewReplacer(":", "", "-", "", ".", "").Replace(s)
	if len(clean) == 12 {
		if hw, err := net.ParseMAC(clean[0:2] + ":" + clean[2:4] + ":" + clean[4:6] + ":" + clean[6:8] + ":" + clean[8:10] + ":" + clean[10:12]); err == nil {
			return hw.String(), nil
		}
	}
	return "", fmt.Errorf("invalid MAC address %q", s)
}
