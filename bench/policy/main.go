// Command policy measures boot-policy decisions per second on one core
// (issue 4's benchmark): a store filled with a fleet (bench/policy/fleet:
// 10,000 devices, 500 rules, 1,000 groups by default) on SQLite and/or a
// throwaway PostgreSQL cluster, then, each for a bounded time and count:
//
//   - decide: policy.Engine.Decide alone (the read path: policy version,
//     the device's static groups, the cached snapshot of groups, rules,
//     assignments and menus);
//   - script: policy.Engine.Script for a device's first boot request
//     (action ""), as the HTTP handler runs it: the sighting upsert, the
//     boot event, Decide, and what the decision writes (its event, a job
//     for work that is due);
//   - register: Script for a new virtual machine the registration rule
//     matches (registers and names it, joins a group, assigns and starts
//     an inventory bundle; each one changes the policy version, and the
//     next decision follows those changes of one device);
//   - cold: Decide right after a change to one device (its menu): the
//     snapshot follows it;
//   - reload: Decide right after a rule's change: the rules are read
//     again;
//   - group: Decide right after a group's change: the whole snapshot is
//     loaded again.
//
// With -concurrency 1,16,64 the decide, script and register measurements
// run again with that many requests at once (goroutines taking the next
// request as soon as theirs is answered): a boot storm, of known devices
// (script) or of new ones (register). Their writes go to the store's
// group commit (events and registrations of concurrent requests in one
// commit per batch); the "writes/commit" column is its mean batch.
//
// Requests cycle over every device of the fleet in a shuffled order,
// registered and unregistered mixed (80/20 by default).
//
//	go run ./bench/policy -store both -duration 10s
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"

	"github.com/preboot/preboot/bench/policy/fleet"
	"github.com/preboot/preboot/policy"
	"github.com/preboot/preboot/store"
	"github.com/preboot/preboot/store/pgtest"
	"github.com/preboot/preboot/store/sqlstore"
)

// Target of issue 4 (SQLite), and of issue 14 on both stores for known
// and new devices.
const (
	targetRate = 5000
	targetP99  = 10 * time.Millisecond
)

// maxOps bounds every measurement loop whatever the flags say.
const maxOps = 5_000_000

type options struct {
	fleet    fleet.Config
	duration time.Duration
	n        int
	rounds   int
	stores   []string
	ops      map[string]bool
	newN     int
	coldN    int
	procs    int
	conc     []int
	cpu      int
	pgCPU    int
	profile  string
	markdown bool
	dir      string
}

// result is one measurement, or the merge of its rounds.
type result struct {
	store, op    string
	ops          int
	elapsed      time.Duration
	lat          []time.Duration // sorted
	rates        []float64       // per round
	p50, p99, mx time.Duration
	mallocs      uint64
	bytes        uint64
	cpu          time.Duration // user + system time of the process
	others       time.Duration // CPU time other processes took on the process's CPU
	server       time.Duration // CPU time of the database server (PostgreSQL), if any
	written      int64         // bytes the process wrote (write system calls, /proc/self/io wchar)
	writeCalls   int64         // its write system calls
	changes      int64         // policy version changes during the measurement
	conc         int           // requests at once
	batches      int64         // group-commit batches the store committed
	batchWrites  int64         // writes in them
}

func (r result) rate() float64 { return float64(r.ops) / r.elapsed.Seconds() }

// cpuRate is the decisions per second of CPU time the process and the
// database server used: what the rate would be with a core to
// themselves and no waiting.
func (r result) cpuRate() float64 { return float64(r.ops) / (r.cpu + r.server).Seconds() }

func (r result) serverPerOp() time.Duration { return r.server / time.Duration(r.ops) }

func (r result) cpuPerOp() time.Duration { return r.cpu / time.Duration(r.ops) }

func (r result) allocs() float64 { return float64(r.mallocs) / float64(r.ops) }

func (r result) kib() float64 { return float64(r.bytes) / float64(r.ops) / 1024 }

// othersShare is the share of the process's CPU that other processes
// used during the measurement.
func (r result) othersShare() float64 { return 100 * r.others.Seconds() / r.elapsed.Seconds() }

