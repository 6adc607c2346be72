// Package repotest is the conformance suite of image.Repo: the same
// scenarios run on every Backend (the directory in package image's tests,
// an S3 bucket on a real server in image/s3store's).
package repotest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/preboot/preboot/disk"
	"github.com/preboot/preboot/image"
)

// Open returns a fresh, empty repository with opts.
type Open func(t *testing.T, opts image.RepoOptions) *image.Repo

const (
	mib       = 1 << 20
	diskSize  = 8 * mib
	chunkSize = 256 << 10
)

// Disk is a synthetic disk: boot code, one partition with sparse used
// extents, one raw partition, a tail.
type Disk struct {
	Data   []byte
	Layout image.Layout
}

// NewDisk makes the disk of seed (different seeds share some content, so
// images share chunks).
func NewDisk(seed uint64) Disk {
	rng := rand.New(rand.NewPCG(seed, 7))
	b := make([]byte, diskSize)
	random := func(from, to int) {
		for i := from; i < to; i++ {
			b[i] = byte(rng.Uint32())
		}
	}
	random(0, 446)
	b[510], b[511] = 0x55, 0xaa
	p1 := image.Area{Index: 1, Start: 1 * mib, Size: 4 * mib, FSType: "ext4", Used: []disk.Extent{
		{Offset: 0, Length: 1 * mib}, {Offset: 2 * mib, Length: 1 * mib}}}
	random(1*mib, 2*mib)
	copy(b[3*mib:4*mib], bytes.Repeat([]byte("preboot repository conformance\n"), mib/31+1))
	p2 := image.Area{Index: 2, Start: 5 * mib, Size: 2 * mib, FSType: "raw"}
	random(5*mib, 5*mib+300<<10)
	random(diskSize-16<<10, diskSize)
	parts := []image.Area{p1, p2}
	return Disk{Data: b, Layout: image.Layout{DiskSize: diskSize, Partitions: parts, Regions: image.Gaps(diskSize, parts)}}
}

// Capture stores d's chunks in st and returns the manifest (unpublished).
func Capture(ctx context.Context, d Disk, st image.ChunkStore, name string) (*image.Manifest, error) {
	return image.Capture(ctx, bytes.NewReader(d.Data), d.Layout, st, image.CaptureOptions{Name: name, ChunkSize: chunkSize, Workers: 2})
}

// Restore restores m from st and checks every used byte equals d's.
func Restore(ctx context.Context, d Disk, m *image.Manifest, st image.ChunkStore) error {
	dst := &memDisk{b: bytes.Repeat([]byte{0xa5}, diskSize)}
	if err := image.Restore(ctx, dst, m, st, image.RestoreOptions{TargetSize: diskSize, Workers: 2}); err != nil {
		return err
	}
	n := 0
	for _, ar := range m.Areas() {
		for _, e := range ar.Used {
			s, end := ar.Start+e.Offset, ar.Start+e.Offset+e.Length
			if !bytes.Equal(d.Data[s:end], dst.b[s:end]) {
				return fmt.Errorf("%s: used extent [%d,+%d) differs after restore", ar.Label(), e.Offset, e.Length)
			}
			n++
		}
	}
	if n == 0 {
		return errors.New("no used extents compared")
	}
	return nil
}

type memDisk struct {
	mu sync.Mutex
	b  []byte
}

func (m *memDisk) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if off < 0 || off+int64(len(p)) > int64(len(m.b)) {
		return 0, fmt.Errorf("write [%d,+%d) past the disk", off, len(p))
	}
	return copy(m.b[off:], p), nil
}

// recording is a ChunkStore that records what it stores under a job, as
// the server's upload handler does (record first, then store).
type recording struct {
	*image.Repo
	job int64
}

func (r recording) Put(ctx context.Context, h image.Hash, data []byte) error {
	if err := r.Repo.RecordUploads(r.job, []image.Hash{h}); err != nil {
		return err
	}
	return r.Repo.Put(ctx, h, data)
}

