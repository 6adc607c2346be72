package nslab

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// ImageSpec describes a synthetic disk image: an MBR with one ext4
// partition (type 0x83) from 1 MiB to the end, filled by mkfs.ext4 -d from
// a seeded mix of files. The same spec gives the same bytes.
type ImageSpec struct {
	// DataBytes is the total size of the files (default 16 MiB): half
	// incompressible random data, half compressible text (zstd: ~3:1),
	// in files of at most 2 MiB, plus a few small files.
	DataBytes int64
	// DiskBytes is the disk's size (default: 1 MiB + 1.5 × DataBytes +
	// 8 MiB, rounded up to a MiB: room for ext4's metadata and journal).
	DiskBytes int64
	// Seed of the generator (0 is a seed like any other).
	Seed uint64
}

// Image is a written disk image.
type Image struct {
	Path      string
	DiskBytes int64  // file size
	DataBytes int64  // bytes of file content in the filesystem
	SHA256    string // of the whole file, hex
}

// PartitionStart is where the image's partition starts (1 MiB).
const PartitionStart = 1 << 20

// ImageSafeBlock is the 4 KiB block where Preboot's agent keeps a
// device's image-safe record (1 MiB − 4 KiB, docs/image-safe-data.md): a
// restore onto a blank target writes a new record there (last_image), so
// compare Preboot's outputs with CompareFiles(src, out, ImageSafeBlock).
var ImageSafeBlock = Range{Off: PartitionStart - 4096, Len: 4096}

// WriteDiskImage writes the image described by spec to path (replacing
// it). It needs mkfs.ext4 (e2fsprogs ≥ 1.43, for -d) and debugfs.
func WriteDiskImage(ctx context.Context, path string, spec ImageSpec) (Image, error) {
	if spec.DataBytes == 0 {
		spec.DataBytes = 16 << 20
	}
	if spec.DataBytes < 64<<10 {
		return Image{}, fmt.Errorf("image data %d bytes: want at least 64 KiB", spec.DataBytes)
	}
	if spec.DiskBytes == 0 {
		spec.DiskBytes = PartitionStart + spec.DataBytes*3/2 + 8<<20
	}
	spec.DiskBytes = (spec.DiskBytes + 1<<20 - 1) &^ (1<<20 - 1)
	partBytes := spec.DiskBytes - PartitionStart
	if partBytes < spec.DataBytes+4<<20 {
		return Image{}, fmt.Errorf("disk %d bytes: too small for %d bytes of data", spec.DiskBytes, spec.DataBytes)
	}
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		return Image{}, fmt.Errorf("write disk image: needs mkfs.ext4 (Debian: e2fsprogs): %w", err)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(path), ".nslab-image-")
	if err != nil {
		return Image{}, fmt.Errorf("write disk image: %w", err)
	}
	defer os.RemoveAll(tmp)
	tree := filepath.Join(tmp, "tree")
	if err := writeTree(tree, spec.DataBytes, spec.Seed); err != nil {
		return Image{}, err
	}
	part := filepath.Join(tmp, "part.img")
	if err := makeSparse(part, partBytes); err != nil {
		return Image{}, err
	}
	// Fixed UUID, hash seed and time: the same spec gives the same bytes.
	cmd := exec.CommandContext(ctx, mkfs, "-q", "-F", "-b", "4096",
		"-U", "6f1a2b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b",
		"-E", "hash_seed=0b1c2d3e-4f50-4162-8374-95a6b7c8d9e0,lazy_itable_init=0,lazy_journal_init=0,nodiscard",
		"-d", tree, part)
	cmd.Env = append(os.Environ(), "E2FSPROGS_FAKE_TIME=1700000000")
	if out, err := cmd.CombinedOutput(); err != nil {
		return Image{}, fmt.Errorf("mkfs.ext4 -d: %w: %s", err, strings.TrimSpace(string(out)))
	}
	if err := fixTimes(ctx, tree, part); err != nil {
		return Image{}, err
	}
	if err := assemble(path, part, spec.DiskBytes); err != nil {
		return Image{}, err
	}
	sum, err := FileSHA256(path)
	if err != nil {
		return Image{}, err
	}
	return Image{Path: path, DiskBytes: spec.DiskBytes, DataBytes: spec.DataBytes, SHA256: sum}, nil
}

