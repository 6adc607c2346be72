package image

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/preboot/preboot/disk"
)

// published captures d into a fresh repo and returns both.
func published(t *testing.T, seed uint64) (testDisk, *Repo, *Manifest) {
	t.Helper()
	d := buildExt4Disk(t, t.TempDir(), seed)
	repo := openRepo(t)
	m, _ := capture(t, d.path, d.layout, repo, "img")
	if err := repo.Publish(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	return d, repo, m
}

func TestRestoreCorruptOrTruncatedChunk(t *testing.T) {
	ctx := context.Background()
	for _, mode := range []string{"corrupt", "truncate", "missing"} {
		t.Run(mode, func(t *testing.T) {
			_, repo, m := published(t, 5)
			// Damage the stored chunk of the first ext4 window.
			c := m.Partitions[0].Chunks[0]
			p := repo.chunkPath(c.Hash)
			data, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			switch mode {
			case "corrupt":
				data[len(data)/2] ^= 0x55
				err = os.WriteFile(p, data, 0o644)
			case "truncate":
				err = os.WriteFile(p, data[:len(data)/2], 0o644)
			case "missing":
				err = os.Remove(p)
			}
			if err != nil {
				t.Fatal(err)
			}
			vErr := repo.Verify(ctx, "img", 0)
			if vErr == nil || !strings.Contains(vErr.Error(), c.Hash.String()) || !strings.Contains(vErr.Error(), "partition 1") {
				t.Fatalf("verify: %v", vErr)
			}
			dst := garbageFile(t, filepath.Join(t.TempDir(), "dst"), m.Disk.Size)
			cw := newCounting(dst)
			err = Restore(ctx, cw, m, repo, RestoreOptions{TargetSize: m.Disk.Size})
			if err == nil {
				t.Fatal("restore succeeded with a damaged chunk")
			}
			t.Log(err)
			if !strings.Contains(err.Error(), c.Hash.String()) || !strings.Contains(err.Error(), "partition 1") {
				t.Fatalf("error does not name the chunk and partition: %v", err)
			}
			bad := m.Partitions[0].Start + c.Offset
			if mode == "missing" {
				if !errors.Is(err, ErrMissingChunks) || cw.n != 0 {
					t.Fatalf("missing chunk: %v after %d bytes written", err, cw.n)
				}
				return
			}
			var ce *ChunkError
			if !errors.As(err, &ce) || !errors.Is(err, ErrCorruptChunk) {
				t.Fatalf("want a ChunkError wrapping ErrCorruptChunk, got %v", err)
			}
			if cw.maxEnd > bad {
				t.Fatalf("restore wrote up to %d, past the bad chunk at %d", cw.maxEnd, bad)
			}
		})
	}
}

func TestRestoreRefusesSmallDisk(t *testing.T) {
	_, repo, m := published(t, 6)
	dst := garbageFile(t, filepath.Join(t.TempDir(), "dst"), 1)
	cw := newCounting(dst)
	err := Restore(context.Background(), cw, m, repo, RestoreOptions{TargetSize: m.Disk.Size - 512})
	if !errors.Is(err, ErrTargetTooSmall) || cw.writes != 0 {
		t.Fatalf("restore onto a smaller disk: %v, %d writes", err, cw.writes)
	}
	if !strings.Contains(err.Error(), "64.0 MiB") {
		t.Fatalf("message should give the sizes: %v", err)
	}
}

func TestRestoreLargerDiskWithTable(t *testing.T) {
	ctx := context.Background()
	d, repo, m := published(t, 7)
	path := filepath.Join(t.TempDir(), "big")
	big := garbageFile(t, path, m.Disk.Size+8*mib)
	before := make([]byte, 512)
	if _, err := big.ReadAt(before, m.Disk.Size-512); err != nil {
		t.Fatal(err)
	}
	err := Restore(ctx, big, m, repo, RestoreOptions{
		TargetSize:  m.Disk.Size + 8*mib,
		SkipRegions: []string{"tail"},
		WriteTable: func(ctx context.Context, w io.WriterAt) error {
			_, err := w.WriteAt([]byte("TABLE"), 446)
			return err
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	after := make([]byte, 512)
	if _, err := big.ReadAt(after, m.Disk.Size-512); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Fatal("skipped region \"tail\" was written")
	}
	head := make([]byte, 5)
	if _, err := big.ReadAt(head, 446); err != nil || string(head) != "TABLE" {
		t.Fatalf("WriteTable result missing: %q %v", head, err)
	}
	checkExt4(t, path, d)
}

// lies returns manifests that each lie in one way.
func lies(good *Manifest) map[string]*Manifest {
	clone := func() *Manifest {
		var b bytes.Buffer
		if err := good.Encode(&b); err != nil {
			panic(err)
		}
		var m Manifest
		if err := json.Unmarshal(b.Bytes(), &m); err != nil {
			panic(err)
		}
		return &m
	}
	out := map[string]*Manifest{}
	add := func(name string, f func(m *Manifest)) {
		m := clone()
		f(m)
		out[name] = m
	}
	add("extent beyond partition", func(m *Manifest) {
		p := &m.Partitions[0]
		p.Used[len(p.Used)-1].Length = p.Size
	})
	add("partition beyond disk", func(m *Manifest) { m.Partitions[1].Size += 16 * mib })
	add("chunk length mismatch", func(m *Manifest) { m.Partitions[0].Chunks[0].Length -= 4096 })
	add("chunk offset unaligned", func(m *Manifest) { m.Partitions[0].Chunks[0].Offset += 4096 })
	add("missing chunk", func(m *Manifest) { m.Partitions[0].Chunks = m.Partitions[0].Chunks[1:] })
	add("extra chunk", func(m *Manifest) {
		p := &m.Partitions[0]
		p.Chunks = append(p.Chunks, Chunk{Offset: p.Size - 4096, Length: 4096, Zero: true})
	})
	add("overlapping partitions", func(m *Manifest) { m.Partitions[1].Start -= mib })
	add("region overlaps partition", func(m *Manifest) { m.Regions[0].Size += 4096 })
	add("unsorted extents", func(m *Manifest) {
		p := &m.Partitions[0]
		p.Used = append(p.Used, disk.Extent{Offset: 0, Length: 512})
	})
	add("negative extent", func(m *Manifest) { m.Partitions[0].Used[0].Length = -1 })
	add("used size lie", func(m *Manifest) { m.Sizes.Used++ })
	add("logical size lie", func(m *Manifest) { m.Sizes.Logical = 1 })
	add("bad name", func(m *Manifest) { m.Name = "../etc" })
	add("version", func(m *Manifest) { m.Version = 2 })
	add("chunk size", func(m *Manifest) { m.ChunkSize = 1000 })
	add("hash and zero", func(m *Manifest) { m.Partitions[0].Chunks[0].Zero = true })
	add("huge disk", func(m *Manifest) { m.Disk.Size = 1 << 62; m.Sizes.Logical = 1 << 62 })
	add("duplicate partition", func(m *Manifest) { m.Partitions[1].Index = m.Partitions[0].Index })
	return out
}

func TestManifestLies(t *testing.T) {
	_, repo, m := published(t, 8)
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, lie := range lies(m) {
		t.Run(name, func(t *testing.T) {
			if err := lie.Validate(); err == nil {
				t.Fatal("Validate accepted the lie")
			} else {
				t.Log(err)
			}
			dst := garbageFile(t, filepath.Join(t.TempDir(), "dst"), 1)
			cw := newCounting(dst)
			if err := Restore(context.Background(), cw, lie, repo, RestoreOptions{TargetSize: 1 << 40}); err == nil || cw.writes != 0 {
				t.Fatalf("restore of a lying manifest: %v after %d writes", err, cw.writes)
			}
			if err := repo.Publish(context.Background(), lie); err == nil {
				t.Fatal("published a lying manifest")
			}
		})
	}
}

// TestCaptureRepositoryFull captures onto a repository on an 8 MiB tmpfs:
// the capture fails with ENOSPC, publishes nothing, and an image stored
// before stays intact.
func TestCaptureRepositoryFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs")
	}
	ctx := context.Background()
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v %s", mnt, err, out)
		}
	})
	repo, err := OpenRepo(mnt, RepoOptions{GCGrace: -1})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	small := filepath.Join(dir, "small")
	mk := func(path string, size int64, seed uint64) {
		rng := rand.New(rand.NewPCG(seed, 0))
		b := make([]byte, size)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mk(small, 2*mib, 1)
	l := func(size int64) Layout {
		return Layout{DiskSize: size, Partitions: []Area{{Index: 1, Start: 0, Size: size, FSType: "raw"}}}
	}
	m1, _ := capture(t, small, l(2*mib), repo, "small")
	if err := repo.Publish(ctx, m1); err != nil {
		t.Fatal(err)
	}
	bigPath := filepath.Join(dir, "big")
	mk(bigPath, 32*mib, 2) // incompressible: cannot fit
	f, err := os.Open(bigPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m2, err := Capture(ctx, f, l(32*mib), repo, CaptureOptions{Name: "big"})
	if err == nil {
		t.Fatalf("capture onto a full repository succeeded: %+v", m2.Sizes)
	}
	t.Log(err)
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("want ENOSPC, got %v", err)
	}
	if names, _ := repo.List(); len(names) != 1 || names[0] != "small" {
		t.Fatalf("images after the failed capture: %v", names)
	}
	if err := repo.Verify(ctx, "small", 0); err != nil {
		t.Fatalf("stored image damaged: %v", err)
	}
	// No temporary files left behind.
	var tmps []string
	_ = repo.walkChunks(ctx, func(_ Hash, ok bool, oi ObjectInfo) error {
		if !ok {
			tmps = append(tmps, oi.Key)
		}
		return nil
	})
	if len(tmps) != 0 {
		t.Fatalf("temporary files left: %v", tmps)
	}
}

