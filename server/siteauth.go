package server

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"

	"github.com/preboot/preboot/jobs"
	"github.com/preboot/preboot/siteauth"
	"github.com/preboot/preboot/store"
)

// authenticateJobOrUpstream is authenticateJob on a site server: a job
// token of this server's own jobs is checked as usual; one it does not
// know is introspected at the upstream. The upstream's job may only read
// (a restore's pinned image: captures and multicast stay with the
// upstream), only from the address the upstream handed the job to;
// anything else is 403 and a security event here.
func authenticateJobOrUpstream(w http.ResponseWriter, r *http.Request, js *jobs.Service, up *siteauth.Checker, tok string) (store.Job, bool) {
	ctx := r.Context()
	j, err := js.Authenticate(ctx, tok, r.RemoteAddr)
	if err == nil {
		return j, true
	}
	if !errors.Is(err, jobs.ErrUnauthorized) {
		jobAuthFailed(w, err) // one of this server's jobs: as usual
		return store.Job{}, false
	}
	from := remoteIP(r.RemoteAddr)
	ts, err := up.Check(ctx, tok, from)
	if errors.Is(err, siteauth.ErrThrottled) {
		writeJSONError(w, http.StatusTooManyRequests, err.Error())
		return store.Job{}, false
	}
	if err != nil {
		writeJSONError(w, http.StatusBadGateway, "cannot check this job token with the upstream server: "+err.Error())
		return store.Job{}, false
	}
	refuse := func(why string) (store.Job, bool) {
		js.Security(ctx, ts.MAC, "upstream-token", why)
		writeJSONError(w, http.StatusForbidden, why)
		return store.Job{}, false
	}
	switch {
	case !ts.Active:
		return refuse(fmt.Sprintf("a job token from %s that neither this server nor its upstream knows (or whose job ended): refused", from))
	case !ts.Read || ts.Kind != store.KindImageRestore || ts.Image == "":
		return refuse(fmt.Sprintf("upstream job %d (%s) used its token at this site server from %s: only restores read images here (captures go to the upstream): refused", ts.Job, ts.Kind, from))
	case ts.ClientIP != "" && from != ts.ClientIP:
		return refuse(fmt.Sprintf("upstream job %d: its token was used from %s, but the job was handed to %s: refused", ts.Job, from, ts.ClientIP))
	}
	return store.Job{ID: ts.Job, MAC: ts.MAC, Kind: ts.Kind, Image: ts.Image, ClientIP: ts.ClientIP}, true
}

// remoteIP is a request's remote address without port or zone, IPv4 as
// IPv4 (as jobs binds tokens to it).
func remoteIP(remote string) string {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	return a.Unmap().WithZone("").String()
}
