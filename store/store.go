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
	Interface    string    `json:"interface,omitempty"` // server interface that last saw its DHCP requests (Wake-on-LAN goes there)
	FirstSeen    time.Time `json:"first_seen"`
	LastSeen     time.Time `json:"last_seen"`
	LastEvent    *Event    `json:"last_event,omitempty"`
	AssetTag     string    `json:"asset_tag,omitempty"`
	Notes        string    `json:"notes,omitempty"`
	// Registered: an administrator, a rule or the unregistered default
	// took charge of the device. Rules only apply to unregistered devices.
	Registered bool `json:"registered"`
	// RAMBytes and DiskBytes (total of fixed disks) come from the agent's
	// last report; 0 = unknown.
	RAMBytes  int64 `json:"ram_bytes,omitempty"`
	DiskBytes int64 `json:"disk_bytes,omitempty"`
	// Applied is the last bundle applied to the device.
	Applied *Applied `json:"applied,omitempty"`
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
	AssetTag     string
	Arch         string
	Platform     string
	IP           string
	Interface    string // server interface the request came in on (proxyDHCP, DHCP); "" keeps the stored one
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
	EventJob       = "job"       // a job changed state
	EventPolicy    = "policy"    // a rule matched, a device was registered or named
	// EventSecurity: something refused that looked like an attack or a
	// spoofed device (a boot claim for a device whose job is running, a
	// job token used from another address...).
	EventSecurity = "security"
	// EventMulticast: a multicast session started, ended or was
	// cancelled, or one of its receivers fell back to unicast.
	EventMulticast = "multicast"
	// EventSecureBoot: what the server knows of a device's Secure Boot
	// state and which boot path (iPXE, or shim → GRUB) it takes.
	EventSecureBoot = "secureboot"
	// EventWake: a Wake-on-LAN magic packet was sent to the device (or
	// could not be), with the interface and broadcast address.
	EventWake = "wake"
)

// Event is one thing that happened: to a device (MAC set), in a job (Job
// set), or an administrator's change (Actor names the token).
type Event struct {
	ID      int64     `json:"id"`
	MAC     string    `json:"mac,omitempty"`
	Job     int64     `json:"job,omitempty"`
	Time    time.Time `json:"time"`
	Kind    string    `json:"kind"`
	Actor   string    `json:"actor,omitempty"`
	Message string    `json:"message"`
}

// EventFilter selects events; zero values mean "any".
type EventFilter struct {
	MAC      string
	Kind     string
	Job      int64
	Since    time.Time // time >= Since
	Until    time.Time // time < Until
	AfterID  int64     // id > AfterID, oldest first (for streaming)
	BeforeID int64     // id < BeforeID (for paging back)
	Limit    int       // 0 = a default of 100
}

// Other errors the store returns (wrapped), so that the API can answer
// 409 and 422 instead of 500.
var (
	// ErrConflict: a name, priority or assignment already exists, or the
	// record is still referenced (a bundle that is assigned, a group with
	// an assignment...).
	ErrConflict = errors.New("conflict")
	// ErrInvalid: the record breaks a rule of the model the caller should
	// have checked (e.g. a reference to a bundle that does not exist).
	ErrInvalid = errors.New("invalid")
)

// Loaders a device can be sent through (os-install bundles).
const (
	LoaderIPXE     = "ipxe"     // HTTP boot script (default)
	LoaderPXELinux = "pxelinux" // pxelinux.0 over TFTP with a generated config
)

// Bundle kinds (DESIGN.md §3).
const (
	KindImageRestore = "image-restore"
	KindImageCapture = "image-capture"
	KindScript       = "script"
	KindMulticast    = "multicast"
	KindOSInstall    = "os-install"
	KindWipe         = "wipe"
	KindInventory    = "inventory"
	KindLocalBoot    = "local-boot"
)

