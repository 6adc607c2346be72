package imagefs

import (
	"fmt"
	"io"
	"io/fs"
	"strings"
	"sync"

	ntfs "www.velocidex.com/golang/go-ntfs/parser"
)

// NTFS through go-ntfs (Velocidex's parser, the one Velociraptor uses).
// The parser panics on some malformed structures: every call into it runs
// under recover and a panic becomes an ErrCorrupt error. Its caches are
// not safe for concurrent use, so one mutex serialises the filesystem.
// Names match without regard to case, as on Windows; reparse points
// (junctions, symbolic links) show as the file or directory holding them.

type ntfsFS struct {
	mu  sync.Mutex
	ctx *ntfs.NTFSContext
}

type ntfsNode struct {
	mft  *ntfs.MFT_ENTRY
	info ntfs.FileInfo
	id   int64
}

// guard runs fn, turning a parser panic into an error.
func guard(fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: ntfs: %v", ErrCorrupt, r)
		}
	}()
	return fn()
}

func openNTFS(r io.ReaderAt, _ int64) (*ntfsFS, error) {
	f := &ntfsFS{}
	err := guard(func() error {
		pr, err := ntfs.NewPagedReader(r, 4096, 1024)
		if err != nil {
			return err
		}
		ctx, err := ntfs.GetNTFSContext(pr, 0)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrCorrupt, err)
		}
		f.ctx = ctx
		return nil
	})
	if err != nil {
		return nil, err
	}
	return f, nil
}

// node loads MFT record id and its main file information.
func (f *ntfsFS) node(id int64) (*ntfsNode, error) {
	mft, err := f.ctx.GetMFT(id)
	if err != nil {
		return nil, fmt.Errorf("%w: MFT record %d: %w", ErrCorrupt, id, err)
	}
	var pick *ntfs.FileInfo
	for _, fi := range ntfs.Stat(f.ctx, mft) {
		if strings.Contains(fi.Name, ":") {
			continue // an alternate data stream
		}
		if pick == nil || (fi.IsDir && !pick.IsDir) {
			pick = fi
		}
	}
	if pick == nil {
		return nil, fmt.Errorf("%w: MFT record %d has no name or standard information", ErrCorrupt, id)
	}
	return &ntfsNode{mft: mft, info: *pick, id: id}, nil
}

func (f *ntfsFS) root() (node, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var n *ntfsNode
	err := guard(func() error {
		var err error
		n, err = f.node(5)
		return err
	})
	if err != nil {
		return nil, err
	}
	n.info.Name = "/"
	return n, nil
}

func (f *ntfsFS) stat(nd node) (Entry, error) {
	n := nd.(*ntfsNode)
	mode := fs.FileMode(0o644)
	size := n.info.Size
	if n.info.IsDir {
		mode = fs.ModeDir | 0o755
		size = 0
	}
	return Entry{Name: n.info.Name, Size: size, Mode: mode, ModTime: n.info.Mtime.UTC()}, nil
}

func (f *ntfsFS) lookup(dir node, name string) (node, error) {
	d := dir.(*ntfsNode)
	if !d.info.IsDir {
		return nil, ErrNotDir
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var out *ntfsNode
	err := guard(func() error {
		for _, ent := range d.mft.Dir(f.ctx) {
			id := int64(ent.MftReference())
			if id == d.id || !strings.EqualFold(ent.File().Name(), name) {
				continue
			}
			n, err := f.node(id)
			if err != nil {
				return err
			}
			out = n
			return nil
		}
		return ErrNotExist
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (f *ntfsFS) list(dir node) ([]Entry, error) {
	d := dir.(*ntfsNode)
	if !d.info.IsDir {
		return nil, ErrNotDir
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Entry
	err := guard(func() error {
		for _, fi := range ntfs.ListDir(f.ctx, d.mft) {
			id, _, _, _, err := ntfs.ParseMFTId(fi.MFTId)
			if err != nil || id == d.id || strings.Contains(fi.Name, ":") {
				continue
			}
			// The root's metadata files ($MFT, $Bitmap, ...) are NTFS's own.
			if d.id == 5 && id < 24 && strings.HasPrefix(fi.Name, "$") {
				continue
			}
			mode := fs.FileMode(0o644)
			size := fi.Size
			if fi.IsDir {
				mode = fs.ModeDir | 0o755
				size = 0
			}
			out = append(out, Entry{Name: fi.Name, Size: size, Mode: mode, ModTime: fi.Mtime.UTC()})
		}
		return nil
	})
	return dedupe(out), err
}

// dedupe drops repeated names (a directory's index and its data stream
// both stat the same record).
func dedupe(es []Entry) []Entry {
	seen := make(map[string]int, len(es))
	out := es[:0]
	for _, e := range es {
		if i, ok := seen[e.Name]; ok {
			if e.IsDir() {
				out[i] = e
			}
			continue
		}
		seen[e.Name] = len(out)
		out = append(out, e)
	}
	return out
}

func (f *ntfsFS) readlink(node) (string, error) {
	return "", fmt.Errorf("%w: NTFS reparse points are not followed", ErrUnsupported)
}

func (f *ntfsFS) open(nd node) (io.ReaderAt, int64, error) {
	n := nd.(*ntfsNode)
	f.mu.Lock()
	defer f.mu.Unlock()
	size := n.info.Size
	if size == 0 {
		return io.NewSectionReader(strings.NewReader(""), 0, 0), 0, nil
	}
	var rr ntfs.RangeReaderAt
	err := guard(func() error {
		var err error
		rr, err = ntfs.OpenStream(f.ctx, n.mft, ntfs.ATTR_TYPE_DATA, ntfs.WILDCARD_STREAM_ID, "")
		if err != nil {
			return fmt.Errorf("open data of MFT record %d: %w", n.id, err)
		}
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	return io.NewSectionReader(&ntfsReader{f: f, r: rr}, 0, size), size, nil
}

// ntfsReader serialises and guards reads of a stream.
type ntfsReader struct {
	f *ntfsFS
	r io.ReaderAt
}

func (x *ntfsReader) ReadAt(p []byte, off int64) (n int, err error) {
	x.f.mu.Lock()
	defer x.f.mu.Unlock()
	err = guard(func() error {
		var rerr error
		n, rerr = x.r.ReadAt(p, off)
		return rerr
	})
	return n, err
}
