package image

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/preboot/preboot/disk"
	"github.com/preboot/preboot/timing"
)

// Layout is what Capture reads: the disk's geometry and, per partition and
// raw region, the bytes in use. The agent builds it from disk.ReadTable
// and fsmap.Used; tests build it by hand.
type Layout struct {
	DiskSize   int64
	SectorSize int64 // 512 when 0
	// Table is the parsed partition table (JSON of a disk.Table), stored
	// verbatim in the manifest.
	Table json.RawMessage
	// Partitions and Regions use Area's Index, Name, Start, Size, FSType
	// and Used (relative to Start). A nil Used means the whole area (raw;
	// all-zero windows are still skipped); an empty non-nil Used means
	// nothing in use. Chunks are ignored.
	Partitions []Area
	Regions    []Area
	// Zero are disk byte extents read as zeros whatever the source holds
	// (Windows' pagefile.sys, hiberfil.sys: allocated, contents not kept).
	Zero []disk.Extent
	// Warnings go into the manifest (encrypted or unknown data copied raw…).
	Warnings []string
}

// Gaps returns the parts of a disk of diskSize bytes that no partition
// covers, as regions named "head" (before the first partition: MBR boot
// code, partition tables, the post-MBR gap with GRUB's core.img), "gap-N"
// and "tail" (a GPT backup table). Each is wholly "used": capture keeps
// their non-zero windows.
func Gaps(diskSize int64, parts []Area) []Area {
	type span struct{ s, e int64 }
	var ps []span
	for _, p := range parts {
		ps = append(ps, span{p.Start, p.Start + p.Size})
	}
	for i := 1; i < len(ps); i++ { // insertion sort: few partitions
		for j := i; j > 0 && ps[j].s < ps[j-1].s; j-- {
			ps[j], ps[j-1] = ps[j-1], ps[j]
		}
	}
	var out []Area
	var pos int64
	add := func(s, e int64, name string) {
		if e > s {
			out = append(out, Area{Name: name, Start: s, Size: e - s, FSType: "raw"})
		}
	}
	for i, p := range ps {
		name := fmt.Sprintf("gap-%d", i)
		if i == 0 {
			name = "head"
		}
		add(pos, min(p.s, diskSize), name)
		pos = max(pos, p.e)
	}
	add(pos, diskSize, "tail")
	return out
}

// Progress is reported periodically while capturing or restoring.
type Progress struct {
	Phase string `json:"phase"` // "capture" or "restore"
	// Done and Total count used bytes processed.
	Done  int64 `json:"done"`
	Total int64 `json:"total"`
	// Chunks processed out of ChunksTotal windows.
	Chunks      int64 `json:"chunks"`
	ChunksTotal int64 `json:"chunks_total"`
	// Transferred counts chunks (and compressed bytes) uploaded by a
	// capture or fetched by a restore; Skipped the windows that needed no
	// transfer (already in the store / already on the disk / all zero).
	Transferred      int64 `json:"transferred"`
	TransferredBytes int64 `json:"transferred_bytes"`
	Skipped          int64 `json:"skipped"`
	// Written is the bytes a restore wrote to the target.
	Written int64         `json:"written"`
	Elapsed time.Duration `json:"elapsed"`
	// Rate is Done per second since the start.
	Rate float64 `json:"rate"`
	// Timing is where the time went so far: busy time per stage
	// (network, CPU, disk) and the bottleneck (package timing).
	Timing *timing.Breakdown `json:"timing,omitempty"`
}

// counters are the atomics behind Progress.
type counters struct {
	phase                                  string
	total, chunksTotal                     int64
	start                                  time.Time
	done, chunks, xfer, xferBytes, skipped atomic.Int64
	written                                atomic.Int64
	tm                                     *timing.Recorder // nil: no breakdown
}

func (c *counters) snapshot() Progress {
	p := Progress{
		Phase: c.phase, Done: c.done.Load(), Total: c.total,
		Chunks: c.chunks.Load(), ChunksTotal: c.chunksTotal,
		Transferred: c.xfer.Load(), TransferredBytes: c.xferBytes.Load(),
		Skipped: c.skipped.Load(), Written: c.written.Load(),
		Elapsed: time.Since(c.start), Timing: c.tm.Snapshot(),
	}
	if s := p.Elapsed.Seconds(); s > 0 {
		p.Rate = float64(p.Done) / s
	}
	return p
}

// report calls fn every interval until stop is closed, then once more.
func (c *counters) report(fn func(Progress), interval time.Duration) (stop func()) {
	if fn == nil {
		return func() {}
	}
	if interval <= 0 {
		interval = 500 * time.Millisecond
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				fn(c.snapshot())
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
		fn(c.snapshot())
	}
}

// job is one window to capture or restore.
type job struct {
	area  *Area
	chunk int   // index in area.Chunks
	abs   int64 // disk offset of the window
	used  []disk.Extent
	nused int64
}

// jobsFor lists the windows of every area in disk order of the manifest's
// areas (regions first). makeChunks fills area.Chunks with offsets and
// lengths (capture); otherwise the existing chunks are used (restore).
func jobsFor(m *Manifest, makeChunks bool) []job {
	var jobs []job
	for _, a := range m.Areas() {
		if makeChunks {
			a.Chunks = a.Chunks[:0]
		}
		ci := 0
		forEachWindow(a.Used, a.Size, m.ChunkSize, func(off, length int64, in []disk.Extent) bool {
			if makeChunks {
				a.Chunks = append(a.Chunks, Chunk{Offset: off, Length: length})
			}
			j := job{area: a, chunk: ci, abs: a.Start + off, used: append([]disk.Extent(nil), in...)}
			j.nused = extentBytes(j.used)
			jobs = append(jobs, j)
			ci++
			return true
		})
	}
	return jobs
}

// bufPool is a fixed set of window buffers; its size bounds memory.
type bufPool chan []byte

func newBufPool(n int, size int64) bufPool {
	p := make(bufPool, n)
	for range n {
		p <- make([]byte, size)
	}
	return p
}

func (p bufPool) get(ctx context.Context) ([]byte, error) {
	select {
	case b := <-p:
		return b, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (p bufPool) put(b []byte) { p <- b[:cap(b)] }

// allZero reports whether b holds only zero bytes.
func allZero(b, zeros []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeros))
		if !bytes.Equal(b[:n], zeros[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}

// usedZero reports whether every used extent of a window buffer is zero.
func usedZero(b []byte, used []disk.Extent, zeros []byte) bool {
	for _, e := range used {
		if !allZero(b[e.Offset:e.End()], zeros) {
			return false
		}
	}
	return true
}

func logger(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}
