package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/preboot/preboot/disk"
	"github.com/preboot/preboot/image"
)

// likeSource partitions a new file of size bytes with the table script
// buildDisk uses for kind (partition 2 up to the end, so only a disk of
// the source's size matches) and fills both partitions with a pattern.
func likeSource(t *testing.T, path, kind string, size int64, script string) *disk.Table {
	t.Helper()
	dataFile(t, path, size, 77) // garbage everywhere, table written over it
	if script == "" {
		script = "label: dos\nstart=2048, size=32768, type=6, bootable\nstart=34816, type=83\n"
		if kind == "gpt" {
			script = "label: gpt\nstart=2048, size=32768, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7\nstart=34816, type=0FC63DAF-8379-4772-8475-0DE4C7BC3AC1\n"
		}
	}
	run(t, script, "sfdisk", "-q", "--wipe", "never", path)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tbl, err := disk.ReadTable(f, size)
	if err != nil {
		t.Fatal(err)
	}
	return tbl
}

// checkExtPart checks partition 2 of path holds the source's ext4 files.
func checkExtPart(t *testing.T, d *testDisk, path string) {
	t.Helper()
	extImg := extract(t, path, d.ext[0], d.ext[1])
	run(t, "", "e2fsck", "-fn", extImg)
	outDir := t.TempDir()
	for name, want := range d.files {
		ef := filepath.Join(outDir, strings.ReplaceAll(name, "/", "_"))
		run(t, "", "debugfs", "-R", fmt.Sprintf("dump /%s %s", name, ef), extImg)
		if got := fileSum(t, ef); got != sum(want) {
			t.Errorf("%s: checksum %s, want %s", name, got, sum(want))
		}
	}
}

// TestRestorePartitionsAgent restores only partition 2 (ext4) of an image
// onto a disk already partitioned like it, as a file and as a loop device:
// the table, partition 1 and the rest stay byte for byte; the image-safe
// record notes the image. A disk partitioned differently is refused before
// anything is written.
func TestRestorePartitionsAgent(t *testing.T) {
	for _, kind := range []string{"mbr", "gpt"} {
		t.Run(kind, func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			d := buildDisk(t, dir, kind, 64*MiB)
			_, st := newRepo(t)
			m, err := Capture(ctx, Options{Device: d.path, Image: "parts-" + kind, Store: st})
			if err != nil {
				t.Fatal(err)
			}
			for _, target := range []string{"file", "loop"} {
				t.Run(target, func(t *testing.T) {
					if target == "loop" {
						needRoot(t)
					}
					dst := filepath.Join(t.TempDir(), "dst.img")
					likeSource(t, dst, kind, 64*MiB, "")
					if target == "file" {
						// A blank image-safe area gets a record; on the
						// loop disk it holds foreign bytes, left alone.
						f, err := os.OpenFile(dst, os.O_RDWR, 0)
						if err != nil {
							t.Fatal(err)
						}
						_, err = f.WriteAt(make([]byte, ImageSafeSize), ImageSafeOffset)
						f.Close()
						if err != nil {
							t.Fatal(err)
						}
					}
					before, _ := os.ReadFile(dst)
					dev := dst
					if target == "loop" {
						dev = attachLoop(t, dst)
					}
					var pl progressLog
					if _, err := Restore(ctx, Options{Device: dev, Image: m.Name, Store: st, Partitions: []int{2}, Progress: pl.fn}); err != nil {
						t.Fatal(err)
					}
					if target == "loop" {
						detachLoop(t, dev)
					}
					after, _ := os.ReadFile(dst)
					p2 := m.Partition(2)
					isLo, isHi := int64(ImageSafeOffset), int64(ImageSafeOffset+ImageSafeSize)
					if !bytes.Equal(after[:isLo], before[:isLo]) || !bytes.Equal(after[isHi:p2.Start], before[isHi:p2.Start]) {
						t.Error("bytes before partition 2 (table, boot code, partition 1) changed")
					}
					if !bytes.Equal(after[p2.Start+p2.Size:], before[p2.Start+p2.Size:]) {
						t.Error("bytes after partition 2 (GPT backup) changed")
					}
					checkExtPart(t, d, dst)
					checkTable(t, kind, dst)
					var used int64
					for _, e := range p2.Used {
						used += e.Length
					}
					if pl.last.Total != used || pl.last.Done != used {
						t.Errorf("progress %d of %d bytes: want partition 2's %d used bytes only (image %d)",
							pl.last.Done, pl.last.Total, used, m.Sizes.Used)
					}
					rec, err := ReadImageSafe(dst)
					switch {
					case target == "file" && (err != nil || rec.LastImage != m.Name):
						t.Errorf("image-safe %+v %v", rec, err)
					case target == "loop" && !bytes.Equal(after[isLo:isHi], before[isLo:isHi]):
						t.Error("foreign bytes in the image-safe area were overwritten")
					}
				})
			}

			t.Run("mismatch", func(t *testing.T) {
				dst := filepath.Join(t.TempDir(), "dst.img")
				// Same partitions on a bigger disk: partition 2 is larger.
				likeSource(t, dst, kind, 80*MiB, "")
				before := fileSum(t, dst)
				_, err := Restore(ctx, Options{Device: dst, Image: m.Name, Store: st, Partitions: []int{1, 2}})
				if !errors.Is(err, image.ErrTableMismatch) || !strings.Contains(err.Error(), "partition 2:") ||
					strings.Contains(err.Error(), "partition 1:") || !strings.Contains(err.Error(), "nothing was written") {
					t.Errorf("err %v", err)
				}
				if fileSum(t, dst) != before {
					t.Error("a refused partition restore changed the disk")
				}
				// A blank disk has no table at all.
				blank := filepath.Join(t.TempDir(), "blank.img")
				makeFile(t, blank, 64*MiB)
				if _, err := Restore(ctx, Options{Device: blank, Image: m.Name, Store: st, Partitions: []int{1}}); !errors.Is(err, image.ErrTableMismatch) {
					t.Errorf("blank disk: %v", err)
				}
				if b, _ := os.ReadFile(blank); bytes.IndexFunc(b, func(r rune) bool { return r != 0 }) >= 0 {
					t.Error("a refused partition restore wrote to the blank disk")
				}
			})
		})
	}
}
