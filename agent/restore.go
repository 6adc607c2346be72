package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/preboot/preboot/disk"
	"github.com/preboot/preboot/image"
)

// ErrTargetTooSmall is returned (wrapping image.ErrTargetTooSmall) when the
// target disk is smaller than the image's disk; nothing is written then.
var ErrTargetTooSmall = image.ErrTargetTooSmall

func fetchManifest(ctx context.Context, opts Options) (*image.Manifest, error) {
	if opts.Manifest != nil {
		return opts.Manifest, nil
	}
	if err := image.ValidRef(opts.Image); err != nil { // NAME or NAME@VERSION
		return nil, err
	}
	switch s := opts.Store.(type) {
	case ManifestGetter:
		return s.Manifest(ctx, opts.Image)
	case interface {
		Manifest(string) (*image.Manifest, error)
	}:
		return s.Manifest(opts.Image)
	}
	return nil, errors.New("the image store cannot fetch manifests")
}

// Restore writes image opts.Image onto the disk at opts.Device.
//
// Before anything is written it fetches the manifest, checks that the
// store holds every chunk and that the target is at least as large as the
// image's disk. On a larger disk the partition table is adjusted (GPT
// backup moved to the end, the last partition grown) and written after the
// data; on a block device the kernel re-reads the table and the last
// partition's ext filesystem is grown with resize2fs when available.
// Restore is a delta restore unless opts.NoDelta: windows the disk already
// holds are neither fetched nor written. The disk's image-safe record
// survives (the image never carries one).
//
// With opts.Partitions only those partitions are restored: the disk must
// already have them at the image's start and size (else nothing is
// written and the error wraps image.ErrTableMismatch); its partition
// table, boot code and other partitions stay as they are.
func Restore(ctx context.Context, opts Options) (*image.Manifest, error) {
	log := opts.log()
	if opts.Store == nil {
		return nil, errors.New("restore: no image store")
	}
	m, err := fetchManifest(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("restore %s: get manifest: %w", opts.Image, err)
	}
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("restore %s: %w", m.Name, err)
	}
	f, err := os.OpenFile(opts.Device, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	defer f.Close()
	size, err := deviceSize(f)
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	if len(opts.Partitions) > 0 {
		return restorePartitions(ctx, f, size, m, opts)
	}
	var tbl *disk.Table
	if len(m.Disk.Table) > 0 {
		tbl = new(disk.Table)
		if err := json.Unmarshal(m.Disk.Table, tbl); err != nil {
			return nil, fmt.Errorf("restore %s: partition table in manifest: %w", m.Name, err)
		}
	}
	plan, err := planResize(m, tbl, size, opts.GrowPartition, opts.NoGrowFS)
	if err != nil {
		return nil, fmt.Errorf("restore %s onto %s: %w", m.Name, opts.Device, err)
	}
	ropts := image.RestoreOptions{
		TargetSize: size, Workers: opts.Workers, Progress: opts.Progress,
		ProgressInterval: opts.interval(), Logger: log,
	}
	// The last progress, repeated with the resize phase while a
	// filesystem grows or shrinks (minutes on a large disk).
	var lastMu sync.Mutex
	var last image.Progress
	if opts.Progress != nil {
		ropts.Progress = func(p image.Progress) {
			lastMu.Lock()
			last = p
			lastMu.Unlock()
			opts.Progress(p)
		}
	}
	var dst target = f
	var rt *relocTarget
	if plan != nil {
		nt := plan.table
		scrubImageSafe(nt)
		ropts.SkipRegions = []string{"tail"}
		ropts.WriteTable = func(_ context.Context, _ io.WriterAt) error { return disk.WriteTable(f, nt) }
		ropts.TargetSize = max(size, m.Disk.Size, m.RequiredSize()) // in the image's coordinates
		relocate := false
		for _, mv := range plan.moves {
			relocate = relocate || mv.NewStart != mv.Start || mv.NewSize < mv.Size
		}
		if relocate {
			if rt, err = newRelocTarget(f, plan); err != nil {
				return nil, fmt.Errorf("restore %s onto %s: %w; nothing was written", m.Name, opts.Device, err)
			}
			defer rt.Close()
			dst = rt
		}
		for _, mv := range plan.moves {
			log.InfoContext(ctx, "partition placed", "index", mv.Index, "start", mv.Start, "size", mv.Size,
				"new_start", mv.NewStart, "new_size", mv.NewSize)
		}
		log.InfoContext(ctx, "partition table adjusted", "image_disk", m.Disk.Size, "target", size, "kind", tbl.Kind,
			"resized", plan.grow != nil, "shrink", plan.shrink)
	}
	if !opts.NoDelta {
		want := tbl
		if plan != nil {
			want = plan.table
		}
		if deltaCanPay(f, size, want) {
			ropts.Current = dst
		} else {
			log.InfoContext(ctx, "delta check skipped: the disk holds no partition of the image's layout (blank or another disk), so every chunk is written without reading the disk first")
		}
	}

	// The record the disk holds now; it goes back after the restore.
	rec := opts.ImageSafe
	if rec == nil {
		old, err := ReadImageSafeAt(f, size)
		switch {
		case err == nil:
			rec = old
		case errors.Is(err, ErrNoImageSafe):
		default:
			log.WarnContext(ctx, "image-safe data unreadable; starting a new record", "err", err)
		}
	}

	log.InfoContext(ctx, "restore start", "image", m.Name, "device", opts.Device, "size", size,
		"image_disk", m.Disk.Size, "delta", !opts.NoDelta)
	if err := opts.restoreImage(ctx, dst, m, ropts); err != nil {
		return nil, fmt.Errorf("restore %s onto %s: %w", m.Name, opts.Device, err)
	}

	if rec == nil {
		rec = &ImageSafe{}
	}
	now := time.Now().UTC()
	rec.LastImage, rec.LastImageAt, rec.Updated = m.Name, now, now
	if err := putImageSafeAfterRestore(f, size, rec, !imageUsesImageSafe(m)); err != nil {
		log.WarnContext(ctx, "image-safe data not kept", "err", err)
	}
	if err := f.Sync(); err != nil {
		return nil, fmt.Errorf("restore %s: sync %s: %w", m.Name, opts.Device, err)
	}
	if isBlockDevice(f) {
		if err := rereadPartitions(f); err != nil {
			log.WarnContext(ctx, "kernel did not re-read the partition table", "err", err)
		}
	}
	if plan != nil && (plan.shrink || !opts.NoGrowFS) {
		if opts.Progress != nil && plan.grow != nil {
			lastMu.Lock()
			p := last
			lastMu.Unlock()
			p.Phase = fmt.Sprintf("resize partition %d (%s)", plan.grow.Index, plan.grow.FSType)
			opts.Progress(p)
		}
		if err := finishResize(ctx, opts.Device, plan, rt, log); err != nil {
			if plan.shrink {
				return nil, fmt.Errorf("restore %s onto %s: %w (the shrunk filesystem is incomplete: restore again onto a larger disk)", m.Name, opts.Device, err)
			}
			log.WarnContext(ctx, "filesystem not grown: it keeps its size", "err", err)
		}
	}
	if isBlockDevice(f) {
		opts.ensureBootEntry(ctx, f, size)
	}
	log.InfoContext(ctx, "restore done", "image", m.Name, "device", opts.Device)
	return m, nil
}

