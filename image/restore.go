package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sync/errgroup"

	"github.com/preboot/preboot/disk"
	"github.com/preboot/preboot/timing"
)

// RestoreOptions tune Restore.
type RestoreOptions struct {
	// TargetSize is the size of the target disk in bytes (required).
	TargetSize int64
	// Current, when set, reads the target's present content (usually the
	// same device as dst): windows whose used bytes already hash as in the
	// image are neither fetched nor written (delta restore).
	Current io.ReaderAt
	// AssumeZero says the target reads as zeros wherever it was not
	// written (a new sparse file, a discarded SSD): zero windows are
	// skipped instead of written.
	AssumeZero bool
	// SkipRegions names regions not to write, e.g. "tail" (the old GPT
	// backup) when WriteTable lays out a bigger disk.
	SkipRegions []string
	// Partitions, when not empty, restores only these partitions (by
	// their 1-based index) of the image and nothing else: no raw region
	// (partition tables, boot code, gaps), no other partition. The target
	// must already be partitioned like the image for them: TargetTable
	// is required and each listed partition must exist in it with the
	// image's start and size (MatchPartitions), else Restore fails with
	// ErrTableMismatch before writing anything. SkipRegions and
	// WriteTable must not be set with it.
	Partitions []int
	// TargetTable is the target disk's current partition table (as
	// disk.ReadTable reads it); required with Partitions.
	TargetTable *disk.Table
	// WriteTable, when set, runs after all data is written, to write a
	// partition table adjusted to the target (disk.WriteTable). Without
	// it the raw regions reproduce the source table, which is right for a
	// target of the same size.
	WriteTable func(ctx context.Context, dst io.WriterAt) error
	// Done, when set, names windows (by their disk offset) that the
	// caller already wrote with verified bytes (see PlanRestore): they are
	// neither checked, fetched nor written.
	Done func(abs int64) bool
	// Workers fetch, decompress and verify in parallel (2×GOMAXPROCS, at
	// least 4, when 0).
	Workers          int
	Progress         func(Progress)
	ProgressInterval time.Duration
	Logger           *slog.Logger
}

type resResult struct {
	idx  int
	buf  []byte // pool buffer; data for a fetched window
	data bool   // buf holds the window to write
	zero bool   // write zeros over the used extents
	err  error
}

