package imagefs_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/preboot/preboot/image"
	"github.com/preboot/preboot/imagefs"
	"github.com/preboot/preboot/imagefs/imagefstest"
)

// fixture: the test disk, captured once into a repository (64 KiB chunks,
// so that files span many of them).
type fixture struct {
	disk *imagefstest.Disk
	repo *image.Repo
	m    *image.Manifest
}

var (
	fixOnce sync.Once
	fix     fixture
	fixDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if fixDir != "" {
		os.RemoveAll(fixDir)
	}
	os.Exit(code)
}

func getFixture(t *testing.T) fixture {
	t.Helper()
	imagefstest.Need(t)
	fixOnce.Do(func() {
		dir, err := os.MkdirTemp("", "imagefs-test-")
		if err != nil {
			t.Fatal(err)
		}
		fixDir = dir
		d := imagefstest.Build(t, dir)
		repo, err := image.OpenRepo(filepath.Join(dir, "repo"), image.RepoOptions{GCGrace: -1})
		if err != nil {
			t.Fatal(err)
		}
		m := imagefstest.Capture(t.Context(), t, d, repo, "lab", 64<<10)
		fix = fixture{disk: d, repo: repo, m: m}
	})
	if fix.m == nil {
		t.Fatal("fixture failed in an earlier test")
	}
	return fix
}

