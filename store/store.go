// Package store defines what Preboot remembers — devices, their boot events and
// the work assigned to them — behind one interface, so that the protocol and
// policy code never see a database.
package store

import (
	"context"
	"encoding/json"
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
	// Info is what the agent last reported from the imaging environment:
	// hardware, disks, image-safe data (JSON, see agent.Info).
	Info json.RawMessage `json:"info,omitempty"`
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

// Kinds of work.
const (
	WorkBoot    = "boot"    // boot Kernel + Initrd with Cmdline
	WorkCapture = "capture" // boot the imaging environment, capture the disk to Image
	WorkRestore = "restore" // boot the imaging environment, restore Image to the disk
)

// What the imaging environment does when its job is over.
const (
	AfterReboot   = "reboot"
	AfterPoweroff = "poweroff"
)

// Work is what a device does at its next network boot: boot a given
// kernel, initrd and command line (Kernel and Initrd are paths under the
// TFTP root or http(s) URLs), or run an imaging job (capture, restore).
// Boot work with Once is cleared when handed out; imaging work is cleared
// only when its job succeeds, so a failed or interrupted job runs again at
// the next boot.
type Work struct {
	MAC         string    `json:"mac"`
	Kind        string    `json:"kind"`
	Image       string    `json:"image,omitempty"`
	After       string    `json:"after,omitempty"`
	Compression int       `json:"compression,omitempty"`
	Device      string    `json:"device,omitempty"` // disk for the job; "" = the first fixed disk
	Kernel      string    `json:"kernel,omitempty"`
	Initrd      []string  `json:"initrd,omitempty"`
	Cmdline     string    `json:"cmdline,omitempty"`
	Loader      string    `json:"loader"`
	Once        bool      `json:"once"`
	CreatedAt   time.Time `json:"created_at"`
}

// Store is the persistence boundary of Preboot.
type Store interface {
	// SeeDevice records a sighting, creating the device on first contact.
	SeeDevice(ctx context.Context, s Sighting) (dev Device, created bool, err error)
	Device(ctx context.Context, mac string) (Device, error)
	Devices(ctx context.Context) ([]Device, error)
	// SetDeviceInfo stores the agent's report on the device.
	SetDeviceInfo(ctx context.Context, mac string, info json.RawMessage) error

	AddEvent(ctx context.Context, e Event) error
	Events(ctx context.Context, f EventFilter) ([]Event, error)

	// SetWork assigns work to a device, registering the device if needed.
	SetWork(ctx context.Context, w Work) error
	// Work returns the device's assigned work or an error wrapping ErrNotFound.
	Work(ctx context.Context, mac string) (Work, error)
	// ClearWork removes the device's work; clearing nothing is not an error.
	ClearWork(ctx context.Context, mac string) error

	// CreateJob stores a new job and returns it with its ID.
	CreateJob(ctx context.Context, j Job) (Job, error)
	Job(ctx context.Context, id int64) (Job, error)
	// JobByToken finds the job a per-job token (its SHA-256, hex) belongs to.
	JobByToken(ctx context.Context, tokenHash string) (Job, error)
	Jobs(ctx context.Context, f JobFilter) ([]Job, error)
	// UpdateJob applies fn to the job inside a transaction.
	UpdateJob(ctx context.Context, id int64, fn func(*Job) error) (Job, error)
	AddJobLog(ctx context.Context, id int64, lines []string) error
	JobLog(ctx context.Context, id int64, limit int) ([]JobLine, error)

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

// Job states.
const (
	JobPending   = "pending" // created, the device has not fetched the imaging environment yet
	JobBooting   = "booting" // the agent asked for its job
	JobRunning   = "running" // the agent reports progress
	JobSucceeded = "succeeded"
	JobFailed    = "failed"
	JobCancelled = "cancelled"
)

// JobFinished reports whether a job state is final.
func JobFinished(state string) bool {
	return state == JobSucceeded || state == JobFailed || state == JobCancelled
}

// Job is one run of imaging work on a device.
type Job struct {
	ID          int64     `json:"id"`
	MAC         string    `json:"mac"`
	Kind        string    `json:"kind"`
	Image       string    `json:"image"`
	Device      string    `json:"device,omitempty"`
	After       string    `json:"after"`
	Compression int       `json:"compression,omitempty"`
	State       string    `json:"state"`
	Phase       string    `json:"phase,omitempty"`
	BytesDone   int64     `json:"bytes_done"`
	BytesTotal  int64     `json:"bytes_total"`
	Rate        int64     `json:"rate"` // bytes per second
	Message     string    `json:"message,omitempty"`
	Error       string    `json:"error,omitempty"`
	TokenHash   string    `json:"-"`
	CreatedAt   time.Time `json:"created_at"`
	StartedAt   time.Time `json:"started_at,omitzero"`
	UpdatedAt   time.Time `json:"updated_at"`
	FinishedAt  time.Time `json:"finished_at,omitzero"`
}

// JobFilter selects jobs; zero values mean "any".
type JobFilter struct {
	MAC   string
	State string
	Open  bool // only jobs not finished
	Limit int  // 0 = 100
}

// JobLine is one line of a job's log.
type JobLine struct {
	Time time.Time `json:"time"`
	Line string    `json:"line"`
}