func (r result) line() string {
	s := fmt.Sprintf("%-36s %8d ops in %5.1fs: %7.0f/s  p50 %s  p99 %s  max %s ms  %5.0f allocs/op  CPU %s ms/op, server %s ms/op (%.0f/CPU-s), others used %.0f %% of the CPU",
		r.op, r.ops, r.elapsed.Seconds(), r.rate(), ms(r.p50), ms(r.p99), ms(r.mx), r.allocs(), ms(r.cpuPerOp()), srvCell(r), r.cpuRate(), r.othersShare())
	if r.changes != 0 {
		s += fmt.Sprintf(", %d policy changes", r.changes)
	}
	if r.batches != 0 {
		s += ", " + batchCell(r) + " writes/commit"
	}
	return s
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench/policy:", err)
		os.Exit(1)
	}
}

func run() error {
	o := options{fleet: fleet.Default(), ops: map[string]bool{}}
	flag.IntVar(&o.fleet.Devices, "devices", o.fleet.Devices, "devices in the store")
	flag.IntVar(&o.fleet.Rules, "rules", o.fleet.Rules, "rules for unregistered devices")
	flag.IntVar(&o.fleet.Groups, "groups", o.fleet.Groups, "groups (10 % dynamic)")
	flag.IntVar(&o.fleet.GroupAssignments, "group-assignments", o.fleet.GroupAssignments, "groups with an assignment")
	unreg := flag.Float64("unregistered", o.fleet.Unregistered, "share of unregistered devices (and requests)")
	seed := flag.Uint64("seed", o.fleet.Seed, "fleet seed")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "time limit of each measurement")
	flag.IntVar(&o.n, "n", 0, "count limit of each measurement (0: 1,000,000)")
	flag.IntVar(&o.rounds, "rounds", 1, "rounds of the measurements on each store (results merged; rates listed per round)")
	storeFlag := flag.String("store", "sqlite", "sqlite, postgres or both")
	opsFlag := flag.String("ops", "decide,script,register,cold,reload,group", "measurements to run")
	flag.IntVar(&o.newN, "new", 300, "count limit of the register measurement (per round)")
	flag.IntVar(&o.coldN, "cold", 30, "count limit of the cold, reload and group measurements (per round)")
	flag.IntVar(&o.procs, "procs", 1, "GOMAXPROCS")
	concFlag := flag.String("concurrency", "1", "requests at once for decide, script and register: a list (1,16,64) measures each")
	flag.IntVar(&o.cpu, "cpu", 0, "pin the process to this CPU with taskset (-1: do not pin)")
	flag.IntVar(&o.pgCPU, "pg-cpu", 1, "pin the PostgreSQL server to this CPU (-1: do not pin; the same as -cpu: share it)")
	flag.StringVar(&o.profile, "cpuprofile", "", "write a CPU profile of the measurements to FILE.<store>")
	flag.BoolVar(&o.markdown, "md", false, "print a markdown report on stdout (progress goes to stderr)")
	flag.StringVar(&o.dir, "dir", "", "directory for the SQLite database (default: a new temporary directory)")
	flag.Parse()
	o.fleet.Unregistered, o.fleet.Seed = *unreg, *seed
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", flag.Args())
	}
	switch *storeFlag {
	case "sqlite", "postgres":
		o.stores = []string{*storeFlag}
	case "both":
		o.stores = []string{"sqlite", "postgres"}
	default:
		return fmt.Errorf("-store %q: want sqlite, postgres or both", *storeFlag)
	}
	for _, op := range strings.Split(*opsFlag, ",") {
		switch op = strings.TrimSpace(op); op {
		case "decide", "script", "register", "cold", "reload", "group":
			o.ops[op] = true
		case "":
		default:
			return fmt.Errorf("-ops: unknown measurement %q (want decide, script, register, cold, reload, group)", op)
		}
	}
	for _, c := range strings.Split(*concFlag, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(c))
		if err != nil || n < 1 || n > 1024 {
			return fmt.Errorf("-concurrency: %q: want 1..1024", c)
		}
		o.conc = append(o.conc, n)
	}
	if o.n <= 0 {
		o.n = 1_000_000
	}
	o.n = min(o.n, maxOps)
	if o.duration <= 0 || o.duration > time.Hour {
		return fmt.Errorf("-duration %v: want up to 1h", o.duration)
	}
	if o.rounds < 1 || o.rounds > 20 {
		return fmt.Errorf("-rounds %d: want 1..20", o.rounds)
	}
	if err := pin(o.cpu); err != nil {
		return err
	}
	runtime.GOMAXPROCS(o.procs)

	dir := o.dir
	if dir == "" {
		d, err := os.MkdirTemp("", "preboot-policybench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	out, log := io.Writer(os.Stdout), io.Writer(os.Stdout)
	if o.markdown {
		log = os.Stderr
	}
	fmt.Fprintf(log, "policy benchmark: %s, GOMAXPROCS=%d, CPUs allowed %s, %d devices (%.0f %% unregistered), %d rules, %d groups\n",
		runtime.Version(), runtime.GOMAXPROCS(0), allowedCPUs(), o.fleet.Devices, 100*o.fleet.Unregistered, o.fleet.Rules, o.fleet.Groups)

	var all []result
	var reps []storeReport
	for _, name := range o.stores {
		rs, rep, err := benchStore(o, name, dir, log)
		all = append(all, rs...)
		reps = append(reps, rep)
		if err != nil {
			printResults(log, all, false)
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	if o.markdown {
		printReport(out, o, reps, all)
		return nil
	}
	fmt.Fprintln(out)
	printResults(out, all, false)
	fmt.Fprintln(out)
	printTarget(out, all)
	return nil
}

// pin re-runs the program under taskset -c cpu, once.
func pin(cpu int) error {
	if cpu < 0 || os.Getenv("PREBOOT_BENCH_PINNED") != "" {
		return nil
	}
	taskset, err := exec.LookPath("taskset")
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/policy: taskset not found: running unpinned")
		return nil
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	args := append([]string{"taskset", "-c", strconv.Itoa(cpu), self}, os.Args[1:]...)
	return syscall.Exec(taskset, args, append(os.Environ(), "PREBOOT_BENCH_PINNED=1"))
}

func allowedCPUs() string {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return "?"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Cpus_allowed_list:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "?"
}

// openStore opens a fresh store of a kind; stop releases what it
// started; server is the PID of the database server (0: in-process).
func openStore(ctx context.Context, o options, name, dir string, log io.Writer) (st *sqlstore.Store, stop func(), server int, err error) {
	switch name {
	case "sqlite":
		st, err = sqlstore.OpenSQLite(ctx, filepath.Join(dir, "policy.db"))
		if err != nil {
			return nil, nil, 0, err
		}
		return st, func() { st.Close() }, 0, nil
	case "postgres":
		// pgtest wants a short path (unix socket) that the postgres user
		// can reach.
		pgdir, err := os.MkdirTemp("", "preboot-pgbench-")
		if err != nil {
			return nil, nil, 0, err
		}
		if err := os.Chmod(pgdir, 0o755); err != nil {
			return nil, nil, 0, err
		}
		sctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
		c, err := pgtest.Start(sctx, filepath.Join(pgdir, "pg"))
		cancel()
		if err != nil {
			os.RemoveAll(pgdir)
			return nil, nil, 0, err
		}
		cleanup := func() {
			if err := c.Stop(); err != nil {
				fmt.Fprintln(os.Stderr, err)
			}
			os.RemoveAll(pgdir)
		}
		if o.pgCPU >= 0 {
			if n := pinTree(c.PID(), o.pgCPU); n > 0 {
				fmt.Fprintf(log, "  postgres: %d processes pinned to CPU %d (new backends inherit it)\n", n, o.pgCPU)
			}
		}
		dsn, err := c.CreateDatabase(ctx)
		if err == nil {
			st, err = sqlstore.OpenPostgres(ctx, dsn)
		}
		if err != nil {
			cleanup()
			return nil, nil, 0, err
		}
		return st, func() { st.Close(); cleanup() }, c.PID(), nil
	}
	return nil, nil, 0, fmt.Errorf("unknown store %q", name)
}

// pinTree sets the CPU affinity of a process and its children (the
// postmaster and the processes it already forked); it returns how many
// it pinned.
func pinTree(pid, cpu int) int {
	var set unix.CPUSet
	set.Set(cpu)
	n := 0
	todo := []int{pid}
	for len(todo) > 0 && n < 1000 {
		p := todo[0]
		todo = todo[1:]
		if err := unix.SchedSetaffinity(p, &set); err != nil {
			fmt.Fprintf(os.Stderr, "pin postgres pid %d: %v\n", p, err)
			continue
		}
		n++
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", p, p))
		for _, f := range strings.Fields(string(b)) {
			if c, err := strconv.Atoi(f); err == nil {
				todo = append(todo, c)
			}
		}
	}
	return n
}

// storeReport is what one store's run found besides the measurements.
type storeReport struct {
	name             string
	populate, settle time.Duration
	fleet            *fleet.Fleet
	mix              string
	dbBytes          int64
	pinned           string
}

func benchStore(o options, name, dir string, log io.Writer) ([]result, storeReport, error) {
	ctx := context.Background()
	rep := storeReport{name: name}
	fmt.Fprintf(log, "\n== %s\n", name)
	st, stop, server, err := openStore(ctx, o, name, dir, log)
	if err != nil {
		return nil, rep, err
	}
	defer stop()
	e, err := fleet.Engine(st, filepath.Join(dir, "tftp-"+name))
	if err != nil {
		return nil, rep, err
	}

	t0 := time.Now()
	f, err := fleet.Populate(ctx, st, o.fleet, func(what string) {
		fmt.Fprintf(log, "  populate: %s (%.1fs)\n", what, time.Since(t0).Seconds())
	})
	if err != nil {
		return nil, rep, fmt.Errorf("populate: %w", err)
	}
	rep.fleet, rep.populate = f, time.Since(t0)
	fmt.Fprintf(log, "  populated in %.1fs: %d bundles, %d static + %d dynamic groups, %d memberships, %d device + %d group assignments, %d rules enabled + %d disabled (new VMs match #%d: %s)\n",
		rep.populate.Seconds(), f.Bundles, f.StaticGroups, f.DynamicGroups, f.Memberships, f.DeviceAssignments, f.GroupAssignments,
		f.RulesEnabled, f.RulesDisabled, f.RegisterRulePos, f.RegisterRule)
	t1 := time.Now()
	if err := fleet.Settle(ctx, e, f, o.fleet); err != nil {
		return nil, rep, err
	}
	rep.settle = time.Since(t1)
	fmt.Fprintf(log, "  settled in %.1fs: %d devices marked as having run their due work, every device booted once\n",
		rep.settle.Seconds(), f.AppliedSet)

	// The devices as Decide gets them from the HTTP handler (after the
	// sighting), loaded once.
	devs := make([]store.Device, len(f.Requests))
	for i, s := range f.Requests {
		if devs[i], err = st.Device(ctx, s.MAC); err != nil {
			return nil, rep, err
		}
	}
	if rep.mix, err = decisionMix(ctx, e, devs); err != nil {
		return nil, rep, err
	}
	fmt.Fprintf(log, "  decisions over the fleet: %s\n", rep.mix)

	if o.profile != "" {
		pf, err := os.Create(o.profile + "." + name)
		if err != nil {
			return nil, rep, err
		}
		defer pf.Close()
		if err := pprof.StartCPUProfile(pf); err != nil {
			return nil, rep, err
		}
		defer pprof.StopCPUProfile()
	}

	v0, err := st.PolicyVersion(ctx)
	if err != nil {
		return nil, rep, err
	}
	changes := func() (int64, error) {
		v, err := st.PolicyVersion(ctx)
		d := v - v0
		v0 = v
		return d, err
	}
	const base = "http://10.0.0.1:8080"
	type op struct {
		key, name string
		n         int
		prep      func(i int) error
		run       func(i int) error
	}
	var newDevices atomic.Int64
	cold := devs[0].MAC
	lastRule := fmt.Sprintf("rule-%04d", o.fleet.Rules) // matches no device, enabled or not
	ops := []op{
		{"decide", "Decide (read path)", o.n, nil, func(i int) error {
			_, err := e.Decide(ctx, devs[i%len(devs)])
			return err
		}},
		{"script", "Script (full boot request)", o.n, nil, func(i int) error {
			s := f.Requests[i%len(f.Requests)]
			s.Time = time.Now()
			_, err := e.Script(ctx, base, s.MAC, "", "", s)
			return err
		}},
		{"register", "Script, new device a rule registers", min(o.n, o.newN), nil, func(i int) error {
			s := fleet.NewDevice(int(newDevices.Add(1)-1), time.Now())
			_, err := e.Script(ctx, base, s.MAC, "", "", s)
			return err
		}},
		// A device-scope menu change before each decision (untimed): it
		// changes the policy version, as any admin change does.
		// A group's change (untimed) before each decision: the whole
		// snapshot is loaded again.
		{"group", "Decide after a group change", min(o.n, o.coldN), func(i int) error {
			_, err := st.UpdateGroup(ctx, "dyn-0000", func(g *store.Group) error { return nil })
			return err
		}, func(i int) error {
			_, err := e.Decide(ctx, devs[(i*7919)%len(devs)])
			return err
		}},
		// A rule's change (untimed) before each decision: the rules
		// are read again.
		{"reload", "Decide after a rule change", min(o.n, o.coldN), func(i int) error {
			_, err := st.UpdateRule(ctx, lastRule, func(r *store.Rule) error { r.Enabled = !r.Enabled; return nil })
			return err
		}, func(i int) error {
			_, err := e.Decide(ctx, devs[(i*7919)%len(devs)])
			return err
		}},
		{"cold", "Decide after a device's change", min(o.n, o.coldN), func(i int) error {
			return st.SetMenu(ctx, store.ScopeDevice, cold, store.Menu{Mode: "never", Title: fmt.Sprintf("cold %d", i)})
		}, func(i int) error {
			_, err := e.Decide(ctx, devs[(i*7919)%len(devs)])
			return err
		}},
	}
	var out []result
	for round := 1; round <= o.rounds; round++ {
		for _, op := range ops {
			if !o.ops[op.key] {
				continue
			}
			for _, conc := range o.conc {
				if conc > 1 && op.prep != nil {
					continue // one change, one decision: not a storm
				}
				if _, err := changes(); err != nil {
					return out, rep, err
				}
				b0, w0 := batchStats(st)
				r, err := measureWith(op.n, o.duration, server, conc, op.prep, op.run)
				if err != nil {
					return out, rep, fmt.Errorf("%s: %w", op.name, err)
				}
				b1, w1 := batchStats(st)
				r.store, r.op, r.conc, r.batches, r.batchWrites = name, op.name, conc, b1-b0, w1-w0
				if conc > 1 {
					r.op += fmt.Sprintf(" · %d at once", conc)
				}
				if r.changes, err = changes(); err != nil {
					return out, rep, err
				}
				if op.prep != nil {
					r.changes = 0 // the changes are the measurement's own
				}
				fmt.Fprintf(log, "  round %d: %s\n", round, r.line())
				out = append(out, r)
			}
		}
	}
	if name == "sqlite" {
		for _, suffix := range []string{"", "-wal"} {
			if fi, err := os.Stat(filepath.Join(dir, "policy.db"+suffix)); err == nil {
				rep.dbBytes += fi.Size()
			}
		}
	}
	return mergeRounds(out), rep, nil
}

// decisionMix tallies what the policy decides for the fleet (one Decide
// per device, untimed).
func decisionMix(ctx context.Context, e *policy.Engine, devs []store.Device) (string, error) {
	sources, actions := map[string]int{}, map[string]int{}
	groups := 0
	for _, d := range devs {
		dec, err := e.Decide(ctx, d)
		if err != nil {
			return "", err
		}
		src, _, _ := strings.Cut(dec.Source, ":")
		sources[src]++
		actions[dec.Action]++
		groups += len(dec.Groups)
	}
	return fmt.Sprintf("by source %s; by action %s; %.1f groups per device (static and dynamic)",
		tally(sources, len(devs)), tally(actions, len(devs)), float64(groups)/float64(len(devs))), nil
}

func tally(m map[string]int, total int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int {
		if m[a] != m[b] {
			return m[b] - m[a]
		}
		return strings.Compare(a, b)
	})
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %.1f %%", k, 100*float64(m[k])/float64(total)))
	}
	return strings.Join(parts, ", ")
}

// measureWith runs op up to n times or until limit has passed, timing
// each call; prep (may be nil) runs untimed before each op. server is
// the PID of a database server whose CPU time is measured too (0: none).
// With conc > 1 (and no prep), conc goroutines run the ops at once.
func measureWith(n int, limit time.Duration, server, conc int, prep, op func(i int) error) (result, error) {
	if conc > 1 && prep == nil {
		return measureConcurrent(n, limit, server, conc, op)
	}
	lat := make([]time.Duration, n)
	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	cpu0, busy0, srv0 := cpuTime(), cpuBusy(), treeCPU(server)
	w0, wc0 := writes()
	var untimed, untimedCPU, untimedSrv time.Duration
	start := time.Now()
	end := start.Add(limit)
	i := 0
	for ; i < n; i++ {
		if prep != nil {
			p0, c0, s0 := time.Now(), cpuTime(), treeCPU(server)
			if err := prep(i); err != nil {
				return result{}, fmt.Errorf("prepare op %d: %w", i, err)
			}
			untimed += time.Since(p0)
			untimedCPU += cpuTime() - c0
			untimedSrv += treeCPU(server) - s0
		}
		t0 := time.Now()
		if err := op(i); err != nil {
			return result{}, fmt.Errorf("op %d: %w", i, err)
		}
		t1 := time.Now()
		lat[i] = t1.Sub(t0)
		if t1.After(end) {
			i++
			break
		}
	}
	elapsed := time.Since(start) - untimed
	cpu, others := cpuTime()-cpu0-untimedCPU, cpuBusy()-busy0-(cpuTime()-cpu0)
	srv := treeCPU(server) - srv0 - untimedSrv
	w1, wc1 := writes()
	runtime.ReadMemStats(&m1)
	if i == 0 {
		return result{}, errors.New("no operation ran")
	}
	lat = lat[:i]
	slices.Sort(lat)
	r := result{ops: i, elapsed: elapsed, lat: lat, mallocs: m1.Mallocs - m0.Mallocs, bytes: m1.TotalAlloc - m0.TotalAlloc,
		cpu: cpu, others: max(others, 0), server: max(srv, 0), written: w1 - w0, writeCalls: wc1 - wc0}
	r.rates = []float64{r.rate()}
	r.percentiles()
	return r, nil
}

// measureConcurrent is measureWith with conc requests at once: each
// goroutine takes the next request when its own is answered, until n
// requests were taken or limit has passed. Latency is each request's own.
func measureConcurrent(n int, limit time.Duration, server, conc int, op func(i int) error) (result, error) {
	lat := make([]time.Duration, n)
	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	cpu0, busy0, srv0 := cpuTime(), cpuBusy(), treeCPU(server)
	w0, wc0 := writes()
	start := time.Now()
	end := start.Add(limit)
	var next atomic.Int64
	var stop atomic.Bool
	errs := make(chan error, conc)
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			for !stop.Load() {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				t0 := time.Now()
				if err := op(int(i)); err != nil {
					stop.Store(true)
					errs <- fmt.Errorf("op %d: %w", i, err)
					return
				}
				t1 := time.Now()
				lat[i] = t1.Sub(t0)
				if t1.After(end) {
					stop.Store(true)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return result{}, err
	}
	elapsed := time.Since(start)
	cpu, others := cpuTime()-cpu0, cpuBusy()-busy0-(cpuTime()-cpu0)
	srv := treeCPU(server) - srv0
	w1, wc1 := writes()
	runtime.ReadMemStats(&m1)
	i := int(min(next.Load(), int64(n)))
	if i == 0 {
		return result{}, errors.New("no operation ran")
	}
	// Every request taken ran to its end (a goroutine checks stop before
	// it takes one).
	lat = lat[:i]
	slices.Sort(lat)
	r := result{ops: i, elapsed: elapsed, lat: lat, mallocs: m1.Mallocs - m0.Mallocs, bytes: m1.TotalAlloc - m0.TotalAlloc,
		cpu: cpu, others: max(others, 0), server: max(srv, 0), written: w1 - w0, writeCalls: wc1 - wc0}
	r.rates = []float64{r.rate()}
	r.percentiles()
	return r, nil
}

func (r *result) percentiles() {
	n := len(r.lat)
	r.p50, r.p99, r.mx = r.lat[(n-1)/2], r.lat[int(math.Ceil(0.99*float64(n)))-1], r.lat[n-1]
}

// mergeRounds merges the rounds of each (store, operation), in the order
// of their first round: counts, times and latencies add up; the rate of
// every round is kept.
func mergeRounds(rs []result) []result {
	var out []result
	idx := map[string]int{}
	for _, r := range rs {
		k := r.store + "\x00" + r.op
		i, ok := idx[k]
		if !ok {
			idx[k] = len(out)
			out = append(out, r)
			continue
		}
		m := &out[i]
		m.ops += r.ops
		m.elapsed += r.elapsed
		m.lat = append(m.lat, r.lat...)
		m.rates = append(m.rates, r.rates...)
		m.mallocs += r.mallocs
		m.bytes += r.bytes
		m.cpu += r.cpu
		m.others += r.others
		m.written += r.written
		m.writeCalls += r.writeCalls
		m.server += r.server
		m.changes += r.changes
		m.batches += r.batches
		m.batchWrites += r.batchWrites
	}
	for i := range out {
		slices.Sort(out[i].lat)
		out[i].percentiles()
	}
	return out
}

// cpuTime is the user and system time the process used so far.
func cpuTime() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// writes returns the bytes the process has written with write system
// calls and their number (/proc/self/io: wchar, syscw). Untimed prep
// steps are counted too: only the cold measurement has one.
func writes() (bytes, calls int64) {
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return 0, 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(l, ": ")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		switch k {
		case "wchar":
			bytes = n
		case "syscw":
			calls = n
		}
	}
	return bytes, calls
}

// treeCPU is the user and system time of a process and its children
// (the PostgreSQL postmaster and its backends); 0 for pid 0.
func treeCPU(pid int) time.Duration {
	if pid <= 0 {
		return 0
	}
	var ticks int64
	todo := []int{pid}
	for n := 0; len(todo) > 0 && n < 1000; n++ {
		p := todo[0]
		todo = todo[1:]
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			continue
		}
		// Fields after the command name (which may hold spaces): state is
		// field 3, utime 14, stime 15.
		if i := strings.LastIndexByte(string(b), ')'); i >= 0 {
			f := strings.Fields(string(b)[i+1:])
			if len(f) > 12 {
				u, _ := strconv.ParseInt(f[11], 10, 64)
				s, _ := strconv.ParseInt(f[12], 10, 64)
				ticks += u + s
			}
		}
		c, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", p, p))
		for _, f := range strings.Fields(string(c)) {
			if v, err := strconv.Atoi(f); err == nil {
				todo = append(todo, v)
			}
		}
	}
	return time.Duration(ticks) * 10 * time.Millisecond // USER_HZ is 100 on Linux
}

