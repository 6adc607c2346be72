// Package agent is Preboot's imaging engine (the seed's "img"): it captures
// a disk into an image repository, restores an image onto a disk, reports
// the machine's hardware and keeps the device's image-safe data.
//
// It works on block devices and on plain disk-image files alike, so tests
// run it against files. Inside the imaging environment Auto asks the
// server for the job and runs it.
package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/preboot/preboot/disk"
	"github.com/preboot/preboot/fsmap"
	"github.com/preboot/preboot/image"
	"github.com/preboot/preboot/mcast"
)

// Store is where images go and come from: a local *image.Repo (wrap it
// with LocalRepo to get manifests), or the server's repository over HTTP
// (image/httpstore.Client).
type Store interface {
	image.ChunkStore
	image.Publisher
}

// ManifestGetter fetches a published manifest; restores need it.
type ManifestGetter interface {
	Manifest(ctx context.Context, name string) (*image.Manifest, error)
}

// LocalRepo adapts an *image.Repo to Store + ManifestGetter.
func LocalRepo(r *image.Repo) interface {
	Store
	ManifestGetter
} {
	return localRepo{r}
}

type localRepo struct{ *image.Repo }

func (l localRepo) Manifest(_ context.Context, name string) (*image.Manifest, error) {
	return l.Repo.Manifest(name)
}

// Options configure Capture and Restore.
type Options struct {
	// Device is a block device or a plain disk-image file.
	Device string
	// Image is the image name.
	Image string
	// Store holds the chunks. Restore also needs it to implement
	// ManifestGetter unless Manifest is set.
	Store Store
	// Manifest, for Restore, is the image to restore (skips fetching it).
	Manifest *image.Manifest
	// Compression is the zstd level for captures (image.DefaultLevel when 0).
	Compression int
	// ChunkSize is the capture window (image.DefaultChunkSize when 0).
	ChunkSize int64
	// Workers parallelise hashing, compression and verification
	// (GOMAXPROCS when 0).
	Workers int
	// Source describes the captured device in the manifest (device id, mac,
	// hostname, …). The device path is added as "device" when missing.
	Source map[string]string
	// Partitions, for Restore, restores only these partitions (1-based)
	// of the image onto a disk already partitioned like the image for
	// them (same start and size), leaving the partition table, the boot
	// code and every other partition as they are. Empty: the whole disk.
	Partitions []int
	// NoDelta makes Restore write every chunk instead of skipping those
	// the disk already holds.
	NoDelta bool
	// Force, for Capture, captures filesystems fsmap calls unsafe (a
	// hibernated or dirty NTFS) instead of refusing them; the image
	// carries a warning.
	Force bool
	// GrowPartition, for Restore onto a disk of another size, names the
	// partition that takes the difference (0: the largest partition
	// holding a filesystem the agent resizes; ESP, MSR and Recovery
	// never); partitions after it move with it.
	GrowPartition int
	// NoGrowFS skips growing the last partition's ext filesystem after a
	// restore onto a larger block device.
	NoGrowFS bool
	// ImageSafe, for Restore, is the record to leave on the disk; nil keeps
	// the one the disk had before (the last image is updated either way).
	ImageSafe *ImageSafe
	// Multicast, for Restore, gets the chunks from the image's multicast
	// session (or from peers) instead of only from Store; Store stays the
	// fallback. MulticastResult, when set, receives how the bytes came.
	Multicast       *mcast.ReceiveOptions
	MulticastResult *mcast.Result
	// BootEntry, for a whole-disk Restore on a UEFI machine: "auto" (or
	// "") creates the NVRAM boot entry of the restored OS's loader,
	// keeping network boot first; "disk-first" puts it ahead of network
	// boot; "off" leaves NVRAM alone. See ValidBootEntry.
	BootEntry string

	Progress         func(image.Progress)
	ProgressInterval time.Duration // default 1 s
	Logger           *slog.Logger
}

func (o *Options) log() *slog.Logger {
	if o.Logger != nil {
		return o.Logger
	}
	return slog.New(slog.DiscardHandler)
}

