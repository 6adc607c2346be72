package server

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/preboot/preboot/api"
	"github.com/preboot/preboot/bundle"
	"github.com/preboot/preboot/config"
	"github.com/preboot/preboot/image"
	"github.com/preboot/preboot/jobs"
	"github.com/preboot/preboot/mcast"
	"github.com/preboot/preboot/store"
)

// newMulticast returns the session manager, nil when multicast is off
// (no interface configured).
func newMulticast(cfg config.Config, repo *image.Repo, st store.Store, tracker mcast.Tracker, log *slog.Logger) (*mcast.Manager, error) {
	mc := cfg.Multicast
	if mc.Interface == "" {
		return nil, nil
	}
	rng, err := netip.ParsePrefix(cmpStr(mc.Range, "239.255.0.0/16"))
	if err != nil {
		return nil, fmt.Errorf("multicast.range %q: %w", mc.Range, err)
	}
	m, err := mcast.NewManager(mcast.Config{Interface: mc.Interface, Rate: int64(mc.Rate), Port: mc.Port, Range: rng, TTL: mc.TTL,
		Loopback: true}, repo, tracker, log)
	if err != nil {
		return nil, err
	}
	m.Event = func(ctx context.Context, job int64, mac, msg string) {
		if _, err := st.AddEvent(context.WithoutCancel(ctx), store.Event{Kind: store.EventMulticast, Job: job, MAC: mac, Message: msg}); err != nil {
			log.WarnContext(ctx, "event not recorded", "err", err)
		}
	}
	return m, nil
}

func cmpStr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// multicastAuth identifies who talks to the sessions' control plane: the
// agent of a multicast (or restore) job with its token, from its address,
// restoring the job's pinned image with its bundle's start rule; or an
// administrator (ad-hoc receivers).
func multicastAuth(js *jobs.Service, auth *api.Auth) func(w http.ResponseWriter, r *http.Request) (mcast.Caller, bool) {
	return func(w http.ResponseWriter, r *http.Request) (mcast.Caller, bool) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		if tok := jobs.BearerToken(r); strings.HasPrefix(tok, api.JobTokenPrefix) {
			j, ok := authenticateJob(w, r, js, tok)
			if !ok {
				return mcast.Caller{}, false
			}
			if j.Kind != store.KindMulticast && j.Kind != store.KindImageRestore {
				writeJSONError(w, http.StatusForbidden, fmt.Sprintf("a %s job does not join multicast sessions", j.Kind))
				return mcast.Caller{}, false
			}
			c := mcast.Caller{Job: j.ID, MAC: j.MAC, Image: j.Image, Addr: host}
			if p, err := bundle.Decode(j.Kind, j.Params); err == nil {
				if mp, ok := p.(*bundle.Multicast); ok {
					c.MinClients, c.MaxWait = mp.MinClients, time.Duration(mp.MaxWait)
				}
			}
			return c, true
		}
		if _, ok := auth.Admin(w, r); !ok {
			return mcast.Caller{}, false
		}
		return mcast.Caller{Admin: true, Addr: host}, true
	}
}

// multicastOff answers the control plane when the server has no
// multicast: receivers restore by unicast.
func multicastOff(w http.ResponseWriter, _ *http.Request) {
	writeJSONError(w, http.StatusServiceUnavailable, "this server has no multicast (start it with --multicast-interface): restore by unicast")
}
