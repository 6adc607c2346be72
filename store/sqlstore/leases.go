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

// leaseFamily is where the leases of one address family live: IPv4 in
// dhcp_leases (the address as a number), IPv6 in dhcp6_leases (the
// address's 16 bytes, which sort as the addresses do).
type leaseFamily struct {
	table string
	v6    bool
}

var (
	leases4 = leaseFamily{table: "dhcp_leases"}
	leases6 = leaseFamily{table: "dhcp6_leases", v6: true}
)

// familyOf is the family of a.
func familyOf(a netip.Addr) leaseFamily {
	if a.Is6() && !a.Is4In6() {
		return leases6
	}
	return leases4
}

// key is a as stored.
func (f leaseFamily) key(a netip.Addr) any {
	if f.v6 {
		b := a.As16()
		return b[:]
	}
	return ipNum(a)
}

// addrScan scans a stored address.
type addrScan struct {
	f   leaseFamily
	n   int64
	b   []byte
	dst *netip.Addr
}

func (f leaseFamily) scanAddr(dst *netip.Addr) *addrScan { return &addrScan{f: f, dst: dst} }

// Scan implements sql.Scanner.
func (a *addrScan) Scan(v any) error {
	if !a.f.v6 {
		var n sql.NullInt64
		if err := n.Scan(v); err != nil {
			return err
		}
		*a.dst = numIP(n.Int64)
		return nil
	}
	b, ok := v.([]byte)
	if !ok || len(b) != 16 {
		return fmt.Errorf("lease: stored IPv6 address %T of %d bytes", v, len(b))
	}
	*a.dst = netip.AddrFrom16([16]byte(b))
	return nil
}

func (f leaseFamily) scanLease(sc scanner) (store.Lease, error) {
	var (
		l            store.Lease
		exp, updated int64
		client       sql.NullString
	)
	if err := sc.Scan(f.scanAddr(&l.IP), &client, &l.MAC, &l.Hostname, &l.State, &exp, &updated, &l.Server); err != nil {
		return store.Lease{}, err
	}
	l.ClientID, l.Expires, l.Updated = client.String, fromMicros(exp), fromMicros(updated)
	return l, nil
}

func checkLeaseRequest(r store.LeaseRequest) error {
	s, e := r.Range.Start, r.Range.End
	switch {
	case r.ClientID == "":
		return fmt.Errorf("lease: empty client id: %w", store.ErrInvalid)
	case !s.IsValid() || s.Is4In6() || e.Is4In6() || s.BitLen() != e.BitLen() || e.Less(s):
		return fmt.Errorf("lease: bad range %v-%v: %w", s, e, store.ErrInvalid)
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
	f := familyOf(ip)
	l, err := f.scanLease(r.queryRow(ctx, `SELECT `+leaseCols+` FROM `+f.table+` WHERE ip = ?`+r.s.d.forUpdate, f.key(ip)))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Lease{}, false, nil
	}
	if err != nil {
		return store.Lease{}, false, fmt.Errorf("lease %s: %w", ip, err)
	}
	return l, true, nil
}

func (r runner) leaseByClient(ctx context.Context, f leaseFamily, client string) (store.Lease, bool, error) {
	l, err := f.scanLease(r.queryRow(ctx, `SELECT `+leaseCols+` FROM `+f.table+` WHERE client_id = ?`+r.s.d.forUpdate, client))
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
	f := familyOf(ip)
	// The client moves: its previous address becomes free (no row).
	if _, err := r.exec(ctx, `DELETE FROM `+f.table+` WHERE client_id = ? AND ip <> ?`, req.ClientID, f.key(ip)); err != nil {
		return store.Lease{}, fmt.Errorf("lease %s: %w", ip, err)
	}
	if !existed {
		_, err := r.exec(ctx, `INSERT INTO `+f.table+` (`+leaseCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
			f.key(ip), req.ClientID, req.MAC, req.Hostname, state, micros(until), micros(now), req.Server)
		if err != nil {
			return store.Lease{}, fmt.Errorf("lease %s: %w", ip, err)
		}
		return l, nil
	}
	n, err := r.affected(ctx, `UPDATE `+f.table+` SET client_id = ?, mac = ?, hostname = ?, state = ?, expires = ?, updated = ?, server = ?
		WHERE ip = ? AND (client_id = ? OR state = ? OR expires <= ?)`,
		req.ClientID, req.MAC, req.Hostname, state, micros(until), micros(now), req.Server,
		f.key(ip), req.ClientID, store.LeaseReleased, micros(now))
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
		f := familyOf(req.Range.Start)
		cur, ok, err := r.leaseByClient(ctx, f, req.ClientID)
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
		start, end := f.key(req.Range.Start), f.key(req.Range.End)
		// Never used: above the highest address used (one index probe),
		// else the lowest gap (a scan of the range's rows).
		var top netip.Addr
		err = r.queryRow(ctx, `SELECT ip FROM `+f.table+` WHERE ip >= ? AND ip <= ? ORDER BY ip DESC LIMIT 1`, start, end).Scan(f.scanAddr(&top))
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("lease: free address: %w", err)
		}
		if !top.IsValid() || top.Less(req.Range.End) {
			next := req.Range.Start
			if top.IsValid() {
				next = top.Next()
			}
			out, err = r.claim(ctx, next, false, req, store.LeaseOffered, now, until)
			return err
		}
		gap, err := r.leaseGap(ctx, f, req.Range)
		if err != nil {
			return fmt.Errorf("lease: free address: %w", err)
		}
		if gap.IsValid() {
			out, err = r.claim(ctx, gap, false, req, store.LeaseOffered, now, until)
			return err
		}
		var old netip.Addr
		err = r.queryRow(ctx, `SELECT ip FROM `+f.table+` WHERE ip >= ? AND ip <= ? AND (state = ? OR expires <= ?)
			ORDER BY expires, ip LIMIT 1`, start, end, store.LeaseReleased, micros(now)).Scan(f.scanAddr(&old))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("lease: range %s-%s: %w", req.Range.Start, req.Range.End, store.ErrExhausted)
		}
		if err != nil {
			return fmt.Errorf("lease: expired address: %w", err)
		}
		out, err = r.claim(ctx, old, true, req, store.LeaseOffered, now, until)
		return err
	})
	if err != nil {
		return store.Lease{}, err
	}
	return out, nil
}

