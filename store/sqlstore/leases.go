package sqlstore

import (
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/preboot/preboot/store"
)

var _ store.Leases = (*Store)(nil)

// ipNum is an IPv4 address as stored: an unsigned 32-bit number.
func ipNum(a netip.Addr) int64 {
	b := a.As4()
	return int64(binary.BigEndian.Uint32(b[:]))
}

func numIP(v int64) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], uint32(v))
	return netip.AddrFrom4(b)
}

const leaseCols = `ip, client_id, mac, hostname, state, expires, updated, server`

func scanLease(sc scanner) (store.Lease, error) {
	var (
		l                store.Lease
		ip, exp, updated int64
		client           sql.NullString
	)
	if err := sc.Scan(&ip, &client, &l.MAC, &l.Hostname, &l.State, &exp, &updated, &l.Server); err != nil {
		return store.Lease{}, err
	}
	l.IP, l.ClientID, l.Expires, l.Updated = numIP(ip), client.String, fromMicros(exp), fromMicros(updated)
	return l, nil
}

func checkLeaseRequest(r store.LeaseRequest) error {
	switch {
	case r.ClientID == "":
		return fmt.Errorf("lease: empty client id: %w", store.ErrInvalid)
	case !r.Range.Start.Is4() || !r.Range.End.Is4() || r.Range.End.Less(r.Range.Start):
		return fmt.Errorf("lease: bad range %v-%v: %w", r.Range.Start, r.Range.End, store.ErrInvalid)
	}
	return nil
}

// errLeaseRace means another server claimed the address between our read
// and our write: the transaction runs again.
var errLeaseRace = errors.New("lease claimed concurrently")

// leaseTx runs fn in a transaction (fsynced when durable, see durableTx),
// again (a bounded number of times) when
// another writer claimed the same address or client first: on PostgreSQL
// a unique violation aborts the transaction, so the whole of it reruns
// and reads what the other server committed.
func (s *Store) leaseTx(ctx context.Context, durable bool, fn func(r runner) error) error {
	const attempts = 8
	var err error
	for i := 0; i < attempts; i++ {
		if s.d.name == DriverSQLite && durable {
			err = s.durableTx(ctx, fn)
		} else {
			err = s.inTx(ctx, fn) // PostgreSQL: synchronous_commit flushes the WAL at COMMIT
		}
		if err == nil || ctx.Err() != nil || !(errors.Is(err, errLeaseRace) || s.d.unique(err)) {
			return err
		}
	}
	return fmt.Errorf("lease: %d attempts lost to concurrent writers: %w: %w", attempts, store.ErrConflict, err)
}

// durableTx runs fn in a SQLite transaction and returns once the commit
// is on disk: a lease is durable before the client hears of it, as dnsmasq
// fsyncs its lease file. The commit itself does not fsync (the store runs
// with synchronous=NORMAL); the write-ahead log is fsynced afterwards by a
// group sync shared by every lease committed meanwhile, so concurrent
// requests share one fsync instead of queueing for one each.
func (s *Store) durableTx(ctx context.Context, fn func(r runner) error) error {
	if err := s.inTx(ctx, fn); err != nil {
		return err
	}
	if err := s.walSync.sync(); err != nil {
		return fmt.Errorf("lease: sync %s: %w", s.walSync.path, err)
	}
	return nil
}

// groupSync fsyncs a file on behalf of many waiters: each waiter returns
// after a sync that started after it called, and a sync covers everyone
// who called before it started.
type groupSync struct {
	path string

	mu        sync.Mutex
	cond      *sync.Cond
	started   uint64 // syncs started
	completed uint64 // the latest finished sync
	running   bool
	errs      map[uint64]error // failed syncs (kept for their waiters)
}

func newGroupSync(path string) *groupSync {
	g := &groupSync{path: path, errs: map[uint64]error{}}
	g.cond = sync.NewCond(&g.mu)
	return g
}

func (g *groupSync) sync() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	want := g.started + 1
	for g.completed < want {
		if g.running {
			g.cond.Wait()
			continue
		}
		g.running = true
		g.started++
		gen := g.started
		g.mu.Unlock()
		err := syncFile(g.path)
		g.mu.Lock()
		g.running = false
		g.completed = gen
		if err != nil {
			g.errs[gen] = err
		}
		if len(g.errs) > 64 {
			clear(g.errs)
		}
		g.cond.Broadcast()
	}
	// The sync that covered this waiter is the first one at or after want
	// (they run one at a time): report its failure.
	return g.errs[want]
}

// syncFile fsyncs a file's data (fsync works on a read-only descriptor).
func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

func (r runner) leaseByIP(ctx context.Context, ip netip.Addr) (store.Lease, bool, error) {
	l, err := scanLease(r.queryRow(ctx, `SELECT `+leaseCols+` FROM dhcp_leases WHERE ip = ?`+r.s.d.forUpdate, ipNum(ip)))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Lease{}, false, nil
	}
	if err != nil {
		return store.Lease{}, false, fmt.Errorf("lease %s: %w", ip, err)
	}
	return l, true, nil
}

