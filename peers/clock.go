package peers

import (
	"net/http"
	"sync/atomic"
	"time"
)

// Clock follows the imaging server's clock from the Date headers of its
// answers. Tickets carry the tracker's (the server's) time, and the
// imaging environment's clock may be anything: a Server checks tickets
// against Clock.Now. The zero value is the local clock until the first
// Observe; it is safe for concurrent use.
type Clock struct {
	offset atomic.Int64 // server - local, nanoseconds
}

// Observe takes the Date header of an answer from the server, received
// now. Date has a resolution of one second; the offset is taken as the
// middle of that second.
func (c *Clock) Observe(resp *http.Response) {
	if resp == nil {
		return
	}
	d, err := http.ParseTime(resp.Header.Get("Date"))
	if err != nil {
		return
	}
	c.offset.Store(int64(d.Add(500 * time.Millisecond).Sub(time.Now())))
}

// Offset is the server's clock minus the local one (0 before any Observe).
func (c *Clock) Offset() time.Duration { return time.Duration(c.offset.Load()) }

// Now is the server's time as far as known.
func (c *Clock) Now() time.Time { return time.Now().Add(c.Offset()) }

// Wrap returns a RoundTripper that sends through rt (http.DefaultTransport
// when nil) and observes the Date of every answer: wrap the transport of
// the agent's client to the server so that the clock follows the server
// from the first call (the join) on.
func (c *Clock) Wrap(rt http.RoundTripper) http.RoundTripper {
	if rt == nil {
		rt = http.DefaultTransport
	}
	return clockTransport{c: c, rt: rt}
}

type clockTransport struct {
	c  *Clock
	rt http.RoundTripper
}

func (t clockTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.rt.RoundTrip(r)
	if err == nil {
		t.c.Observe(resp)
	}
	return resp, err
}