// BundleKinds lists every kind, in the order the docs present them.
var BundleKinds = []string{KindImageRestore, KindImageCapture, KindScript, KindMulticast, KindOSInstall, KindWipe, KindInventory, KindLocalBoot}

// RunsAgent reports whether a bundle kind runs in the imaging environment
// (a job the agent carries out and reports on).
func RunsAgent(kind string) bool {
	switch kind {
	case KindImageRestore, KindImageCapture, KindScript, KindMulticast, KindWipe, KindInventory:
		return true
	}
	return false
}

// What the imaging environment does when its job is over.
const (
	AfterReboot   = "reboot"
	AfterPoweroff = "poweroff"
)

// Bundle is something a device can be told to do at its next network
// boot, with its parameters (package bundle validates them per kind; the
// store keeps them as JSON). Version grows by one at every change, so
// that "always" assignments apply a changed bundle again.
type Bundle struct {
	ID          int64           `json:"id"`
	Name        string          `json:"name"`
	Kind        string          `json:"kind"`
	Description string          `json:"description,omitempty"`
	Params      json.RawMessage `json:"params"`
	Version     int64           `json:"version"`
	CreatedAt   time.Time       `json:"created_at"`
	UpdatedAt   time.Time       `json:"updated_at"`
}

// BundleFilter selects bundles; zero values mean "any".
type BundleFilter struct {
	Kind  string
	Image string // bundles whose params name this image
	Page
}

// PolicyChange is what one policy version changed.
type PolicyChange struct {
	Version int64
	// Kind is PolicyChangeDevice, PolicyChangeGroupMenu,
	// PolicyChangeRules, PolicyChangeSettings, PolicyChangeBundle,
	// PolicyChangeGroup, PolicyChangeGroupAssignment or PolicyChangeAny.
	Kind   string
	Target string // a MAC (device), a group name (group, its menu or assignment) or a bundle ID
}

// Policy change kinds.
const (
	// PolicyChangeAny: several things at once (a renamed or deleted
	// group, a renamed bundle...): reload everything.
	PolicyChangeAny = ""
	// PolicyChangeDevice: the assignment, static group memberships or
	// menu of the device Target (and nothing else).
	PolicyChangeDevice = "device"
	// PolicyChangeGroupMenu: the menu of the group Target.
	PolicyChangeGroupMenu = "group-menu"
	// PolicyChangeRules: the rules (and nothing else).
	PolicyChangeRules = "rules"
	// PolicyChangeSettings: the settings (and nothing else).
	PolicyChangeSettings = "settings"
	// PolicyChangeBundle: the bundle whose ID is Target was created,
	// changed (not renamed) or deleted.
	PolicyChangeBundle = "bundle"
	// PolicyChangeGroup: the group Target was created or changed (its
	// description, priority or expression; not renamed).
	PolicyChangeGroup = "group"
	// PolicyChangeGroupAssignment: the assignment of the group Target.
	PolicyChangeGroupAssignment = "group-assignment"
)

// Page is the pagination of a list: Limit 0 means the store's default
// (100), Offset skips that many records.
type Page struct {
	Limit  int
	Offset int
}

// Group is a set of devices: members added by hand, and devices matching
// Match (a rule expression, see package rules; "" = none). Groups are
// ordered by Priority (lower first, unique) to decide which group's
// assignment a device in several groups gets.
type Group struct {
	ID          int64     `json:"id"`
	Name        string    `json:"name"`
	Description string    `json:"description,omitempty"`
	Priority    int       `json:"priority"`
	Match       string    `json:"match,omitempty"`
	Members     int       `json:"members"` // number of static members (read only)
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
}

