package image

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"time"

	"github.com/preboot/preboot/disk"
)

// FormatVersion is the manifest format this package writes and reads.
const FormatVersion = 1

// Limits that keep a hostile manifest from exhausting memory or overflowing
// arithmetic. They are far above anything a real disk needs.
const (
	MinChunkSize     = 64 << 10
	MaxChunkSize     = 64 << 20
	DefaultChunkSize = 4 << 20
	maxDiskSize      = 1 << 56 // 64 PiB
	maxAreas         = 1024
	maxExtents       = 1 << 24
	maxChunks        = 1 << 24
	// MaxManifestSize bounds what ParseManifest reads.
	MaxManifestSize = 512 << 20
)

// Manifest describes one image. Every offset in it is in bytes. Extents and
// chunk offsets inside an Area are relative to the area's Start.
type Manifest struct {
	Version int               `json:"version"`
	Name    string            `json:"name"`
	Created time.Time         `json:"created"`
	Source  map[string]string `json:"source,omitempty"`
	// ChunkSize is the window size: chunk i of an area covers
	// [i*ChunkSize, min((i+1)*ChunkSize, area.Size)).
	ChunkSize int64 `json:"chunk_size"`
	Disk      Disk  `json:"disk"`
	// Partitions hold filesystems; Regions are raw byte ranges outside the
	// partitions that must survive (boot code, the partition tables, the
	// post-MBR gap with GRUB's core.img, a GPT backup header).
	Partitions []Area `json:"partitions"`
	Regions    []Area `json:"regions,omitempty"`
	Sizes      Sizes  `json:"sizes"`
	// Warnings are what the capture could not do well (encrypted data
	// copied raw, structures not trusted, a filesystem captured dirty).
	Warnings []string `json:"warnings,omitempty"`
}

// Disk is the source disk as a whole.
type Disk struct {
	Size       int64 `json:"size"`
	SectorSize int64 `json:"sector_size"`
	// Table is the parsed partition table (a disk.Table as JSON), kept
	// opaque here so the image format does not change when the disk
	// package grows fields. The raw table bytes live in Regions.
	Table json.RawMessage `json:"table,omitempty"`
}

// Area is a partition or a raw region of the disk.
type Area struct {
	// Index is the partition number (1-based; 0 for a filesystem on the
	// whole disk, as disk.Table reports it). Always 0 for regions.
	Index int `json:"index"`
	// Name labels regions ("head", "gap-1", "tail", ...) and is required
	// for them; partitions have none.
	Name  string `json:"name,omitempty"`
	Start int64  `json:"start"`
	Size  int64  `json:"size"`
	// FSType is what fsmap detected ("ext4", "vfat", "ntfs", "raw").
	FSType string `json:"fstype,omitempty"`
	// Used lists the bytes that hold data: sorted, disjoint, non-adjacent,
	// inside [0, Size). Only these are read at capture and written at
	// restore.
	Used []disk.Extent `json:"used"`
	// Chunks has one entry per window that intersects Used, sorted by
	// offset.
	Chunks []Chunk `json:"chunks"`
}

// Chunk is one window of an area.
type Chunk struct {
	Offset int64 `json:"offset"`
	Length int64 `json:"length"`
	// Hash is BLAKE3-256 of the Length window bytes, with every byte
	// outside Used set to zero. Empty when Zero is set.
	Hash Hash `json:"hash,omitzero"`
	// Zero marks a window whose used bytes are all zero: nothing is
	// stored, restore writes zeros (or nothing onto a zeroed target).
	Zero bool `json:"zero,omitempty"`
}

// Sizes summarises an image. Logical is the source disk size, Used the
// bytes in use (sum of all Used extents), Uploaded the compressed bytes
// this capture added to the store (chunks already there cost nothing).
// Repo.Usage reports stored/shared/unique sizes across images.
type Sizes struct {
	Logical  int64 `json:"logical"`
	Used     int64 `json:"used"`
	Uploaded int64 `json:"uploaded"`
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// ValidName reports whether name is usable as an image name: 1–128
// characters from [A-Za-z0-9._-], starting with a letter or digit.
func ValidName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("invalid image name %.140q: want 1-128 of [A-Za-z0-9._-], starting with a letter or digit", name)
	}
	return nil
}