// restorePartitions restores opts.Partitions of m onto the open disk f,
// whose table must already match the image's for them; nothing else of
// the disk is written but the image-safe record (updated only when the
// area is free or holds a record).
func restorePartitions(ctx context.Context, f *os.File, size int64, m *image.Manifest, opts Options) (*image.Manifest, error) {
	log := opts.log()
	tbl, err := disk.ReadTable(f, size)
	if err != nil {
		return nil, fmt.Errorf("restore partitions %v of %s onto %s: read the disk's partition table: %w; nothing was written",
			opts.Partitions, m.Name, opts.Device, err)
	}
	ropts := image.RestoreOptions{
		TargetSize: size, Partitions: opts.Partitions, TargetTable: tbl, Workers: opts.Workers,
		Progress: opts.Progress, ProgressInterval: opts.interval(), Logger: log,
	}
	if !opts.NoDelta {
		ropts.Current = f
	}
	rec := opts.ImageSafe
	if rec == nil {
		old, err := ReadImageSafeAt(f, size)
		switch {
		case err == nil:
			rec = old
		case errors.Is(err, ErrNoImageSafe):
			rec = &ImageSafe{}
		default:
			log.WarnContext(ctx, "image-safe data unreadable; leaving the area alone", "err", err)
		}
	}
	log.InfoContext(ctx, "partition restore start", "image", m.Name, "device", opts.Device, "partitions", opts.Partitions,
		"delta", !opts.NoDelta)
	if err := opts.restoreImage(ctx, f, m, ropts); err != nil {
		return nil, fmt.Errorf("restore partitions %v of %s onto %s: %w", opts.Partitions, m.Name, opts.Device, err)
	}
	if rec != nil {
		now := time.Now().UTC()
		rec.LastImage, rec.LastImageAt, rec.Updated = m.Name, now, now
		// The area is the disk's, not the image's: never overwrite foreign data.
		if err := putImageSafeAfterRestore(f, size, rec, false); err != nil {
			log.WarnContext(ctx, "image-safe data not updated", "err", err)
		}
	}
	if err := f.Sync(); err != nil {
		return nil, fmt.Errorf("restore %s: sync %s: %w", m.Name, opts.Device, err)
	}
	log.InfoContext(ctx, "partition restore done", "image", m.Name, "device", opts.Device, "partitions", opts.Partitions)
	return m, nil
}

