package sqlstore

import (
	"context"
	"database/sql"
	"sync"
)

// fifo lets the users of SQLite's one connection in in the order they
// asked: database/sql hands a freed connection to a random waiter, which
// under a storm of boot requests left some waiting for dozens of others
// (a p99 ten times the mean). Senders blocked on a full channel are
// served in order (the runtime queues them; measured: p99 of 16 boot
// requests at once 26-35 -> 15 ms). A nil fifo (PostgreSQL: a pool) lets
// everyone in.
type fifo struct{ ch chan struct{} }

func newFIFO() *fifo { return &fifo{ch: make(chan struct{}, 1)} }

func (f *fifo) lock(ctx context.Context) error {
	if f == nil {
		return nil
	}
	select {
	case f.ch <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (f *fifo) unlock() {
	if f != nil {
		<-f.ch
	}
}

// rows are query results that hold the connection (and its fifo turn)
// until closed.
type rows struct {
	*sql.Rows
	gate *fifo
	once sync.Once
}

func wrapRows(rs *sql.Rows, err error) (*rows, error) {
	if err != nil {
		return nil, err
	}
	return &rows{Rows: rs}, nil
}

// Close closes the rows and gives the connection's turn to the next
// waiter.
func (r *rows) Close() error {
	err := r.Rows.Close()
	r.once.Do(func() { r.gate.unlock() })
	return err
}

// row is a single-row result that holds the connection's turn until it
// is scanned.
type row struct {
	row  *sql.Row
	err  error
	gate *fifo
}

// Scan implements scanner; it ends the row's turn.
func (r *row) Scan(dest ...any) error {
	if r.err != nil {
		return r.err
	}
	defer r.gate.unlock()
	return r.row.Scan(dest...)
}
