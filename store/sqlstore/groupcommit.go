package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/preboot/preboot/store"
)

// groupCommit writes what concurrent requests write — events and
// registrations — in one transaction per batch (group commit): while one
// batch commits, the writes that arrive meanwhile queue up and go
// together in the next one. A lone request is written at once (it waits
// for nobody); under a storm of boots one commit (and on PostgreSQL one
// multi-row INSERT for the events) serves up to maxBatch requests.
// Every caller waits for its batch's commit: nothing is acknowledged
// before it is stored. Should a batch fail, each of its writes runs
// again alone, so that one bad write fails only its own request.
//
// A write that finds nothing running or queued is written at once by its
// caller (no hand-over); writes that arrive meanwhile queue up, and a
// goroutine commits them in batches until the queue is empty: no
// goroutine outlives the batches. close waits for it.
type groupCommit struct {
	s        *Store
	maxBatch int

	mu      sync.Mutex
	queue   []*batchOp
	running bool
	closed  bool
	wg      sync.WaitGroup

	// batches and ops count what was committed, for tests and the
	// benchmark (ops/batches is the mean batch size).
	batches, ops int64
}

// maxBatch bounds a batch: the wait of a request is at most one batch in
// flight plus its own.
const maxBatch = 64

// batchTimeout bounds a batch's transaction (it runs on behalf of several
// requests, so no single request's context cancels it).
const batchTimeout = 30 * time.Second

// errStoreClosed is returned for writes that arrive after Close.
var errStoreClosed = errors.New("store closed")

// batchOp is one request's write: an event, or a function run in the
// batch's transaction.
type batchOp struct {
	ctx    context.Context
	events []*store.Event // events: inserted with the batch's others
	fn     func(ctx context.Context, r runner) error
	done   chan error // buffered: the batch never blocks on a caller
}

func newGroupCommit(s *Store) *groupCommit {
	return &groupCommit{s: s, maxBatch: maxBatch}
}

// do runs fn in a batch's transaction and returns when that transaction
// committed (or failed). fn may run more than once (retries, or alone
// after its batch failed): it must not keep state between runs.
func (g *groupCommit) do(ctx context.Context, fn func(ctx context.Context, r runner) error) error {
	return g.submit(&batchOp{ctx: ctx, fn: fn})
}

// addEvent inserts e (its ID set on return) in a batch.
func (g *groupCommit) addEvent(ctx context.Context, e *store.Event) error {
	return g.submit(&batchOp{ctx: ctx, events: []*store.Event{e}})
}

// addEvents inserts es (their IDs set on return) in a batch.
func (g *groupCommit) addEvents(ctx context.Context, es []*store.Event) error {
	return g.submit(&batchOp{ctx: ctx, events: es})
}

func (g *groupCommit) submit(op *batchOp) error {
	if err := op.ctx.Err(); err != nil {
		return err
	}
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return errStoreClosed
	}
	if !g.running {
		// Alone: written now, by this goroutine; whatever arrives
		// meanwhile queues for the next batch.
		g.running = true
		g.wg.Add(1)
		g.mu.Unlock()
		err := g.write(op.ctx, []*batchOp{op})
		g.mu.Lock()
		if err == nil {
			g.batches++
			g.ops++
		}
		if len(g.queue) > 0 {
			go g.run(context.WithoutCancel(op.ctx)) // takes over g.wg's count
		} else {
			g.running = false
			g.wg.Done()
		}
		g.mu.Unlock()
		return err
	}
	// A write in flight: queue up; its writer starts a batch for the
	// queue when it is done.
	op.done = make(chan error, 1)
	g.queue = append(g.queue, op)
	g.mu.Unlock()
	select {
	case err := <-op.done:
		return err
	case <-op.ctx.Done():
		g.mu.Lock()
		if i := slices.Index(g.queue, op); i >= 0 {
			// Not taken by a batch yet: withdrawn, nothing written.
			g.queue = slices.Delete(g.queue, i, i+1)
			g.mu.Unlock()
			return op.ctx.Err()
		}
		g.mu.Unlock()
		// In a batch already: its outcome is the answer (the batch is
		// bounded by batchTimeout).
		return <-op.done
	}
}

