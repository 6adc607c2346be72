package sqlstore

import (
	"context"
	"fmt"

	"github.com/preboot/preboot/store"
)

// AddEvent implements store.Store. MAC may be empty (an administrator's
// change); Time defaults to now.
func (s *Store) AddEvent(ctx context.Context, e store.Event) (store.Event, error) {
	if e.MAC != "" {
		m, err := normMAC(e.MAC)
		if err != nil {
			return store.Event{}, fmt.Errorf("add %s event: %w", e.Kind, err)
		}
		e.MAC = m
	}
	if e.Kind == "" {
		return store.Event{}, fmt.Errorf("add event: a kind is required: %w", store.ErrInvalid)
	}
	e.Time = normTime(e.Time)
	if b := store.BufferOf(ctx); b != nil {
		b.Add(e) // written with the request's next transaction or flush
		return e, nil
	}
	// Written with the events of concurrent requests (group commit).
	if err := s.batch.addEvent(ctx, &e); err != nil {
		return store.Event{}, fmt.Errorf("add %s event for %q: %w", e.Kind, e.MAC, err)
	}
	return e, nil
}

// FlushEvents implements store.EventFlusher: the events buffered in ctx
// in one statement (with other requests' writes, see groupCommit).
func (s *Store) FlushEvents(ctx context.Context) error {
	es := store.BufferOf(ctx).Take()
	if len(es) == 0 {
		return nil
	}
	if err := s.batch.addEvents(ctx, eventPtrs(es)); err != nil {
		return fmt.Errorf("add %d events: %w", len(es), err)
	}
	return nil
}

func eventPtrs(es []store.Event) []*store.Event {
	out := make([]*store.Event, len(es))
	for i := range es {
		out[i] = &es[i]
	}
	return out
}

// Events implements store.Store: newest (highest ID) first, or oldest
// first after f.AfterID. Limit: 100 by default, at most 10000.
func (s *Store) Events(ctx context.Context, f store.EventFilter) ([]store.Event, error) {
	q := `SELECT id, mac, time, kind, message, job, actor FROM events WHERE 1 = 1`
	var args []any
	if f.MAC != "" {
		m, err := normMAC(f.MAC)
		if err != nil {
			return nil, fmt.Errorf("list events: %w", err)
		}
		q += ` AND mac = ?`
		args = append(args, m)
	}
	if f.Kind != "" {
		q += ` AND kind = ?`
		args = append(args, f.Kind)
	}
	if f.Job != 0 {
		q += ` AND job = ?`
		args = append(args, f.Job)
	}
	if !f.Since.IsZero() {
		q += ` AND time >= ?`
		args = append(args, micros(f.Since))
	}
	if !f.Until.IsZero() {
		q += ` AND time < ?`
		args = append(args, micros(f.Until))
	}
	if f.AfterID != 0 {
		q += ` AND id > ?`
		args = append(args, f.AfterID)
	}
	if f.BeforeID != 0 {
		q += ` AND id < ?`
		args = append(args, f.BeforeID)
	}
	if f.AfterID != 0 {
		q += ` ORDER BY id LIMIT ?`
	} else {
		q += ` ORDER BY id DESC LIMIT ?`
	}
	args = append(args, clampLimit(f.Limit, 100))
	rows, err := s.r().query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list events: %w", err)
	}
	defer rows.Close()
	out := []store.Event{}
	for rows.Next() {
		var e store.Event
		var t int64
		if err := rows.Scan(&e.ID, &e.MAC, &t, &e.Kind, &e.Message, &e.Job, &e.Actor); err != nil {
			return nil, fmt.Errorf("list events: %w", err)
		}
		e.Time = fromMicros(t)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list events: %w", err)
	}
	return out, nil
}