func (r runner) leaseByClient(ctx context.Context, client string) (store.Lease, bool, error) {
	l, err := scanLease(r.queryRow(ctx, `SELECT `+leaseCols+` FROM dhcp_leases WHERE client_id = ?`+r.s.d.forUpdate, client))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Lease{}, false, nil
	}
	if err != nil {
		return store.Lease{}, false, fmt.Errorf("lease of client %q: %w", client, err)
	}
	return l, true, nil
}

// claim gives ip to the client: an INSERT when the address has no row
// (the primary key refuses a second one), else an UPDATE that only
// succeeds while the row is still free or already the client's.
func (r runner) claim(ctx context.Context, ip netip.Addr, existed bool, req store.LeaseRequest, state string, now, until time.Time) (store.Lease, error) {
	l := store.Lease{IP: ip, ClientID: req.ClientID, MAC: req.MAC, Hostname: req.Hostname, State: state, Expires: until, Updated: now, Server: req.Server}
	// The client moves: its previous address becomes free (no row).
	if _, err := r.exec(ctx, `DELETE FROM dhcp_leases WHERE client_id = ? AND ip <> ?`, req.ClientID, ipNum(ip)); err != nil {
		return store.Lease{}, fmt.Errorf("lease %s: %w", ip, err)
	}
	if !existed {
		_, err := r.exec(ctx, `INSERT INTO dhcp_leases (`+leaseCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
			ipNum(ip), req.ClientID, req.MAC, req.Hostname, state, micros(until), micros(now), req.Server)
		if err != nil {
			return store.Lease{}, fmt.Errorf("lease %s: %w", ip, err)
		}
		return l, nil
	}
	n, err := r.affected(ctx, `UPDATE dhcp_leases SET client_id = ?, mac = ?, hostname = ?, state = ?, expires = ?, updated = ?, server = ?
		WHERE ip = ? AND (client_id = ? OR state = ? OR expires <= ?)`,
		req.ClientID, req.MAC, req.Hostname, state, micros(until), micros(now), req.Server,
		ipNum(ip), req.ClientID, store.LeaseReleased, micros(now))
	if err != nil {
		return store.Lease{}, fmt.Errorf("lease %s: %w", ip, err)
	}
	if n == 0 {
		return store.Lease{}, fmt.Errorf("lease %s: %w", ip, errLeaseRace)
	}
	return l, nil
}

// OfferLease implements store.Leases.
func (s *Store) OfferLease(ctx context.Context, req store.LeaseRequest, hold time.Duration) (store.Lease, error) {
	if err := checkLeaseRequest(req); err != nil {
		return store.Lease{}, err
	}
	now := normTime(req.Now)
	until := now.Add(hold)
	var out store.Lease
	// An offer is a reservation, not a lease: lost in a crash, the
	// client's REQUEST still binds the address if it is free. It commits
	// without its own fsync (SQLite synchronous=NORMAL).
	err := s.leaseTx(ctx, false, func(r runner) error {
		cur, ok, err := r.leaseByClient(ctx, req.ClientID)
		if err != nil {
			return err
		}
		if ok && req.Range.Contains(cur.IP) {
			state, exp := store.LeaseOffered, until
			if cur.State == store.LeaseBound && cur.Expires.After(until) {
				state, exp = store.LeaseBound, cur.Expires
			}
			out, err = r.claim(ctx, cur.IP, true, req, state, now, exp)
			return err
		}
		if req.Range.Contains(req.Requested) {
			l, ok, err := r.leaseByIP(ctx, req.Requested)
			if err != nil {
				return err
			}
			if !ok || l.Free(now) {
				out, err = r.claim(ctx, req.Requested, ok, req, store.LeaseOffered, now, until)
				return err
			}
		}
		start, end := ipNum(req.Range.Start), ipNum(req.Range.End)
		// Never used: above the highest address used (one index probe),
		// else the lowest gap (a scan of the range's rows).
		var top sql.NullInt64
		if err := r.queryRow(ctx, `SELECT MAX(ip) FROM dhcp_leases WHERE ip >= ? AND ip <= ?`, start, end).Scan(&top); err != nil {
			return fmt.Errorf("lease: free address: %w", err)
		}
		if !top.Valid || top.Int64 < end {
			next := start
			if top.Valid {
				next = top.Int64 + 1
			}
			out, err = r.claim(ctx, numIP(next), false, req, store.LeaseOffered, now, until)
			return err
		}
		var gap sql.NullInt64
		if err := r.queryRow(ctx, `SELECT MIN(c) FROM (
			SELECT CAST(? AS BIGINT) AS c WHERE NOT EXISTS (SELECT 1 FROM dhcp_leases WHERE ip = ?)
			UNION ALL
			SELECT l.ip + 1 AS c FROM dhcp_leases l WHERE l.ip >= ? AND l.ip < ?
				AND NOT EXISTS (SELECT 1 FROM dhcp_leases m WHERE m.ip = l.ip + 1)
		) g`, start, start, start, end).Scan(&gap); err != nil {
			return fmt.Errorf("lease: free address: %w", err)
		}
		if gap.Valid {
			out, err = r.claim(ctx, numIP(gap.Int64), false, req, store.LeaseOffered, now, until)
			return err
		}
		var old int64
		err = r.queryRow(ctx, `SELECT ip FROM dhcp_leases WHERE ip >= ? AND ip <= ? AND (state = ? OR expires <= ?)
			ORDER BY expires, ip LIMIT 1`, start, end, store.LeaseReleased, micros(now)).Scan(&old)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("lease: range %s-%s: %w", req.Range.Start, req.Range.End, store.ErrExhausted)
		}
		if err != nil {
			return fmt.Errorf("lease: expired address: %w", err)
		}
		out, err = r.claim(ctx, numIP(old), true, req, store.LeaseOffered, now, until)
		return err
	})
	if err != nil {
		return store.Lease{}, err
	}
	return out, nil
}

