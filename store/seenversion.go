package store

import (
	"context"
	"sync/atomic"
)

// A request's policy version slot: a store that reads the policy version
// in the same statement as a device's sighting (SeeDevice) leaves it in
// the request's context, and the request's first policy decision uses it
// instead of asking PolicyVersion — one round trip less per boot request
// on a database server. Read during the request, it covers every change
// committed before the request began, as PolicyVersion would.

type versionSlotKey struct{}

type versionSlot struct{ v atomic.Int64 }

// WithVersionSlot returns ctx with an empty policy version slot.
func WithVersionSlot(ctx context.Context) context.Context {
	return context.WithValue(ctx, versionSlotKey{}, &versionSlot{})
}

// NoteVersion leaves the policy version v in ctx's slot, if it has one.
func NoteVersion(ctx context.Context, v int64) {
	if s, ok := ctx.Value(versionSlotKey{}).(*versionSlot); ok {
		s.v.Store(v)
	}
}

// WantsVersion reports whether ctx has a slot a store may fill.
func WantsVersion(ctx context.Context) bool {
	_, ok := ctx.Value(versionSlotKey{}).(*versionSlot)
	return ok
}

// TakeVersion empties ctx's slot and returns what a store left in it: a
// version is used once (a later decision of the request, after a change
// the request made, asks the store again).
func TakeVersion(ctx context.Context) (int64, bool) {
	s, ok := ctx.Value(versionSlotKey{}).(*versionSlot)
	if !ok {
		return 0, false
	}
	v := s.v.Swap(0)
	return v, v > 0
}
