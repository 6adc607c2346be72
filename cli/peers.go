package cli

import (
	"log/slog"

	"github.com/preboot/preboot/image/httpstore"
	"github.com/preboot/preboot/mcast"
	"github.com/preboot/preboot/peers"
)

// newPeerFactory returns the peer side of a multicast receiver that talks
// to the server through hc: it serves its verified chunks to the session's
// other receivers and fetches from them.
func newPeerFactory(hc *httpstore.Client, log *slog.Logger) mcast.PeerFactory {
	return peers.NewFactory(peers.FactoryConfig{BaseURL: hc.BaseURL, Token: hc.Token, HTTP: hc.HTTPClient(),
		TLSFingerprint: hc.TLSFingerprint, Logger: log.With("component", "peers")})
}
