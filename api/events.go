package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/preboot/preboot/store"
)

func (h *Handler) eventFilter(w http.ResponseWriter, r *http.Request) (store.EventFilter, bool) {
	q := r.URL.Query()
	f := store.EventFilter{Kind: q.Get("kind")}
	var ok bool
	if f.MAC, ok = queryMAC(w, r, "device"); !ok {
		return f, false
	}
	if f.Job, ok = queryInt64(w, r, "job"); !ok {
		return f, false
	}
	for _, p := range []struct {
		name string
		t    *time.Time
	}{{"since", &f.Since}, {"until", &f.Until}} {
		if s := q.Get(p.name); s != "" {
			t, err := time.Parse(time.RFC3339, s)
			if err != nil {
				writeError(w, http.StatusBadRequest, p.name+": want an RFC 3339 time, e.g. 2026-11-25T08:00:00Z")
				return f, false
			}
			*p.t = t
		}
	}
	return f, true
}

func (h *Handler) listEvents(w http.ResponseWriter, r *http.Request) {
	f, ok := h.eventFilter(w, r)
	if !ok {
		return
	}
	if f.BeforeID, ok = queryInt64(w, r, "before"); !ok {
		return
	}
	if f.Limit, ok = limit(w, r); !ok {
		return
	}
	evs, err := h.Store.Events(r.Context(), f)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, nonNil(evs))
}

// streamEvents sends events as Server-Sent Events from the one after
// Last-Event-ID (or ?after=), or from now. It wakes on this server's
// events and polls the store every second for the others' (several
// servers may share a database).
func (h *Handler) streamEvents(w http.ResponseWriter, r *http.Request) {
	f, ok := h.eventFilter(w, r)
	if !ok {
		return
	}
	fl, ok := w.(http.Flusher)
	if !ok {
		writeError(w, http.StatusInternalServerError, "streaming unsupported by this connection")
		return
	}
	client := streamClient(r)
	if !h.EventStreams.acquire(client) {
		w.Header().Set("Retry-After", "10")
		writeError(w, http.StatusTooManyRequests, "too many event streams open; close one (or raise http.max_event_streams[_per_client])")
		return
	}
	defer h.EventStreams.release(client)
	ctx := r.Context()
	after := r.Header.Get("Last-Event-ID")
	if after == "" {
		after = r.URL.Query().Get("after")
	}
	if after != "" {
		n, err := strconv.ParseInt(after, 10, 64)
		if err != nil || n < 0 {
			writeError(w, http.StatusBadRequest, "Last-Event-ID / after: want an event id")
			return
		}
		f.AfterID = n
	} else {
		latest, err := h.Store.Events(ctx, store.EventFilter{Limit: 1})
		if err != nil {
			h.fail(w, r, err)
			return
		}
		if len(latest) == 1 {
			f.AfterID = latest[0].ID
		}
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	fmt.Fprint(w, ": preboot event stream\nretry: 2000\n\n")
	fl.Flush()

	keepalive := time.NewTicker(15 * time.Second)
	defer keepalive.Stop()
	poll := time.NewTicker(time.Second)
	defer poll.Stop()
	for {
		wake := h.Events.Wait()
		f.Limit = 500
		evs, err := h.Store.Events(ctx, f)
		if err != nil {
			if ctx.Err() == nil {
				h.Logger.ErrorContext(ctx, "event stream", "err", err)
			}
			return
		}
		for _, e := range evs {
			b, _ := json.Marshal(e)
			fmt.Fprintf(w, "id: %d\nevent: %s\ndata: %s\n\n", e.ID, e.Kind, b)
			f.AfterID = e.ID
		}
		if len(evs) > 0 {
			fl.Flush()
		}
		if len(evs) == f.Limit {
			continue // more are waiting
		}
		select {
		case <-ctx.Done():
			return
		case <-wake:
		case <-poll.C:
		case <-keepalive.C:
			fmt.Fprint(w, ": keepalive\n\n")
			fl.Flush()
		}
	}
}

// StreamLimiter caps the event streams open at once, in all and per
// client address. A nil *StreamLimiter admits every stream.
type StreamLimiter struct {
	max, perClient int // 0: no cap

	mu    sync.Mutex
	total int
	per   map[string]int
}

// NewStreamLimiter caps streams at max in all and perClient per client
// address (0: no cap).
func NewStreamLimiter(max, perClient int) *StreamLimiter {
	return &StreamLimiter{max: max, perClient: perClient, per: map[string]int{}}
}

func (l *StreamLimiter) acquire(client string) bool {
	if l == nil {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if (l.max > 0 && l.total >= l.max) || (l.perClient > 0 && l.per[client] >= l.perClient) {
		return false
	}
	l.total++
	l.per[client]++
	return true
}

func (l *StreamLimiter) release(client string) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.per[client] <= 1 {
		delete(l.per, client)
	} else {
		l.per[client]--
	}
}

// Open reports the streams open (for tests and status).
func (l *StreamLimiter) Open() int {
	if l == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

// streamClient names the client a stream counts against: its IP address
// (its port changes with every connection), or "local" on the admin socket.
func streamClient(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil || host == "" {
		return "local"
	}
	return host
}

// Notifier wakes event streams when this server stores an event.
type Notifier struct {
	mu sync.Mutex
	ch chan struct{}
}

// Wait returns a channel closed at the next Notify. A nil Notifier never
// wakes (streams then rely on polling).
func (n *Notifier) Wait() <-chan struct{} {
	if n == nil {
		return nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ch == nil {
		n.ch = make(chan struct{})
	}
	return n.ch
}

// Notify wakes every waiter.
func (n *Notifier) Notify() {
	if n == nil {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ch != nil {
		close(n.ch)
		n.ch = nil
	}
}

// NotifyingStore wraps a store so that every stored event wakes the
// event streams.
type NotifyingStore struct {
	store.Store
	N *Notifier
}

// AddEvent implements store.Store.
func (s NotifyingStore) AddEvent(ctx context.Context, e store.Event) (store.Event, error) {
	e, err := s.Store.AddEvent(ctx, e)
	if err == nil {
		s.N.Notify()
	}
	return e, err
}