// cpuBusy is the time the CPUs this process may run on have been busy
// (user, system, interrupts and steal, from /proc/stat; 10 ms steps), by
// anyone: less the process's own CPU time, it is what other processes
// (and other virtual machines) took from it.
func cpuBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	var want []string
	if l := allowedCPUs(); l != "?" && !strings.ContainsAny(l, ",-") {
		want = []string{"cpu" + l}
	} else {
		want = []string{"cpu"}
	}
	var total int64
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 9 || !slices.Contains(want, f[0]) {
			continue
		}
		for i, v := range f[1:9] {
			if i == 3 || i == 4 { // idle, iowait
				continue
			}
			n, _ := strconv.ParseInt(v, 10, 64)
			total += n
		}
	}
	return time.Duration(total) * 10 * time.Millisecond // USER_HZ is 100 on Linux
}

func ms(d time.Duration) string { return fmt.Sprintf("%.3f", float64(d)/float64(time.Millisecond)) }

func rateList(rs []float64) string {
	parts := make([]string, len(rs))
	for i, r := range rs {
		parts[i] = fmt.Sprintf("%.0f", r)
	}
	return strings.Join(parts, " / ")
}

var columns = []string{"store", "operation", "ops", "decisions/s", "per round", "p50 ms", "p99 ms", "max ms", "allocs/op", "alloc KiB/op",
	"written KiB/op", "writes/op", "CPU ms/op", "server CPU ms/op", "decisions/CPU-s", "CPU taken by others", "writes/commit"}