// putImageSafeAfterRestore writes rec where the restored table leaves
// room. An image captured by Capture never holds the area (whatever is
// there is left from the disk's previous life, so force is set); with an
// image that does use it, foreign data there is not overwritten.
func putImageSafeAfterRestore(f *os.File, size int64, rec *ImageSafe, force bool) error {
	t, blank, err := readTableFor(f, size)
	if err != nil {
		return err
	}
	if err := imageSafeRoom(t, size, blank); err != nil {
		return err
	}
	return writeImageSafeBlock(f, rec, force)
}

// imageUsesImageSafe reports whether any used extent of the image covers
// part of the image-safe area.
func imageUsesImageSafe(m *image.Manifest) bool {
	for _, a := range m.Areas() {
		for _, e := range a.Used {
			lo, hi := a.Start+e.Offset, a.Start+e.Offset+e.Length
			if lo < ImageSafeOffset+ImageSafeSize && hi > ImageSafeOffset {
				return true
			}
		}
	}
	return false
}

func human(n int64) string {
	const u = "KMGTPE"
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	f, i := float64(n)/1024, 0
	for f >= 1024 && i < len(u)-1 {
		f /= 1024
		i++
	}
	return fmt.Sprintf("%.1f %ciB", f, u[i])
}

// lastPartition returns the manifest partition that ends last.
func lastPartition(m *image.Manifest) *image.Area {
	var last *image.Area
	for i := range m.Partitions {
		if last == nil || m.Partitions[i].Start+m.Partitions[i].Size > last.Start+last.Size {
			last = &m.Partitions[i]
		}
	}
	return last
}

func isExt(fstype string) bool { return slices.Contains([]string{"ext2", "ext3", "ext4"}, fstype) }

// deltaCanPay tells, cheaply, whether comparing the disk's content with
// the image can save writes: only when the disk already has a partition
// where the image puts one (same start and size). On a blank disk or
// another layout the comparison would read and hash the whole target for
// nothing.
func deltaCanPay(f *os.File, size int64, want *disk.Table) bool {
	if want == nil || want.Kind == "none" {
		return true
	}
	cur, err := disk.ReadTable(f, size)
	if err != nil || cur.Kind != want.Kind {
		return false
	}
	for _, p := range cur.Partitions {
		for _, w := range want.Partitions {
			if p.Start == w.Start && p.Size == w.Size && p.Size > 0 && !p.IsExtended() {
				return true
			}
		}
	}
	return false
}
