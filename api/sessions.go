package api

import (
	"context"
	"net/http"

	"github.com/preboot/preboot/mcast"
)

// Sessions is the multicast session manager as the API sees it.
type Sessions interface {
	// List returns every session, newest first, including ended ones
	// kept for a while.
	List() []mcast.SessionInfo
	// Get returns one session with its receivers.
	Get(id string) (mcast.SessionInfo, bool)
	// Cancel stops sending to a session's group; its receivers finish
	// over unicast. The error wraps mcast.ErrNotFound for an unknown
	// session and mcast.ErrEnded for one that is over already.
	Cancel(ctx context.Context, id string) error
}

// errNoMulticast is the 503 answer of the session routes on a server
// without a multicast session manager.
const errNoMulticast = "multicast is not configured on this server: there are no multicast sessions"

// sessions returns the session manager, or answers 503 without one.
func (h *Handler) sessions(w http.ResponseWriter) (Sessions, bool) {
	if h.Sessions == nil {
		writeError(w, http.StatusServiceUnavailable, errNoMulticast)
		return nil, false
	}
	return h.Sessions, true
}

func (h *Handler) listSessions(w http.ResponseWriter, r *http.Request) {
	s, ok := h.sessions(w)
	if !ok {
		return
	}
	list := s.List()
	for i := range list {
		list[i].Receivers = nonNil(list[i].Receivers)
	}
	writeJSON(w, http.StatusOK, nonNil(list))
}

func (h *Handler) getSession(w http.ResponseWriter, r *http.Request) {
	s, ok := h.sessions(w)
	if !ok {
		return
	}
	id := r.PathValue("id")
	info, found := s.Get(id)
	if !found {
		writeError(w, http.StatusNotFound, "session "+id+": "+mcast.ErrNotFound.Error())
		return
	}
	info.Receivers = nonNil(info.Receivers)
	writeJSON(w, http.StatusOK, info)
}

// cancelSession cancels a session and answers it as it is afterwards.
func (h *Handler) cancelSession(w http.ResponseWriter, r *http.Request) {
	s, ok := h.sessions(w)
	if !ok {
		return
	}
	id := r.PathValue("id")
	if err := s.Cancel(r.Context(), id); err != nil {
		h.fail(w, r, err)
		return
	}
	h.audit(r, "", "multicast session "+id+" cancelled")
	info, found := s.Get(id)
	if !found {
		// Cancelled and dropped at once: answer what is known.
		info = mcast.SessionInfo{ID: id, State: mcast.StateCancelled}
	}
	info.Receivers = nonNil(info.Receivers)
	writeJSON(w, http.StatusOK, info)
}
