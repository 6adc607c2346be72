package image

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/preboot/preboot/disk"
)

// partitionedTarget makes a 64 MiB file of garbage with a real MBR table
// (sfdisk) and returns it open with the table read back.
func partitionedTarget(t *testing.T, script string) (string, *os.File, *disk.Table) {
	t.Helper()
	if _, err := exec.LookPath("sfdisk"); err != nil {
		t.Skip("sfdisk not installed (fdisk)")
	}
	path := filepath.Join(t.TempDir(), "target")
	f := garbageFile(t, path, 64*mib)
	cmd := exec.Command("sfdisk", "-q", "--no-reread", "--wipe", "never", path)
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, out)
	}
	tbl, err := disk.ReadTable(f, 64*mib)
	if err != nil {
		t.Fatal(err)
	}
	return path, f, tbl
}

func fileBytes(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRestorePartitions restores only partition 1 of an image onto a disk
// partitioned like the image: the ext4 filesystem comes back, every byte
// outside it (table, boot code, gaps, partition 2) stays as it was.
func TestRestorePartitions(t *testing.T) {
	ctx := context.Background()
	d, repo, m := published(t, 11)
	// The image's partitions: 1 = [1 MiB, +40 MiB), 2 = [41 MiB, +16 MiB).
	const same = "label: dos\nstart=2048, size=81920, type=83\nstart=83968, size=32768, type=83\n"
	path, f, tbl := partitionedTarget(t, same)
	before := fileBytes(t, path)

	var last Progress
	cw := newCounting(f)
	err := Restore(ctx, cw, m, repo, RestoreOptions{TargetSize: 64 * mib, Partitions: []int{1}, TargetTable: tbl,
		Progress: func(p Progress) { last = p }})
	if err != nil {
		t.Fatal(err)
	}
	p1 := m.Partition(1)
	if cw.minOff < p1.Start || cw.maxEnd > p1.Start+p1.Size {
		t.Errorf("writes span [%d, %d), outside partition 1 [%d, %d)", cw.minOff, cw.maxEnd, p1.Start, p1.Start+p1.Size)
	}
	if last.Total != extentBytes(p1.Used) || last.Done != last.Total || last.ChunksTotal != int64(len(p1.Chunks)) {
		t.Errorf("progress %+v: want only partition 1's %d used bytes in %d chunks", last, extentBytes(p1.Used), len(p1.Chunks))
	}
	after := fileBytes(t, path)
	if !bytes.Equal(after[:p1.Start], before[:p1.Start]) {
		t.Error("the bytes before partition 1 (table, boot code) changed")
	}
	if !bytes.Equal(after[p1.Start+p1.Size:], before[p1.Start+p1.Size:]) {
		t.Error("the bytes after partition 1 (partition 2, tail) changed")
	}
	checkExt4(t, path, d)

	// Both partitions: partition 2's used bytes come back too, the table
	// and boot code still are the target's.
	if err := Restore(ctx, f, m, repo, RestoreOptions{TargetSize: 64 * mib, Partitions: []int{2, 1}, TargetTable: tbl}); err != nil {
		t.Fatal(err)
	}
	sameUsed(t, &Manifest{Partitions: m.Partitions}, f, mustOpen(t, d.path))
	if got := fileBytes(t, path); !bytes.Equal(got[:p1.Start], before[:p1.Start]) {
		t.Error("a two-partition restore changed the bytes before partition 1")
	}
}

func mustOpen(t *testing.T, path string) *os.File {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// TestRestorePartitionsRefused: a table that does not match, a partition
// the image lacks, or no target table: an error that says so, no write.
func TestRestorePartitionsRefused(t *testing.T) {
	ctx := context.Background()
	_, repo, m := published(t, 12)
	cases := []struct {
		name, script string
		parts        []int
		noTable      bool
		want         []string
	}{
		{"other size", "label: dos\nstart=2048, size=81000, type=83\nstart=83968, size=32768, type=83\n", []int{1},
			false, []string{"partition 1", "starts at byte 1048576 and holds 41943040 bytes", "holds 41472000 bytes", "nothing was written"}},
		{"other start", "label: dos\nstart=4096, size=81920, type=83\n", []int{1}, false, []string{"on the target it starts at byte 2097152"}},
		{"missing on target", "label: dos\nstart=2048, size=81920, type=83\n", []int{1, 2}, false, []string{"partition 2: the target's mbr table has no such partition"}},
		{"missing in image", "label: dos\nstart=2048, size=81920, type=83\n", []int{3}, false, []string{"the image has no partition 3 (its partitions: [1 2])"}},
		{"listed twice", "label: dos\nstart=2048, size=81920, type=83\n", []int{1, 1}, false, []string{"listed twice"}},
		{"no table", "label: dos\nstart=2048, size=81920, type=83\n", []int{1}, true, []string{"needs the target's partition table"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path, f, tbl := partitionedTarget(t, c.script)
			if c.noTable {
				tbl = nil
			}
			before := fileBytes(t, path)
			cw := newCounting(f)
			err := Restore(ctx, cw, m, repo, RestoreOptions{TargetSize: 64 * mib, Partitions: c.parts, TargetTable: tbl})
			if err == nil {
				t.Fatal("restore succeeded")
			}
			if !c.noTable && !errors.Is(err, ErrTableMismatch) {
				t.Errorf("error %v does not wrap ErrTableMismatch", err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if cw.writes != 0 || !bytes.Equal(fileBytes(t, path), before) {
				t.Errorf("refused restore wrote %d times", cw.writes)
			}
		})
	}
	// A whole-disk table (kind none) never matches.
	if err := MatchPartitions(m, &disk.Table{Kind: "none", Partitions: []disk.Partition{{Index: 0, Size: 64 * mib}}}, []int{1}); !errors.Is(err, ErrTableMismatch) ||
		!strings.Contains(err.Error(), "no partition table") {
		t.Errorf("kind none: %v", err)
	}
	// Options that only make sense for a whole-disk restore are refused.
	if err := Restore(ctx, newCounting(nil), m, repo, RestoreOptions{TargetSize: 64 * mib, Partitions: []int{1},
		TargetTable: &disk.Table{Kind: "mbr"}, SkipRegions: []string{"tail"}}); err == nil || !strings.Contains(err.Error(), "leaves the partition table alone") {
		t.Errorf("partitions with SkipRegions: %v", err)
	}
}
