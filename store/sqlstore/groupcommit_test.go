package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/preboot/preboot/store"
)

// TestGroupCommitBatches: writes that arrive while one is in flight are
// committed together in the next batch (one commit for all of them), each
// caller returns after that commit with its own event ID, a queued write
// whose context ends is withdrawn (not written), and a write that fails
// its batch fails alone.
func TestGroupCommitBatches(t *testing.T) {
	ctx := context.Background()
	s, err := OpenSQLite(ctx, filepath.Join(t.TempDir(), "p.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const mac = "02:00:00:00:0f:01"
	if _, _, err := s.SeeDevice(ctx, store.Sighting{MAC: mac}); err != nil {
		t.Fatal(err)
	}
	// Hold the only SQLite connection: the first write blocks in
	// flight, the next ones queue behind it.
	conn, err := s.db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b0, w0 := s.BatchStats()
	const queued = 10
	var wg sync.WaitGroup
	ids := make([]int64, queued+1)
	errs := make([]error, queued+1)
	add := func(i int, c context.Context) {
		defer wg.Done()
		e, err := s.AddEvent(c, store.Event{MAC: mac, Kind: store.EventBoot, Message: fmt.Sprintf("e%d", i)})
		ids[i], errs[i] = e.ID, err
	}
	wg.Add(1)
	go add(0, ctx)
	waitFor(t, func() bool { s.batch.mu.Lock(); defer s.batch.mu.Unlock(); return s.batch.running })
	for i := 1; i <= queued; i++ {
		wg.Add(1)
		go add(i, ctx)
	}
	// One more, whose context ends while it is queued.
	cctx, cancel := context.WithCancel(ctx)
	withdrawn := make(chan error, 1)
	go func() {
		_, err := s.AddEvent(cctx, store.Event{MAC: mac, Kind: store.EventBoot, Message: "withdrawn"})
		withdrawn <- err
	}()
	waitFor(t, func() bool { s.batch.mu.Lock(); defer s.batch.mu.Unlock(); return len(s.batch.queue) == queued+1 })
	cancel()
	if err := <-withdrawn; !errors.Is(err, context.Canceled) {
		t.Fatalf("withdrawn write: %v", err)
	}
	conn.Close()
	wg.Wait()
	seen := map[int64]bool{}
	for i, err := range errs {
		if err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		if ids[i] == 0 || seen[ids[i]] {
			t.Fatalf("write %d: ID %d (IDs %v)", i, ids[i], ids)
		}
		seen[ids[i]] = true
	}
	b1, w1 := s.BatchStats()
	if b1-b0 != 2 || w1-w0 != queued+1 {
		t.Errorf("%d writes in %d commits, want %d in 2 (the one in flight, then the queue)", w1-w0, b1-b0, queued+1)
	}
	es, err := s.Events(ctx, store.EventFilter{MAC: mac, Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != queued+1 {
		t.Errorf("%d events stored, want %d", len(es), queued+1)
	}
	for _, e := range es {
		if e.Message == "withdrawn" {
			t.Error("the withdrawn write was stored")
		}
		if !seen[e.ID] {
			t.Errorf("stored event %d was not acknowledged", e.ID)
		}
	}

	// A batch with a failing write: the others are stored, the bad one
	// fails alone.
	conn, err = s.db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wg.Add(1)
	go add(0, ctx)
	waitFor(t, func() bool { s.batch.mu.Lock(); defer s.batch.mu.Unlock(); return s.batch.running })
	var good, bad error
	var badReg sync.WaitGroup
	badReg.Add(2)
	go func() {
		defer badReg.Done()
		_, bad = s.Register(ctx, store.Registration{MAC: mac, Group: "no-such-group"})
	}()
	go func() {
		defer badReg.Done()
		_, good = s.Register(ctx, store.Registration{MAC: mac, Name: "ok"})
	}()
	waitFor(t, func() bool { s.batch.mu.Lock(); defer s.batch.mu.Unlock(); return len(s.batch.queue) == 2 })
	conn.Close()
	wg.Wait()
	badReg.Wait()
	if !errors.Is(bad, store.ErrNotFound) || good != nil {
		t.Fatalf("registrations in one batch: bad %v (want not found), good %v", bad, good)
	}
	d, err := s.Device(ctx, mac)
	if err != nil || d.Name != "ok" || !d.Registered {
		t.Fatalf("device after the batch: %+v %v", d, err)
	}
}

// waitFor polls cond (a state another goroutine reaches) for up to a
// minute.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(time.Minute); time.Now().Before(end); time.Sleep(time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatal("condition not reached within a minute")
}