func (r recording) Missing(ctx context.Context, hs []image.Hash) (map[image.Hash]struct{}, error) {
	miss, err := r.Repo.Missing(ctx, hs)
	if err != nil {
		return nil, err
	}
	var present []image.Hash
	for _, h := range hs {
		if _, ok := miss[h]; !ok {
			present = append(present, h)
		}
	}
	return miss, r.Repo.RecordUploads(r.job, present)
}

// Run runs every scenario on repositories from open.
func Run(t *testing.T, open Open) {
	t.Run("CaptureRestoreVersions", func(t *testing.T) { testCaptureRestoreVersions(t, open) })
	t.Run("ChunkObjects", func(t *testing.T) { testChunkObjects(t, open) })
	t.Run("PublishAtomic", func(t *testing.T) { testPublishAtomic(t, open) })
	t.Run("GCProtectsOpenJobs", func(t *testing.T) { testGCProtectsOpenJobs(t, open) })
	t.Run("GCWhileCaptureUploads", func(t *testing.T) { testGCWhileCapture(t, open) })
	t.Run("CorruptObjectDetected", func(t *testing.T) { testCorrupt(t, open) })
	t.Run("UsageAndQuota", func(t *testing.T) { testUsageQuota(t, open) })
	t.Run("MissingRenewsOldChunks", func(t *testing.T) { testMissingTouches(t, open) })
	t.Run("ConcurrentPublishTwoRepos", func(t *testing.T) { testConcurrentPublish(t, open) })
	t.Run("GCWhileConcurrentCaptures", func(t *testing.T) { testGCWhileConcurrentCaptures(t, open) })
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func publish(t *testing.T, repo *image.Repo, d Disk, name string) (*image.Manifest, int) {
	t.Helper()
	m, err := Capture(t.Context(), d, repo, name)
	must(t, err)
	v, err := repo.PublishVersion(t.Context(), m)
	must(t, err)
	return m, v
}

func testCaptureRestoreVersions(t *testing.T, open Open) {
	ctx := t.Context()
	repo := open(t, image.RepoOptions{GCGrace: -1})
	d1, d2 := NewDisk(1), NewDisk(2)
	m1, v1 := publish(t, repo, d1, "lab")
	if v1 != 1 {
		t.Fatalf("first publish: version %d", v1)
	}
	if v, err := repo.PublishVersion(ctx, m1); err != nil || v != 1 {
		t.Fatalf("retried publish: version %d, %v; want 1 (nothing added)", v, err)
	}
	_, v2 := publish(t, repo, d2, "lab")
	if v2 != 2 {
		t.Fatalf("second publish: version %d", v2)
	}
	names, err := repo.List()
	must(t, err)
	if len(names) != 1 || names[0] != "lab" {
		t.Fatalf("List = %v", names)
	}
	cur, err := repo.Manifest("lab")
	must(t, err)
	must(t, Restore(ctx, d2, cur, repo))
	old, err := repo.Manifest("lab@1")
	must(t, err)
	must(t, Restore(ctx, d1, old, repo))
	must(t, repo.Verify(ctx, "lab@1", 2))
	must(t, repo.Verify(ctx, "lab", 2))
	if v, err := repo.Rollback(ctx, "lab", 0); err != nil || v != 1 {
		t.Fatalf("rollback: %d, %v", v, err)
	}
	if _, v, err := repo.Resolve("lab"); err != nil || v != 1 {
		t.Fatalf("after rollback lab is @%d, %v", v, err)
	}
	vs, err := repo.Versions("lab")
	must(t, err)
	if len(vs) != 2 || !vs[0].Current || vs[1].Current {
		t.Fatalf("versions: %+v", vs)
	}
	must(t, repo.Remove(ctx, "lab@1"))
	if _, v, err := repo.Resolve("lab"); err != nil || v != 2 {
		t.Fatalf("after removing the current version lab is @%d, %v", v, err)
	}
	if _, err := repo.Manifest("lab@1"); !errors.Is(err, image.ErrNotFound) {
		t.Fatalf("removed version: %v", err)
	}
	_, v3 := publish(t, repo, d1, "lab")
	if v3 != 3 {
		t.Fatalf("publish after a removal: version %d, want 3 (numbers not reused)", v3)
	}
	must(t, repo.Remove(ctx, "lab"))
	if names, _ := repo.List(); len(names) != 0 {
		t.Fatalf("List after remove = %v", names)
	}
	if _, err := repo.Manifest("lab"); !errors.Is(err, image.ErrNotFound) {
		t.Fatalf("removed image: %v", err)
	}
	st, err := repo.GC(ctx)
	must(t, err)
	if st.Removed == 0 || st.Kept != 0 {
		t.Fatalf("GC after removing everything: %+v", st)
	}
}

func testChunkObjects(t *testing.T, open Open) {
	ctx := t.Context()
	repo := open(t, image.RepoOptions{GCGrace: -1})
	m, _ := publish(t, repo, NewDisk(3), "obj")
	h := m.ChunkHashes()[0]
	data, err := repo.Get(ctx, h, nil)
	must(t, err)
	must(t, image.VerifyChunk(h, data))
	f, size, err := repo.OpenChunk(ctx, h)
	must(t, err)
	var buf bytes.Buffer
	_, err = buf.ReadFrom(f)
	f.Close()
	must(t, err)
	if size != int64(len(data)) || !bytes.Equal(buf.Bytes(), data) {
		t.Fatalf("OpenChunk: %d bytes (size %d), Get: %d", buf.Len(), size, len(data))
	}
	must(t, repo.Put(ctx, h, data)) // present: a no-op
	absent := image.Sum([]byte("not stored"))
	if _, err := repo.Get(ctx, absent, nil); !errors.Is(err, image.ErrNotFound) {
		t.Fatalf("Get of an absent chunk: %v", err)
	}
	if _, _, err := repo.OpenChunk(ctx, absent); !errors.Is(err, image.ErrNotFound) {
		t.Fatalf("OpenChunk of an absent chunk: %v", err)
	}
	miss, err := repo.Missing(ctx, append(m.ChunkHashes(), absent))
	must(t, err)
	if _, ok := miss[absent]; !ok || len(miss) != 1 {
		t.Fatalf("Missing = %v, want only %s", miss, absent)
	}
}

// testPublishAtomic: a manifest with a chunk the repository lacks is
// refused and nothing appears; while versions are published, a reader
// that finds a manifest always finds every chunk it names.
func testPublishAtomic(t *testing.T, open Open) {
	ctx := t.Context()
	repo := open(t, image.RepoOptions{GCGrace: -1})
	d := NewDisk(4)
	m, err := Capture(ctx, d, repo, "atomic")
	must(t, err)
	bad := *m
	bad.Partitions = append([]image.Area(nil), m.Partitions...)
	bad.Partitions[0].Chunks = append([]image.Chunk(nil), m.Partitions[0].Chunks...)
	bad.Partitions[0].Chunks[0].Hash = image.Sum([]byte("never uploaded"))
	if _, err := repo.PublishVersion(ctx, &bad); !errors.Is(err, image.ErrMissingChunks) {
		t.Fatalf("publish with a missing chunk: %v, want ErrMissingChunks", err)
	}
	if names, _ := repo.List(); len(names) != 0 {
		t.Fatalf("a refused publish left %v", names)
	}
	if _, err := repo.Manifest("atomic"); !errors.Is(err, image.ErrNotFound) {
		t.Fatalf("a refused publish left a manifest: %v", err)
	}

	// Writers capture and publish new versions; a reader checks every
	// manifest it sees is complete.
	const versions = 4
	publish(t, repo, NewDisk(99), "atomic")
	done := make(chan struct{})
	var wg sync.WaitGroup
	var readErr error
	seen := 0
	wg.Go(func() {
		for i := 0; i < 100000; i++ {
			select {
			case <-done:
				return
			default:
			}
			got, err := repo.Manifest("atomic")
			if errors.Is(err, image.ErrNotFound) {
				continue
			}
			if err != nil {
				readErr = err
				return
			}
			seen++
			miss, err := repo.Missing(ctx, got.ChunkHashes())
			if err != nil {
				readErr = err
				return
			}
			if len(miss) != 0 {
				readErr = fmt.Errorf("manifest %s@? names %d chunks the repository lacks", got.Name, len(miss))
				return
			}
		}
	})
	for i := range versions - 1 {
		_, _ = publish(t, repo, NewDisk(uint64(100+i)), "atomic")
	}
	close(done)
	wg.Wait()
	must(t, readErr)
	vs, err := repo.VersionNumbers("atomic")
	must(t, err)
	if len(vs) != versions {
		t.Fatalf("versions %v, want %d", vs, versions)
	}
	t.Logf("reader checked %d manifests while %d versions were published", seen, versions)
}

func testGCProtectsOpenJobs(t *testing.T, open Open) {
	ctx := t.Context()
	var mu sync.Mutex
	openJobs := map[int64]bool{7: true}
	repo := open(t, image.RepoOptions{GCGrace: -1, OpenJob: func(_ context.Context, id int64) (bool, error) {
		mu.Lock()
		defer mu.Unlock()
		return openJobs[id], nil
	}})
	kept, _ := publish(t, repo, NewDisk(5), "kept")
	// Job 7 uploads an image it has not published yet.
	pending, err := Capture(ctx, NewDisk(6), recording{repo, 7}, "pending")
	must(t, err)
	// A stray upload without a record (an admin's) and no grace period.
	stray := NewDisk(8)
	_, err = Capture(ctx, stray, repo, "stray")
	must(t, err)
	st, err := repo.GC(ctx)
	must(t, err)
	if st.Removed == 0 || st.Protected == 0 {
		t.Fatalf("GC: %+v, want the stray chunks removed and job 7's protected", st)
	}
	must(t, repo.Verify(ctx, "kept", 2))
	miss, err := repo.Missing(ctx, pending.ChunkHashes())
	must(t, err)
	if len(miss) != 0 {
		t.Fatalf("GC removed %d chunks of open job 7", len(miss))
	}
	// The job publishes; its record goes.
	_, err = repo.PublishVersion(ctx, pending)
	must(t, err)
	must(t, repo.DropUploads(7))
	if hs, err := repo.Uploads(7); err != nil || len(hs) != 0 {
		t.Fatalf("record after drop: %d, %v", len(hs), err)
	}
	// Job 9 uploads, then fails: GC frees what it left.
	_, err = Capture(ctx, NewDisk(9), recording{repo, 9}, "failed")
	must(t, err)
	hs, err := repo.Uploads(9)
	must(t, err)
	if len(hs) == 0 {
		t.Fatal("job 9 recorded nothing")
	}
	st, err = repo.GC(ctx)
	must(t, err)
	if st.RecordsDropped != 1 || st.Removed == 0 {
		t.Fatalf("GC after job 9 ended: %+v", st)
	}
	if hs, _ := repo.Uploads(9); len(hs) != 0 {
		t.Fatalf("job 9's record survived GC: %d", len(hs))
	}
	must(t, repo.Verify(ctx, "kept", 2))
	must(t, repo.Verify(ctx, "pending", 2))
	_ = kept

	// With a grace period, a fresh unreferenced chunk is kept.
	graced := open(t, image.RepoOptions{GCGrace: 0})
	_, err = Capture(ctx, NewDisk(10), graced, "young")
	must(t, err)
	st, err = graced.GC(ctx)
	must(t, err)
	if st.Removed != 0 || st.Protected == 0 {
		t.Fatalf("GC with a grace period: %+v, want young chunks protected", st)
	}
}

// testGCWhileCapture runs GC in a loop while a job captures (recording
// its uploads) and publishes: the published image verifies.
func testGCWhileCapture(t *testing.T, open Open) {
	ctx := t.Context()
	repo := open(t, image.RepoOptions{GCGrace: -1, OpenJob: func(context.Context, int64) (bool, error) { return true, nil }})
	publish(t, repo, NewDisk(11), "base") // shares chunks with nothing in particular
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var gcErr error
	runs := 0
	wg.Go(func() {
		for i := 0; i < 200; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := repo.GC(ctx); err != nil {
				gcErr = err
				return
			}
			runs++
		}
	})
	m, err := Capture(ctx, NewDisk(12), recording{repo, 21}, "live")
	if err == nil {
		_, err = repo.PublishVersion(ctx, m)
	}
	close(stop)
	wg.Wait()
	must(t, err)
	must(t, gcErr)
	must(t, repo.DropUploads(21))
	must(t, repo.Verify(ctx, "live", 2))
	must(t, repo.Verify(ctx, "base", 2))
	t.Logf("%d GC runs during the capture", runs)
}

