package store

import "context"

// Registration is what registering a device takes when a rule or the
// unregistered default takes charge of it at its boot: the device is
// marked registered and named, joins a group, gets a once assignment and
// the registration's event is recorded — all of it in one transaction,
// so that a failure leaves no half-registered device.
type Registration struct {
	MAC string
	// Name is given to the device if it has none yet; when another device
	// has it, Name-2 ... Name-20 (ErrConflict when all are taken). ""
	// names nothing. A device keeps a name it already has.
	Name string
	// Group, when set, is a group the device joins as a static member
	// (ErrNotFound if the group does not exist).
	Group string
	// BundleID, when set, becomes a once assignment of the device
	// (ErrConflict if the device already has an assignment).
	BundleID int64
	// Event, when set, returns the event recorded with the registration,
	// given what it did (Time zero: now; MAC: the device's).
	Event func(Registered) Event
	// Job, when set, is a job (with its token's hash) created with the
	// registration, in its transaction, unless the device has an open
	// job (then none is created and Registered.Job is nil: the caller
	// claims one as usual). Its MAC is the device's and, when the
	// registration creates a once assignment, its AssignmentID that
	// assignment's. A failure to create it fails the whole registration.
	Job *Job
	// JobEvents, when set, returns the events recorded with the job
	// created (given the job as stored, its ID set; Time zero: now; MAC:
	// the device's; Job: the job's), after the registration's event.
	JobEvents func(Job) []Event
}

// Registered is what a Registration did.
type Registered struct {
	Device Device // as stored after the registration (without its last event)
	// Name is the device's name: the one it had, the one it got, or "".
	Name string
	// Joined: the device was not a member of Group before.
	Joined bool
	// Assignment is the once assignment created (nil when BundleID is 0).
	Assignment *Assignment
	// Event is the event recorded (zero when Registration.Event is nil).
	Event Event
	// Job is the job created (nil when Registration.Job is nil or the
	// device had an open job).
	Job *Job
	// Version is the policy version of the registration's change (0:
	// none, when it joined no group and got no assignment).
	Version int64
}

// Registrar registers devices in one transaction (see Registration).
// Changes to memberships and assignments are logged as one
// PolicyChangeDevice change of the device.
type Registrar interface {
	Register(ctx context.Context, r Registration) (Registered, error)
}