// writeTree writes the file tree: random.N (incompressible), text.N
// (compressible), small/*.
func writeTree(dir string, total int64, seed uint64) error {
	if err := os.MkdirAll(filepath.Join(dir, "small"), 0o755); err != nil {
		return fmt.Errorf("write tree: %w", err)
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x6e736c6162))
	var cseed [32]byte
	for i := range cseed {
		cseed[i] = byte(rng.Uint32())
	}
	random := rand.NewChaCha8(cseed)
	const small, maxFile = 4 << 10, 2 << 20
	smallTotal := min(total/16, 256<<10)
	half := (total - smallTotal) / 2
	write := func(name string, n int64, gen func([]byte)) error {
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			return fmt.Errorf("write tree: %w", err)
		}
		buf := make([]byte, 64<<10)
		for n > 0 {
			b := buf[:min(int64(len(buf)), n)]
			gen(b)
			if _, err := f.Write(b); err != nil {
				f.Close()
				return fmt.Errorf("write tree: %w", err)
			}
			n -= int64(len(b))
		}
		if err := f.Close(); err != nil {
			return fmt.Errorf("write tree: %w", err)
		}
		return nil
	}
	noise := func(b []byte) { _, _ = random.Read(b) }
	text := textGen(rng)
	left := total
	for k := 0; left > 0; k++ {
		var err error
		switch {
		case smallTotal > 0:
			n := min(small, smallTotal)
			gen := text
			if k%2 == 1 {
				gen = noise
			}
			err = write(fmt.Sprintf("small/f%04d", k), n, gen)
			smallTotal -= n
			left -= n
		case half > 0:
			n := min(maxFile, half)
			err = write(fmt.Sprintf("random.%02d", k), n, noise)
			half -= n
			left -= n
		default:
			n := min(maxFile, left)
			err = write(fmt.Sprintf("text.%02d", k), n, text)
			left -= n
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// fixTimes sets the times of every inode mkfs.ext4 -d copied from tree to
// one instant with debugfs: mkfs copies the files' ctimes, which cannot be
// set on the files themselves.
func fixTimes(ctx context.Context, tree, part string) error {
	var script strings.Builder
	err := filepath.WalkDir(tree, func(path string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(tree, path)
		if err != nil {
			return err
		}
		p := "/" + filepath.ToSlash(rel)
		if rel == "." {
			p = "/"
		}
		for _, f := range []string{"atime", "mtime", "ctime"} {
			fmt.Fprintf(&script, "sif %s %s @1700000000\nsif %s %s_extra 0\n", p, f, p, f)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("write tree: %w", err)
	}
	debugfs, err := exec.LookPath("debugfs")
	if err != nil {
		return fmt.Errorf("write disk image: needs debugfs (Debian: e2fsprogs): %w", err)
	}
	cmd := exec.CommandContext(ctx, debugfs, "-w", "-f", "-", part)
	cmd.Stdin = strings.NewReader(script.String())
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("debugfs: %w: %s", err, tail(string(out)))
	}
	if strings.Contains(string(out), "not found") || strings.Contains(string(out), "Invalid") {
		return fmt.Errorf("debugfs: %s", tail(string(out)))
	}
	return nil
}

func tail(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-5):], "\n")
}

// textGen returns a generator of log-like lines: words from a small
// vocabulary and random numbers (zstd -3 compresses it about 3:1).
func textGen(rng *rand.Rand) func([]byte) {
	words := strings.Fields("the image chunk server receiver multicast session restore verify disk partition " +
		"ext4 block group inode journal write read request repair peer unicast rate loss slow late join " +
		"preboot agent manifest hash blake3 zstd packet symbol lab bridge querier snooping switch port")
	var pending []byte
	return func(b []byte) {
		for i := range b {
			if len(pending) == 0 {
				var line bytes.Buffer
				fmt.Fprintf(&line, "%08d %s", rng.IntN(1e8), words[rng.IntN(len(words))])
				for range 4 + rng.IntN(8) {
					line.WriteByte(' ')
					line.WriteString(words[rng.IntN(len(words))])
				}
				fmt.Fprintf(&line, " %x\n", rng.Uint32())
				pending = line.Bytes()
			}
			b[i] = pending[0]
			pending = pending[1:]
		}
	}
}

