package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sync/errgroup"

	"github.com/preboot/preboot/disk"
)

// Window is one window of an image where a restore writes it.
type Window struct {
	Area  *Area
	Chunk Chunk
	// Abs is the window's offset on the disk; Used its used extents,
	// relative to Abs. Only those bytes are written.
	Abs  int64
	Used []disk.Extent
}

// UsedBytes is the number of bytes the window writes.
func (w *Window) UsedBytes() int64 { return extentBytes(w.Used) }

// Write writes the used extents of the window's decoded bytes b to dst.
func (w *Window) Write(dst io.WriterAt, b []byte) error {
	for _, e := range w.Used {
		if _, err := dst.WriteAt(b[e.Offset:e.End()], w.Abs+e.Offset); err != nil {
			return fmt.Errorf("write %s at offset %d: %w", w.Area.Label(), w.Abs-w.Area.Start+e.Offset, err)
		}
	}
	return nil
}

// Read reads the window's used extents from src into b (at least
// Chunk.Length long), zeroing the rest: the bytes its hash covers.
func (w *Window) Read(src io.ReaderAt, b []byte) ([]byte, error) {
	b = b[:w.Chunk.Length]
	var pos int64
	for _, e := range w.Used {
		clear(b[pos:e.Offset])
		n, err := src.ReadAt(b[e.Offset:e.End()], w.Abs+e.Offset)
		if errors.Is(err, io.EOF) { // a file shorter than the target reads as zeros
			clear(b[e.Offset+int64(n) : e.End()])
			err = nil
		}
		if err != nil {
			return nil, fmt.Errorf("read %s at offset %d: %w", w.Area.Label(), w.Chunk.Offset+e.Offset, err)
		}
		pos = e.End()
	}
	clear(b[pos:])
	return b, nil
}

// inPlace reports whether cur already holds the window's bytes (buf and
// zeros are scratch space of at least the chunk size).
func (w *Window) inPlace(cur io.ReaderAt, buf, zeros []byte) (bool, error) {
	b, err := w.Read(cur, buf)
	if err != nil {
		return false, err
	}
	// A window is stored as Zero exactly when its used bytes are all
	// zero, so a zero window on the target (a blank disk) can only match
	// a Zero chunk: no need to hash it.
	isZero := usedZero(b, w.Used, zeros)
	return w.Chunk.Zero && isZero || !w.Chunk.Zero && !isZero && Sum(b) == w.Chunk.Hash, nil
}

// Plan is what a restore has to do: the windows it must fetch, and the
// ones the target already holds.
type Plan struct {
	// Fetch lists the windows with stored (non-zero) chunks that the
	// target does not hold yet, in disk order.
	Fetch []Window
	// InPlace lists the windows (stored or zero) whose bytes the target
	// already holds (only with RestoreOptions.Current).
	InPlace []Window
	// Zero lists the zero windows not in place: Restore writes them
	// (unless AssumeZero).
	Zero []Window
	// Used is the bytes the restore covers, InPlaceBytes those of them
	// already in place.
	Used, InPlaceBytes int64
}

// PlanRestore checks a restore of m with opts like Restore does (manifest,
// selection, target size) and, when opts.Current is set, reads the target
// to find the windows already in place. Nothing is fetched or written. A
// caller that gets chunks by other means (multicast) writes the Fetch
// windows itself and then runs Restore with opts.Done to finish.
func PlanRestore(ctx context.Context, m *Manifest, opts RestoreOptions) (*Plan, error) {
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("plan restore: %w", err)
	}
	if opts.TargetSize <= 0 {
		return nil, errors.New("plan restore: target size unknown")
	}
	selected, need, err := restoreSelection(m, opts)
	if err != nil {
		return nil, fmt.Errorf("plan restore %s: %w", m.Name, err)
	}
	if opts.TargetSize < need {
		return nil, fmt.Errorf("plan restore %s: %w: image needs %d bytes (%s), target has %d (%s)",
			m.Name, ErrTargetTooSmall, need, humanBytes(need), opts.TargetSize, humanBytes(opts.TargetSize))
	}
	var ws []Window
	for _, j := range jobsFor(m, false) {
		if selected(j.area) {
			ws = append(ws, Window{Area: j.area, Chunk: j.area.Chunks[j.chunk], Abs: j.abs, Used: j.used})
		}
	}
	inPlace := make([]bool, len(ws))
	if opts.Current != nil {
		w := min(len(ws), max(2, runtime.GOMAXPROCS(0)))
		g, gctx := errgroup.WithContext(ctx)
		next := make(chan int)
		g.Go(func() error {
			defer close(next)
			for i := range ws {
				select {
				case next <- i:
				case <-gctx.Done():
					return gctx.Err()
				}
			}
			return nil
		})
		for range w {
			g.Go(func() error {
				buf := make([]byte, m.ChunkSize)
				zeros := make([]byte, m.ChunkSize)
				for i := range next {
					held, err := ws[i].inPlace(opts.Current, buf, zeros)
					if err != nil {
						return fmt.Errorf("delta: %w", err)
					}
					inPlace[i] = held
				}
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			return nil, fmt.Errorf("plan restore %s: %w", m.Name, err)
		}
	}
	p := &Plan{}
	for i, w := range ws {
		n := w.UsedBytes()
		p.Used += n
		switch {
		case inPlace[i]:
			p.InPlace = append(p.InPlace, w)
			p.InPlaceBytes += n
		case w.Chunk.Zero:
			p.Zero = append(p.Zero, w)
		default:
			p.Fetch = append(p.Fetch, w)
		}
	}
	return p, nil
}

// ChunkDecoder decompresses and verifies chunks from any source. It is
// safe for concurrent use.
type ChunkDecoder struct{ dec *zstd.Decoder }

// NewChunkDecoder returns a decoder for up to n concurrent calls.
func NewChunkDecoder(n int) (*ChunkDecoder, error) {
	d, err := newDecoder(n)
	if err != nil {
		return nil, err
	}
	return &ChunkDecoder{dec: d}, nil
}

// Decode decompresses a stored chunk into dst and checks that it is want
// bytes long (-1: any) and hashes to h. The error wraps ErrCorruptChunk
// when the bytes are not the chunk's.
func (d *ChunkDecoder) Decode(h Hash, data []byte, want int64, dst []byte) ([]byte, error) {
	return decodeVerify(d.dec, h, data, want, dst)
}

// Close releases the decoder.
func (d *ChunkDecoder) Close() { d.dec.Close() }
