package tftp

import (
	"container/heap"
	"time"
)

// timers orders a loop's transfers by the time their timer is looked at (transfer.at), nearest
// first: epoll_wait sleeps until the first one.
//
// Timers are lazy. A transfer's real deadline (transfer.due) moves on every acknowledged block, a
// few microseconds to a few milliseconds apart; moving the transfer in the heap every time would
// cost O(log n) per block for nothing, since the deadline almost never passes. Instead only an
// earlier deadline moves the transfer up (schedule); a later one is noticed when the old one comes
// up (expired), and the transfer goes back in at its real deadline.
type timers []*transfer

func (h timers) Len() int           { return len(h) }
func (h timers) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h timers) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].timer, h[j].timer = i, j
}

// Push and Pop are for container/heap only.
func (h *timers) Push(x any) {
	t := x.(*transfer)
	t.timer = len(*h)
	*h = append(*h, t)
}

func (h *timers) Pop() any {
	old := *h
	t := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	t.timer = -1
	return t
}

// schedule makes sure t is looked at no later than t.due.
func (h *timers) schedule(t *transfer) {
	switch {
	case t.timer < 0:
		t.at = t.due
		heap.Push(h, t)
	case t.due.Before(t.at):
		t.at = t.due
		heap.Fix(h, t.timer)
	}
}

// remove takes t out of the heap, if it is in.
func (h *timers) remove(t *transfer) {
	if t.timer >= 0 {
		heap.Remove(h, t.timer)
	}
}

// next returns the time the first timer is looked at, or false if there is none.
func (h timers) next() (time.Time, bool) {
	if len(h) == 0 {
		return time.Time{}, false
	}
	return h[0].at, true
}

// expired returns the first transfer whose deadline has passed at now, or nil. A transfer that
// comes up before its real deadline is put back at that deadline on the way.
func (h *timers) expired(now time.Time) *transfer {
	for len(*h) > 0 {
		t := (*h)[0]
		if t.at.After(now) {
			return nil
		}
		if t.due.After(now) {
			t.at = t.due
			heap.Fix(h, 0)
			continue
		}
		heap.Pop(h)
		return t
	}
	return nil
}
