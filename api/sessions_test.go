package api_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/preboot/preboot/api"
	"github.com/preboot/preboot/api/sessionstest"
	"github.com/preboot/preboot/mcast"
	"github.com/preboot/preboot/store"
	"github.com/preboot/preboot/store/sqlstore"
)

// newSessionsEnv is the API over SQLite with sessions as its multicast
// session manager (nil: multicast not configured).
func newSessionsEnv(t *testing.T, sessions api.Sessions) *env {
	t.Helper()
	st, err := sqlstore.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "api.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	auth := &api.Auth{Store: st}
	h := api.New(api.Options{Store: st, Auth: auth, Version: "test", Sessions: sessions})
	local := &atomic.Bool{}
	local.Store(true)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if local.Load() && r.Header.Get("Authorization") == "" {
			r = r.WithContext(api.WithPeer(r.Context(), api.Peer{UID: 0, User: "root", Allowed: true}))
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return &env{t: t, srv: srv, st: st, auth: auth, local: local}
}

func TestSessions(t *testing.T) {
	now := time.Now().UTC().Truncate(time.Second)
	fake := sessionstest.New(sessionstest.Running("s2", now), sessionstest.Done("s1", now))
	fake.Now = func() time.Time { return now }
	e := newSessionsEnv(t, fake)

	var list []mcast.SessionInfo
	e.call("GET", "/api/v1/sessions", nil, 200, &list)
	if len(list) != 2 || list[0].ID != "s2" || list[1].ID != "s1" {
		t.Fatalf("list: %+v", list)
	}
	if got := list[0].Receivers; len(got) != 2 || got[1].Bytes.Peers != 4<<20 || got[1].Reason == "" {
		t.Fatalf("the list's receivers: %+v", got)
	}

	var s mcast.SessionInfo
	e.call("GET", "/api/v1/sessions/s2", nil, 200, &s)
	want := sessionstest.Running("s2", now)
	if s.ID != "s2" || s.State != mcast.StateRunning || s.Image != want.Image || s.SentRepair != want.SentRepair ||
		len(s.Receivers) != 2 || s.Receivers[0] != want.Receivers[0] || !s.Started.Equal(want.Started) {
		t.Fatalf("GET s2: %+v", s)
	}
	e.errorOf("GET", "/api/v1/sessions/nope", nil, 404, "session nope", "no such session")

	// Cancel: 200 with the cancelled session, then 409; an admin event.
	e.call("POST", "/api/v1/sessions/s2/cancel", nil, 200, &s)
	if s.State != mcast.StateCancelled || !s.Ended.Equal(now) || s.Receivers[0].State != mcast.RecvUnicast {
		t.Fatalf("cancelled: %+v", s)
	}
	e.errorOf("POST", "/api/v1/sessions/s2/cancel", nil, 409, "the session has ended")
	e.errorOf("POST", "/api/v1/sessions/s1/cancel", nil, 409, "the session has ended")
	e.errorOf("POST", "/api/v1/sessions/nope/cancel", nil, 404, "no such session")
	evs, err := e.st.Events(context.Background(), store.EventFilter{Kind: store.EventAdmin, Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 1 || evs[0].Message != "multicast session s2 cancelled" || evs[0].Actor != "local:root" {
		t.Fatalf("admin events: %+v", evs)
	}

	// An administrator only: no token over TCP is 401.
	e.local.Store(false)
	e.errorOf("GET", "/api/v1/sessions", nil, 401)
	e.errorOf("POST", "/api/v1/sessions/s2/cancel", nil, 401)
}

func TestSessionsEmptyList(t *testing.T) {
	e := newSessionsEnv(t, sessionstest.New())
	resp, err := http.Get(e.srv.URL + "/api/v1/sessions")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if raw := strings.TrimSpace(string(b)); resp.StatusCode != 200 || raw != "[]" {
		t.Fatalf("empty list: %d %s", resp.StatusCode, b)
	}
}

// errSessions is a manager whose Cancel fails for another reason.
type errSessions struct{ *sessionstest.Fake }

func (errSessions) Cancel(context.Context, string) error {
	return errors.New("the group's socket is closed")
}

func TestSessionsCancelFails(t *testing.T) {
	e := newSessionsEnv(t, errSessions{sessionstest.New(sessionstest.Running("s1", time.Now()))})
	e.errorOf("POST", "/api/v1/sessions/s1/cancel", nil, 500, "the group's socket is closed")
}

func TestSessionsWithoutMulticast(t *testing.T) {
	e := newSessionsEnv(t, nil)
	// A nil manager behind the interface (the server's *mcast.Manager when
	// multicast is off) is no manager either.
	typedNil := newSessionsEnv(t, (*sessionstest.Fake)(nil))
	typedNil.errorOf("GET", "/api/v1/sessions", nil, 503, "multicast is not configured")
	for _, r := range []struct{ method, path string }{
		{"GET", "/api/v1/sessions"}, {"GET", "/api/v1/sessions/s1"}, {"POST", "/api/v1/sessions/s1/cancel"},
	} {
		e.errorOf(r.method, r.path, nil, 503, "multicast is not configured")
	}
	// Authentication comes first.
	e.local.Store(false)
	e.errorOf("GET", "/api/v1/sessions", nil, 401)
}

// TestOpenAPISessionsWithoutMulticast checks the 503 answers against the
// document.
func TestOpenAPISessionsWithoutMulticast(t *testing.T) {
	st, err := sqlstore.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "openapi.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	l := newLive(t, asLocal(api.New(api.Options{Store: st, Auth: &api.Auth{Store: st}})))
	// As root on the admin socket (no token; the document's security
	// requirement cannot say so).
	l.anonymous("GET", "/sessions", nil, 503, nil)
	l.anonymous("GET", "/sessions/s1", nil, 503, nil)
	l.anonymous("POST", "/sessions/s1/cancel", nil, 503, nil)
}
