package agent

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/preboot/preboot/failover"
	"github.com/preboot/preboot/tlspin"
)

// dialTimeout bounds connecting to one server when there are several: a
// server that does not answer is given up for the next one quickly.
const dialTimeout = 5 * time.Second

// failoverClient is the HTTP client of an agent given several servers:
// every request goes to the current one, and to the next when it does not
// answer. The servers share one certificate (docs/scale-out.md): env.TLS
// pins it on every one of them.
func failoverClient(env Env, log *slog.Logger) (*http.Client, error) {
	base := http.DefaultTransport.(*http.Transport).Clone()
	base.DialContext = (&net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}).DialContext
	base.MaxIdleConnsPerHost = 32
	base.TLSHandshakeTimeout = 15 * time.Second
	if env.TLS != "" {
		tc, err := tlspin.Config(env.TLS)
		if err != nil {
			return nil, err
		}
		base.TLSClientConfig = tc
	}
	tr, err := failover.New(env.Servers, base, log)
	if err != nil {
		return nil, fmt.Errorf("servers: %w", err)
	}
	log.Info("servers", "current", env.Server, "all", env.Servers)
	return &http.Client{Transport: tr}, nil
}
