// Package mcast deploys one image to many machines at once: multicast
// sessions in which the server sends each chunk a receiver still needs to
// an IPv4 multicast group, once however many receivers need it, with
// Reed–Solomon repair symbols for what they lost, while every receiver
// verifies each chunk against the image's manifest before writing it and
// finishes over unicast HTTP (or from peers) when multicast does not serve
// it well. See docs/multicast.md.
package mcast

import "time"

// Session states.
const (
	// StateWaiting: receivers joined, the start rule (MinClients joined,
	// or MaxWait after the first join) is not met yet.
	StateWaiting = "waiting"
	// StateRunning: the server sends what receivers ask for.
	StateRunning = "running"
	// StateDone: every receiver finished (or left); the session is kept
	// for a while so that its figures can be read.
	StateDone = "done"
	// StateCancelled: an administrator cancelled the session; receivers
	// finish over unicast.
	StateCancelled = "cancelled"
)

// Receiver states.
const (
	RecvWaiting   = "waiting"   // joined, session not started
	RecvMulticast = "multicast" // receiving from the multicast group
	RecvUnicast   = "unicast"   // fell back to unicast HTTP (Reason says why)
	RecvPeers     = "peers"     // peer-assisted HTTP only
	RecvDone      = "done"      // every chunk written and verified
	RecvFailed    = "failed"    // gave up (Reason says why)
	RecvLost      = "lost"      // not heard from within the receiver timeout
)

// Bytes counts a receiver's chunk bytes (compressed, as on the wire) by
// how it got them.
type Bytes struct {
	Multicast int64 `json:"multicast"` // first-pass symbols from the group
	Repair    int64 `json:"repair"`    // repair symbols from the group
	Peers     int64 `json:"peers"`     // from other receivers over HTTP
	Unicast   int64 `json:"unicast"`   // from the server over HTTP
}

// Total is the sum of all sources.
func (b Bytes) Total() int64 { return b.Multicast + b.Repair + b.Peers + b.Unicast }

// ReceiverInfo is one receiver of a session as the server last heard it.
type ReceiverInfo struct {
	ID       string    `json:"id"`
	Name     string    `json:"name"`             // host name or MAC the receiver gave
	Addr     string    `json:"addr"`             // its IP address
	Job      int64     `json:"job,omitempty"`    // the job it runs, 0 for an ad-hoc receiver
	Device   string    `json:"device,omitempty"` // the device ID of that job
	State    string    `json:"state"`
	Reason   string    `json:"reason,omitempty"` // why it fell back or failed
	Joined   time.Time `json:"joined"`
	LastSeen time.Time `json:"last_seen"`
	// ChunksDone of ChunksTotal chunks this receiver needed are written.
	ChunksDone  int   `json:"chunks_done"`
	ChunksTotal int   `json:"chunks_total"`
	BytesDone   int64 `json:"bytes_done"`  // image bytes written or found in place
	BytesTotal  int64 `json:"bytes_total"` // image bytes this receiver restores
	// Rate is the receiver's recent goodput in bytes/s.
	Rate float64 `json:"rate"`
	// Loss is the fraction of the group's packets it missed recently.
	Loss  float64 `json:"loss"`
	Bytes Bytes   `json:"bytes"`
	// Dropped counts packets and chunks it refused: forged, out of
	// session, undecodable, or failing the hash check.
	Dropped int64 `json:"dropped"`
}

// SessionInfo is a session as the API, the CLI and the console show it.
type SessionInfo struct {
	ID         string    `json:"id"`
	Image      string    `json:"image"` // NAME@VERSION
	State      string    `json:"state"`
	Group      string    `json:"group"` // 239.255.x.y:port
	Interface  string    `json:"interface"`
	MinClients int       `json:"min_clients"`
	MaxWait    string    `json:"max_wait"` // Go duration
	Created    time.Time `json:"created"`
	Started    time.Time `json:"started,omitzero"`
	Ended      time.Time `json:"ended,omitzero"`
	// Rate is the configured send rate cap in bits/s; CurrentRate what
	// the server sends at now (lower while the typical receiver loses
	// packets).
	Rate        int64 `json:"rate"`
	CurrentRate int64 `json:"current_rate"`
	// Chunks and ImageBytes describe the image: distinct stored chunks
	// and their compressed size.
	Chunks     int   `json:"chunks"`
	ImageBytes int64 `json:"image_bytes"`
	// Sent* count what the server sent to the group: packets and payload
	// bytes, first-pass data and repair.
	SentPackets int64 `json:"sent_packets"`
	SentData    int64 `json:"sent_data"`
	SentRepair  int64 `json:"sent_repair"`
	// Served counts chunk bytes the server sent over unicast HTTP to the
	// session's receivers; PeerRedirects how often it pointed one at a
	// peer instead.
	Served        int64          `json:"served"`
	PeerRedirects int64          `json:"peer_redirects"`
	Receivers     []ReceiverInfo `json:"receivers"`
}