// testCorrupt damages a stored chunk object through the backend: reads
// report ErrCorruptChunk (Verify, Restore), not success.
func testCorrupt(t *testing.T, open Open) {
	ctx := t.Context()
	repo := open(t, image.RepoOptions{GCGrace: -1})
	d := NewDisk(13)
	m, _ := publish(t, repo, d, "damaged")
	c := m.Partitions[0].Chunks[0]
	good, err := repo.Get(ctx, c.Hash, nil)
	must(t, err)
	s := c.Hash.String()
	key := "chunks/" + s[:2] + "/" + s
	for _, mode := range []string{"flipped", "truncated"} {
		bad := bytes.Clone(good)
		switch mode {
		case "flipped":
			bad[len(bad)/2] ^= 0x40
		case "truncated":
			bad = bad[:len(bad)/2]
		}
		must(t, repo.Backend().Put(ctx, key, bad))
		if err := repo.Verify(ctx, "damaged", 2); !errors.Is(err, image.ErrCorruptChunk) {
			t.Fatalf("%s: Verify = %v, want ErrCorruptChunk", mode, err)
		}
		err := Restore(ctx, d, m, repo)
		var ce *image.ChunkError
		if !errors.Is(err, image.ErrCorruptChunk) || !errors.As(err, &ce) || ce.Hash != c.Hash {
			t.Fatalf("%s: Restore = %v, want ErrCorruptChunk naming %s", mode, err, c.Hash)
		}
	}
	must(t, repo.Backend().Put(ctx, key, good))
	must(t, repo.Verify(ctx, "damaged", 2))
}