// BindLease implements store.Leases.
func (s *Store) BindLease(ctx context.Context, ip netip.Addr, req store.LeaseRequest, d time.Duration) (store.Lease, error) {
	if err := checkLeaseRequest(req); err != nil {
		return store.Lease{}, err
	}
	if !req.Range.Contains(ip) {
		return store.Lease{}, fmt.Errorf("lease %s: outside %s-%s: %w", ip, req.Range.Start, req.Range.End, store.ErrInvalid)
	}
	now := normTime(req.Now)
	var out store.Lease
	err := s.leaseTx(ctx, true, func(r runner) error {
		l, ok, err := r.leaseByIP(ctx, ip)
		if err != nil {
			return err
		}
		if ok && l.ClientID != req.ClientID && !l.Free(now) {
			who := l.ClientID
			if l.State == store.LeaseDeclined {
				who = "quarantine (declined)"
			}
			return fmt.Errorf("lease %s: held by %s until %s: %w", ip, who, l.Expires.Format(time.RFC3339), store.ErrConflict)
		}
		out, err = r.claim(ctx, ip, ok, req, store.LeaseBound, now, now.Add(d))
		return err
	})
	if err != nil {
		return store.Lease{}, err
	}
	return out, nil
}

// ReleaseLease implements store.Leases.
func (s *Store) ReleaseLease(ctx context.Context, ip netip.Addr, clientID string, now time.Time) error {
	now = normTime(now)
	var n int64
	err := s.leaseTx(ctx, true, func(r runner) (err error) {
		n, err = r.affected(ctx, `UPDATE dhcp_leases SET state = ?, expires = ?, updated = ? WHERE ip = ? AND client_id = ?`,
			store.LeaseReleased, micros(now), micros(now), ipNum(ip), clientID)
		return err
	})
	if err != nil {
		return fmt.Errorf("release lease %s: %w", ip, err)
	}
	if n == 0 {
		return fmt.Errorf("release lease %s: no lease of client %q: %w", ip, clientID, store.ErrNotFound)
	}
	return nil
}

// DeclineLease implements store.Leases.
func (s *Store) DeclineLease(ctx context.Context, ip netip.Addr, clientID string, now, until time.Time) error {
	now = normTime(now)
	var n int64
	err := s.leaseTx(ctx, true, func(r runner) (err error) {
		n, err = r.affected(ctx, `UPDATE dhcp_leases SET state = ?, client_id = NULL, expires = ?, updated = ? WHERE ip = ? AND client_id = ?`,
			store.LeaseDeclined, micros(normTime(until)), micros(now), ipNum(ip), clientID)
		return err
	})
	if err != nil {
		return fmt.Errorf("decline lease %s: %w", ip, err)
	}
	if n == 0 {
		return fmt.Errorf("decline lease %s: no lease of client %q: %w", ip, clientID, store.ErrNotFound)
	}
	return nil
}

// LeaseByClient implements store.Leases.
func (s *Store) LeaseByClient(ctx context.Context, clientID string) (store.Lease, error) {
	l, ok, err := s.r().leaseByClient(ctx, clientID)
	if err != nil {
		return store.Lease{}, err
	}
	if !ok {
		return store.Lease{}, fmt.Errorf("lease of client %q: %w", clientID, store.ErrNotFound)
	}
	return l, nil
}

// LeaseList implements store.Leases.
func (s *Store) LeaseList(ctx context.Context, f store.LeaseFilter) ([]store.Lease, error) {
	var (
		where []string
		args  []any
	)
	if f.Range.Start.Is4() && f.Range.End.Is4() {
		where = append(where, `ip >= ? AND ip <= ?`)
		args = append(args, ipNum(f.Range.Start), ipNum(f.Range.End))
	}
	if f.ClientID != "" {
		where = append(where, `client_id = ?`)
		args = append(args, f.ClientID)
	}
	q := `SELECT ` + leaseCols + ` FROM dhcp_leases`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, ` AND `)
	}
	limit, offset := page(f.Page)
	q += ` ORDER BY ip LIMIT ? OFFSET ?`
	args = append(args, limit, offset)
	rows, err := s.r().query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("leases: %w", err)
	}
	defer rows.Close()
	var out []store.Lease
	for rows.Next() {
		l, err := scanLease(rows)
		if err != nil {
			return nil, fmt.Errorf("leases: %w", err)
		}
		out = append(out, l)
	}
	return out, rows.Err()
}
