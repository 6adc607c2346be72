// Package peers implements peer-assisted restore: receivers of a
// multicast session (or of a peers-only one) that hold verified chunks
// serve them to other receivers over plain HTTP, and the server acts as
// the tracker that points a receiver at a peer holding the chunk it needs,
// or leaves it to fetch the chunk from the server itself.
//
// The pieces:
//
//   - Tracker (server side, in memory): which receiver holds which chunk
//     of a session's chunk table, and Locate, which picks a peer for each
//     chunk asked for (never the asker, at most MaxUploads outstanding
//     assignments per peer, least loaded first) and signs a ticket for it.
//   - Ticket / VerifyTicket: short-lived HMAC-SHA256 tickets over the
//     session, the chunk hash and an expiry, keyed by the session's secret
//     that only the session's receivers learn (mcast.JoinResponse.Secret).
//   - Server (agent side): GET /chunks/<hash> with a ticket serves a chunk
//     the agent already wrote and verified on its target, read back from
//     the target, re-verified and compressed, with a bounded number of
//     concurrent uploads and a bounded request rate.
//   - Fetcher (agent side): asks the tracker where chunks are (batched),
//     fetches from the peer, verifies the BLAKE3 hash of the decompressed
//     bytes, and on any failure reports the peer and fetches the chunk from
//     the server instead. It never returns bytes that do not verify.
//   - Clock: the server's clock as the agent sees it in the Date of the
//     server's answers; tickets carry the server's time and the imaging
//     environment's clock may be anything.
//   - Factory: the agent's side put together, as mcast.PeerFactory.
//
// Trust: the chunk table comes from the server over authenticated HTTP;
// peers are untrusted and can only slow a receiver down.
package peers
