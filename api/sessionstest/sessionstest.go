// Package sessionstest is a stand-in for the multicast session manager
// (api.Sessions) in the tests of the API, the CLI and the web console:
// sessions held in memory, as given, with the manager's List, Get and
// Cancel semantics. The real manager (package mcast) is tested on its own.
package sessionstest

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/preboot/preboot/mcast"
)

// Fake holds sessions in memory. It is safe for concurrent use.
type Fake struct {
	mu       sync.Mutex
	sessions []mcast.SessionInfo // newest first
	// Now stamps a cancelled session's end (time.Now when nil).
	Now func() time.Time
}

// New returns a Fake holding sessions, given newest first.
func New(sessions ...mcast.SessionInfo) *Fake {
	f := &Fake{}
	for _, s := range sessions {
		f.sessions = append(f.sessions, clone(s))
	}
	return f
}

// Put adds a session as the newest, or replaces the one with its ID.
func (f *Fake) Put(s mcast.SessionInfo) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range f.sessions {
		if f.sessions[i].ID == s.ID {
			f.sessions[i] = clone(s)
			return
		}
	}
	f.sessions = append([]mcast.SessionInfo{clone(s)}, f.sessions...)
}

// List returns every session, newest first.
func (f *Fake) List() []mcast.SessionInfo {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]mcast.SessionInfo, 0, len(f.sessions))
	for _, s := range f.sessions {
		out = append(out, clone(s))
	}
	return out
}

// Get returns one session.
func (f *Fake) Get(id string) (mcast.SessionInfo, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, s := range f.sessions {
		if s.ID == id {
			return clone(s), true
		}
	}
	return mcast.SessionInfo{}, false
}

// Cancel cancels a waiting or running session: its state becomes
// cancelled, and its receivers still on multicast (or waiting) fall back
// to unicast, as the manager's do.
func (f *Fake) Cancel(ctx context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range f.sessions {
		s := &f.sessions[i]
		if s.ID != id {
			continue
		}
		if s.State != mcast.StateWaiting && s.State != mcast.StateRunning {
			return fmt.Errorf("cancel session %s: %w", id, mcast.ErrEnded)
		}
		s.State = mcast.StateCancelled
		now := time.Now()
		if f.Now != nil {
			now = f.Now()
		}
		s.Ended = now
		for j := range s.Receivers {
			r := &s.Receivers[j]
			if r.State == mcast.RecvWaiting || r.State == mcast.RecvMulticast {
				r.State = mcast.RecvUnicast
				r.Reason = "the session was cancelled"
			}
		}
		return nil
	}
	return fmt.Errorf("cancel session %s: %w", id, mcast.ErrNotFound)
}

func clone(s mcast.SessionInfo) mcast.SessionInfo {
	s.Receivers = slices.Clone(s.Receivers)
	return s
}

// Running is a session in full swing at now, as the tests show it: image
// lab-base@1 (16 chunks, 64 MiB) to 239.255.12.7:9000 on eth0, two
// receivers: pc-01 on multicast (60 %, with repair symbols and a little
// loss) and pc-02 fallen back to unicast (25 %, bytes by multicast, from
// peers and by unicast, and the reason).
func Running(id string, now time.Time) mcast.SessionInfo {
	const mib = 1 << 20
	return mcast.SessionInfo{
		ID: id, Image: "lab-base@1", State: mcast.StateRunning, Group: "239.255.12.7:9000", Interface: "eth0",
		MinClients: 2, MaxWait: "5m0s", Created: now.Add(-3 * time.Minute), Started: now.Add(-2 * time.Minute),
		Rate: 500_000_000, Chunks: 16, ImageBytes: 64 * mib,
		SentPackets: 31_000, SentData: 40 * mib, SentRepair: 2 * mib, Served: 10 * mib, PeerRedirects: 3,
		Receivers: []mcast.ReceiverInfo{
			{ID: "r1", Name: "pc-01", Addr: "10.20.0.11", Job: 41, Device: "52:54:00:aa:00:01", State: mcast.RecvMulticast,
				Joined: now.Add(-3 * time.Minute), LastSeen: now.Add(-time.Second),
				ChunksDone: 10, ChunksTotal: 16, BytesDone: 600 * mib, BytesTotal: 1000 * mib,
				Rate: 48 * mib, Loss: 0.021, Bytes: mcast.Bytes{Multicast: 36 * mib, Repair: 2 * mib}},
			{ID: "r2", Name: "pc-02", Addr: "10.20.0.12", Job: 42, Device: "52:54:00:aa:00:02", State: mcast.RecvUnicast,
				Reason: "lost 31% of the group's packets (over 20%)",
				Joined: now.Add(-2 * time.Minute), LastSeen: now.Add(-2 * time.Second),
				ChunksDone: 4, ChunksTotal: 16, BytesDone: 250 * mib, BytesTotal: 1000 * mib,
				Rate: 20 * mib, Loss: 0.31, Bytes: mcast.Bytes{Multicast: 6 * mib, Peers: 4 * mib, Unicast: 10 * mib}, Dropped: 7},
		},
	}
}

// Done is a session that ended at now with one receiver that finished.
func Done(id string, now time.Time) mcast.SessionInfo {
	const mib = 1 << 20
	return mcast.SessionInfo{
		ID: id, Image: "lab-base@1", State: mcast.StateDone, Group: "239.255.12.6:9000", Interface: "eth0",
		MinClients: 1, MaxWait: "0s", Created: now.Add(-time.Hour), Started: now.Add(-time.Hour), Ended: now.Add(-50 * time.Minute),
		Rate: 500_000_000, Chunks: 16, ImageBytes: 64 * mib, SentPackets: 16_000, SentData: 64 * mib,
		Receivers: []mcast.ReceiverInfo{
			{ID: "r1", Name: "pc-09", Addr: "10.20.0.19", State: mcast.RecvDone,
				Joined: now.Add(-time.Hour), LastSeen: now.Add(-50 * time.Minute),
				ChunksDone: 16, ChunksTotal: 16, BytesDone: 1000 * mib, BytesTotal: 1000 * mib,
				Bytes: mcast.Bytes{Multicast: 64 * mib}},
		},
	}
}
