package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sync/errgroup"
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
	// WriteTable, when set, runs after all data is written, to write a
	// partition table adjusted to the target (disk.WriteTable). Without
	// it the raw regions reproduce the source table, which is right for a
	// target of the same size.
	WriteTable func(ctx context.Context, dst io.WriterAt) error
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
func Restore(ctx context.Context, dst io.WriterAt, m *Manifest, store ChunkStore, opts RestoreOptions) error {
	log := logger(opts.Logger)
	if err := m.Validate(); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	if opts.TargetSize <= 0 {
		return errors.New("restore: target size unknown")
	}
	if need := max(m.Disk.Size, m.RequiredSize()); opts.TargetSize < need {
		return fmt.Errorf("restore %s: %w: image needs %d bytes (%s), target has %d (%s)",
			m.Name, ErrTargetTooSmall, need, humanBytes(need), opts.TargetSize, humanBytes(opts.TargetSize))
	}
	if err := checkPresent(ctx, m, store); err != nil {
		return fmt.Errorf("restore %s: %w", m.Name, err)
	}
	jobs := jobsFor(m, false)
	var total int64
	for i := range jobs {
		if slices.Contains(opts.SkipRegions, jobs[i].area.Name) && jobs[i].area.Name != "" {
			continue
		}
		total += jobs[i].nused
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

	cnt := &counters{phase: "restore", total: total, chunksTotal: int64(len(jobs)), start: time.Now()}
	stop := cnt.report(opts.Progress, opts.ProgressInterval)
	log.InfoContext(ctx, "restore start", "image", m.Name, "used", total, "chunks", len(jobs), "workers", w,
		"delta", opts.Current != nil, "target_size", opts.TargetSize)

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
			if n := jobs[i].area.Name; n != "" && slices.Contains(opts.SkipRegions, n) {
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
				r := restoreOne(gctx, &jobs[wk.idx], wk.buf, &cbuf, opts, store, dec, zeros, cnt)
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
			for next < len(jobs) && jobs[next].area.Name != "" && slices.Contains(opts.SkipRegions, jobs[next].area.Name) {
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
					for _, e := range j.used {
						if _, err := dst.WriteAt(src[e.Offset:e.End()], j.abs+e.Offset); err != nil {
							return fmt.Errorf("write %s at offset %d: %w", j.area.Label(), j.abs-j.area.Start+e.Offset, err)
						}
						cnt.written.Add(e.Length)
					}
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
		if terr := opts.WriteTable(ctx, dst); terr != nil {
			err = fmt.Errorf("write partition table: %w", terr)
		}
	}
	if err == nil {
		if s, ok := dst.(interface{ Sync() error }); ok {
			if serr := s.Sync(); serr != nil {
				err = fmt.Errorf("sync target: %w", serr)
			}
		}
	}
	stop()
	if err != nil {
		log.ErrorContext(ctx, "restore failed", "image", m.Name, "err", err)
		return fmt.Errorf("restore %s: %w", m.Name, err)
	}
	p := cnt.snapshot()
	log.InfoContext(ctx, "restore done", "image", m.Name, "written", p.Written, "fetched_chunks", p.Transferred,
		"fetched_bytes", p.TransferredBytes, "skipped", p.Skipped, "elapsed", p.Elapsed, "rate", p.Rate)
	return nil
}

// restoreOne prepares one window: delta check, fetch, verify.
func restoreOne(ctx context.Context, j *job, buf []byte, cbuf *[]byte, opts RestoreOptions, store ChunkStore,
	dec *zstd.Decoder, zeros []byte, cnt *counters) resResult {
	c := j.area.Chunks[j.chunk]
	cerr := func(err error) resResult {
		return resResult{buf: buf, err: &ChunkError{Hash: c.Hash, Area: j.area.Label(), Offset: c.Offset, Err: err}}
	}
	if opts.Current != nil {
		b := buf[:c.Length]
		var pos int64
		for _, e := range j.used {
			clear(b[pos:e.Offset])
			n, err := opts.Current.ReadAt(b[e.Offset:e.End()], j.abs+e.Offset)
			if errors.Is(err, io.EOF) { // a file shorter than the target reads as zeros
				clear(b[e.Offset+int64(n) : e.End()])
				err = nil
			}
			if err != nil {
				return resResult{buf: buf, err: fmt.Errorf("delta: read %s at offset %d: %w", j.area.Label(), c.Offset+e.Offset, err)}
			}
			pos = e.End()
		}
		clear(b[pos:])
		// A window is stored as Zero exactly when its used bytes are all
		// zero, so a zero window on the target (a blank disk) can only
		// match a Zero chunk: no need to hash it.
		isZero := usedZero(b, j.used, zeros)
		if c.Zero && isZero || !c.Zero && !isZero && Sum(b) == c.Hash {
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
	data, err := store.Get(ctx, c.Hash, (*cbuf)[:0])
	if err != nil {
		return cerr(fmt.Errorf("fetch: %w", err))
	}
	*cbuf = data
	out, err := decodeVerify(dec, c.Hash, data, c.Length, buf[:0])
	if err != nil {
		return cerr(err)
	}
	cnt.xfer.Add(1)
	cnt.xferBytes.Add(int64(len(data)))
	return resResult{buf: out, data: true}
}

// checkPresent fails with ErrMissingChunks unless store holds every chunk.
func checkPresent(ctx context.Context, m *Manifest, store ChunkStore) error {
	hashes := m.ChunkHashes()
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