func testUsageQuota(t *testing.T, open Open) {
	ctx := t.Context()
	repo := open(t, image.RepoOptions{GCGrace: -1})
	m1, _ := publish(t, repo, NewDisk(14), "a")
	publish(t, repo, NewDisk(15), "b")
	u, err := repo.Usage(ctx)
	must(t, err)
	if len(u.Images) != 2 || u.Chunks == 0 || u.StoredBytes == 0 || u.GarbageBytes != 0 {
		t.Fatalf("usage: %+v", u)
	}
	if u.Images[0].Chunks != len(uniq(m1.ChunkHashes())) {
		t.Fatalf("usage of a: %d chunks, manifest has %d", u.Images[0].Chunks, len(uniq(m1.ChunkHashes())))
	}
	// A repository limited to what it holds refuses a new chunk.
	limited := open(t, image.RepoOptions{GCGrace: -1, MaxBytes: 64 << 10})
	_, err = Capture(ctx, NewDisk(16), limited, "big")
	if !errors.Is(err, image.ErrQuota) {
		t.Fatalf("capture past the quota: %v, want ErrQuota", err)
	}
}

func uniq(hs []image.Hash) map[image.Hash]struct{} {
	out := make(map[image.Hash]struct{})
	for _, h := range hs {
		out[h] = struct{}{}
	}
	return out
}

