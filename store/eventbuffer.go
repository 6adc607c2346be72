package store

import (
	"context"
	"sync"
)

// A request's event buffer: a store that honours it holds the events
// AddEvent is given with the request's context (returning them with ID
// 0) and writes them with the request's next transaction (Register) or
// at FlushEvents, whichever comes first — one statement for all of them
// instead of one each. The request flushes before it answers, so that
// nothing it answered is unrecorded; an event whose ID the caller needs
// must not be added with a buffered context.

type eventBufferKey struct{}

// EventBuffer holds a request's events until they are written.
type EventBuffer struct {
	mu     sync.Mutex
	events []Event
}

// WithEventBuffer returns ctx with an empty event buffer.
func WithEventBuffer(ctx context.Context) (context.Context, *EventBuffer) {
	b := &EventBuffer{}
	return context.WithValue(ctx, eventBufferKey{}, b), b
}

// BufferOf returns ctx's event buffer, or nil.
func BufferOf(ctx context.Context) *EventBuffer {
	b, _ := ctx.Value(eventBufferKey{}).(*EventBuffer)
	return b
}

// Add holds e.
func (b *EventBuffer) Add(e Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.events = append(b.events, e)
}

// Take returns the events held and empties the buffer (nil for a nil
// buffer).
func (b *EventBuffer) Take() []Event {
	if b == nil {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	out := b.events
	b.events = nil
	return out
}

// Restore puts events taken back in front of the buffer (their write
// failed and is to be tried again).
func (b *EventBuffer) Restore(es []Event) {
	if b == nil || len(es) == 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.events = append(es, b.events...)
}

// EventFlusher writes a request's buffered events.
type EventFlusher interface {
	FlushEvents(ctx context.Context) error
}
