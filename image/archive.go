package image

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
)

// Verify checks that every chunk of image name is present, decompresses to
// its window length and hashes to its name. It returns all problems found
// (up to 20, joined), each naming the chunk and where it is used.
func (r *Repo) Verify(ctx context.Context, name string, workersN int) error {
	m, err := r.Manifest(name)
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	type use struct {
		area   string
		offset int64
		length int64
	}
	first := make(map[Hash]use)
	var order []Hash
	for _, a := range m.Areas() {
		for _, c := range a.Chunks {
			if c.Zero {
				continue
			}
			if _, ok := first[c.Hash]; !ok {
				first[c.Hash] = use{a.Label(), c.Offset, c.Length}
				order = append(order, c.Hash)
			}
		}
	}
	w := workers(workersN)
	dec, err := newDecoder(w)
	if err != nil {
		return err
	}
	defer dec.Close()
	var mu sync.Mutex
	var errs []error
	ch := make(chan Hash)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(ch)
		for _, h := range order {
			select {
			case ch <- h:
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		return nil
	})
	for range w {
		g.Go(func() error {
			var cbuf, out []byte
			for h := range ch {
				u := first[h]
				data, err := r.Get(gctx, h, cbuf[:0])
				if err == nil {
					cbuf = data
					if cap(out) < int(u.length) {
						out = make([]byte, u.length)
					}
					_, err = decodeVerify(dec, h, data, u.length, out[:0])
				}
				if err != nil {
					if gctx.Err() != nil {
						return gctx.Err()
					}
					mu.Lock()
					if len(errs) < 20 {
						errs = append(errs, &ChunkError{Hash: h, Area: u.area, Offset: u.offset, Err: err})
					}
					mu.Unlock()
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return fmt.Errorf("verify %s: %w", name, err)
	}
	if len(errs) > 0 {
		return fmt.Errorf("verify %s: %w", name, errors.Join(errs...))
	}
	return nil
}

// The portable file (.pbi) is a POSIX tar: "manifest.json" first, then
// "chunks/<hash>" for each distinct chunk, in first-use order. Standard
// tar tools can list and unpack it.
const (
	archiveManifest = "manifest.json"
	archiveChunkDir = "chunks/"
)

// Export writes image name as one portable tar stream to w.
func (r *Repo) Export(ctx context.Context, name string, w io.Writer) error {
	m, err := r.Manifest(name)
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	var mb bytes.Buffer
	if err := m.Encode(&mb); err != nil {
		return err
	}
	tw := tar.NewWriter(w)
	mod := m.Created
	if mod.IsZero() {
		mod = time.Unix(0, 0)
	}
	hdr := func(n string, size int) *tar.Header {
		return &tar.Header{Typeflag: tar.TypeReg, Name: n, Size: int64(size), Mode: 0o644, ModTime: mod, Format: tar.FormatPAX}
	}
	if err := tw.WriteHeader(hdr(archiveManifest, mb.Len())); err != nil {
		return fmt.Errorf("export %s: %w", name, err)
	}
	if _, err := tw.Write(mb.Bytes()); err != nil {
		return fmt.Errorf("export %s: %w", name, err)
	}
	var buf []byte
	for _, h := range m.ChunkHashes() {
		if err := ctx.Err(); err != nil {
			return err
		}
		data, err := r.Get(ctx, h, buf[:0])
		if err != nil {
			return fmt.Errorf("export %s: %w", name, err)
		}
		buf = data
		if err := tw.WriteHeader(hdr(archiveChunkDir+h.String(), len(data))); err != nil {
			return fmt.Errorf("export %s: %w", name, err)
		}
		if _, err := tw.Write(data); err != nil {
			return fmt.Errorf("export %s: %w", name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("export %s: %w", name, err)
	}
	return nil
}

// Import reads a portable file written by Export, verifies every chunk
// (decompresses and hashes it) as it stores it, and publishes the image
// only when all its chunks are present and verified. rename, when not
// empty, replaces the image name. An existing image of that name is an
// error (ErrExists); nothing is published then.
func (r *Repo) Import(ctx context.Context, rd io.Reader, rename string) (*Manifest, error) {
	tr := tar.NewReader(rd)
	h0, err := tr.Next()
	if err != nil {
		return nil, fmt.Errorf("import: read archive: %w", err)
	}
	if h0.Name != archiveManifest {
		return nil, fmt.Errorf("import: first entry is %q, want %s", h0.Name, archiveManifest)
	}
	m, err := ParseManifest(tr)
	if err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	if rename != "" {
		m.Name = rename
		if err := m.Validate(); err != nil {
			return nil, fmt.Errorf("import: %w", err)
		}
	}
	if _, err := r.Manifest(m.Name); err == nil {
		return nil, fmt.Errorf("import %s: %w", m.Name, ErrExists)
	} else if !errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("import %s: %w", m.Name, err)
	}
	want := make(map[Hash]int64) // hash -> window length
	for _, a := range m.Areas() {
		for _, c := range a.Chunks {
			if !c.Zero {
				want[c.Hash] = c.Length
			}
		}
	}
	dec, err := newDecoder(1)
	if err != nil {
		return nil, err
	}
	defer dec.Close()
	var out []byte
	var data bytes.Buffer
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		th, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("import %s: read archive: %w", m.Name, err)
		}
		hs, ok := strings.CutPrefix(th.Name, archiveChunkDir)
		if !ok || th.Typeflag != tar.TypeReg {
			return nil, fmt.Errorf("import %s: unexpected entry %q", m.Name, th.Name)
		}
		h, err := ParseHash(hs)
		if err != nil {
			return nil, fmt.Errorf("import %s: entry %q: %w", m.Name, th.Name, err)
		}
		length, ok := want[h]
		if !ok {
			return nil, fmt.Errorf("import %s: chunk %s is not in the manifest", m.Name, h)
		}
		if th.Size > maxStoredChunk {
			return nil, fmt.Errorf("import %s: chunk %s: %d bytes, limit %d", m.Name, h, th.Size, maxStoredChunk)
		}
		data.Reset()
		if _, err := io.Copy(&data, tr); err != nil {
			return nil, fmt.Errorf("import %s: chunk %s: %w", m.Name, h, err)
		}
		if cap(out) < int(length) {
			out = make([]byte, length)
		}
		if _, err := decodeVerify(dec, h, data.Bytes(), length, out[:0]); err != nil {
			return nil, fmt.Errorf("import %s: %w", m.Name, &ChunkError{Hash: h, Err: err})
		}
		if err := r.Put(ctx, h, data.Bytes()); err != nil {
			return nil, fmt.Errorf("import %s: %w", m.Name, err)
		}
	}
	if err := r.Publish(ctx, m); err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	return m, nil
}