// testMissingTouches: a capture told a chunk is present renews the
// chunk's modification time once it is older than half the grace period,
// so a GC running before the capture publishes keeps it.
func testMissingTouches(t *testing.T, open Open) {
	ctx := t.Context()
	repo := open(t, image.RepoOptions{GCGrace: 2 * time.Second})
	m, err := Capture(ctx, NewDisk(17), repo, "touched")
	must(t, err)
	h := m.ChunkHashes()[0]
	s := h.String()
	key := "chunks/" + s[:2] + "/" + s
	before, err := repo.Backend().Stat(ctx, key)
	must(t, err)
	// Object stores keep LastModified in whole seconds: wait past one and
	// past half the grace period.
	time.Sleep(1100 * time.Millisecond)
	miss, err := repo.Missing(ctx, []image.Hash{h})
	must(t, err)
	if len(miss) != 0 {
		t.Fatalf("Missing = %v", miss)
	}
	after, err := repo.Backend().Stat(ctx, key)
	must(t, err)
	if !after.ModTime.After(before.ModTime) {
		t.Fatalf("chunk time %v after Missing, was %v: not renewed", after.ModTime, before.ModTime)
	}
	if after.Size != before.Size {
		t.Fatalf("touch changed the size: %d -> %d", before.Size, after.Size)
	}
	_, err = repo.PublishVersion(ctx, m)
	must(t, err)
	must(t, repo.Verify(ctx, "touched", 1))
}