func cells(r result) []string {
	return []string{r.store, r.op, strconv.Itoa(r.ops), fmt.Sprintf("%.0f", r.rate()), rateList(r.rates),
		ms(r.p50), ms(r.p99), ms(r.mx), fmt.Sprintf("%.0f", r.allocs()), fmt.Sprintf("%.1f", r.kib()),
		fmt.Sprintf("%.1f", float64(r.written)/float64(r.ops)/1024), fmt.Sprintf("%.1f", float64(r.writeCalls)/float64(r.ops)),
		ms(r.cpuPerOp()), srvCell(r), fmt.Sprintf("%.0f", r.cpuRate()), fmt.Sprintf("%.0f %%", r.othersShare()), batchCell(r)}
}

// batchStats returns the group-commit batches and their writes so far, if
// the store counts them (older trees, for before/after runs, do not).
func batchStats(st any) (batches, writes int64) {
	if b, ok := st.(interface{ BatchStats() (int64, int64) }); ok {
		return b.BatchStats()
	}
	return 0, 0
}

// batchCell is the mean group-commit batch: store writes (events,
// registrations) per commit.
func batchCell(r result) string {
	if r.batches == 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f", float64(r.batchWrites)/float64(r.batches))
}

func srvCell(r result) string {
	if r.store == "sqlite" {
		return "–"
	}
	return ms(r.serverPerOp())
}

