package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/preboot/preboot/failover"
	"github.com/preboot/preboot/tlspin"
)

// peerServers checks http.peer_servers (the agent URLs of the other
// servers on this database) and, in the background, whether each one
// serves the certificate this server pins for its agents: agents given
// several servers pin one certificate, so the servers must share it.
func peerServers(ctx context.Context, list []string, fingerprint string, log *slog.Logger) ([]string, error) {
	var peers []string
	for _, item := range list {
		for _, p := range failover.Split(item) {
			u, err := url.Parse(p)
			if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.Path != "" || u.RawQuery != "" || u.User != nil {
				return nil, fmt.Errorf("invalid configuration: http.peer_servers: %q: want https://HOST:PORT", p)
			}
			if fingerprint != "" && u.Scheme != "https" {
				return nil, fmt.Errorf("invalid configuration: http.peer_servers: %q: this server's agents use HTTPS, so must its peers'", p)
			}
			peers = append(peers, p)
		}
	}
	if len(peers) == 0 {
		return nil, nil
	}
	log.Info("peer servers: imaging agents go on with them when this server stops answering", "peers", strings.Join(peers, ","))
	if fingerprint != "" {
		go func() {
			for _, p := range peers {
				checkPeerCert(ctx, p, fingerprint, log)
			}
		}()
	}
	return peers, nil
}

// checkPeerCert logs whether a peer serves the pinned certificate (a
// peer that is down is only noted: it may start later).
func checkPeerCert(ctx context.Context, peer, fingerprint string, log *slog.Logger) {
	tc, err := tlspin.Config(fingerprint)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	tr := tlspin.Transport(tc)
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, peer+"/healthz", nil)
	if err != nil {
		return
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	switch {
	case errors.Is(err, tlspin.ErrMismatch):
		log.Error("peer server has another TLS certificate: agents will not go on with it (copy DATA_DIR/tls/ to every server, or give them all the same --tls-cert/--tls-key)",
			"peer", peer, "err", err)
	case err != nil:
		log.Info("peer server not reachable now", "peer", peer, "err", err)
	default:
		resp.Body.Close()
		log.Info("peer server serves the same certificate", "peer", peer)
	}
}