// testConcurrentPublish: two Repos on the same backend (two servers on
// one bucket or directory, each with its own in-process locks) publish
// versions of one image name at the same moment, several rounds, with a
// rollback and a version removal racing them: every publish succeeds with
// its own version number, every manifest is found whole at the number its
// publish returned (none overwritten), numbers are never reused, and the
// current version is the highest.
func testConcurrentPublish(t *testing.T, open Open) {
	ctx := t.Context()
	a := open(t, image.RepoOptions{GCGrace: -1})
	b := image.OpenRepoBackend(a.Backend(), image.RepoOptions{GCGrace: -1})
	m, err := Capture(ctx, NewDisk(30), a, "race")
	must(t, err)
	const rounds, perRepo = 3, 4
	type result struct {
		id  string
		v   int
		err error
	}
	got := make(map[int]string) // version -> publisher id
	total := 0
	for round := range rounds {
		start := make(chan struct{})
		results := make(chan result, 2*perRepo+1)
		var wg sync.WaitGroup
		for i := range 2 * perRepo {
			repo := a
			if i%2 == 1 {
				repo = b
			}
			id := fmt.Sprintf("round %d publisher %d", round, i)
			mi := *m
			mi.Source = map[string]string{"publisher": id}
			wg.Go(func() {
				<-start
				v, err := repo.PublishVersion(ctx, &mi)
				results <- result{id, v, err}
			})
		}
		if round > 0 {
			// An administrator on server b rolls back meanwhile.
			wg.Go(func() {
				<-start
				to, err := b.Rollback(ctx, "race", 0)
				if errors.Is(err, image.ErrNoVersion) {
					err = nil
				}
				results <- result{"rollback", to, err}
			})
		}
		close(start)
		wg.Wait()
		close(results)
		rolledTo := -1
		for r := range results {
			if r.err != nil {
				t.Fatalf("%s: %v", r.id, r.err)
			}
			if r.id == "rollback" {
				rolledTo = r.v
				continue
			}
			if prev, dup := got[r.v]; dup {
				t.Fatalf("%s and %s both got version %d", prev, r.id, r.v)
			}
			got[r.v] = r.id
			total++
		}
		// After the round the highest version is current, or the one
		// the racing rollback chose if it came after every publish.
		vs, err := a.VersionNumbers("race")
		must(t, err)
		if _, cur, err := b.Resolve("race"); err != nil || (cur != vs[len(vs)-1] && cur != rolledTo) {
			t.Fatalf("round %d: current is @%d (%v), versions %v, rollback to @%d: want the highest current", round, cur, err, vs, rolledTo)
		}
		if round == 1 {
			// Remove a version that is not current: its number is
			// never given again.
			must(t, a.Remove(ctx, image.Ref("race", vs[0])))
			delete(got, vs[0])
			total--
		}
	}
	vs, err := b.VersionNumbers("race")
	must(t, err)
	if len(vs) != total || len(got) != total {
		t.Fatalf("versions %v, want %d (publishes returned %v)", vs, total, got)
	}
	for _, v := range vs {
		mv, err := a.Manifest(image.Ref("race", v))
		must(t, err)
		if mv.Source["publisher"] != got[v] {
			t.Fatalf("version %d holds the manifest of %q, its publish was %q: overwritten", v, mv.Source["publisher"], got[v])
		}
	}
	if vs[0] != 2 || vs[len(vs)-1] != rounds*2*perRepo {
		t.Fatalf("versions %v: want 2..%d (1 removed, none reused)", vs, rounds*2*perRepo)
	}
	must(t, a.Verify(ctx, "race", 2))
}

