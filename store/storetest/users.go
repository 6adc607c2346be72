package storetest

import (
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/preboot/preboot/store"
)

func testUsers(t *testing.T, st store.Store) {
	if list := must[[]store.User](t)(st.Users(ctx)); len(list) != 0 {
		t.Fatalf("users of a new store: %+v", list)
	}
	u, err := st.CreateUser(ctx, store.User{Name: "zoe", PasswordHash: "$2a$12$hash-1"})
	ok(t, err)
	if u.ID == 0 || u.CreatedAt.IsZero() || !u.PasswordChangedAt.Equal(u.CreatedAt) || !u.LastLogin.IsZero() {
		t.Fatalf("user = %+v", u)
	}
	_, err = st.CreateUser(ctx, store.User{Name: "zoe", PasswordHash: "$2a$12$hash-2"})
	is(t, err, store.ErrConflict, "zoe")
	_, err = st.CreateUser(ctx, store.User{Name: "nohash"})
	is(t, err, store.ErrInvalid)
	_, err = st.CreateUser(ctx, store.User{PasswordHash: "x"})
	is(t, err, store.ErrInvalid)
	admin := must[store.User](t)(st.CreateUser(ctx, store.User{Name: "admin", PasswordHash: "$2a$12$hash-3"}))

	if got := must[store.User](t)(st.User(ctx, "zoe")); !reflect.DeepEqual(got, u) {
		t.Fatalf("stored user = %+v, want %+v", got, u)
	}
	_, err = st.User(ctx, "ghost")
	is(t, err, store.ErrNotFound, "ghost")
	list := must[[]store.User](t)(st.Users(ctx))
	if names(list, func(u store.User) string { return u.Name }) != "admin,zoe" || !reflect.DeepEqual(list[0], admin) {
		t.Fatalf("users = %+v", list)
	}

	// A new password ends the user's sessions, not the others'.
	exp := time.Now().Add(time.Hour)
	must[store.Session](t)(st.CreateSession(ctx, store.Session{Hash: "s-zoe", UserID: u.ID, CSRF: "c1", Expires: exp}))
	must[store.Session](t)(st.CreateSession(ctx, store.Session{Hash: "s-admin", UserID: admin.ID, CSRF: "c2", Expires: exp}))
	time.Sleep(2 * time.Millisecond) // the stored times have microseconds
	ok(t, st.SetUserPassword(ctx, "zoe", "$2a$12$hash-new"))
	got := must[store.User](t)(st.User(ctx, "zoe"))
	if got.PasswordHash != "$2a$12$hash-new" || !got.PasswordChangedAt.After(got.CreatedAt) || got.LastLogin.IsZero() {
		t.Fatalf("user after a new password = %+v", got)
	}
	_, err = st.SessionByHash(ctx, "s-zoe")
	is(t, err, store.ErrNotFound)
	must[store.Session](t)(st.SessionByHash(ctx, "s-admin"))
	is(t, st.SetUserPassword(ctx, "ghost", "h"), store.ErrNotFound, "ghost")
	is(t, st.SetUserPassword(ctx, "zoe", ""), store.ErrInvalid)

	// Removing a user removes its sessions; the name is free again.
	ok(t, st.DeleteUser(ctx, "admin"))
	is(t, st.DeleteUser(ctx, "admin"), store.ErrNotFound)
	_, err = st.SessionByHash(ctx, "s-admin")
	is(t, err, store.ErrNotFound)
	if list := must[[]store.User](t)(st.Users(ctx)); len(list) != 1 || list[0].Name != "zoe" {
		t.Fatalf("users after delete = %+v", list)
	}
	must[store.User](t)(st.CreateUser(ctx, store.User{Name: "admin", PasswordHash: "h"}))
}