// ParseManifest decodes and validates a manifest. Unknown fields are
// rejected so that a newer format is not silently half-understood.
func ParseManifest(r io.Reader) (*Manifest, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxManifestSize+1))
	if err != nil {
		return nil, fmt.Errorf("read manifest: %w", err)
	}
	if len(data) > MaxManifestSize {
		return nil, fmt.Errorf("manifest larger than %d bytes", MaxManifestSize)
	}
	var probe struct {
		Version int `json:"version"`
	}
	if err := json.Unmarshal(data, &probe); err != nil {
		return nil, fmt.Errorf("decode manifest: %w", err)
	}
	if probe.Version != FormatVersion {
		return nil, fmt.Errorf("manifest format version %d not supported (want %d)", probe.Version, FormatVersion)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var m Manifest
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("decode manifest: %w", err)
	}
	if dec.More() {
		return nil, errors.New("decode manifest: trailing data")
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

// Encode writes m as indented JSON.
func (m *Manifest) Encode(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", " ")
	if err := enc.Encode(m); err != nil {
		return fmt.Errorf("encode manifest: %w", err)
	}
	return nil
}

// Label names an area in messages: "partition 2" or "region mbr-gap".
func (a *Area) Label() string {
	if a.Name != "" {
		return "region " + a.Name
	}
	return fmt.Sprintf("partition %d", a.Index)
}

// Areas returns pointers to all partitions and regions in disk order (by
// start), the order capture reads and restore writes them.
func (m *Manifest) Areas() []*Area {
	out := make([]*Area, 0, len(m.Regions)+len(m.Partitions))
	for i := range m.Regions {
		out = append(out, &m.Regions[i])
	}
	for i := range m.Partitions {
		out = append(out, &m.Partitions[i])
	}
	slices.SortStableFunc(out, func(x, y *Area) int { return cmp.Compare(x.Start, y.Start) })
	return out
}

// UsedBytes is the sum of all used extents.
func (m *Manifest) UsedBytes() int64 {
	var n int64
	for _, a := range m.Areas() {
		n += extentBytes(a.Used)
	}
	return n
}

// ChunkHashes returns the distinct stored (non-zero) chunk hashes.
func (m *Manifest) ChunkHashes() []Hash {
	seen := make(map[Hash]struct{})
	var out []Hash
	for _, a := range m.Areas() {
		for _, c := range a.Chunks {
			if c.Zero {
				continue
			}
			if _, ok := seen[c.Hash]; !ok {
				seen[c.Hash] = struct{}{}
				out = append(out, c.Hash)
			}
		}
	}
	return out
}

// RequiredSize is the smallest target disk an image restores onto as is:
// the end of its last partition or region. (Restore also requires at least
// Disk.Size unless the caller rewrites the partition table.)
func (m *Manifest) RequiredSize() int64 {
	var end int64
	for _, a := range m.Areas() {
		end = max(end, a.Start+a.Size)
	}
	return end
}

func extentBytes(es []disk.Extent) int64 {
	var n int64
	for _, e := range es {
		n += e.Length
	}
	return n
}

// Validate checks that the manifest is internally consistent and that
// nothing in it points outside where it belongs. Restore calls it before
// writing anything.
func (m *Manifest) Validate() error { return m.validate(true) }

// validate with hashes=false skips the per-chunk hash/zero check (used
// before a capture has filled them in).
func (m *Manifest) validate(hashes bool) error {
	if m.Version != FormatVersion {
		return fmt.Errorf("manifest: format version %d not supported (want %d)", m.Version, FormatVersion)
	}
	if err := ValidName(m.Name); err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	if m.ChunkSize < MinChunkSize || m.ChunkSize > MaxChunkSize || m.ChunkSize%4096 != 0 {
		return fmt.Errorf("manifest: chunk size %d: want a multiple of 4096 in [%d, %d]", m.ChunkSize, MinChunkSize, MaxChunkSize)
	}
	d := m.Disk
	if d.Size <= 0 || d.Size > maxDiskSize {
		return fmt.Errorf("manifest: disk size %d out of range", d.Size)
	}
	if d.SectorSize < 512 || d.SectorSize > 65536 || d.SectorSize&(d.SectorSize-1) != 0 {
		return fmt.Errorf("manifest: sector size %d: want a power of two in [512, 65536]", d.SectorSize)
	}
	if len(d.Table) > 0 && !json.Valid(d.Table) {
		return errors.New("manifest: partition table is not valid JSON")
	}
	if len(m.Partitions)+len(m.Regions) > maxAreas {
		return fmt.Errorf("manifest: %d areas, limit %d", len(m.Partitions)+len(m.Regions), maxAreas)
	}
	seenIdx := make(map[int]bool)
	var nExt, nChunks int
	var used int64
	for i := range m.Partitions {
		p := &m.Partitions[i]
		if p.Name != "" {
			return fmt.Errorf("manifest: partition #%d has a region name", i)
		}
		if p.Index < 0 || p.Index > 1<<16 {
			return fmt.Errorf("manifest: partition #%d: index %d out of range", i, p.Index)
		}
		if seenIdx[p.Index] {
			return fmt.Errorf("manifest: partition %d listed twice", p.Index)
		}
		seenIdx[p.Index] = true
	}
	for i := range m.Regions {
		if m.Regions[i].Index != 0 || m.Regions[i].Name == "" {
			return fmt.Errorf("manifest: region #%d: want a name and no partition index", i)
		}
		for j := range i {
			if m.Regions[j].Name == m.Regions[i].Name {
				return fmt.Errorf("manifest: region %q listed twice", m.Regions[i].Name)
			}
		}
	}
	areas := m.Areas()
	for _, a := range areas {
		if err := a.validate(m.ChunkSize, d.Size, hashes); err != nil {
			return fmt.Errorf("manifest: %s: %w", a.Label(), err)
		}
		nExt += len(a.Used)
		nChunks += len(a.Chunks)
		if nExt > maxExtents || nChunks > maxChunks {
			return errors.New("manifest: too many extents or chunks")
		}
		used += extentBytes(a.Used)
	}
	// No two areas may overlap: a restore would write the same bytes twice.
	sorted := areas
	for i := 1; i < len(sorted); i++ {
		if sorted[i].Start < sorted[i-1].Start+sorted[i-1].Size {
			return fmt.Errorf("manifest: %s overlaps %s", sorted[i].Label(), sorted[i-1].Label())
		}
	}
	if m.Sizes.Logical != d.Size {
		return fmt.Errorf("manifest: sizes.logical %d != disk size %d", m.Sizes.Logical, d.Size)
	}
	if m.Sizes.Used != used {
		return fmt.Errorf("manifest: sizes.used %d != sum of used extents %d", m.Sizes.Used, used)
	}
	if m.Sizes.Uploaded < 0 {
		return errors.New("manifest: negative sizes.uploaded")
	}
	return nil
}

func (a *Area) validate(chunkSize, diskSize int64, hashes bool) error {
	if a.Start < 0 || a.Size <= 0 || a.Start > diskSize || a.Size > diskSize-a.Start {
		return fmt.Errorf("[%d, +%d) is outside the %d-byte disk", a.Start, a.Size, diskSize)
	}
	if len(a.Name) > 64 || len(a.FSType) > 32 {
		return errors.New("name or fstype too long")
	}
	if err := checkExtents(a.Used, a.Size); err != nil {
		return err
	}
	// Chunks: exactly one per window touching a used extent, in order.
	ci := 0
	var err error
	forEachWindow(a.Used, a.Size, chunkSize, func(off, length int64, _ []disk.Extent) bool {
		if ci >= len(a.Chunks) {
			err = fmt.Errorf("no chunk for window at offset %d", off)
			return false
		}
		c := a.Chunks[ci]
		if c.Offset != off {
			err = fmt.Errorf("chunk %d at offset %d, want the window at %d", ci, c.Offset, off)
			return false
		}
		if c.Length != length {
			err = fmt.Errorf("chunk %d at offset %d: length %d, window is %d", ci, c.Offset, c.Length, length)
			return false
		}
		if hashes && c.Zero != c.Hash.IsZero() {
			err = fmt.Errorf("chunk %d at offset %d: a chunk needs either a hash or zero, not both or neither", ci, c.Offset)
			return false
		}
		ci++
		return true
	})
	if err != nil {
		return err
	}
	if ci != len(a.Chunks) {
		return fmt.Errorf("%d chunks for %d windows in use (chunk at offset %d covers no used extent)", len(a.Chunks), ci, a.Chunks[ci].Offset)
	}
	return nil
}

// checkExtents verifies es is sorted, disjoint, non-adjacent and inside
// [0, size).
func checkExtents(es []disk.Extent, size int64) error {
	var prevEnd int64 = -1
	for i, e := range es {
		if e.Offset < 0 || e.Length <= 0 || e.Offset > size || e.Length > size-e.Offset {
			return fmt.Errorf("used extent %d [%d, +%d) is outside the area of %d bytes", i, e.Offset, e.Length, size)
		}
		if e.Offset <= prevEnd {
			return fmt.Errorf("used extent %d at %d overlaps, touches or precedes the one before", i, e.Offset)
		}
		prevEnd = e.End()
	}
	return nil
}

// NormalizeExtents returns es sorted, with overlapping and adjacent extents
// merged and empty ones dropped. It does not clip.
func NormalizeExtents(es []disk.Extent) []disk.Extent {
	out := make([]disk.Extent, 0, len(es))
	for _, e := range es {
		if e.Length > 0 {
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(x, y disk.Extent) int {
		switch {
		case x.Offset < y.Offset:
			return -1
		case x.Offset > y.Offset:
			return 1
		}
		return 0
	})
	merged := out[:0]
	for _, e := range out {
		if n := len(merged); n > 0 && e.Offset <= merged[n-1].End() {
			merged[n-1].Length = max(merged[n-1].End(), e.End()) - merged[n-1].Offset
			continue
		}
		merged = append(merged, e)
	}
	return merged
}

// forEachWindow calls fn for each chunkSize window of an area of the given
// size that intersects the (validated) used extents, with the used extents
// clipped to the window and made relative to its start. The slice passed
// to fn is reused; fn must copy it to keep it. fn returns false to stop.
func forEachWindow(used []disk.Extent, size, chunkSize int64, fn func(off, length int64, in []disk.Extent) bool) {
	var in []disk.Extent
	var next int64
	i := 0
	for i < len(used) {
		off := max(used[i].Offset/chunkSize*chunkSize, next)
		end := min(off+chunkSize, size)
		in = in[:0]
		for j := i; j < len(used) && used[j].Offset < end; j++ {
			s := max(used[j].Offset, off)
			e := min(used[j].End(), end)
			in = append(in, disk.Extent{Offset: s - off, Length: e - s})
		}
		if !fn(off, end-off, in) {
			return
		}
		next = end
		// Skip extents that end inside this window.
		for i < len(used) && used[i].End() <= end {
			i++
		}
	}
}