// Restore writes image m from store onto dst. Before writing anything it
// validates the manifest, checks the target is large enough and that the
// store holds every chunk. Every chunk is verified (length and BLAKE3)
// before it is written; windows are written in disk order and the first
// bad chunk stops the restore, so nothing after it is written. Only used
// extents are written. If dst has a Sync method it is called at the end.
// With opts.Partitions only those partitions are written, onto a target
// whose table already has them where the image has them.
func Restore(ctx context.Context, dst io.WriterAt, m *Manifest, store ChunkStore, opts RestoreOptions) error {
	log := logger(opts.Logger)
	if err := m.Validate(); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	if opts.TargetSize <= 0 {
		return errors.New("restore: target size unknown")
	}
	selected, need, err := restoreSelection(m, opts)
	if err != nil {
		return fmt.Errorf("restore %s: %w", m.Name, err)
	}
	if opts.TargetSize < need {
		return fmt.Errorf("restore %s: %w: image needs %d bytes (%s), target has %d (%s)",
			m.Name, ErrTargetTooSmall, need, humanBytes(need), opts.TargetSize, humanBytes(opts.TargetSize))
	}
	tm := timing.NewRecorder()
	t0 := time.Now()
	if err := checkPresent(ctx, m, store, selected, opts.Done); err != nil {
		return fmt.Errorf("restore %s: %w", m.Name, err)
	}
	tm.Stage("lookup", timing.Network, poolSetup, 1).Since(t0)
	jobs := jobsFor(m, false)
	var total, nwin int64
	for i := range jobs {
		if !selected(jobs[i].area) {
			continue
		}
		total += jobs[i].nused
		nwin++
	}
	// More workers than cores: each one waits on a fetch before it
	// decodes, and the extra requests in flight hide the network's latency.
	w := opts.Workers
	if w <= 0 {
		w = max(4, 2*runtime.GOMAXPROCS(0))
	}
	dec, err := newDecoder(w)
	if err != nil {
		return err
	}
	defer dec.Close()

	tt := newRestoreTimes(tm, w)
	cnt := &counters{phase: "restore", total: total, chunksTotal: nwin, start: time.Now(), tm: tm}
	stop := cnt.report(opts.Progress, opts.ProgressInterval)
	log.InfoContext(ctx, "restore start", "image", m.Name, "used", total, "chunks", nwin, "workers", w,
		"delta", opts.Current != nil, "target_size", opts.TargetSize, "partitions", opts.Partitions)

	pool := newBufPool(3*w+2, m.ChunkSize)
	zeros := make([]byte, m.ChunkSize)
	g, gctx := errgroup.WithContext(ctx)
	type work struct {
		idx int
		buf []byte
	}
	workCh := make(chan work, w)
	resCh := make(chan resResult, w)

	// Dispatcher: takes buffers in disk order, so the oldest unwritten
	// window always holds one and the in-order writer cannot starve.
	g.Go(func() error {
		defer close(workCh)
		for i := range jobs {
			if !selected(jobs[i].area) {
				continue
			}
			buf, err := pool.get(gctx)
			if err != nil {
				return err
			}
			select {
			case workCh <- work{i, buf}:
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		return nil
	})

	var wwg sync.WaitGroup
	for range w {
		wwg.Add(1)
		g.Go(func() error {
			defer wwg.Done()
			var cbuf []byte
			for wk := range workCh {
				r := restoreOne(gctx, &jobs[wk.idx], wk.buf, &cbuf, opts, store, dec, zeros, cnt, tt)
				r.idx = wk.idx
				select {
				case resCh <- r:
				case <-gctx.Done():
					return gctx.Err()
				}
			}
			return nil
		})
	}
	g.Go(func() error {
		wwg.Wait()
		close(resCh)
		return nil
	})

	// Writer: in disk order.
	g.Go(func() error {
		waiting := make(map[int]resResult)
		next := 0
		skip := func() {
			for next < len(jobs) && !selected(jobs[next].area) {
				next++
			}
		}
		skip()
		for r := range resCh {
			waiting[r.idx] = r
			for {
				r, ok := waiting[next]
				if !ok {
					break
				}
				delete(waiting, next)
				if r.err != nil {
					return r.err
				}
				j := &jobs[next]
				src := zeros
				if r.data {
					src = r.buf
				}
				if r.data || r.zero {
					t := time.Now()
					for _, e := range j.used {
						if _, err := dst.WriteAt(src[e.Offset:e.End()], j.abs+e.Offset); err != nil {
							return fmt.Errorf("write %s at offset %d: %w", j.area.Label(), j.abs-j.area.Start+e.Offset, err)
						}
						cnt.written.Add(e.Length)
					}
					tt.write.Since(t)
				}
				pool.put(r.buf)
				cnt.done.Add(j.nused)
				cnt.chunks.Add(1)
				next++
				skip()
			}
		}
		if next != len(jobs) && gctx.Err() == nil {
			return fmt.Errorf("internal error: restore stopped at window %d of %d", next, len(jobs))
		}
		return nil
	})

	err = g.Wait()
	if err == nil && opts.WriteTable != nil {
		t := time.Now()
		if terr := opts.WriteTable(ctx, dst); terr != nil {
			err = fmt.Errorf("write partition table: %w", terr)
		}
		tt.write.Since(t)
	}
	if err == nil {
		if s, ok := dst.(interface{ Sync() error }); ok {
			t := time.Now()
			if serr := s.Sync(); serr != nil {
				err = fmt.Errorf("sync target: %w", serr)
			}
			tt.sync.Since(t)
		}
	}
	tm.Stop()
	stop()
	if err != nil {
		log.ErrorContext(ctx, "restore failed", "image", m.Name, "err", err)
		return fmt.Errorf("restore %s: %w", m.Name, err)
	}
	p := cnt.snapshot()
	log.InfoContext(ctx, "restore done", "image", m.Name, "written", p.Written, "fetched_chunks", p.Transferred,
		"fetched_bytes", p.TransferredBytes, "skipped", p.Skipped, "elapsed", p.Elapsed, "rate", p.Rate,
		"time", p.Timing.Summary())
	return nil
}

// restoreOne prepares one window: delta check, fetch, verify.
func restoreOne(ctx context.Context, j *job, buf []byte, cbuf *[]byte, opts RestoreOptions, store ChunkStore,
	dec *zstd.Decoder, zeros []byte, cnt *counters, tt restoreTimes) resResult {
	c := j.area.Chunks[j.chunk]
	if opts.Done != nil && opts.Done(j.abs) {
		cnt.skipped.Add(1)
		return resResult{buf: buf}
	}
	cerr := func(err error) resResult {
		return resResult{buf: buf, err: &ChunkError{Hash: c.Hash, Area: j.area.Label(), Offset: c.Offset, Err: err}}
	}
	if opts.Current != nil {
		w := Window{Area: j.area, Chunk: c, Abs: j.abs, Used: j.used}
		t := time.Now()
		held, err := w.inPlace(opts.Current, buf, zeros)
		tt.check.Since(t)
		if err != nil {
			return resResult{buf: buf, err: fmt.Errorf("delta: %w", err)}
		}
		if held {
			cnt.skipped.Add(1)
			return resResult{buf: buf}
		}
	}
	if c.Zero {
		if opts.AssumeZero && opts.Current == nil {
			cnt.skipped.Add(1)
			return resResult{buf: buf}
		}
		return resResult{buf: buf, zero: true}
	}
	t := time.Now()
	data, err := store.Get(ctx, c.Hash, (*cbuf)[:0])
	t = tt.fetch.Since(t)
	if err != nil {
		return cerr(fmt.Errorf("fetch: %w", err))
	}
	*cbuf = data
	out, err := decodeVerify(dec, c.Hash, data, c.Length, buf[:0])
	tt.verify.Since(t)
	if err != nil {
		return cerr(err)
	}
	cnt.xfer.Add(1)
	cnt.xferBytes.Add(int64(len(data)))
	return resResult{buf: out, data: true}
}

// restoreSelection returns which areas a restore writes and the smallest
// target it needs. A whole-disk restore writes every area but the
// SkipRegions and needs the image's disk size; a partition restore
// (opts.Partitions) writes only those partitions, after checking the
// target's table matches, and needs only their end.
func restoreSelection(m *Manifest, opts RestoreOptions) (func(*Area) bool, int64, error) {
	if len(opts.Partitions) == 0 {
		sel := func(a *Area) bool { return a.Name == "" || !slices.Contains(opts.SkipRegions, a.Name) }
		return sel, max(m.Disk.Size, m.RequiredSize()), nil
	}
	if opts.WriteTable != nil || len(opts.SkipRegions) > 0 {
		return nil, 0, errors.New("a partition restore leaves the partition table alone: WriteTable and SkipRegions do not apply")
	}
	if opts.TargetTable == nil {
		return nil, 0, errors.New("a partition restore needs the target's partition table")
	}
	if err := MatchPartitions(m, opts.TargetTable, opts.Partitions); err != nil {
		return nil, 0, err
	}
	var need int64
	for _, n := range opts.Partitions {
		a := m.Partition(n)
		need = max(need, a.Start+a.Size)
	}
	sel := func(a *Area) bool { return a.Name == "" && slices.Contains(opts.Partitions, a.Index) }
	return sel, need, nil
}

// Partition returns the image's partition with index n, nil if none.
func (m *Manifest) Partition(n int) *Area {
	for i := range m.Partitions {
		if m.Partitions[i].Index == n {
			return &m.Partitions[i]
		}
	}
	return nil
}

// MatchPartitions checks that the partitions numbered parts exist in
// image m and in the target table t at the same byte offset with the
// same size, which is what restoring only those partitions needs. The
// error (wrapping ErrTableMismatch) lists every problem and what to do.
func MatchPartitions(m *Manifest, t *disk.Table, parts []int) error {
	if len(parts) == 0 {
		return errors.New("no partitions selected")
	}
	var have []int
	for _, p := range m.Partitions {
		have = append(have, p.Index)
	}
	slices.Sort(have)
	var probs []string
	seen := map[int]bool{}
	for _, n := range parts {
		if seen[n] {
			probs = append(probs, fmt.Sprintf("partition %d is listed twice", n))
			continue
		}
		seen[n] = true
		a := m.Partition(n)
		if a == nil || n < 1 {
			probs = append(probs, fmt.Sprintf("the image has no partition %d (its partitions: %v)", n, have))
			continue
		}
		var tp *disk.Partition
		if t != nil {
			for i := range t.Partitions {
				if t.Partitions[i].Index == n && !t.Partitions[i].IsExtended() {
					tp = &t.Partitions[i]
					break
				}
			}
		}
		switch {
		case t == nil || t.Kind == "none":
			probs = append(probs, fmt.Sprintf("partition %d: the target disk has no partition table", n))
		case tp == nil:
			probs = append(probs, fmt.Sprintf("partition %d: the target's %s table has no such partition", n, t.Kind))
		case tp.Start != a.Start || tp.Size != a.Size:
			probs = append(probs, fmt.Sprintf("partition %d: in the image it starts at byte %d and holds %d bytes (%s), on the target it starts at byte %d and holds %d bytes (%s)",
				n, a.Start, a.Size, humanBytes(a.Size), tp.Start, tp.Size, humanBytes(tp.Size)))
		}
	}
	if len(probs) == 0 {
		return nil
	}
	return fmt.Errorf("%w for a partition restore: %s; partition the target like the image (same start and size) or restore the whole disk; nothing was written",
		ErrTableMismatch, strings.Join(probs, "; "))
}

// checkPresent fails with ErrMissingChunks unless store holds every chunk
// of the selected areas.
func checkPresent(ctx context.Context, m *Manifest, store ChunkStore, selected func(*Area) bool, done func(int64) bool) error {
	seen := make(map[Hash]struct{})
	var hashes []Hash
	for _, a := range m.Areas() {
		if !selected(a) {
			continue
		}
		for _, c := range a.Chunks {
			if done != nil && done(a.Start+c.Offset) {
				continue
			}
			if _, ok := seen[c.Hash]; !ok && !c.Zero {
				seen[c.Hash] = struct{}{}
				hashes = append(hashes, c.Hash)
			}
		}
	}
	var missing []Hash
	for len(hashes) > 0 {
		n := min(len(hashes), 4096)
		miss, err := store.Missing(ctx, hashes[:n])
		if err != nil {
			return fmt.Errorf("ask store for chunks: %w", err)
		}
		for _, h := range hashes[:n] {
			if _, ok := miss[h]; ok {
				missing = append(missing, h)
			}
		}
		hashes = hashes[n:]
	}
	if len(missing) == 0 {
		return nil
	}
	where := ""
	for _, a := range m.Areas() {
		for _, c := range a.Chunks {
			if c.Hash == missing[0] && !c.Zero {
				where = fmt.Sprintf(" (%s, offset %d)", a.Label(), c.Offset)
				break
			}
		}
		if where != "" {
			break
		}
	}
	return fmt.Errorf("%w: %d of them, first %s%s", ErrMissingChunks, len(missing), missing[0], where)
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for x := n / unit; x >= unit; x /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