func printResults(w io.Writer, rs []result, markdown bool) {
	if markdown {
		fmt.Fprintln(w, "| "+strings.Join(columns, " | ")+" |")
		fmt.Fprintln(w, "|---|---|"+strings.Repeat("---:|", len(columns)-2))
		for _, r := range rs {
			fmt.Fprintln(w, "| "+strings.Join(cells(r), " | ")+" |")
		}
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, strings.Join(columns, "\t")+"\t")
	for _, r := range rs {
		fmt.Fprintln(tw, strings.Join(cells(r), "\t")+"\t")
	}
	tw.Flush()
}

// target is the verdict of issue 4's target on a measurement.
func target(r result) string {
	if r.rate() >= targetRate && r.p99 < targetP99 {
		return "PASS"
	}
	return "MISS"
}

func printTarget(w io.Writer, rs []result) {
	fmt.Fprintf(w, "target (issue 14): >= 5,000 decisions/s with p99 < %v on both stores, known and new devices (informational, not a test)\n", targetP99)
	found := false
	for _, r := range rs {
		if !strings.HasPrefix(r.op, "Script") && !strings.HasPrefix(r.op, "Decide (") {
			continue
		}
		found = true
		fmt.Fprintf(w, "  %s: %s, %s: %.0f decisions/s (%.2f× the target; %.0f per CPU-second), p99 %s ms\n",
			target(r), r.store, r.op, r.rate(), r.rate()/targetRate, r.cpuRate(), ms(r.p99))
	}
	if !found {
		fmt.Fprintln(w, "  (no decide/script measurement in this run)")
	}
}

