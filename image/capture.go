package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/preboot/preboot/disk"
	"github.com/preboot/preboot/timing"
	"golang.org/x/sync/errgroup"
)

// CaptureOptions tune Capture. Name is required.
type CaptureOptions struct {
	Name   string
	Source map[string]string // device id, MAC, hostname, ... (free-form)
	// ChunkSize is the window size (DefaultChunkSize when 0).
	ChunkSize int64
	// Level is the zstd level (DefaultLevel when 0).
	Level int
	// Workers hash and compress in parallel (GOMAXPROCS when 0).
	Workers int
	// BatchSize is how many chunk hashes go into one Missing call
	// (default 8). Memory use is about (BatchSize+2*Workers+2)*ChunkSize.
	BatchSize        int
	Progress         func(Progress)
	ProgressInterval time.Duration
	Logger           *slog.Logger
}

type capItem struct {
	j    *job
	buf  []byte
	hash Hash
}

// Capture reads the used bytes of every area in layout from src, stores
// the chunks the store lacks and returns the manifest. It does not publish
// it: call Publisher.Publish once Capture succeeded. On error nothing is
// published and chunks already stored stay (a retry reuses them).
//
// Pipeline: one sequential reader → Workers hashers → a batcher asking the
// store which hashes are missing → Workers compressors/uploaders. Only
// missing chunks are compressed, so an unchanged re-capture costs a read
// and a hash.
func Capture(ctx context.Context, src io.ReaderAt, layout Layout, store ChunkStore, opts CaptureOptions) (*Manifest, error) {
	log := logger(opts.Logger)
	m, err := newManifest(layout, opts)
	if err != nil {
		return nil, err
	}
	if len(layout.Zero) > 0 {
		src = &zeroMask{r: src, zero: NormalizeExtents(slices.Clone(layout.Zero))}
	}
	jobs := jobsFor(m, true)
	m.Sizes.Used = m.UsedBytes()
	if err := m.validate(false); err != nil {
		return nil, fmt.Errorf("capture: %w", err)
	}
	w := workers(opts.Workers)
	batch := opts.BatchSize
	if batch <= 0 {
		batch = 8
	}
	enc, err := newEncoder(opts.Level, w)
	if err != nil {
		return nil, err
	}
	defer enc.Close()

	tm := timing.NewRecorder()
	tt := newCaptureTimes(tm, w)
	cnt := &counters{phase: "capture", total: m.Sizes.Used, chunksTotal: int64(len(jobs)), start: time.Now(), tm: tm}
	stop := cnt.report(opts.Progress, opts.ProgressInterval)
	log.InfoContext(ctx, "capture start", "image", m.Name, "used", m.Sizes.Used, "chunks", len(jobs), "workers", w)

	pool := newBufPool(batch+2*w+2, m.ChunkSize)
	zeros := make([]byte, 64<<10)
	g, gctx := errgroup.WithContext(ctx)
	readCh := make(chan capItem, w)
	hashCh := make(chan capItem, w)
	compCh := make(chan capItem, w)
	finish := func(it capItem) {
		cnt.done.Add(it.j.nused)
		cnt.chunks.Add(1)
	}

	// Reader: sequential, in disk order.
	g.Go(func() error {
		defer close(readCh)
		for i := range jobs {
			j := &jobs[i]
			buf, err := pool.get(gctx)
			if err != nil {
				return err
			}
			b := buf[:j.area.Chunks[j.chunk].Length]
			t := time.Now()
			var pos int64
			for _, e := range j.used {
				clear(b[pos:e.Offset])
				n, err := src.ReadAt(b[e.Offset:e.End()], j.abs+e.Offset)
				if err != nil && !(errors.Is(err, io.EOF) && int64(n) == e.Length) {
					return fmt.Errorf("capture: read %s at offset %d: %w", j.area.Label(), j.abs-j.area.Start+e.Offset, err)
				}
				pos = e.End()
			}
			clear(b[pos:])
			tt.read.Since(t)
			select {
			case readCh <- capItem{j: j, buf: b}:
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		return nil
	})

	// Hashers.
	var hwg sync.WaitGroup
	for range w {
		hwg.Add(1)
		g.Go(func() error {
			defer hwg.Done()
			for it := range readCh {
				c := &it.j.area.Chunks[it.j.chunk]
				t := time.Now()
				if usedZero(it.buf, it.j.used, zeros) {
					tt.hash.Since(t)
					c.Zero = true
					pool.put(it.buf)
					cnt.skipped.Add(1)
					finish(it)
					continue
				}
				it.hash = Sum(it.buf)
				tt.hash.Since(t)
				c.Hash = it.hash
				select {
				case hashCh <- it:
				case <-gctx.Done():
					return gctx.Err()
				}
			}
			return nil
		})
	}
	g.Go(func() error {
		hwg.Wait()
		close(hashCh)
		return nil
	})

	// Batcher: ask the store in batches, forward only what it lacks.
	g.Go(func() error {
		defer close(compCh)
		pending := make(map[Hash]struct{}) // uploaded or in flight
		var items []capItem
		flush := func() error {
			if len(items) == 0 {
				return nil
			}
			ask := make(map[Hash]struct{}, len(items))
			for _, it := range items {
				if _, ok := pending[it.hash]; !ok {
					ask[it.hash] = struct{}{}
				}
			}
			var missing map[Hash]struct{}
			if len(ask) > 0 {
				var err error
				t := time.Now()
				missing, err = store.Missing(gctx, slices.Collect(maps.Keys(ask)))
				tt.lookup.Since(t)
				if err != nil {
					return fmt.Errorf("capture: ask store for missing chunks: %w", err)
				}
			}
			for _, it := range items {
				_, miss := missing[it.hash]
				_, inFlight := pending[it.hash]
				if !miss || inFlight {
					pool.put(it.buf)
					cnt.skipped.Add(1)
					finish(it)
					continue
				}
				pending[it.hash] = struct{}{}
				select {
				case compCh <- it:
				case <-gctx.Done():
					return gctx.Err()
				}
			}
			items = items[:0]
			return nil
		}
		timer := time.NewTimer(time.Hour)
		timer.Stop()
		for {
			select {
			case it, ok := <-hashCh:
				if !ok {
					return flush()
				}
				if len(items) == 0 {
					timer.Reset(10 * time.Millisecond)
				}
				items = append(items, it)
				if len(items) < batch {
					continue
				}
			case <-timer.C:
			case <-gctx.Done():
				return gctx.Err()
			}
			timer.Stop()
			if err := flush(); err != nil {
				return err
			}
		}
	})

	// Compressors and uploaders.
	var upMu sync.Mutex
	for range w {
		g.Go(func() error {
			var dst []byte
			for it := range compCh {
				t := time.Now()
				dst = enc.EncodeAll(it.buf, dst[:0])
				t = tt.compress.Since(t)
				pool.put(it.buf)
				err := store.Put(gctx, it.hash, dst)
				tt.upload.Since(t)
				if err != nil {
					j := it.j
					return &ChunkError{Hash: it.hash, Area: j.area.Label(), Offset: j.abs - j.area.Start,
						Err: fmt.Errorf("store: %w", err)}
				}
				upMu.Lock()
				m.Sizes.Uploaded += int64(len(dst))
				upMu.Unlock()
				cnt.xfer.Add(1)
				cnt.xferBytes.Add(int64(len(dst)))
				finish(it)
			}
			return nil
		})
	}

	err = g.Wait()
	tm.Stop()
	stop()
	if err != nil {
		log.ErrorContext(ctx, "capture failed", "image", m.Name, "err", err)
		return nil, fmt.Errorf("capture %s: %w", m.Name, err)
	}
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("capture %s: %w", m.Name, err)
	}
	p := cnt.snapshot()
	log.InfoContext(ctx, "capture done", "image", m.Name, "used", m.Sizes.Used, "uploaded_chunks", p.Transferred,
		"uploaded_bytes", p.TransferredBytes, "skipped", p.Skipped, "elapsed", p.Elapsed, "rate", p.Rate,
		"time", p.Timing.Summary())
	return m, nil
}

func newManifest(l Layout, opts CaptureOptions) (*Manifest, error) {
	cs := opts.ChunkSize
	if cs == 0 {
		cs = DefaultChunkSize
	}
	ss := l.SectorSize
	if ss == 0 {
		ss = 512
	}
	m := &Manifest{
		Version:   FormatVersion,
		Name:      opts.Name,
		Created:   time.Now().UTC().Truncate(time.Second),
		Source:    maps.Clone(opts.Source),
		ChunkSize: cs,
		Disk:      Disk{Size: l.DiskSize, SectorSize: ss, Table: l.Table},
		Sizes:     Sizes{Logical: l.DiskSize},
		Warnings:  slices.Clone(l.Warnings),
	}
	if err := ValidName(m.Name); err != nil {
		return nil, fmt.Errorf("capture: %w", err)
	}
	conv := func(as []Area) ([]Area, error) {
		out := make([]Area, len(as))
		for i, a := range as {
			a.Chunks = nil
			if a.Used == nil {
				a.Used = []disk.Extent{{Offset: 0, Length: a.Size}}
			}
			a.Used = NormalizeExtents(a.Used)
			if err := checkExtents(a.Used, a.Size); err != nil {
				return nil, fmt.Errorf("capture: %s: %w", a.Label(), err)
			}
			out[i] = a
		}
		return out, nil
	}
	var err error
	if m.Partitions, err = conv(l.Partitions); err != nil {
		return nil, err
	}
	if m.Regions, err = conv(l.Regions); err != nil {
		return nil, err
	}
	return m, nil
}

// zeroMask reads r with the zero extents cleared.
type zeroMask struct {
	r    io.ReaderAt
	zero []disk.Extent // sorted, merged
}

func (z *zeroMask) ReadAt(p []byte, off int64) (int, error) {
	n, err := z.r.ReadAt(p, off)
	end := off + int64(n)
	i, _ := slices.BinarySearchFunc(z.zero, off, func(e disk.Extent, o int64) int {
		if e.End() <= o {
			return -1
		}
		return 1
	})
	for ; i < len(z.zero) && z.zero[i].Offset < end; i++ {
		lo, hi := max(z.zero[i].Offset, off), min(z.zero[i].End(), end)
		if lo < hi {
			clear(p[lo-off : hi-off])
		}
	}
	return n, err
}
