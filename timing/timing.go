// Package timing measures where the time of a pipeline goes (the imaging
// engine's restore and capture) and explains it: which resource — the
// network, the CPU or the disk — each stage waits on, how busy each group
// of goroutines was, and which stage is the bottleneck.
//
// A pipeline's stages run in pools of goroutines that overlap in time (a
// restore's workers fetch and decompress while its writer writes), so the
// busy times of the stages do not add up to the elapsed time. The
// accounting is:
//
//   - each stage adds the wall-clock time its goroutines spent in it
//     (time.Since around the blocking call: an HTTP request, a WriteAt,
//     a decompression; a goroutine waiting for a core counts too). Time a
//     goroutine spends blocked on a channel, waiting for the next or the
//     previous stage, is not counted;
//   - a pool's utilization is the busy time of its stages divided by its
//     goroutines and the elapsed time: 100 % means every goroutine of the
//     pool was busy all the time;
//   - the bottleneck is the pool with the highest utilization (at least
//     half busy): the other pools wait on it. Within that pool it is the
//     stage where its goroutines spent the most time;
//   - the shares (network, CPU, disk, waiting; they add up to 100 %) weigh
//     each stage's busy time by its pool's size (busy ÷ goroutines: the
//     time the pool would need for it alone); waiting is the elapsed time
//     the busiest pool was idle (a pipeline held up by one slow window,
//     or a run too short to fill it).
//
// Counting costs one time.Now per stage and window (megabytes), never a
// per-byte cost.
package timing

import (
	"sync"
	"sync/atomic"
	"time"
)

// Resources a stage waits on.
const (
	Network = "network"
	CPU     = "cpu"
	Disk    = "disk"
)

// Recorder accumulates the busy time of a pipeline's stages. Its methods
// are safe for concurrent use; a nil *Recorder records nothing.
type Recorder struct {
	start time.Time
	end   atomic.Int64 // UnixNano when stopped, 0 while running

	mu     sync.Mutex
	stages []*Counter
}

// NewRecorder starts the clock of a pipeline.
func NewRecorder() *Recorder { return &Recorder{start: time.Now()} }

// Counter is one stage's accumulated busy time. A nil *Counter records
// nothing.
type Counter struct {
	name, resource, pool string
	workers              int
	busy, count          atomic.Int64
}

// Stage registers a stage run by the pool of workers goroutines named
// pool (stages of one pool run one after the other in the same
// goroutines) and waiting on resource (Network, CPU, Disk).
func (r *Recorder) Stage(name, resource, pool string, workers int) *Counter {
	if r == nil {
		return nil
	}
	c := &Counter{name: name, resource: resource, pool: pool, workers: max(workers, 1)}
	r.mu.Lock()
	r.stages = append(r.stages, c)
	r.mu.Unlock()
	return c
}

// Add records one operation of the stage that took d.
func (c *Counter) Add(d time.Duration) {
	if c == nil {
		return
	}
	c.busy.Add(int64(d))
	c.count.Add(1)
}

// Since records one operation that started at t and returns the time it
// ended (the start of whatever the goroutine does next).
func (c *Counter) Since(t time.Time) time.Time {
	now := time.Now()
	c.Add(now.Sub(t))
	return now
}

// Stop freezes the elapsed time: later snapshots report the pipeline as
// it ended.
func (r *Recorder) Stop() {
	if r == nil {
		return
	}
	r.end.CompareAndSwap(0, time.Now().UnixNano())
}

// Snapshot returns the breakdown so far, derived figures computed (nil for
// a nil Recorder).
func (r *Recorder) Snapshot() *Breakdown {
	if r == nil {
		return nil
	}
	end := time.Now()
	if e := r.end.Load(); e != 0 {
		end = time.Unix(0, e)
	}
	b := &Breakdown{ElapsedUS: end.Sub(r.start).Microseconds(), Stages: []Stage{}}
	r.mu.Lock()
	for _, c := range r.stages {
		b.Stages = append(b.Stages, Stage{Name: c.name, Resource: c.resource, Pool: c.pool, Workers: c.workers,
			BusyUS: time.Duration(c.busy.Load()).Microseconds(), Count: c.count.Load()})
	}
	r.mu.Unlock()
	b.Compute()
	return b
}