// Assignment gives a bundle to one device (MAC set) or to a group (Group
// set). Once: cleared for the device after a successful run. Force: run
// even if the bundle (at this version) was the last one applied to the
// device. A device or a group has at most one assignment.
type Assignment struct {
	ID         int64     `json:"id"`
	BundleID   int64     `json:"bundle_id"`
	Bundle     string    `json:"bundle"` // bundle name (read only)
	BundleKind string    `json:"bundle_kind"`
	MAC        string    `json:"device,omitempty"`
	Group      string    `json:"group,omitempty"`
	Once       bool      `json:"once"`
	Force      bool      `json:"force"`
	CreatedAt  time.Time `json:"created_at"`
	// At schedules the assignment: the policy does not hand it out
	// before this time (zero: at once). Wake: at that time the server
	// sends its devices a Wake-on-LAN magic packet; WokenAt is when a
	// server claimed that wake (zero: not yet), so that servers sharing
	// the database wake the devices once.
	At      time.Time `json:"at,omitzero"`
	Wake    bool      `json:"wake,omitempty"`
	WokenAt time.Time `json:"woken_at,omitzero"`
}

// Due reports whether the assignment may be handed out at now.
func (a Assignment) Due(now time.Time) bool {
	return a.At.IsZero() || !now.Before(a.At)
}

// AssignmentFilter selects assignments; zero values mean "any".
type AssignmentFilter struct {
	MAC    string
	Group  string
	Bundle string // name
	// Scheduled: only assignments with a time (At set).
	Scheduled bool
	Page
}

// Rule decides what an unregistered device does at its first boots:
// enabled rules are tried in Position order, the first whose Match holds
// wins. It registers the device, adds it to Group (if set) and runs
// Bundle once (if set).
type Rule struct {
	ID        int64     `json:"id"`
	Name      string    `json:"name"`
	Position  int       `json:"position"`
	Enabled   bool      `json:"enabled"`
	Match     string    `json:"match"`
	Bundle    string    `json:"bundle,omitempty"` // bundle name
	Group     string    `json:"group,omitempty"`  // group name
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Menu is the Preboot menu (the seed's pxemenu) as configured at one
// scope: the server default (settings), a group or a device. Bundles are
// extra entries an operator may pick at the machine.
type Menu struct {
	Mode    string   `json:"mode"`             // always, hotkey, never
	Hotkey  string   `json:"hotkey,omitempty"` // e.g. ctrl-p, esc, f
	Timeout Duration `json:"timeout"`          // menu and hotkey prompt timeout
	Title   string   `json:"title,omitempty"`
	Bundles []string `json:"bundles,omitempty"` // names of bundles offered as entries
	Shell   bool     `json:"shell"`             // offer the maintenance shell
}

// Duration is a time.Duration that reads and writes JSON as "3s" (and
// reads a number of seconds too).
type Duration time.Duration

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var secs float64
		if err2 := json.Unmarshal(b, &secs); err2 != nil {
			return fmt.Errorf("duration: want a string like \"3s\" or a number of seconds")
		}
		*d = Duration(secs * float64(time.Second))
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: %w", s, err)
	}
	*d = Duration(v)
	return nil
}

// Menu scopes.
const (
	ScopeDevice = "device"
	ScopeGroup  = "group"
)

// Unregistered-default actions: what an unregistered device no rule
// matched does.
const (
	UnregisteredLocal  = "local"  // boot its own disk (default)
	UnregisteredMenu   = "menu"   // show the Preboot menu
	UnregisteredBundle = "bundle" // run Settings.Unregistered.Bundle once (e.g. an inventory bundle)
	UnregisteredIgnore = "ignore" // proxyDHCP does not answer it at all
)

// Naming sources for new devices.
const (
	NameFromNone     = ""         // leave unnamed
	NameFromSerial   = "serial"   // prefix + SMBIOS serial
	NameFromAsset    = "asset"    // prefix + asset tag
	NameFromMAC      = "mac"      // prefix + MAC without separators
	NameFromSequence = "sequence" // prefix + 001, 002, ...
)

