package image

import (
	"container/list"
	"context"
	"fmt"
	"io"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/klauspost/compress/zstd"
)

// DefaultAreaCache is how many decoded chunks an AreaReader keeps when
// AreaReaderOptions.CacheChunks is 0.
const DefaultAreaCache = 8

// AreaReaderOptions tune NewAreaReader.
type AreaReaderOptions struct {
	// CacheChunks bounds the decoded chunks kept in memory (least
	// recently used dropped first); DefaultAreaCache when 0.
	CacheChunks int
}

// AreaReader reads one partition (or region) of an image straight from its
// chunks: io.ReaderAt over the area's bytes, offsets relative to its start.
// Only the chunks covering the bytes asked for are fetched; each one is
// decompressed and checked against its BLAKE3 hash before any of its bytes
// are returned (a bad chunk yields a *ChunkError wrapping ErrCorruptChunk,
// never wrong data). Bytes outside the area's used extents read as zeros,
// as a restore would leave them on a zeroed disk. Safe for concurrent use.
type AreaReader struct {
	ctx   context.Context
	m     *Manifest
	a     *Area
	store ChunkStore
	dec   *zstd.Decoder

	mu    sync.Mutex
	max   int
	lru   *list.List // of *cached, most recent first
	byOff map[int64]*list.Element

	fetched atomic.Int64
}

type cached struct {
	off  int64
	data []byte
}

// NewAreaReader reads area a of the (validated) manifest m from store.
// ctx bounds every fetch the reader makes; Close releases the decoder.
func NewAreaReader(ctx context.Context, m *Manifest, a *Area, store ChunkStore, opts AreaReaderOptions) (*AreaReader, error) {
	dec, err := newDecoder(1)
	if err != nil {
		return nil, err
	}
	n := opts.CacheChunks
	if n <= 0 {
		n = DefaultAreaCache
	}
	return &AreaReader{ctx: ctx, m: m, a: a, store: store, dec: dec, max: n, lru: list.New(), byOff: make(map[int64]*list.Element)}, nil
}

// Size is the area's size in bytes.
func (r *AreaReader) Size() int64 { return r.a.Size }

// Fetched counts the chunks fetched from the store so far (cache misses).
func (r *AreaReader) Fetched() int64 { return r.fetched.Load() }

// Close releases the decoder.
func (r *AreaReader) Close() error {
	r.dec.Close()
	return nil
}

// ReadAt implements io.ReaderAt.
func (r *AreaReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read %s at %d: negative offset", r.a.Label(), off)
	}
	if off >= r.a.Size {
		return 0, io.EOF
	}
	want := len(p)
	if rest := r.a.Size - off; int64(len(p)) > rest {
		p = p[:rest]
	}
	n := 0
	for n < len(p) {
		pos := off + int64(n)
		win := pos / r.m.ChunkSize * r.m.ChunkSize
		winEnd := min(win+r.m.ChunkSize, r.a.Size)
		part := p[n:min(len(p), n+int(winEnd-pos))]
		data, err := r.window(win)
		if err != nil {
			return n, err
		}
		if data == nil {
			clear(part)
		} else {
			copy(part, data[pos-win:])
		}
		n += len(part)
	}
	if n < want {
		return n, io.EOF
	}
	return n, nil
}

// window returns the decoded bytes of the window at off, nil when it holds
// only zeros (no chunk, or a zero chunk).
func (r *AreaReader) window(off int64) ([]byte, error) {
	cs := r.a.Chunks
	i := sort.Search(len(cs), func(i int) bool { return cs[i].Offset >= off })
	if i == len(cs) || cs[i].Offset != off || cs[i].Zero {
		return nil, nil
	}
	c := cs[i]
	r.mu.Lock()
	if e, ok := r.byOff[off]; ok {
		r.lru.MoveToFront(e)
		data := e.Value.(*cached).data
		r.mu.Unlock()
		return data, nil
	}
	r.mu.Unlock()

	if err := r.ctx.Err(); err != nil {
		return nil, err
	}
	raw, err := r.store.Get(r.ctx, c.Hash, nil)
	if err != nil {
		return nil, &ChunkError{Hash: c.Hash, Area: r.a.Label(), Offset: c.Offset, Err: err}
	}
	r.fetched.Add(1)
	data, err := decodeVerify(r.dec, c.Hash, raw, c.Length, make([]byte, 0, c.Length))
	if err != nil {
		return nil, &ChunkError{Hash: c.Hash, Area: r.a.Label(), Offset: c.Offset, Err: err}
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	if e, ok := r.byOff[off]; ok { // another reader got it first
		r.lru.MoveToFront(e)
		return e.Value.(*cached).data, nil
	}
	r.byOff[off] = r.lru.PushFront(&cached{off: off, data: data})
	for r.lru.Len() > r.max {
		e := r.lru.Back()
		delete(r.byOff, e.Value.(*cached).off)
		r.lru.Remove(e)
	}
	return data, nil
}
