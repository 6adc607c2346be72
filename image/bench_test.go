package image

import (
	"context"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// benchDisk writes a 256 MiB synthetic disk: per 4 MiB, a random (incompressible)
// MiB, a text MiB, and two MiB of zeros — and a layout using all of it.
func benchDisk(b *testing.B) (string, Layout) {
	b.Helper()
	const size = 256 * mib
	path := filepath.Join(b.TempDir(), "disk.img")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	text := []byte(strings.Repeat("the quick brown fox jumps over the lazy dog 0123456789\n", mib/55+1))[:mib]
	rnd := make([]byte, mib)
	for off := int64(0); off < size; off += 4 * mib {
		for i := 0; i < len(rnd); i += 8 {
			v := rng.Uint64()
			for k := range 8 {
				rnd[i+k] = byte(v >> (8 * k))
			}
		}
		if _, err := f.WriteAt(rnd, off); err != nil {
			b.Fatal(err)
		}
		if _, err := f.WriteAt(text, off+mib); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Truncate(size); err != nil {
		b.Fatal(err)
	}
	return path, Layout{DiskSize: size, Partitions: []Area{{Index: 1, Start: 0, Size: size, FSType: "raw"}}}
}

func BenchmarkCapture(b *testing.B) {
	path, l := benchDisk(b)
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	b.SetBytes(l.DiskSize)
	for b.Loop() {
		b.StopTimer()
		repo := openRepo(b)
		b.StartTimer()
		m, err := Capture(context.Background(), f, l, repo, CaptureOptions{Name: "bench"})
		if err != nil {
			b.Fatal(err)
		}
		if err := repo.Publish(context.Background(), m); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(m.Sizes.Uploaded)/float64(l.DiskSize), "stored/logical")
	}
}

func BenchmarkRecapture(b *testing.B) {
	path, l := benchDisk(b)
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	repo := openRepo(b)
	if _, err := Capture(context.Background(), f, l, repo, CaptureOptions{Name: "bench"}); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(l.DiskSize)
	for b.Loop() {
		if _, err := Capture(context.Background(), f, l, repo, CaptureOptions{Name: "bench"}); err != nil {
			b.Fatal(err)
		}
	}
}

func benchRestore(b *testing.B, delta bool) {
	path, l := benchDisk(b)
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	repo := openRepo(b)
	m, err := Capture(context.Background(), f, l, repo, CaptureOptions{Name: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	dst, err := os.Create(filepath.Join(b.TempDir(), "dst.img"))
	if err != nil {
		b.Fatal(err)
	}
	defer dst.Close()
	opts := RestoreOptions{TargetSize: l.DiskSize}
	if delta {
		opts.Current = dst
		if err := Restore(context.Background(), dst, m, repo, opts); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(l.DiskSize)
	for b.Loop() {
		if err := Restore(context.Background(), dst, m, repo, opts); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRestore(b *testing.B)      { benchRestore(b, false) }
func BenchmarkRestoreDelta(b *testing.B) { benchRestore(b, true) }

// BenchmarkRawCopy is the baseline: a sequential 4 MiB-buffer copy of the
// same disk (what dd does), including the final fsync Restore also does.
func BenchmarkRawCopy(b *testing.B) {
	path, l := benchDisk(b)
	dstPath := filepath.Join(b.TempDir(), "dst.img")
	b.SetBytes(l.DiskSize)
	buf := make([]byte, 4*mib)
	for b.Loop() {
		src, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		dst, err := os.Create(dstPath)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.CopyBuffer(struct{ io.Writer }{dst}, struct{ io.Reader }{src}, buf); err != nil {
			b.Fatal(err)
		}
		if err := dst.Sync(); err != nil {
			b.Fatal(err)
		}
		src.Close()
		dst.Close()
	}
}
