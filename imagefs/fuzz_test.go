package imagefs_test

import (
	"encoding/binary"
	"io"
	"os"
	"path"
	"strconv"
	"strings"
	"testing"

	"github.com/preboot/preboot/imagefs"
)

// The fuzz inputs are sparse filesystem images, so that real mkfs output
// fits a small seed: a little-endian uint32 size (capped at 64 MiB), then
// records of uint32 offset, uint16 length and that many bytes, laid on a
// zeroed image of that size (clipped to it). The seeds in
// testdata/fuzz/ are mkfs.ext4 -d (an htree directory, a symbolic link),
// mkfs.ext2 -b 1024 (indirect blocks) and mkfs.fat -F 12/16/32 with mcopy
// (long names, directories) images.

type sparseImage struct {
	size int64
	recs []sparseRec
}

type sparseRec struct {
	off  int64
	data []byte
}

func decodeSparse(b []byte) *sparseImage {
	s := &sparseImage{}
	if len(b) < 4 {
		return s
	}
	s.size = int64(min(binary.LittleEndian.Uint32(b), 64<<20))
	b = b[4:]
	for len(b) >= 6 {
		off := int64(binary.LittleEndian.Uint32(b))
		n := int(binary.LittleEndian.Uint16(b[4:]))
		b = b[6:]
		n = min(n, len(b))
		s.recs = append(s.recs, sparseRec{off, b[:n]})
		b = b[n:]
	}
	return s
}

func (s *sparseImage) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off >= s.size {
		return 0, io.EOF
	}
	n := len(p)
	if rest := s.size - off; int64(n) > rest {
		n = int(rest)
	}
	clear(p[:n])
	for _, r := range s.recs {
		lo, hi := max(r.off, off), min(r.off+int64(len(r.data)), off+int64(n))
		if lo < hi {
			copy(p[lo-off:hi-off], r.data[lo-r.off:hi-r.off])
		}
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// walk lists and reads everything reachable, within bounds: the readers
// must answer with errors, never panic, loop or allocate without limit.
func walk(t *testing.T, f *imagefs.FS) {
	budget := 200
	buf := make([]byte, 64<<10)
	var visit func(dir string, depth int)
	visit = func(dir string, depth int) {
		if depth > 8 || budget <= 0 {
			return
		}
		es, err := f.ReadDir(dir)
		if err != nil {
			return
		}
		for _, e := range es {
			budget--
			if budget <= 0 {
				return
			}
			p := path.Join(dir, e.Name)
			_, _ = f.Lstat(p)
			switch {
			case e.IsDir():
				visit(p, depth+1)
			default:
				file, err := f.Open(p)
				if err != nil {
					continue
				}
				for off := int64(0); off < min(file.Size, 1<<20); off += int64(len(buf)) {
					if _, err := file.ReadAt(buf, off); err != nil {
						break
					}
				}
			}
		}
	}
	visit("/", 0)
}

func fuzzFS(f *testing.F, fstype string) {
	f.Fuzz(func(t *testing.T, b []byte) {
		img := decodeSparse(b)
		fsys, err := imagefs.Open(img, img.size, fstype)
		if err != nil {
			return
		}
		walk(t, fsys)
	})
}

func FuzzExt(f *testing.F) { fuzzFS(f, "ext4") }

func FuzzFAT(f *testing.F) { fuzzFS(f, "vfat") }

// TestFuzzSeedsRead: the seeds decode into the filesystems they were made
// from (a seed that no longer parses would fuzz nothing but the header).
func TestFuzzSeedsRead(t *testing.T) {
	for _, c := range []struct{ seed, fstype, file, want string }{
		{"FuzzExt/ext4", "ext4", "/l", "hello\n"},
		{"FuzzExt/ext2", "ext2", "/d/e/f.txt", "hello\n"},
		{"FuzzFAT/fat12", "vfat", "/sub/a long name.txt", "hi\n"},
		{"FuzzFAT/fat16", "vfat", "/README.MD", "hi\n"},
		{"FuzzFAT/fat32", "vfat", "/EFI/grub.cfg", "hi\n"},
	} {
		b := readSeed(t, "testdata/fuzz/"+c.seed)
		img := decodeSparse(b)
		fsys, err := imagefs.Open(img, img.size, c.fstype)
		if err != nil {
			t.Fatalf("%s: %v", c.seed, err)
		}
		file, err := fsys.Open(c.file)
		if err != nil {
			t.Fatalf("%s: %s: %v", c.seed, c.file, err)
		}
		got := make([]byte, file.Size)
		if _, err := file.ReadAt(got, 0); err != nil || string(got) != c.want {
			t.Errorf("%s: %s: %q %v", c.seed, c.file, got, err)
		}
		if c.fstype == "ext4" {
			es, err := fsys.ReadDir("/d")
			if err != nil || len(es) != 61 {
				t.Errorf("%s: /d (htree): %d entries, %v", c.seed, len(es), err)
			}
		}
	}
}

// readSeed decodes a corpus file of one []byte value.
func readSeed(t *testing.T, name string) []byte {
	t.Helper()
	raw, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.TrimSpace(strings.TrimPrefix(string(raw), "go test fuzz v1\n"))
	s = strings.TrimSuffix(strings.TrimPrefix(s, "[]byte("), ")")
	v, err := strconv.Unquote(s)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return []byte(v)
}