// leaseGap returns the lowest address of rng without a row (the zero
// Addr when there is none). IPv4 finds it in SQL; IPv6 addresses, stored
// as bytes, have no "+ 1" in SQL: their rows in the range are read in
// order.
func (r runner) leaseGap(ctx context.Context, f leaseFamily, rng store.LeaseRange) (netip.Addr, error) {
	if !f.v6 {
		start, end := ipNum(rng.Start), ipNum(rng.End)
		var gap sql.NullInt64
		if err := r.queryRow(ctx, `SELECT MIN(c) FROM (
			SELECT CAST(? AS BIGINT) AS c WHERE NOT EXISTS (SELECT 1 FROM dhcp_leases WHERE ip = ?)
			UNION ALL
			SELECT l.ip + 1 AS c FROM dhcp_leases l WHERE l.ip >= ? AND l.ip < ?
				AND NOT EXISTS (SELECT 1 FROM dhcp_leases m WHERE m.ip = l.ip + 1)
		) g`, start, start, start, end).Scan(&gap); err != nil {
			return netip.Addr{}, err
		}
		if !gap.Valid {
			return netip.Addr{}, nil
		}
		return numIP(gap.Int64), nil
	}
	rows, err := r.query(ctx, `SELECT ip FROM dhcp6_leases WHERE ip >= ? AND ip <= ? ORDER BY ip`, f.key(rng.Start), f.key(rng.End))
	if err != nil {
		return netip.Addr{}, err
	}
	defer rows.Close()
	want := rng.Start
	for rows.Next() {
		var a netip.Addr
		if err := rows.Scan(f.scanAddr(&a)); err != nil {
			return netip.Addr{}, err
		}
		if a != want {
			return want, nil
		}
		if a == rng.End {
			return netip.Addr{}, rows.Err()
		}
		want = a.Next()
	}
	if err := rows.Err(); err != nil {
		return netip.Addr{}, err
	}
	return want, nil
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
		f := familyOf(ip)
		n, err = r.affected(ctx, `UPDATE `+f.table+` SET state = ?, expires = ?, updated = ? WHERE ip = ? AND client_id = ?`,
			store.LeaseReleased, micros(now), micros(now), f.key(ip), clientID)
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
		f := familyOf(ip)
		n, err = r.affected(ctx, `UPDATE `+f.table+` SET state = ?, client_id = NULL, expires = ?, updated = ? WHERE ip = ? AND client_id = ?`,
			store.LeaseDeclined, micros(normTime(until)), micros(now), f.key(ip), clientID)
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

// LeaseByClient implements store.Leases: an IPv4 lease, else an IPv6 one.
func (s *Store) LeaseByClient(ctx context.Context, clientID string) (store.Lease, error) {
	l, ok, err := s.r().leaseByClient(ctx, leases4, clientID)
	if err == nil && !ok {
		l, ok, err = s.r().leaseByClient(ctx, leases6, clientID)
	}
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
	fam := leases4
	if f.IPv6 || f.Range.Start.Is6() && !f.Range.Start.Is4In6() {
		fam = leases6
	}
	if f.Range.Start.IsValid() && familyOf(f.Range.Start) == fam && familyOf(f.Range.End) == fam {
		where = append(where, `ip >= ? AND ip <= ?`)
		args = append(args, fam.key(f.Range.Start), fam.key(f.Range.End))
	}
	if f.ClientID != "" {
		where = append(where, `client_id = ?`)
		args = append(args, f.ClientID)
	}
	q := `SELECT ` + leaseCols + ` FROM ` + fam.table
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
		l, err := fam.scanLease(rows)
		if err != nil {
			return nil, fmt.Errorf("leases: %w", err)
		}
		out = append(out, l)
	}
	return out, rows.Err()
}