// Settings are the server-wide policy settings kept in the store (so that
// several servers sharing a database agree). A server starts from its
// configuration file's values until an administrator changes them.
type Settings struct {
	Menu         Menu         `json:"menu"`
	Unregistered Unregistered `json:"unregistered"`
	Naming       Naming       `json:"naming"`
	SecureBoot   SecureBoot   `json:"secure_boot,omitzero"`
}

// Secure Boot modes: auto (learnt per device), on (shim → GRUB), off (iPXE).
const (
	SecureBootAuto = "auto"
	SecureBootOn   = "on"
	SecureBootOff  = "off"
)

// SecureBoot says which UEFI x64 devices take the Secure Boot path
// (Debian's signed shim and GRUB) instead of iPXE. The most specific mode
// that is not auto wins: the device's, its first group's by priority, the
// rule that took charge of it, the server default; auto (or nothing) means
// what the server learnt of the device.
type SecureBoot struct {
	Default string            `json:"default,omitempty"`
	Devices map[string]string `json:"devices,omitempty"` // MAC → mode
	Groups  map[string]string `json:"groups,omitempty"`  // group name → mode
	Rules   map[string]string `json:"rules,omitempty"`   // rule name → mode
}

// Prefixes of EventSecureBoot messages that carry a device's Secure Boot
// state (learnt by the policy, or read by the imaging environment): the
// newest one settles secure_boot auto for the device.
const (
	SecureBootStateOn  = "Secure Boot on"
	SecureBootStateOff = "Secure Boot off"
)

// ValidSecureBootMode reports whether m is auto, on, off or empty (auto).
func ValidSecureBootMode(m string) bool {
	switch m {
	case "", SecureBootAuto, SecureBootOn, SecureBootOff:
		return true
	}
	return false
}

// Unregistered is the default policy for unregistered devices.
type Unregistered struct {
	Action string `json:"action"`           // local, menu, bundle, ignore
	Bundle string `json:"bundle,omitempty"` // for action "bundle"
}

// Naming names devices when they are registered by a rule or the
// unregistered default.
type Naming struct {
	Prefix string `json:"prefix,omitempty"`
	From   string `json:"from,omitempty"` // "", serial, asset, mac, sequence
}

// Token is an administrator's API token; only its SHA-256 is stored.
type Token struct {
	ID        int64     `json:"id"`
	Name      string    `json:"name"`
	Hash      string    `json:"-"`
	Prefix    string    `json:"prefix"` // first characters, to recognise it
	CreatedAt time.Time `json:"created_at"`
	LastUsed  time.Time `json:"last_used,omitzero"`
	// Scope is what the token may do: ScopeAdmin ("", everything) or
	// ScopeReplication.
	Scope string `json:"scope,omitempty"`
}

// Applied records the last bundle applied to a device (for "force").
type Applied struct {
	BundleID      int64     `json:"bundle_id"`
	Bundle        string    `json:"bundle"`
	BundleVersion int64     `json:"bundle_version"`
	AssignmentID  int64     `json:"assignment_id,omitempty"`
	Job           int64     `json:"job,omitempty"`
	Time          time.Time `json:"time"`
}

// DeviceFilter selects devices; zero values mean "any".
type DeviceFilter struct {
	Search     string // substring of MAC, name, serial, maker, model, IP
	Group      string // static members of this group
	Registered *bool
	// SeenSince: devices last seen at or after this time (zero = any).
	SeenSince time.Time
	Page
}