func makeSparse(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return fmt.Errorf("truncate %s: %w", path, err)
	}
	return f.Close()
}

// assemble writes the disk: an MBR with one partition entry (bootable,
// type 0x83, LBA 2048 to the end), then the partition image at 1 MiB.
func assemble(path, part string, diskBytes int64) error {
	tmp := path + ".tmp"
	if err := makeSparse(tmp, diskBytes); err != nil {
		return err
	}
	f, err := os.OpenFile(tmp, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("assemble %s: %w", path, err)
	}
	defer os.Remove(tmp)
	var mbr [512]byte
	binary.LittleEndian.PutUint32(mbr[440:], 0x5052424f) // disk signature "PRBO"
	e := mbr[446:462]
	e[0] = 0x80                                // bootable
	copy(e[1:4], []byte{0xfe, 0xff, 0xff})     // CHS: use LBA
	e[4] = 0x83                                // Linux
	copy(e[5:8], []byte{0xfe, 0xff, 0xff})     // CHS: use LBA
	binary.LittleEndian.PutUint32(e[8:], 2048) // first LBA
	binary.LittleEndian.PutUint32(e[12:], uint32((diskBytes-PartitionStart)/512))
	mbr[510], mbr[511] = 0x55, 0xaa
	if _, err := f.WriteAt(mbr[:], 0); err != nil {
		f.Close()
		return fmt.Errorf("assemble %s: %w", path, err)
	}
	src, err := os.Open(part)
	if err != nil {
		f.Close()
		return fmt.Errorf("assemble %s: %w", path, err)
	}
	defer src.Close()
	if err := copySparse(f, src, PartitionStart); err != nil {
		f.Close()
		return fmt.Errorf("assemble %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("assemble %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("assemble %s: %w", path, err)
	}
	return nil
}

// copySparse copies src into dst at offset off, skipping all-zero blocks
// (dst is sparse and zero there already).
func copySparse(dst *os.File, src io.Reader, off int64) error {
	buf := make([]byte, 1<<20)
	for {
		n, err := io.ReadFull(src, buf)
		if n > 0 {
			for k := 0; k < n; k += 4096 {
				b := buf[k:min(k+4096, n)]
				if !allZero(b) {
					if _, werr := dst.WriteAt(b, off+int64(k)); werr != nil {
						return werr
					}
				}
			}
			off += int64(n)
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// FileSHA256 is the hex SHA-256 of a file's content.
func FileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("sha256: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("sha256 %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Range is a byte range of a file.
type Range struct{ Off, Len int64 }

// CompareFiles checks that out holds the same bytes as src, except in the
// skip ranges (which are not compared). It returns nil when they match,
// else an error naming the first differing offset (or the sizes).
func CompareFiles(src, out string, skip ...Range) error {
	a, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("compare: %w", err)
	}
	defer a.Close()
	b, err := os.Open(out)
	if err != nil {
		return fmt.Errorf("compare: %w", err)
	}
	defer b.Close()
	as, err := a.Stat()
	if err != nil {
		return fmt.Errorf("compare: %w", err)
	}
	bs, err := b.Stat()
	if err != nil {
		return fmt.Errorf("compare: %w", err)
	}
	if as.Size() != bs.Size() {
		return fmt.Errorf("%s is %d bytes, %s %d", out, bs.Size(), src, as.Size())
	}
	const bufSize = 1 << 20
	ba, bb := make([]byte, bufSize), make([]byte, bufSize)
	for off := int64(0); off < as.Size(); off += bufSize {
		n := min(bufSize, as.Size()-off)
		if _, err := a.ReadAt(ba[:n], off); err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("compare: read %s: %w", src, err)
		}
		if _, err := b.ReadAt(bb[:n], off); err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("compare: read %s: %w", out, err)
		}
		for _, r := range skip {
			for k := max(r.Off, off); k < min(r.Off+r.Len, off+n); k++ {
				bb[k-off] = ba[k-off]
			}
		}
		if !bytes.Equal(ba[:n], bb[:n]) {
			for k := range n {
				if ba[k] != bb[k] {
					return fmt.Errorf("%s differs from %s at byte %d", out, src, off+k)
				}
			}
		}
	}
	return nil
}
