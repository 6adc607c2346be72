package tftp

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Many transfers at once through one event loop, with real clients (curl lock-step, atftp
// windowed) and the test client, all get their file intact.
func TestManyTransfersOneLoop(t *testing.T) {
	root := t.TempDir()
	data := randomBytes(50, 300<<10+77)
	writeFile(t, filepath.Join(root, "f"), data)
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	// All the clients are on 127.0.0.1: lift the per-client cap (the test client does not retry a
	// refused request).
	srv := &Server{Root: root, Logger: discardLogger(), Metrics: m, loops: 1, MaxTransfersPerClient: 64}
	addr := startServer(t, srv)
	url := fmt.Sprintf("tftp://127.0.0.1:%d/f", addr.Port())

	const curls, atftps, own = 12, 12, 12
	var wg sync.WaitGroup
	errs := make(chan error, curls+atftps+own)
	check := func(who, out string) {
		got, err := os.ReadFile(out)
		if err != nil || sha(got) != sha(data) {
			errs <- fmt.Errorf("%s: got %d bytes (%v), want %d", who, len(got), err, len(data))
		}
	}
	for i := range curls {
		out := filepath.Join(t.TempDir(), "out")
		wg.Go(func() {
			if o, err := runClient(t, "curl", "-sS", "--tftp-blksize", []string{"512", "1468", "8192"}[i%3], "-o", out, url); err != nil {
				errs <- fmt.Errorf("curl %d: %v: %s", i, err, o)
				return
			}
			check(fmt.Sprintf("curl %d", i), out)
		})
	}
	for i := range atftps {
		out := filepath.Join(t.TempDir(), "out")
		wg.Go(func() {
			o, err := runClient(t, "atftp", "--get", "-r", "f", "-l", out,
				"--option", "blksize 1468", "--option", fmt.Sprintf("windowsize %d", []int{1, 4, 16}[i%3]),
				"127.0.0.1", fmt.Sprint(addr.Port()))
			if err != nil {
				errs <- fmt.Errorf("atftp %d: %v: %s", i, err, o)
				return
			}
			check(fmt.Sprintf("atftp %d", i), out)
		})
	}
	for i := range own {
		wg.Go(func() {
			if got := download(t, addr, "f", 1024, 1+i%8); sha(got) != sha(data) {
				errs <- fmt.Errorf("test client %d: got %d bytes", i, len(got))
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	settle(t, func() float64 { return metricValue(t, m.active) })
	if ok := metricValue(t, m.transfers.WithLabelValues(resultOK)); ok != curls+atftps+own {
		for _, r := range []string{resultTimeout, resultClientError, resultAborted, resultError} {
			t.Logf("%s: %v", r, metricValue(t, m.transfers.WithLabelValues(r)))
		}
		t.Errorf("%v transfers ok, want %d", ok, curls+atftps+own)
	}
}

// A client that stops answering (dead), and one that never answers at all, hold their transfers
// open in the loop while other clients download through the same loop: the loop never waits on
// one transfer.
func TestDeadClientsDoNotStallOthers(t *testing.T) {
	root := t.TempDir()
	data := randomBytes(51, 100<<10)
	writeFile(t, filepath.Join(root, "f"), data)
	m := NewMetrics(prometheus.NewRegistry())
	// A long timeout: the stalled transfers are still waiting when the others are done.
	srv := &Server{Root: root, Logger: discardLogger(), Metrics: m, loops: 1,
		InitialTimeout: time.Minute, MinTimeout: time.Minute, MaxTimeout: time.Minute}
	addr := startServer(t, srv)

	silent := newTestClient(t, addr)
	silent.rrq("f")
	silent.mustData(1) // and never acknowledges it
	stalled := newTestClient(t, addr)
	stalled.rrq("f", "blksize", "1468", "windowsize", "4")
	stalled.mustOACK()
	stalled.ack(0)
	for b := uint16(1); b <= 4; b++ {
		stalled.mustData(b)
	}
	stalled.ack(4)
	stalled.mustData(5) // then stops

	for i := range 10 {
		if got := download(t, addr, "f", 512, 1+i%4); sha(got) != sha(data) {
			t.Fatalf("download %d: got %d bytes", i, len(got))
		}
	}
	// The server ends a transfer when the client's last ACK comes, after the client returned.
	waitFor(t, func() bool { return metricValue(t, m.transfers.WithLabelValues(resultOK)) == 10 })
	if a := metricValue(t, m.active); a != 2 {
		t.Fatalf("%v transfers active after the others finished, want the 2 stalled ones", a)
	}
}

// Stopping the server ends every transfer in progress (aborted) and closes every socket it
// opened: transfers' sockets and files, the loops' epoll and eventfd descriptors.
func TestShutdownClosesEverySocket(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "f"), randomBytes(52, 200<<10))
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	server := conn.LocalAddr().(*net.UDPAddr).AddrPort()
	const n = 20
	clients := make([]*testClient, n)
	for i := range clients {
		clients[i] = newTestClient(t, server)
	}
	before := openFDs(t)

	m := NewMetrics(prometheus.NewRegistry())
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- (&Server{Root: root, Logger: discardLogger(), Metrics: m, loops: 3, MaxTransfersPerClient: 2 * n,
			InitialTimeout: time.Minute, MinTimeout: time.Minute, MaxTimeout: time.Minute}).Serve(ctx, conn)
	}()
	for i, c := range clients {
		if i%2 == 0 {
			c.rrq("f")
		} else {
			c.rrq("f", "blksize", "1468", "windowsize", "8")
			c.mustOACK()
			c.ack(0)
		}
		c.mustData(1) // the transfer now waits for an ACK
	}
	if a := metricValue(t, m.active); a != n {
		t.Fatalf("%v transfers active, want %d", a, n)
	}
	if open := openFDs(t); open < before+2*n {
		t.Fatalf("%d descriptors open with %d transfers in progress, %d before: want at least a socket and a file each", open, n, before)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return")
	}
	// Serve closed its request socket too.
	if after := openFDs(t); after != before-1 {
		t.Errorf("%d descriptors open after Serve returned, want %d (before it, less the request socket)", after, before-1)
	}
	if a := metricValue(t, m.active); a != 0 {
		t.Errorf("%v transfers active after Serve returned", a)
	}
	if ab := metricValue(t, m.transfers.WithLabelValues(resultAborted)); ab != n {
		t.Errorf("%v transfers aborted, want %d", ab, n)
	}
}

// The timer heap gives back transfers in the order of their real deadlines, whether a deadline
// moved earlier (the transfer moves up at once) or later (noticed lazily), and forgets removed
// ones.
func TestTimersOrder(t *testing.T) {
	base := time.Now()
	at := func(ms int) time.Time { return base.Add(time.Duration(ms) * time.Millisecond) }
	rng := rand.New(rand.NewPCG(1, 2))
	var h timers
	var ts []*transfer
	want := map[*transfer]time.Time{}
	for range 200 {
		tr := &transfer{timer: -1, due: at(rng.IntN(1000))}
		h.schedule(tr)
		ts = append(ts, tr)
	}
	for i, tr := range ts {
		switch i % 4 {
		case 0: // later: lazily
			tr.due = tr.due.Add(time.Duration(rng.IntN(500)) * time.Millisecond)
			h.schedule(tr)
		case 1: // earlier
			tr.due = tr.due.Add(-time.Duration(rng.IntN(500)) * time.Millisecond)
			h.schedule(tr)
		case 2:
			if i%8 == 2 {
				h.remove(tr)
				continue
			}
		}
		want[tr] = tr.due
	}
	var got []*transfer
	for ms := -500; ms <= 1600; ms++ {
		now := at(ms)
		if next, ok := h.next(); ok && next.After(now) {
			continue
		}
		for {
			tr := h.expired(now)
			if tr == nil {
				break
			}
			if tr.due.After(now) {
				t.Fatalf("transfer due at %v given back at %v", tr.due.Sub(base), now.Sub(base))
			}
			if now.Sub(tr.due) >= time.Millisecond {
				t.Fatalf("transfer due at %v given back late, at %v", tr.due.Sub(base), now.Sub(base))
			}
			if tr.timer != -1 {
				t.Fatal("a transfer given back is still in the heap")
			}
			got = append(got, tr)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("%d transfers given back, want %d", len(got), len(want))
	}
	for i, tr := range got {
		if _, ok := want[tr]; !ok {
			t.Fatal("a removed transfer was given back")
		}
		if i > 0 && tr.due.Before(got[i-1].due) {
			t.Fatalf("given back out of order: %v after %v", tr.due.Sub(base), got[i-1].due.Sub(base))
		}
	}
	if _, ok := h.next(); ok {
		t.Fatal("timers left in the heap")
	}
}