// printReport writes the markdown report: what was measured, on what,
// the table and the target's verdict.
func printReport(w io.Writer, o options, reps []storeReport, rs []result) {
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Fprintf(w, "Fleet (`bench/policy/fleet`, seed %d): %d devices (%.0f %% unregistered), %d rules, %d groups (%.0f %% dynamic), ",
		o.fleet.Seed, o.fleet.Devices, 100*o.fleet.Unregistered, o.fleet.Rules, o.fleet.Groups, 100*o.fleet.DynamicGroups)
	if len(reps) > 0 && reps[0].fleet != nil {
		f := reps[0].fleet
		fmt.Fprintf(w, "%d bundles (5 of each kind), %d static memberships, %d device and %d group assignments, %d rules enabled and %d disabled, "+
			"of which only #%d (`%s`) matches, and only new VMs; %d devices had already run the work due to them.\n",
			f.Bundles, f.Memberships, f.DeviceAssignments, f.GroupAssignments, f.RulesEnabled, f.RulesDisabled, f.RegisterRulePos, f.RegisterRule, f.AppliedSet)
	}
	for _, rep := range reps {
		if rep.mix != "" {
			fmt.Fprintf(w, "Decisions over the fleet: %s.\n", rep.mix)
			break
		}
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "Process: %s, GOMAXPROCS=%d, pinned to CPU %s", runtime.Version(), runtime.GOMAXPROCS(0), allowedCPUs())
	if slices.Contains(o.stores, "postgres") {
		if o.pgCPU >= 0 {
			fmt.Fprintf(w, "; PostgreSQL (pgtest: unix socket, fsync off) pinned to CPU %d", o.pgCPU)
		} else {
			fmt.Fprint(w, "; PostgreSQL (pgtest: unix socket, fsync off) unpinned")
		}
	}
	fmt.Fprintf(w, ". Each measurement: up to %v or %d operations, %d round(s) per store. Load average at the end: %s.\n",
		o.duration, o.n, o.rounds, strings.TrimSpace(string(load)))
	for _, rep := range reps {
		fmt.Fprintf(w, "%s: populated in %.0f s, settled in %.0f s", rep.name, rep.populate.Seconds(), rep.settle.Seconds())
		if rep.dbBytes > 0 {
			fmt.Fprintf(w, ", database + WAL %.0f MiB at the end", float64(rep.dbBytes)/(1<<20))
		}
		fmt.Fprintln(w, ".")
	}
	fmt.Fprintln(w)
	printResults(w, rs, true)
	fmt.Fprintln(w)
	fmt.Fprintln(w, "```")
	printTarget(w, rs)
	fmt.Fprintln(w, "```")
}