// testGCWhileConcurrentCaptures: GC runs in a loop while two jobs capture
// at once (each recording its uploads first, as the server's upload
// handler does) and then publish concurrently: both images verify, and GC
// was not idle (it removed the stray chunks no job recorded).
func testGCWhileConcurrentCaptures(t *testing.T, open Open) {
	ctx := t.Context()
	repo := open(t, image.RepoOptions{GCGrace: -1, OpenJob: func(context.Context, int64) (bool, error) { return true, nil }})
	publish(t, repo, NewDisk(40), "base")
	const strays = 8
	for i := range strays {
		data := []byte(fmt.Sprintf("stray chunk %d, recorded by no job", i))
		must(t, repo.Put(ctx, image.Sum(data), data))
	}
	stop := make(chan struct{})
	var gcWG, wg sync.WaitGroup
	var gcErr error
	removed, runs := 0, 0
	gcWG.Go(func() {
		for i := 0; i < 200; i++ {
			select {
			case <-stop:
				return
			default:
			}
			st, err := repo.GC(ctx)
			if err != nil {
				gcErr = err
				return
			}
			removed += st.Removed
			runs++
		}
	})
	errs := make([]error, 2)
	for i := range 2 {
		wg.Go(func() {
			name := fmt.Sprintf("live%d", i)
			m, err := Capture(ctx, NewDisk(uint64(41+i)), recording{repo, int64(31 + i)}, name)
			if err == nil {
				_, err = repo.PublishVersion(ctx, m)
			}
			errs[i] = err
		})
	}
	wg.Wait()
	close(stop)
	gcWG.Wait()
	must(t, errors.Join(errs...))
	must(t, gcErr)
	if runs == 0 {
		t.Fatal("GC never ran during the captures")
	}
	if _, err := repo.GC(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		must(t, repo.Verify(ctx, fmt.Sprintf("live%d", i), 2))
		must(t, repo.DropUploads(int64(31+i)))
	}
	must(t, repo.Verify(ctx, "base", 2))
	u, err := repo.Usage(ctx)
	must(t, err)
	if u.GarbageBytes != 0 {
		t.Fatalf("after GC %d garbage bytes remain: the stray chunks were not removed", u.GarbageBytes)
	}
	t.Logf("%d GC runs during two concurrent captures removed %d chunks", runs, removed)
}
