package image

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/preboot/preboot/disk"
)

// TestAreaReader reads a partition back from its chunks at every kind of
// boundary: bytes in used extents come back, bytes outside them and zero
// windows read as zeros, reads past the end stop with io.EOF, the cache
// keeps repeated reads from fetching again, and a damaged chunk is an
// error naming it with only the bytes before it returned.
func TestAreaReader(t *testing.T) {
	repo := openRepo(t)
	const size = 4 << 20
	src := make([]byte, size)
	rng := rand.New(rand.NewPCG(5, 6))
	for i := range src {
		src[i] = byte(rng.Uint32())
	}
	// The partition at 1 MiB, 2 MiB long: used [0,300K) [600K,+100K) and
	// an all-zero used stretch at [1M, +128K).
	clear(src[2<<20 : 2<<20+128<<10])
	used := []disk.Extent{{Offset: 0, Length: 300 << 10}, {Offset: 600 << 10, Length: 100 << 10}, {Offset: 1 << 20, Length: 128 << 10}}
	part := Area{Index: 1, Start: 1 << 20, Size: 2 << 20, FSType: "ext4", Used: used}
	m, err := Capture(t.Context(), bytes.NewReader(src), Layout{DiskSize: size, Partitions: []Area{part}, Regions: Gaps(size, []Area{part})},
		repo, CaptureOptions{Name: "t", ChunkSize: 128 << 10})
	if err != nil {
		t.Fatal(err)
	}
	a := m.Partition(1)
	want := make([]byte, a.Size)
	for _, e := range used {
		copy(want[e.Offset:e.End()], src[a.Start+e.Offset:a.Start+e.End()])
	}
	r, err := NewAreaReader(t.Context(), m, a, repo, AreaReaderOptions{CacheChunks: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for _, c := range []struct{ off, n int64 }{
		{0, 10}, {128<<10 - 5, 10}, {290 << 10, 20 << 10}, {400 << 10, 1000}, {590 << 10, 300 << 10},
		{1 << 20, 64 << 10}, {0, 2 << 20}, {2<<20 - 7, 7},
	} {
		got := make([]byte, c.n)
		n, err := r.ReadAt(got, c.off)
		if err != nil || int64(n) != c.n || !bytes.Equal(got, want[c.off:c.off+c.n]) {
			t.Fatalf("ReadAt(%d, %d): %d, %v, equal %t", c.n, c.off, n, err, bytes.Equal(got, want[c.off:c.off+c.n]))
		}
	}
	if n, err := r.ReadAt(make([]byte, 10), 2<<20-4); n != 4 || err != io.EOF {
		t.Errorf("read over the end: %d, %v", n, err)
	}
	if _, err := r.ReadAt(make([]byte, 1), 2<<20); err != io.EOF {
		t.Errorf("read at the end: %v", err)
	}
	before := r.Fetched()
	r.ReadAt(make([]byte, 10), 2<<20-100)
	r.ReadAt(make([]byte, 10), 2<<20-50)
	if r.Fetched() != before {
		t.Errorf("repeated reads of a cached window fetched %d chunks", r.Fetched()-before)
	}

	// Damage the window at 256K (a valid frame of other bytes).
	var bad Chunk
	for _, c := range a.Chunks {
		if c.Offset == 256<<10 {
			bad = c
		}
	}
	enc, _ := newEncoder(1, 1)
	other := bytes.Repeat([]byte{7}, int(bad.Length))
	if err := os.WriteFile(repo.chunkPath(bad.Hash), enc.EncodeAll(other, nil), 0o644); err != nil {
		t.Fatal(err)
	}
	r2, _ := NewAreaReader(t.Context(), m, a, repo, AreaReaderOptions{})
	defer r2.Close()
	got := make([]byte, 100<<10)
	n, err := r2.ReadAt(got, 200<<10)
	var ce *ChunkError
	if !errors.Is(err, ErrCorruptChunk) || !errors.As(err, &ce) || ce.Hash != bad.Hash || ce.Offset != 256<<10 {
		t.Fatalf("damaged chunk: %v", err)
	}
	if n != 56<<10 || !bytes.Equal(got[:n], want[200<<10:256<<10]) {
		t.Errorf("returned %d bytes before the damaged window, want %d good ones", n, 56<<10)
	}
}

func TestDiff(t *testing.T) {
	h := func(b byte) Hash { return Hash{b} }
	mk := func(name string, parts ...Area) *Manifest { return &Manifest{Name: name, Partitions: parts} }
	a := mk("a",
		Area{Index: 1, Size: 3, Chunks: []Chunk{{Offset: 0, Length: 1, Hash: h(1)}, {Offset: 1, Length: 1, Hash: h(2)}}},
		Area{Index: 2, Size: 2, Chunks: []Chunk{{Offset: 0, Length: 2, Hash: h(3)}}},
		Area{Index: 3, Size: 2, Chunks: []Chunk{{Offset: 0, Length: 2, Hash: h(4)}}})
	b := mk("b",
		Area{Index: 1, Size: 3, Chunks: []Chunk{{Offset: 0, Length: 1, Hash: h(1)}, {Offset: 1, Length: 1, Hash: h(9)}, {Offset: 2, Length: 1, Zero: true}}},
		Area{Index: 2, Size: 2, Chunks: []Chunk{{Offset: 0, Length: 2, Hash: h(3)}}},
		Area{Index: 4, Size: 5, Chunks: []Chunk{{Offset: 0, Length: 5, Hash: h(1)}}})
	d := Diff(a, b)
	if d.Same || len(d.Areas) != 4 {
		t.Fatalf("%+v", d)
	}
	want := []struct {
		status string
		chunks int
		bytes  int64
	}{{DiffChanged, 1, 1}, {DiffSame, 0, 0}, {DiffRemoved, 1, 2}, {DiffAdded, 1, 5}}
	for i, w := range want {
		if got := d.Areas[i]; got.Status != w.status || got.Chunks != w.chunks || got.Bytes != w.bytes {
			t.Errorf("area %d: %+v, want %+v", i, got, w)
		}
	}
	// h(9) is the only chunk b adds (h(1) is in a already).
	if d.NewChunks != 1 || d.NewBytes != 1 {
		t.Errorf("new chunks %d (%d bytes)", d.NewChunks, d.NewBytes)
	}
	if s := Diff(a, a); !s.Same || s.Chunks != 0 {
		t.Errorf("a with itself: %+v", s)
	}
}