// run commits batches until the queue is empty.
func (g *groupCommit) run(base context.Context) {
	defer g.wg.Done()
	for {
		g.mu.Lock()
		n := min(len(g.queue), g.maxBatch)
		if n == 0 {
			g.running = false
			g.mu.Unlock()
			return
		}
		batch := slices.Clone(g.queue[:n])
		g.queue = slices.Delete(g.queue, 0, n)
		g.mu.Unlock()
		g.commit(base, batch)
	}
}

// commit writes one batch and answers its callers.
func (g *groupCommit) commit(base context.Context, batch []*batchOp) {
	ctx, cancel := context.WithTimeout(base, batchTimeout)
	defer cancel()
	err := g.write(ctx, batch)
	if err != nil && len(batch) > 1 {
		// One write failed the batch: each runs alone, so that it
		// fails only its own request.
		for _, op := range batch {
			op.done <- g.write(ctx, []*batchOp{op})
		}
		return
	}
	g.mu.Lock()
	if err == nil {
		g.batches++
		g.ops += int64(len(batch))
	}
	g.mu.Unlock()
	for _, op := range batch {
		op.done <- err
	}
}

// write runs a batch: its events in one INSERT, in one transaction with
// its functions (or alone, when it has none).
func (g *groupCommit) write(ctx context.Context, batch []*batchOp) error {
	var events []*store.Event
	var fns []func(context.Context, runner) error
	for _, op := range batch {
		if op.fn != nil {
			fns = append(fns, op.fn)
		}
		events = append(events, op.events...)
	}
	if len(fns) == 0 {
		return insertEvents(ctx, g.s.r(), events)
	}
	return g.s.inTx(ctx, func(r runner) error {
		for _, fn := range fns {
			if err := fn(ctx, r); err != nil {
				return err
			}
		}
		return insertEvents(ctx, r, events)
	})
}

// writeInsertEvents writes to q one INSERT of events (RETURNING their
// IDs, in order) and returns args with its arguments appended.
func writeInsertEvents(q *strings.Builder, args []any, events []*store.Event) []any {
	q.WriteString(`INSERT INTO events (mac, time, kind, message, job, actor) VALUES `)
	for i, e := range events {
		if i > 0 {
			q.WriteString(", ")
		}
		q.WriteString("(?, ?, ?, ?, ?, ?)")
		args = append(args, e.MAC, micros(e.Time), e.Kind, e.Message, e.Job, e.Actor)
	}
	q.WriteString(" RETURNING id")
	return args
}

// insertEvents inserts events in one statement and sets their IDs (in
// the order given: IDs grow with insertion).
func insertEvents(ctx context.Context, r runner, events []*store.Event) error {
	if len(events) == 0 {
		return nil
	}
	var q strings.Builder
	args := writeInsertEvents(&q, make([]any, 0, 6*len(events)), events)
	rows, err := r.query(ctx, q.String(), args...)
	if err != nil {
		return fmt.Errorf("add events: %w", err)
	}
	defer rows.Close()
	ids := make([]int64, 0, len(events))
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return fmt.Errorf("add events: %w", err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("add events: %w", err)
	}
	if len(ids) != len(events) {
		return fmt.Errorf("add events: %d inserted, %d returned", len(events), len(ids))
	}
	slices.Sort(ids) // RETURNING's order is not promised; the IDs' is
	for i, e := range events {
		e.ID = ids[i]
	}
	return nil
}

// stats returns how many batches and writes were committed.
func (g *groupCommit) stats() (batches, ops int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.batches, g.ops
}

// close refuses new writes and waits for the batch in flight.
func (g *groupCommit) close() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
	g.wg.Wait()
}

// BatchStats returns how many group-commit batches the store committed
// and how many writes they held (writes/batches: the mean batch size).
func (s *Store) BatchStats() (batches, writes int64) {
	return s.batch.stats()
}