func (o *Options) interval() time.Duration {
	if o.ProgressInterval > 0 {
		return o.ProgressInterval
	}
	return time.Second
}

// deviceSize is the size of a block device (BLKGETSIZE64) or a file.
func deviceSize(f *os.File) (int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	switch {
	case fi.Mode().IsRegular():
		return fi.Size(), nil
	case fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0:
		return blockSize(f)
	}
	return 0, fmt.Errorf("%s is neither a block device nor a regular file", f.Name())
}

func isBlockDevice(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0
}

// ErrUnsafe is wrapped by Capture's error when a filesystem must not be
// captured as it stands (a hibernated or dirty NTFS) and Options.Force is
// not set.
var ErrUnsafe = errors.New("filesystem not safe to capture")

// BuildLayout reads the partition table of a disk of size bytes and maps
// the used bytes of every partition (fsmap) and the raw regions around
// them. The image-safe area is left out of the regions, and zeroed in the
// saved table bytes, so an image never carries its source's identity.
// A filesystem fsmap calls unsafe fails it (wrapping ErrUnsafe) unless
// force, which turns the refusal into a warning in the layout.
func BuildLayout(ctx context.Context, r io.ReaderAt, size int64, force bool, log *slog.Logger) (image.Layout, *disk.Table, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t, err := disk.ReadTable(r, size)
	if err != nil {
		return image.Layout{}, nil, fmt.Errorf("read partition table: %w", err)
	}
	var parts []image.Area
	var zero []disk.Extent
	var warnings, unsafe []string
	for _, p := range t.Partitions {
		if p.IsExtended() || p.Size <= 0 {
			continue // EBRs land in the raw regions
		}
		if err := ctx.Err(); err != nil {
			return image.Layout{}, nil, err
		}
		if p.Start < 0 || p.End() > size {
			return image.Layout{}, nil, fmt.Errorf("partition %d (bytes %d–%d) lies outside the %d-byte disk",
				p.Index, p.Start, p.End(), size)
		}
		info, err := fsmap.Inspect(io.NewSectionReader(r, p.Start, p.Size), p.Size)
		if err != nil {
			return image.Layout{}, nil, fmt.Errorf("partition %d: map used blocks: %w", p.Index, err)
		}
		used := info.Used
		if used == nil {
			used = []disk.Extent{}
		}
		var n, nz int64
		for _, e := range used {
			n += e.Length
		}
		for _, e := range info.Zero {
			nz += e.Length
			zero = append(zero, disk.Extent{Offset: p.Start + e.Offset, Length: e.Length})
		}
		for _, w := range info.Warnings {
			log.WarnContext(ctx, "partition "+strconv.Itoa(p.Index)+": "+w, "index", p.Index, "fstype", info.FSType)
			warnings = append(warnings, fmt.Sprintf("partition %d (%s): %s", p.Index, info.FSType, w))
		}
		if info.Unsafe != nil {
			msg := fmt.Sprintf("partition %d (%s): %v", p.Index, info.FSType, info.Unsafe)
			if force {
				log.WarnContext(ctx, "captured anyway (--force): "+msg, "index", p.Index)
				warnings = append(warnings, "captured with --force: "+msg)
			} else {
				unsafe = append(unsafe, msg)
			}
		}
		log.InfoContext(ctx, "partition mapped", "index", p.Index, "start", p.Start, "size", p.Size,
			"fstype", info.FSType, "used", n, "zeroed", nz)
		parts = append(parts, image.Area{Index: p.Index, Start: p.Start, Size: p.Size, FSType: info.FSType, Used: used})
	}
	if len(unsafe) > 0 {
		return image.Layout{}, nil, fmt.Errorf("%w: %s; nothing was captured (force the capture with --force, or \"force\": true in the bundle, to take it as it is)",
			ErrUnsafe, strings.Join(unsafe, "; "))
	}
	regions := image.Gaps(size, parts)
	if t.Kind != "none" {
		for i := range regions {
			regions[i].Used = holeUsed(regions[i].Start, regions[i].Size, ImageSafeOffset, ImageSafeSize)
		}
		scrubImageSafe(t)
	}
	tj, err := json.Marshal(t)
	if err != nil {
		return image.Layout{}, nil, err
	}
	return image.Layout{DiskSize: size, SectorSize: int64(t.SectorSize), Table: tj,
		Partitions: parts, Regions: regions, Zero: zero, Warnings: warnings}, t, nil
}

