package mcast

import (
	"errors"

	"github.com/preboot/preboot/image"
)

// The control plane: receivers talk to the server over the authenticated
// HTTP API (a multicast job's token, or an admin token for ad-hoc
// receivers). Multicast packets carry only data; everything a receiver
// trusts (the manifest, the chunk table, the session's secret) comes from
// here.
const (
	// PathJoin joins the image's running or next session.
	PathJoin = "/api/v1/mcast/join"
	// PathPrefix + "{session}/report" and "{session}/locate".
	PathPrefix = "/api/v1/mcast/"
)

// JoinRequest is the body of POST PathJoin.
type JoinRequest struct {
	// Image is NAME or NAME@VERSION; a job's receiver always gets the
	// version pinned by its job.
	Image string `json:"image"`
	// Name identifies the receiver for people (host name, MAC).
	Name string `json:"name,omitempty"`
	// MinClients and MaxWait set the start rule of a session this join
	// creates (a job's bundle sets them for job receivers). MinClients
	// 0 or 1 starts at once.
	MinClients int    `json:"min_clients,omitempty"`
	MaxWait    string `json:"max_wait,omitempty"`
	// PeersOnly: the receiver does not listen to the group; it fetches
	// over HTTP from peers (or the server).
	PeersOnly bool `json:"peers_only,omitempty"`
	// PeerURL is where this receiver serves verified chunks to other
	// receivers ("http://IP:PORT"), empty when it serves none.
	PeerURL string `json:"peer_url,omitempty"`
}

// JoinResponse answers a join.
type JoinResponse struct {
	Session  string `json:"session"`
	Receiver string `json:"receiver"`
	Image    string `json:"image"` // NAME@VERSION
	// Group and Port are where the data comes; SymbolSize the payload of
	// every data packet.
	Group      string `json:"group"`
	Port       int    `json:"port"`
	SymbolSize int    `json:"symbol_size"`
	Rate       int64  `json:"rate"` // bits/s
	State      string `json:"state"`
	// StartIn is the time until a waiting session starts at the latest.
	StartIn float64 `json:"start_in,omitempty"`
	// ReportEvery is how often (milliseconds) the server wants a report.
	ReportEvery int `json:"report_every"`
	// Secret (hex) keys the tickets receivers present to peers.
	Secret string `json:"secret"`
	// Chunks is the session's chunk table: the image's distinct stored
	// chunks; packets and reports name chunks by their index here.
	Chunks []image.Hash `json:"chunks"`
}

// ReportRequest is the body of POST PathPrefix+"{session}/report": the
// receiver's state, what it still needs and how it is doing. It doubles as
// a heartbeat.
type ReportRequest struct {
	Receiver string `json:"receiver"`
	State    string `json:"state"`
	Reason   string `json:"reason,omitempty"`
	// Need is a bitmap over the chunk table (bit i of byte i/8, LSB
	// first): chunks this receiver still wants from the group. Empty
	// when it wants nothing more from the group.
	Need []byte `json:"need,omitempty"`
	// Partial maps a chunk index to the number of distinct symbols the
	// receiver holds of it (only chunks it has some but not enough of).
	Partial map[uint32]int `json:"partial,omitempty"`
	// Have lists chunk indices verified and written since the last
	// report: it can serve them to peers.
	Have        []uint32 `json:"have,omitempty"`
	ChunksDone  int      `json:"chunks_done"`
	ChunksTotal int      `json:"chunks_total"`
	BytesDone   int64    `json:"bytes_done"`
	BytesTotal  int64    `json:"bytes_total"`
	Bytes       Bytes    `json:"bytes"`
	Loss        float64  `json:"loss"`
	Rate        float64  `json:"rate"`
	Dropped     int64    `json:"dropped"`
	// Left: the receiver stops serving its chunks to peers and goes away
	// (a done receiver keeps serving while others still work).
	Left bool `json:"left,omitempty"`
}

// ReportResponse tells the receiver the session's state.
type ReportResponse struct {
	State   string  `json:"state"`
	StartIn float64 `json:"start_in,omitempty"`
	// SentPackets is how many packets the server has sent to the group:
	// a receiver that has seen none while it rises knows multicast does
	// not reach it.
	SentPackets int64 `json:"sent_packets"`
	// MedianLoss is the loss of the session's typical receiver: one that
	// loses far more than it is the one to leave for HTTP, not the rate
	// to drop. Rate is what the server sends at now (bits/s).
	MedianLoss float64 `json:"median_loss"`
	Rate       int64   `json:"rate"`
	// Seed asks a receiver that is done to keep serving its chunks to
	// peers: others in the session are still working.
	Seed bool `json:"seed,omitempty"`
	// ReportEvery (milliseconds) is how often the server wants reports
	// now (it grows with the number of receivers).
	ReportEvery int `json:"report_every,omitempty"`
}

// LocateRequest (POST PathPrefix+"{session}/locate") asks where to fetch
// chunks over HTTP.
type LocateRequest struct {
	Receiver string   `json:"receiver"`
	Chunks   []uint32 `json:"chunks"`
	// Bad names peers that served wrong bytes or failed: the tracker stops
	// pointing at them.
	Bad []string `json:"bad,omitempty"`
	// Corrupt names peers that served bytes failing the chunk's hash: the
	// tracker drops them at once.
	Corrupt []string `json:"corrupt,omitempty"`
}

// Source is a peer that holds a chunk, with the ticket to present to it.
type Source struct {
	URL    string `json:"url,omitempty"`
	Ticket string `json:"ticket,omitempty"`
	// Wait: no peer holds the chunk yet but another receiver is getting
	// it from the server (or every peer holding it is busy): fetch other
	// chunks first and ask again, instead of having the server send it
	// twice.
	Wait bool `json:"wait,omitempty"`
}

// ErrWait is what a Fetcher returns for a chunk the tracker says to ask
// for again later (Source.Wait).
var ErrWait = errors.New("chunk on its way to a peer: ask again later")

// LocateResponse maps chunk indices to a peer; a chunk missing from it is
// fetched from the server.
type LocateResponse struct {
	Sources map[uint32]Source `json:"sources"`
}