func openPart(t *testing.T, fx fixture, index int) (*imagefs.FS, *image.AreaReader) {
	t.Helper()
	a := fx.m.Partition(index)
	if a == nil {
		t.Fatalf("no partition %d", index)
	}
	r, err := image.NewAreaReader(t.Context(), fx.m, a, fx.repo, image.AreaReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	f, err := imagefs.Open(r, r.Size(), a.FSType)
	if err != nil {
		t.Fatalf("open partition %d (%s): %v", index, a.FSType, err)
	}
	return f, r
}

func sum(b []byte) [32]byte { return sha256.Sum256(b) }

func readAll(t *testing.T, f *imagefs.File) []byte {
	t.Helper()
	b, err := io.ReadAll(io.NewSectionReader(f, 0, f.Size))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestKnownFiles: every file put into each filesystem by mkfs/mcopy/ntfscp
// reads back with the same bytes, every directory lists what was put in it.
func TestKnownFiles(t *testing.T) {
	fx := getFixture(t)
	for _, p := range fx.disk.Partitions {
		t.Run(p.FSType, func(t *testing.T) {
			f, _ := openPart(t, fx, p.Index)
			if f.Type != p.FSType {
				t.Errorf("type %s, want %s", f.Type, p.FSType)
			}
			want := map[string][]string{"": nil}
			for _, d := range p.Dirs {
				want[d] = nil
				want[path.Dir("/" + d)[1:]] = append(want[path.Dir("/" + d)[1:]], path.Base(d))
			}
			for name, data := range p.Files {
				file, err := f.Open("/" + name)
				if err != nil {
					t.Fatalf("open %s: %v", name, err)
				}
				if file.Size != int64(len(data)) {
					t.Errorf("%s: size %d, want %d", name, file.Size, len(data))
				}
				if got := readAll(t, file); sum(got) != sum(data) {
					t.Errorf("%s: content differs (%d bytes read)", name, len(got))
				}
				dir := path.Dir("/" + name)[1:]
				want[dir] = append(want[dir], path.Base(name))
			}
			for name := range p.Links {
				dir := path.Dir("/" + name)[1:]
				want[dir] = append(want[dir], path.Base(name))
			}
			for dir, names := range want {
				es, err := f.ReadDir("/" + dir)
				if err != nil {
					t.Fatalf("readdir /%s: %v", dir, err)
				}
				var got []string
				for _, e := range es {
					if p.FSType == "ntfs" && dir == "" && e.Name == "System Volume Information" {
						continue
					}
					if p.FSType == "ext4" || p.FSType == "ext2" {
						if dir == "" && e.Name == "lost+found" {
							continue
						}
					}
					got = append(got, e.Name)
				}
				slices.Sort(names)
				slices.Sort(got)
				if !slices.Equal(got, names) {
					t.Errorf("readdir /%s: %q, want %q", dir, got, names)
				}
			}
		})
	}
}

func TestExtDetails(t *testing.T) {
	fx := getFixture(t)
	f, r := openPart(t, fx, 1)
	// The large file spans ~80 chunks of 64 KiB: reading 10 bytes in its
	// middle fetches only what covers them.
	file, err := f.Open("big.bin")
	if err != nil {
		t.Fatal(err)
	}
	before := r.Fetched()
	b := make([]byte, 10)
	if _, err := file.ReadAt(b, 3<<20+5); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, fx.disk.Partitions[0].Files["big.bin"][3<<20+5:3<<20+15]) {
		t.Error("big.bin: wrong bytes at 3 MiB")
	}
	if n := r.Fetched() - before; n > 2 {
		t.Errorf("reading 10 bytes fetched %d chunks", n)
	}
	if r.Fetched() >= int64(len(fx.m.Partition(1).Chunks))/2 {
		t.Errorf("fetched %d of %d chunks to open, list and read one file", r.Fetched(), len(fx.m.Partition(1).Chunks))
	}

	// Symbolic links: relative, absolute (inside the image), climbing
	// from a subdirectory; Lstat shows the link itself.
	for link, want := range map[string]string{"link": "lab-pc\n", "abs": "deep file\n", "etc/deep/er/../../hostname": "lab-pc\n"} {
		file, err := f.Open(link)
		if err != nil {
			t.Fatalf("open %s: %v", link, err)
		}
		if got := readAll(t, file); string(got) != want {
			t.Errorf("%s: %q, want %q", link, got, want)
		}
	}
	up, err := f.Open("/etc/up")
	if err != nil || up.Size != 5<<20+123 {
		t.Errorf("etc/up -> ../big.bin: %v %+v", err, up)
	}
	e, err := f.Lstat("/abs")
	if err != nil || e.Mode&fs.ModeSymlink == 0 || e.Target != "/etc/deep/er/file.txt" {
		t.Errorf("lstat /abs: %+v %v", e, err)
	}
	e, err = f.Lstat("etc/hostname")
	if err != nil || e.Mode.Perm() != 0o640 || e.ModTime.IsZero() || e.Size != 7 {
		t.Errorf("lstat etc/hostname: %+v %v", e, err)
	}

	// Escapes are refused, whatever the route.
	for _, p := range []string{"../etc/passwd", "/../../x", "etc/../../x", "evil", "etc/deep/../../../x"} {
		if _, err := f.Open(p); !errors.Is(err, imagefs.ErrEscape) {
			t.Errorf("open %s: %v, want ErrEscape", p, err)
		}
	}
	if _, err := f.Open("etc/deep/loop"); !errors.Is(err, imagefs.ErrLoop) {
		t.Errorf("self link: %v", err)
	}
	if _, err := f.Open("nope/x"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing: %v", err)
	}
	if _, err := f.Open("etc"); !errors.Is(err, imagefs.ErrIsDir) {
		t.Errorf("open dir: %v", err)
	}
	if _, err := f.ReadDir("etc/hostname"); !errors.Is(err, imagefs.ErrNotDir) {
		t.Errorf("readdir file: %v", err)
	}
	if _, err := f.Open("etc/hostname/x"); !errors.Is(err, imagefs.ErrNotDir) {
		t.Errorf("file as dir: %v", err)
	}
}

// TestCaseInsensitive: FAT and NTFS names match in any case.
func TestCaseInsensitive(t *testing.T) {
	fx := getFixture(t)
	for _, c := range []struct {
		index int
		path  string
	}{{3, "efi/boot/bootx64.efi"}, {4, "/a long mixed-case name with spaces.TXT"}, {5, "SUB DIR/notes.txt"}, {6, "WINDOWS.TXT"}} {
		f, _ := openPart(t, fx, c.index)
		if _, err := f.Open(c.path); err != nil {
			t.Errorf("partition %d: %s: %v", c.index, c.path, err)
		}
	}
}

// TestCorruptChunk: a chunk damaged in the repository is reported, with
// its hash, and no bytes of it are returned.
func TestCorruptChunk(t *testing.T) {
	imagefstest.Need(t)
	dir := t.TempDir()
	d := imagefstest.Build(t, dir)
	repo, err := image.OpenRepo(filepath.Join(dir, "repo"), image.RepoOptions{GCGrace: -1})
	if err != nil {
		t.Fatal(err)
	}
	m := imagefstest.Capture(t.Context(), t, d, repo, "lab", 64<<10)
	a := m.Partition(1)
	// Which chunk holds big.bin at 3 MiB: the one fetched by that read.
	rec := &recordingStore{ChunkStore: repo}
	r, err := image.NewAreaReader(t.Context(), m, a, rec, image.AreaReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	f, err := imagefs.Open(r, r.Size(), a.FSType)
	if err != nil {
		t.Fatal(err)
	}
	file, err := f.Open("big.bin")
	if err != nil {
		t.Fatal(err)
	}
	rec.got = nil
	if _, err := file.ReadAt(make([]byte, 1), 3<<20); err != nil {
		t.Fatal(err)
	}
	if len(rec.got) != 1 {
		t.Fatalf("one byte read fetched %d chunks", len(rec.got))
	}
	target := rec.got[0]
	// A fresh reader (no cache) over the damaged repository.
	r, err = image.NewAreaReader(t.Context(), m, a, repo, image.AreaReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if f, err = imagefs.Open(r, r.Size(), a.FSType); err != nil {
		t.Fatal(err)
	}
	if file, err = f.Open("big.bin"); err != nil {
		t.Fatal(err)
	}
	chunkFile := filepath.Join(repo.Root(), "chunks", target.String()[:2], target.String())
	data, err := os.ReadFile(chunkFile)
	if err != nil {
		t.Fatal(err)
	}
	// Another valid zstd frame of the same length: content hash mismatch.
	bad, err := recompressFlipped(data)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(chunkFile, bad, 0o644); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 4096)
	n, err := file.ReadAt(b, 3<<20)
	if !errors.Is(err, image.ErrCorruptChunk) || !strings.Contains(err.Error(), target.String()) {
		t.Fatalf("read over a corrupt chunk: %d bytes, %v", n, err)
	}
	if n != 0 {
		t.Errorf("%d bytes returned from a read that starts in a corrupt chunk", n)
	}
	// Garbage that is not zstd at all.
	if err := os.WriteFile(chunkFile, []byte("not a chunk"), 0o644); err != nil {
		t.Fatal(err)
	}
	r3, _ := image.NewAreaReader(t.Context(), m, a, repo, image.AreaReaderOptions{})
	defer r3.Close()
	if _, err := imagefs.Open(r3, r3.Size(), a.FSType); err != nil {
		t.Fatal(err)
	}
	f3, _ := imagefs.Open(r3, r3.Size(), a.FSType)
	file3, err := f3.Open("big.bin")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := file3.ReadAt(b, 3<<20); !errors.Is(err, image.ErrCorruptChunk) {
		t.Fatalf("garbage chunk: %v", err)
	}
}

// TestDetect names the filesystems by their superblocks.
func TestDetect(t *testing.T) {
	fx := getFixture(t)
	for _, p := range fx.disk.Partitions {
		a := fx.m.Partition(p.Index)
		r, _ := image.NewAreaReader(t.Context(), fx.m, a, fx.repo, image.AreaReaderOptions{})
		f, err := imagefs.Open(r, r.Size(), "")
		r.Close()
		if err != nil {
			t.Errorf("partition %d: detect: %v", p.Index, err)
			continue
		}
		fam := func(s string) string { return strings.TrimRight(s, "0123456789") }
		if fam(f.Type) != fam(p.FSType) && !(f.Type == "ext4" && p.FSType == "ext2") {
			t.Errorf("partition %d: detected %s, want %s", p.Index, f.Type, p.FSType)
		}
	}
	if _, err := imagefs.Open(bytes.NewReader(make([]byte, 1<<20)), 1<<20, "xfs"); !errors.Is(err, imagefs.ErrUnsupported) {
		t.Errorf("xfs: %v", err)
	}
}

func TestClean(t *testing.T) {
	for in, want := range map[string]string{"": "/", "/": "/", "a/b/": "/a/b", "a/../b": "/b", "./a//b": "/a/b"} {
		if got, err := imagefs.Clean(in); err != nil || got != want {
			t.Errorf("Clean(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"..", "/..", "a/../..", "a/../../b"} {
		if _, err := imagefs.Clean(in); !errors.Is(err, imagefs.ErrEscape) {
			t.Errorf("Clean(%q): %v", in, err)
		}
	}
}

// recordingStore records the chunks fetched.
type recordingStore struct {
	image.ChunkStore
	mu  sync.Mutex
	got []image.Hash
}

func (s *recordingStore) Get(ctx context.Context, h image.Hash, dst []byte) ([]byte, error) {
	s.mu.Lock()
	s.got = append(s.got, h)
	s.mu.Unlock()
	return s.ChunkStore.Get(ctx, h, dst)
}

// recompressFlipped returns a valid zstd frame of the chunk's content
// with one byte changed.
func recompressFlipped(frame []byte) ([]byte, error) {
	dec, err := zstd.NewReader(nil)
	if err != nil {
		return nil, err
	}
	defer dec.Close()
	raw, err := dec.DecodeAll(frame, nil)
	if err != nil {
		return nil, err
	}
	raw[len(raw)/2] ^= 0xFF
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		return nil, err
	}
	defer enc.Close()
	return enc.EncodeAll(raw, nil), nil
}