func TestNormalizeAndWindows(t *testing.T) {
	es := NormalizeExtents([]disk.Extent{{Offset: 100, Length: 10}, {Offset: 0, Length: 50}, {Offset: 40, Length: 20}, {Offset: 110, Length: 5}, {Offset: 7, Length: 0}})
	want := []disk.Extent{{Offset: 0, Length: 60}, {Offset: 100, Length: 15}}
	if len(es) != 2 || es[0] != want[0] || es[1] != want[1] {
		t.Fatalf("normalize: %v", es)
	}
	// One extent spanning three windows plus one in the last.
	var got []string
	forEachWindow([]disk.Extent{{Offset: 10, Length: 250}, {Offset: 290, Length: 5}}, 300, 100, func(off, length int64, in []disk.Extent) bool {
		got = append(got, strings.TrimSpace(strings.Repeat(" ", 0)+
			func() string { b, _ := json.Marshal([]any{off, length, in}); return string(b) }()))
		return true
	})
	exp := []string{
		`[0,100,[{"offset":10,"length":90}]]`,
		`[100,100,[{"offset":0,"length":100}]]`,
		`[200,100,[{"offset":0,"length":60},{"offset":90,"length":5}]]`,
	}
	if strings.Join(got, "\n") != strings.Join(exp, "\n") {
		t.Fatalf("windows:\n%s", strings.Join(got, "\n"))
	}
}