// Store is the persistence boundary of Preboot. Every method is safe for
// concurrent use; methods that change several rows do it in one
// transaction. Names (bundles, groups, rules, tokens, users) are unique:
// creating or renaming onto a used one is ErrConflict.
type Store interface {
	// SeeDevice records a sighting, creating the device on first contact.
	SeeDevice(ctx context.Context, s Sighting) (dev Device, created bool, err error)
	Device(ctx context.Context, mac string) (Device, error)
	Devices(ctx context.Context, f DeviceFilter) ([]Device, error)
	CountDevices(ctx context.Context, f DeviceFilter) (int, error)
	// CreateDevice registers a device by hand (ErrConflict if its MAC is known).
	CreateDevice(ctx context.Context, d Device) (Device, error)
	// UpdateDevice applies fn inside a transaction; fn may change Name,
	// AssetTag, Notes, Registered.
	UpdateDevice(ctx context.Context, mac string, fn func(*Device) error) (Device, error)
	// DeleteDevice forgets a device, its assignment, memberships, menu and
	// applied record (its jobs and events stay).
	DeleteDevice(ctx context.Context, mac string) error
	// SetDeviceInfo stores the agent's report on the device with the
	// figures rules filter on.
	SetDeviceInfo(ctx context.Context, mac string, info json.RawMessage, ramBytes, diskBytes int64) error
	// SetApplied records the last bundle applied to the device.
	SetApplied(ctx context.Context, mac string, a Applied) error

	CreateGroup(ctx context.Context, g Group) (Group, error)
	Group(ctx context.Context, name string) (Group, error)
	Groups(ctx context.Context, p Page) ([]Group, error)
	UpdateGroup(ctx context.Context, name string, fn func(*Group) error) (Group, error)
	// DeleteGroup removes a group, its memberships, menu and assignment;
	// ErrConflict if a rule still adds devices to it.
	DeleteGroup(ctx context.Context, name string) error
	// AddMember and RemoveMember edit static membership (idempotent).
	AddMember(ctx context.Context, group, mac string) error
	RemoveMember(ctx context.Context, group, mac string) error
	Members(ctx context.Context, group string, p Page) ([]Device, error)
	// DeviceGroups returns the groups the device is a static member of,
	// by priority.
	DeviceGroups(ctx context.Context, mac string) ([]Group, error)

	CreateBundle(ctx context.Context, b Bundle) (Bundle, error)
	Bundle(ctx context.Context, name string) (Bundle, error)
	BundleByID(ctx context.Context, id int64) (Bundle, error)
	Bundles(ctx context.Context, f BundleFilter) ([]Bundle, error)
	// UpdateBundle applies fn in a transaction and bumps Version.
	UpdateBundle(ctx context.Context, name string, fn func(*Bundle) error) (Bundle, error)
	// DeleteBundle: ErrConflict while an assignment, rule, menu or the
	// unregistered default still uses it.
	DeleteBundle(ctx context.Context, name string) error

	// CreateAssignment: ErrConflict if the device or group already has
	// one; ErrNotFound if the bundle, device or group does not exist.
	CreateAssignment(ctx context.Context, a Assignment) (Assignment, error)
	// ReplaceAssignment removes the target's assignment (if any) and
	// creates a, in one transaction.
	ReplaceAssignment(ctx context.Context, a Assignment) (Assignment, error)
	Assignment(ctx context.Context, id int64) (Assignment, error)
	Assignments(ctx context.Context, f AssignmentFilter) ([]Assignment, error)
	DeleteAssignment(ctx context.Context, id int64) error
	// ClaimDueWakes marks every assignment with Wake set, At not after
	// now and not yet woken as woken at now, and returns them: each is
	// returned by one call only, even with several servers sharing the
	// database.
	ClaimDueWakes(ctx context.Context, now time.Time) ([]Assignment, error)

	// CreateRule inserts at r.Position (0 = last), shifting later rules.
	CreateRule(ctx context.Context, r Rule) (Rule, error)
	Rule(ctx context.Context, name string) (Rule, error)
	// Rules returns every rule in Position order (1, 2, 3...).
	Rules(ctx context.Context) ([]Rule, error)
	// UpdateRule applies fn in a transaction; a changed Position moves
	// the rule and renumbers the others.
	UpdateRule(ctx context.Context, name string, fn func(*Rule) error) (Rule, error)
	DeleteRule(ctx context.Context, name string) error

	// SetMenu stores a group's or device's menu override; Menu returns it
	// (ErrNotFound when there is none); DeleteMenu removes it.
	SetMenu(ctx context.Context, scope, target string, m Menu) error
	Menu(ctx context.Context, scope, target string) (Menu, error)
	DeleteMenu(ctx context.Context, scope, target string) error

	// Settings returns the stored settings (ok false if never set).
	Settings(ctx context.Context) (s Settings, ok bool, err error)
	SetSettings(ctx context.Context, s Settings) error
	// PolicyVersion grows at every change to bundles, groups, members,
	// assignments, rules, menus or settings, so that caches of them (in
	// this or another server sharing the database) know to reload.
	PolicyVersion(ctx context.Context) (int64, error)
	// PolicyChanges returns what the versions after..upto (after
	// excluded) changed, oldest first. A version missing from the list
	// (pruned, or older than the log) means: reload everything.
	PolicyChanges(ctx context.Context, after, upto int64) ([]PolicyChange, error)

	CreateToken(ctx context.Context, t Token) (Token, error)
	TokenByHash(ctx context.Context, hash string) (Token, error)
	Tokens(ctx context.Context) ([]Token, error)
	DeleteToken(ctx context.Context, id int64) error
	TouchToken(ctx context.Context, id int64, at time.Time) error

	SiteStore

	// Registrar registers a device a rule took charge of in one
	// transaction.
	Registrar
	// EventFlusher writes a request's buffered events (WithEventBuffer).
	EventFlusher

	// AddEvent stores an event and returns it with its ID.
	AddEvent(ctx context.Context, e Event) (Event, error)
	// Events are newest first, unless f.AfterID is set (then oldest first).
	Events(ctx context.Context, f EventFilter) ([]Event, error)

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
	// CountJobs counts the jobs f selects (f.Limit is ignored).
	CountJobs(ctx context.Context, f JobFilter) (int, error)

	// CreateUser adds a web console user: Name and PasswordHash are
	// required, the name is unique (ErrConflict).
	CreateUser(ctx context.Context, u User) (User, error)
	User(ctx context.Context, name string) (User, error)
	// Users returns every console user, by name.
	Users(ctx context.Context) ([]User, error)
	// SetUserPassword replaces a user's password hash and ends all of the
	// user's sessions, in one transaction.
	SetUserPassword(ctx context.Context, name, hash string) error
	// DeleteUser removes a user and the user's sessions.
	DeleteUser(ctx context.Context, name string) error

	// CreateSession stores a console session of s.UserID (ErrNotFound if
	// the user does not exist; Hash and CSRF are required) and records
	// the user's login time.
	CreateSession(ctx context.Context, s Session) (Session, error)
	// SessionByHash returns a session, expired or not, with its user's
	// name.
	SessionByHash(ctx context.Context, hash string) (Session, error)
	// TouchSession records a session's use and its new expiry.
	TouchSession(ctx context.Context, hash string, lastSeen, expires time.Time) error
	DeleteSession(ctx context.Context, hash string) error
	// DeleteExpiredSessions removes the sessions whose Expires is not
	// after now and returns how many.
	DeleteExpiredSessions(ctx context.Context, now time.Time) (int, error)

	// Prune deletes old events and finished jobs (with their logs) as o
	// says; open jobs are never deleted. It works in small batches, so
	// that it does not hold up other writers for long.
	Prune(ctx context.Context, o PruneOptions) (PruneStats, error)

	Close() error
}