// holeUsed returns the used extents of a region [start, start+size) that
// is used everywhere except on [hole, hole+n).
func holeUsed(start, size, hole, n int64) []disk.Extent {
	lo, hi := max(hole-start, 0), min(hole+n-start, size)
	if lo >= hi {
		return []disk.Extent{{Offset: 0, Length: size}}
	}
	var out []disk.Extent
	if lo > 0 {
		out = append(out, disk.Extent{Offset: 0, Length: lo})
	}
	if hi < size {
		out = append(out, disk.Extent{Offset: hi, Length: size - hi})
	}
	if out == nil {
		out = []disk.Extent{}
	}
	return out
}

// scrubImageSafe zeroes the image-safe area in the table's raw bytes (the
// disk package keeps the non-zero boot-loader gap, which includes it).
func scrubImageSafe(t *disk.Table) {
	for _, r := range t.Raw {
		lo := max(r.Offset, ImageSafeOffset)
		hi := min(r.Offset+int64(len(r.Data)), ImageSafeOffset+ImageSafeSize)
		if lo < hi {
			clear(r.Data[lo-r.Offset : hi-r.Offset])
		}
	}
}

// Capture reads the disk at opts.Device, stores its used bytes in
// opts.Store and publishes the image as opts.Image.
func Capture(ctx context.Context, opts Options) (*image.Manifest, error) {
	log := opts.log()
	if opts.Store == nil {
		return nil, errors.New("capture: no image store")
	}
	if err := image.ValidName(opts.Image); err != nil {
		return nil, fmt.Errorf("capture: %w", err)
	}
	f, err := os.Open(opts.Device)
	if err != nil {
		return nil, fmt.Errorf("capture: %w", err)
	}
	defer f.Close()
	size, err := deviceSize(f)
	if err != nil {
		return nil, fmt.Errorf("capture: %w", err)
	}
	log.InfoContext(ctx, "capture start", "device", opts.Device, "size", size, "image", opts.Image)
	layout, t, err := BuildLayout(ctx, f, size, opts.Force, log)
	if err != nil {
		return nil, fmt.Errorf("capture %s: %w", opts.Device, err)
	}
	src := map[string]string{}
	for k, v := range opts.Source {
		src[k] = v
	}
	if src["device"] == "" {
		src["device"] = opts.Device
	}
	if src["table"] == "" {
		src["table"] = t.Kind
	}
	m, err := image.Capture(ctx, f, layout, opts.Store, image.CaptureOptions{
		Name: opts.Image, Source: src, ChunkSize: opts.ChunkSize, Level: opts.Compression,
		Workers: opts.Workers, Progress: opts.Progress, ProgressInterval: opts.interval(), Logger: log,
	})
	if err != nil {
		return nil, fmt.Errorf("capture %s: %w", opts.Device, err)
	}
	if err := opts.Store.Publish(ctx, m); err != nil {
		return nil, fmt.Errorf("capture %s: publish %s: %w", opts.Device, opts.Image, err)
	}
	log.InfoContext(ctx, "capture published", "image", m.Name, "used", m.Sizes.Used, "uploaded", m.Sizes.Uploaded,
		"warnings", len(m.Warnings))
	return m, nil
}

// target is what a restore writes: the disk, or the disk seen in the
// image's coordinates when partitions move.
type target interface {
	io.ReaderAt
	io.WriterAt
}

// restoreImage writes m onto f: from the multicast session when
// o.Multicast is set, else from o.Store.
func (o *Options) restoreImage(ctx context.Context, f target, m *image.Manifest, ropts image.RestoreOptions) error {
	if o.Multicast == nil {
		return image.Restore(ctx, f, m, o.Store, ropts)
	}
	res, err := mcast.Restore(ctx, f, m, o.Store, ropts, *o.Multicast)
	if o.MulticastResult != nil {
		*o.MulticastResult = res
	}
	return err
}
