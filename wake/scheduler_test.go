package wake

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/preboot/preboot/store"
	"github.com/preboot/preboot/store/pgtest"
	"github.com/preboot/preboot/store/sqlstore"
)

var pg pgtest.Shared

func TestMain(m *testing.M) { os.Exit(pg.Main(m)) }

// Two servers sharing one PostgreSQL database run a scheduler each: the
// scheduled assignment is not woken before its time, and at its time by
// one scheduler only. The schedulers' clocks are set by the test.
func TestSchedulerWakesOnceAcrossServers(t *testing.T) {
	l := newLab(t, 1)
	seg := l.segments[0]
	ctx := context.Background()
	dsn := pg.Database(t)
	open := func() store.Store {
		st, err := sqlstore.OpenPostgres(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}
	st1, st2 := open(), open()
	const mac, other = "52:54:00:aa:cc:01", "52:54:00:aa:cc:02"
	for _, m := range []string{mac, other} {
		if _, _, err := st1.SeeDevice(ctx, store.Sighting{MAC: m, Interface: seg.srvIf, FillOnly: true}); err != nil {
			t.Fatal(err)
		}
	}
	b, err := st1.CreateBundle(ctx, store.Bundle{Name: "inv", Kind: store.KindInventory, Params: []byte(`{}`)})
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2030, 12, 8, 18, 0, 0, 0, time.UTC)
	a, err := st1.CreateAssignment(ctx, store.Assignment{BundleID: b.ID, MAC: mac, At: at, Wake: true})
	if err != nil {
		t.Fatal(err)
	}
	clock := at.Add(-time.Second)
	now := func() time.Time { return clock }
	s1 := &Scheduler{Service: &Service{Store: st1, Sender: &Sender{}}, Now: now}
	s2 := &Scheduler{Service: &Service{Store: st2, Sender: &Sender{}}, Now: now}
	tick := func(s *Scheduler) []store.Assignment {
		t.Helper()
		var due []store.Assignment
		if err := inNetns(t, l.srvNS, func() (err error) {
			due, err = s.Tick(ctx)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return due
	}
	if due := tick(s1); len(due) != 0 {
		t.Fatalf("due before its time: %+v", due)
	}
	clock = at
	due2 := tick(s2)
	due1 := tick(s1)
	if len(due2) != 1 || due2[0].ID != a.ID || len(due1) != 0 {
		t.Fatalf("server 2 claimed %+v, server 1 %+v: want assignment %d once", due2, due1, a.ID)
	}
	// Exactly one packet for the scheduled device: the next one the
	// segment hears is the one for the other device.
	svc := &Service{Store: st1, Sender: &Sender{}}
	if err := inNetns(t, l.srvNS, func() error {
		devs, err := svc.Devices(ctx, []string{other})
		if err != nil {
			return err
		}
		_, err = svc.Wake(ctx, devs, "test", CauseAdmin)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	wantPacket(t, seg, mac, seg.srvIP.Addr())
	wantPacket(t, seg, other, seg.srvIP.Addr())

	evs, err := st1.Events(ctx, store.EventFilter{MAC: mac, Kind: store.EventWake})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 1 || !strings.Contains(evs[0].Message, Broadcast(seg.srvIP).String()+":9 on "+seg.srvIf) || !strings.Contains(evs[0].Message, "[scheduled]") {
		t.Fatalf("wake events %+v", evs)
	}
}

// An unknown device fails the whole wake before anything is sent.
func TestUnknownDevice(t *testing.T) {
	ctx := context.Background()
	st, err := sqlstore.OpenSQLite(ctx, t.TempDir()+"/p.db")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, _, err := st.SeeDevice(ctx, store.Sighting{MAC: "52:54:00:00:00:01"}); err != nil {
		t.Fatal(err)
	}
	svc := &Service{Store: st, Sender: &Sender{}}
	_, err = svc.Devices(ctx, []string{"52:54:00:00:00:01", "52:54:00:00:00:99"})
	if !errors.Is(err, store.ErrNotFound) || !strings.Contains(err.Error(), "unknown device 52:54:00:00:00:99 (nothing was sent)") {
		t.Fatalf("unknown device: %v", err)
	}
	if _, err := svc.Devices(ctx, []string{"not-a-mac"}); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("bad MAC: %v", err)
	}
	if _, err := svc.GroupDevices(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown group: %v", err)
	}
	if evs, _ := st.Events(ctx, store.EventFilter{Kind: store.EventWake}); len(evs) != 0 {
		t.Fatalf("events after refused wakes: %+v", evs)
	}
}