// PruneOptions says what Store.Prune deletes; zero values delete nothing.
type PruneOptions struct {
	EventsBefore time.Time // events older than this
	JobsBefore   time.Time // jobs finished before this (succeeded, failed, cancelled), with their logs
	MaxEvents    int       // keep at most this many events, the newest
	// DevicesUnseenBefore: devices never registered (no name, no group,
	// no assignment, no job) and not seen since this time — what any
	// client claiming made-up MACs leaves behind.
	DevicesUnseenBefore time.Time
}

// PruneStats counts what Store.Prune deleted.
type PruneStats struct {
	Events  int64 `json:"events"`
	Jobs    int64 `json:"jobs"`
	Devices int64 `json:"devices"`
}

// User is a web console user; only a bcrypt hash of the password is
// stored.
type User struct {
	ID                int64     `json:"id"`
	Name              string    `json:"name"`
	PasswordHash      string    `json:"-"`
	CreatedAt         time.Time `json:"created_at"`
	PasswordChangedAt time.Time `json:"password_changed_at"`
	LastLogin         time.Time `json:"last_login,omitzero"`
}

// Session is a web console login. Only the SHA-256 of its secret id (the
// cookie's value) is stored, as Hash. CSRF is the token its pages send
// with every change. Expires is when it ends unless it is used again
// (package session keeps it at min(last use + idle timeout, creation +
// maximum age)).
type Session struct {
	ID        int64     `json:"id"`
	Hash      string    `json:"-"`
	UserID    int64     `json:"user_id"`
	User      string    `json:"user"` // the user's name (read only)
	CSRF      string    `json:"-"`
	CreatedAt time.Time `json:"created_at"`
	LastSeen  time.Time `json:"last_seen"`
	Expires   time.Time `json:"expires"`
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

// Job is one run of a bundle on a device. Kind is the bundle's kind;
// Params a copy of the bundle's parameters when the job started (Image,
// Device, After and Compression repeat the ones the imaging agent needs).
type Job struct {
	ID            int64           `json:"id"`
	MAC           string          `json:"mac"`
	Kind          string          `json:"kind"`
	BundleID      int64           `json:"bundle_id,omitempty"`
	Bundle        string          `json:"bundle,omitempty"`
	BundleVersion int64           `json:"bundle_version,omitempty"`
	AssignmentID  int64           `json:"assignment_id,omitempty"`
	Params        json.RawMessage `json:"params,omitempty"`
	Image         string          `json:"image"`
	Device        string          `json:"device,omitempty"`
	After         string          `json:"after"`
	Compression   int             `json:"compression,omitempty"`
	State         string          `json:"state"`
	Phase         string          `json:"phase,omitempty"`
	BytesDone     int64           `json:"bytes_done"`
	BytesTotal    int64           `json:"bytes_total"`
	Rate          int64           `json:"rate"` // bytes per second
	Message       string          `json:"message,omitempty"`
	Error         string          `json:"error,omitempty"`
	// Timing is where a capture's or restore's time went, as the agent
	// last reported it (JSON of a timing.Breakdown; empty when none).
	Timing    json.RawMessage `json:"timing,omitempty"`
	TokenHash string          `json:"-"`
	// ClientIP is the address the job's boot (and token) was handed to:
	// the agent must call from it. Boots counts the hand-outs (a pending
	// job booted again from the same address gets a fresh token);
	// TokenIssuedAt is when the current token was handed out.
	ClientIP      string    `json:"client_ip,omitempty"`
	Boots         int       `json:"boots,omitempty"`
	TokenIssuedAt time.Time `json:"token_issued_at,omitzero"`
	CreatedAt     time.Time `json:"created_at"`
	StartedAt     time.Time `json:"started_at,omitzero"`
	UpdatedAt     time.Time `json:"updated_at"`
	FinishedAt    time.Time `json:"finished_at,omitzero"`
}

// JobFilter selects jobs; zero values mean "any". Newest first.
type JobFilter struct {
	MAC      string
	State    string
	Bundle   string
	Open     bool  // only jobs not finished
	BeforeID int64 // id < BeforeID (paging back)
	Limit    int   // 0 = 100
	// FinishedSince: jobs that finished at or after this time (zero = any).
	FinishedSince time.Time
}

// JobLine is one line of a job's log.
type JobLine struct {
	Time time.Time `json:"time"`
	Line string    `json:"line"`
}
