package image

import (
	"context"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/preboot/preboot/timing"
)

// The tests below make one stage of a real capture or restore slow with a
// real slow reader, writer or store (a 50 ms sleep per call where the
// others take microseconds) and check that the breakdown names it: the
// slow stage is the bottleneck and has the largest share. They assert the
// ordering of the figures, never a duration.

const slowCall = 50 * time.Millisecond

// slowStore delays Get (restore's fetch) or Put (capture's upload).
type slowStore struct {
	ChunkStore
	get, put bool
}

func (s slowStore) Get(ctx context.Context, h Hash, dst []byte) ([]byte, error) {
	if s.get {
		time.Sleep(slowCall)
	}
	return s.ChunkStore.Get(ctx, h, dst)
}

func (s slowStore) Put(ctx context.Context, h Hash, data []byte) error {
	if s.put {
		time.Sleep(slowCall)
	}
	return s.ChunkStore.Put(ctx, h, data)
}

// slowWriter delays every write (restore's disk).
type slowWriter struct{ *os.File }

func (w slowWriter) WriteAt(p []byte, off int64) (int, error) {
	time.Sleep(slowCall)
	return w.File.WriteAt(p, off)
}

// slowReader delays every read (capture's disk).
type slowReader struct{ io.ReaderAt }

func (r slowReader) ReadAt(p []byte, off int64) (int, error) {
	time.Sleep(slowCall)
	return r.ReaderAt.ReadAt(p, off)
}

// randomDisk is an 8 MiB disk of random bytes in one raw partition:
// every one of its 32 windows of 256 KiB is stored, fetched and written.
func randomDisk(t *testing.T) (*os.File, Layout) {
	t.Helper()
	const size = 8 << 20
	b := make([]byte, size)
	rng := rand.New(rand.NewPCG(33, 1))
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	path := filepath.Join(t.TempDir(), "disk")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f, Layout{DiskSize: size, Partitions: []Area{{Index: 1, Start: 0, Size: size, FSType: "raw"}}}
}

// smallChunks captures with 256 KiB windows and 4 workers.
func smallChunks(t *testing.T, l Layout, src io.ReaderAt, store ChunkStore) (*Manifest, Progress) {
	t.Helper()
	var last Progress
	m, err := Capture(context.Background(), src, l, store, CaptureOptions{Name: "slow", ChunkSize: 256 << 10, Workers: 4,
		Progress: func(p Progress) { last = p }})
	if err != nil {
		t.Fatal(err)
	}
	return m, last
}

// checkBottleneck fails unless b names resource/stage as the bottleneck
// and gives resource the largest share.
func checkBottleneck(t *testing.T, b *timing.Breakdown, resource, stage string) {
	t.Helper()
	if b == nil {
		t.Fatal("the final progress has no time breakdown")
	}
	t.Logf("%s (stages %+v)", b.Summary(), b.Stages)
	if b.Bottleneck != resource || b.BottleneckStage != stage {
		t.Fatalf("bottleneck %s (%s), want %s (%s): %s", b.Bottleneck, b.BottleneckStage, resource, stage, b.Summary())
	}
	share := map[string]int{timing.Network: b.Shares.Network, timing.CPU: b.Shares.CPU, timing.Disk: b.Shares.Disk, "waiting": b.Shares.Waiting}
	for r, s := range share {
		if r != resource && s >= share[resource] {
			t.Fatalf("%s has %d %%, the slow %s only %d %%: %s", r, s, resource, share[resource], b.Summary())
		}
	}
}

func TestRestoreTimingSlowStage(t *testing.T) {
	src, layout := randomDisk(t)
	repo := openRepo(t)
	m, _ := smallChunks(t, layout, src, repo)
	for _, tc := range []struct {
		name            string
		store           ChunkStore
		slowDisk        bool
		resource, stage string
	}{
		{"network", slowStore{ChunkStore: repo, get: true}, false, timing.Network, "fetch"},
		{"disk", repo, true, timing.Disk, "write"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := os.Create(filepath.Join(t.TempDir(), "target"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			var dst io.WriterAt = f
			if tc.slowDisk {
				dst = slowWriter{f}
			}
			var last Progress
			err = Restore(context.Background(), dst, m, tc.store, RestoreOptions{TargetSize: m.Disk.Size, Workers: 4,
				Progress: func(p Progress) { last = p }})
			if err != nil {
				t.Fatal(err)
			}
			sameUsed(t, m, src, f)
			checkBottleneck(t, last.Timing, tc.resource, tc.stage)
			names := map[string]bool{}
			for _, s := range last.Timing.Stages {
				names[s.Name] = true
			}
			for _, n := range []string{"lookup", "check", "fetch", "verify", "write", "sync"} {
				if !names[n] {
					t.Errorf("no stage %s in %+v", n, last.Timing.Stages)
				}
			}
		})
	}
}

func TestCaptureTimingSlowStage(t *testing.T) {
	src, layout := randomDisk(t)
	for _, tc := range []struct {
		name            string
		slowRead        bool
		resource, stage string
	}{
		{"disk", true, timing.Disk, "read"},
		{"network", false, timing.Network, "upload"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			repo := openRepo(t)
			var r io.ReaderAt = src
			var st ChunkStore = slowStore{ChunkStore: repo, put: true}
			if tc.slowRead {
				r, st = slowReader{src}, repo
			}
			_, last := smallChunks(t, layout, r, st)
			checkBottleneck(t, last.Timing, tc.resource, tc.stage)
		})
	}
}