func testSessions(t *testing.T, st store.Store) {
	u := must[store.User](t)(st.CreateUser(ctx, store.User{Name: "ann", PasswordHash: "h"}))
	created := time.Date(2026, 3, 4, 5, 6, 7, 8000, time.UTC)
	exp := created.Add(12 * time.Hour)
	s, err := st.CreateSession(ctx, store.Session{Hash: "sha-1", UserID: u.ID, CSRF: "csrf-1", CreatedAt: created, Expires: exp})
	ok(t, err)
	want := store.Session{ID: s.ID, Hash: "sha-1", UserID: u.ID, User: "ann", CSRF: "csrf-1", CreatedAt: created, LastSeen: created, Expires: exp}
	if s.ID == 0 || !reflect.DeepEqual(s, want) {
		t.Fatalf("session = %+v\nwant %+v", s, want)
	}
	if got := must[store.Session](t)(st.SessionByHash(ctx, "sha-1")); !reflect.DeepEqual(got, want) {
		t.Fatalf("stored session = %+v\nwant %+v", got, want)
	}
	if got := must[store.User](t)(st.User(ctx, "ann")); !got.LastLogin.Equal(created) {
		t.Fatalf("last login = %v, want %v", got.LastLogin, created)
	}
	_, err = st.CreateSession(ctx, store.Session{Hash: "sha-1", UserID: u.ID, CSRF: "c", Expires: exp})
	is(t, err, store.ErrConflict)
	_, err = st.CreateSession(ctx, store.Session{Hash: "sha-2", UserID: 9999, CSRF: "c", Expires: exp})
	is(t, err, store.ErrNotFound)
	_, err = st.CreateSession(ctx, store.Session{Hash: "sha-2", UserID: u.ID, Expires: exp})
	is(t, err, store.ErrInvalid)
	_, err = st.CreateSession(ctx, store.Session{UserID: u.ID, CSRF: "c", Expires: exp})
	is(t, err, store.ErrInvalid)
	_, err = st.CreateSession(ctx, store.Session{Hash: "sha-2", UserID: u.ID, CSRF: "c"})
	is(t, err, store.ErrInvalid)
	_, err = st.SessionByHash(ctx, "nope")
	is(t, err, store.ErrNotFound)

	seen, exp2 := created.Add(time.Hour), created.Add(13*time.Hour)
	ok(t, st.TouchSession(ctx, "sha-1", seen, exp2))
	if got := must[store.Session](t)(st.SessionByHash(ctx, "sha-1")); !got.LastSeen.Equal(seen) || !got.Expires.Equal(exp2) || !got.CreatedAt.Equal(created) {
		t.Fatalf("touched session = %+v", got)
	}
	is(t, st.TouchSession(ctx, "nope", seen, exp2), store.ErrNotFound)

	// Expired sessions go; others stay.
	must[store.Session](t)(st.CreateSession(ctx, store.Session{Hash: "sha-old", UserID: u.ID, CSRF: "c", CreatedAt: created, Expires: created.Add(time.Minute)}))
	must[store.Session](t)(st.CreateSession(ctx, store.Session{Hash: "sha-edge", UserID: u.ID, CSRF: "c", CreatedAt: created, Expires: created.Add(time.Hour)}))
	n, err := st.DeleteExpiredSessions(ctx, created.Add(time.Hour))
	ok(t, err)
	if n != 2 {
		t.Fatalf("deleted %d expired sessions, want 2", n)
	}
	for _, h := range []string{"sha-old", "sha-edge"} {
		_, err = st.SessionByHash(ctx, h)
		is(t, err, store.ErrNotFound)
	}
	must[store.Session](t)(st.SessionByHash(ctx, "sha-1"))

	ok(t, st.DeleteSession(ctx, "sha-1"))
	is(t, st.DeleteSession(ctx, "sha-1"), store.ErrNotFound)
	_, err = st.SessionByHash(ctx, "sha-1")
	is(t, err, store.ErrNotFound)
}

// testCounts covers the figures of the console's dashboard: devices seen
// since a time, and job counts.
func testCounts(t *testing.T, st store.Store) {
	base := time.Now().Add(-3 * time.Hour).Truncate(time.Second)
	for i, age := range []time.Duration{0, time.Hour, 2 * time.Hour, 150 * time.Minute} {
		_, _, err := st.SeeDevice(ctx, store.Sighting{MAC: fmt.Sprintf("02:00:00:00:0c:%02x", i), Time: base.Add(age)})
		ok(t, err)
	}
	for _, c := range []struct {
		since time.Time
		want  int
	}{{time.Time{}, 4}, {base.Add(time.Hour), 3}, {base.Add(2 * time.Hour), 2}, {base.Add(3 * time.Hour), 0}} {
		n := must[int](t)(st.CountDevices(ctx, store.DeviceFilter{SeenSince: c.since}))
		list := must[[]store.Device](t)(st.Devices(ctx, store.DeviceFilter{SeenSince: c.since}))
		if n != c.want || len(list) != c.want {
			t.Errorf("devices seen since %v: count %d, list %d, want %d", c.since, n, len(list), c.want)
		}
	}

	mk := func(state string, finished time.Time) store.Job {
		t.Helper()
		j := must[store.Job](t)(st.CreateJob(ctx, store.Job{MAC: "02:00:00:00:0c:00", Kind: store.KindInventory, State: state,
			TokenHash: fmt.Sprintf("count-%d", time.Now().UnixNano())}))
		if !finished.IsZero() {
			j = must[store.Job](t)(st.UpdateJob(ctx, j.ID, func(j *store.Job) error { j.FinishedAt = finished; return nil }))
		}
		return j
	}
	mk(store.JobPending, time.Time{})
	mk(store.JobRunning, time.Time{})
	mk(store.JobBooting, time.Time{})
	mk(store.JobFailed, base)
	mk(store.JobFailed, base.Add(2*time.Hour))
	mk(store.JobSucceeded, base.Add(2*time.Hour))
	for _, c := range []struct {
		f    store.JobFilter
		want int
	}{
		{store.JobFilter{}, 6},
		{store.JobFilter{Limit: 1}, 6},
		{store.JobFilter{Open: true}, 3},
		{store.JobFilter{State: store.JobRunning}, 1},
		{store.JobFilter{State: store.JobFailed}, 2},
		{store.JobFilter{State: store.JobFailed, FinishedSince: base.Add(time.Hour)}, 1},
		{store.JobFilter{FinishedSince: base.Add(time.Hour)}, 2},
		{store.JobFilter{FinishedSince: base}, 3},
		{store.JobFilter{MAC: "02:00:00:00:0c:01"}, 0},
	} {
		if n := must[int](t)(st.CountJobs(ctx, c.f)); n != c.want {
			t.Errorf("count jobs %+v = %d, want %d", c.f, n, c.want)
		}
		if c.f.Limit == 0 {
			if list := must[[]store.Job](t)(st.Jobs(ctx, c.f)); len(list) != c.want {
				t.Errorf("jobs %+v: %d, want %d", c.f, len(list), c.want)
			}
		}
	}
	_, err := st.CountJobs(ctx, store.JobFilter{MAC: "not-a-mac"})
	is(t, err, store.ErrInvalid)
}
