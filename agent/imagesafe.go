package agent

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"time"

	"github.com/preboot/preboot/disk"
)

// Image-safe data lives in one 4 KiB block at a fixed place of the disk,
// outside every partition: the last 4 KiB before the 1 MiB boundary
// (sectors 2040–2047 with 512-byte sectors, LBA 255 with 4 KiB sectors).
// Every partitioning tool since ~2010 starts the first partition at 1 MiB,
// GPT's primary entries end at 16 KiB, and boot loaders embedded after the
// MBR (GRUB's core.img, ~30–100 KiB) start at sector 1, so the block is free
// on practically every disk. See docs/image-safe-data.md.
const (
	ImageSafeOffset = 1<<20 - ImageSafeSize
	ImageSafeSize   = 4096
	// ImageSafeVersion is the record layout version.
	ImageSafeVersion = 1

	isHeaderLen  = 32
	isMaxPayload = ImageSafeSize - isHeaderLen
)

var isMagic = [16]byte{'P', 'R', 'E', 'B', 'O', 'O', 'T', ' ', 'I', 'M', 'G', 'S', 'A', 'F', 'E', '\n'}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Errors of the image-safe area, for errors.Is.
var (
	// ErrNoImageSafe: the disk holds no image-safe record.
	ErrNoImageSafe = errors.New("no image-safe data on disk")
	// ErrImageSafeNoRoom: the disk has no free image-safe area (a partition
	// or a filesystem on the whole disk covers it, or the disk is tiny).
	ErrImageSafeNoRoom = errors.New("no room for image-safe data")
	// ErrImageSafeOccupied: the area holds data that is not an image-safe
	// record (for instance a very large boot loader); it is not overwritten.
	ErrImageSafeOccupied = errors.New("image-safe area holds foreign data")
	// ErrImageSafeCorrupt: a record is there but its checksum or content is bad.
	ErrImageSafeCorrupt = errors.New("image-safe record corrupt")
)

// ImageSafe is the device's identity kept on its disk across imaging.
type ImageSafe struct {
	DeviceID string           `json:"device_id,omitempty"`
	Hostname string           `json:"hostname,omitempty"`
	Network  *NetworkSettings `json:"network,omitempty"`
	// Server is the Preboot server URL the device last worked with.
	Server string `json:"server,omitempty"`
	// LastImage is the last image restored onto this disk.
	LastImage   string    `json:"last_image,omitempty"`
	LastImageAt time.Time `json:"last_image_at,omitzero"`
	Updated     time.Time `json:"updated,omitzero"`
	// Extra holds site-specific keys.
	Extra map[string]string `json:"extra,omitempty"`
}

// NetworkSettings is the device's network identity.
type NetworkSettings struct {
	Interface string   `json:"interface,omitempty"`
	MAC       string   `json:"mac,omitempty"`
	Mode      string   `json:"mode,omitempty"`    // "dhcp" or "static"
	Address   string   `json:"address,omitempty"` // CIDR, e.g. 192.0.2.10/24
	Gateway   string   `json:"gateway,omitempty"`
	DNS       []string `json:"dns,omitempty"`
	Domain    string   `json:"domain,omitempty"`
}

// EncodeImageSafe returns the 4 KiB on-disk block for d.
func EncodeImageSafe(d *ImageSafe) ([]byte, error) {
	payload, err := json.Marshal(d)
	if err != nil {
		return nil, err
	}
	if len(payload) > isMaxPayload {
		return nil, fmt.Errorf("image-safe data is %d bytes, at most %d fit", len(payload), isMaxPayload)
	}
	b := make([]byte, ImageSafeSize)
	copy(b, isMagic[:])
	binary.LittleEndian.PutUint32(b[16:], ImageSafeVersion)
	binary.LittleEndian.PutUint32(b[20:], uint32(len(payload)))
	copy(b[isHeaderLen:], payload)
	binary.LittleEndian.PutUint32(b[24:], isCRC(b, len(payload)))
	return b, nil
}

func isCRC(b []byte, n int) uint32 {
	c := crc32.Update(0, castagnoli, b[:24])
	c = crc32.Update(c, castagnoli, b[28:isHeaderLen])
	return crc32.Update(c, castagnoli, b[isHeaderLen:isHeaderLen+n])
}

// DecodeImageSafe parses a 4 KiB block. A block without the magic yields
// ErrNoImageSafe; a damaged record ErrImageSafeCorrupt.
func DecodeImageSafe(b []byte) (*ImageSafe, error) {
	if len(b) < ImageSafeSize || !bytes.Equal(b[:16], isMagic[:]) {
		return nil, ErrNoImageSafe
	}
	if v := binary.LittleEndian.Uint32(b[16:]); v != ImageSafeVersion {
		return nil, fmt.Errorf("%w: version %d, want %d", ErrImageSafeCorrupt, v, ImageSafeVersion)
	}
	n := binary.LittleEndian.Uint32(b[20:])
	if n > isMaxPayload {
		return nil, fmt.Errorf("%w: payload length %d", ErrImageSafeCorrupt, n)
	}
	if got, want := isCRC(b, int(n)), binary.LittleEndian.Uint32(b[24:]); got != want {
		return nil, fmt.Errorf("%w: checksum %08x, want %08x", ErrImageSafeCorrupt, got, want)
	}
	var d ImageSafe
	if err := json.Unmarshal(b[isHeaderLen:isHeaderLen+int(n)], &d); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrImageSafeCorrupt, err)
	}
	return &d, nil
}

// ReadImageSafeAt reads the record of a disk of size bytes.
func ReadImageSafeAt(r io.ReaderAt, size int64) (*ImageSafe, error) {
	if size < ImageSafeOffset+ImageSafeSize {
		return nil, ErrNoImageSafe
	}
	b := make([]byte, ImageSafeSize)
	if _, err := r.ReadAt(b, ImageSafeOffset); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read image-safe area: %w", err)
	}
	return DecodeImageSafe(b)
}

// imageSafeRoom reports whether the table leaves the image-safe area free.
// A blank disk (no table, first 64 KiB zero) has room.
func imageSafeRoom(t *disk.Table, size int64, blank bool) error {
	if size < 2<<20 {
		return fmt.Errorf("%w: the disk is only %d bytes", ErrImageSafeNoRoom, size)
	}
	if t.Kind == "none" {
		if !blank {
			return fmt.Errorf("%w: a filesystem (or unknown data) covers the whole disk", ErrImageSafeNoRoom)
		}
		return nil
	}
	for _, p := range t.Partitions {
		if p.Start < ImageSafeOffset+ImageSafeSize && p.End() > ImageSafeOffset && p.Size > 0 {
			return fmt.Errorf("%w: partition %d (bytes %d–%d) covers it; the first partition must start at 1 MiB or later",
				ErrImageSafeNoRoom, p.Index, p.Start, p.End())
		}
	}
	return nil
}

// WriteImageSafeAt writes d as the record of a disk of size bytes. It
// refuses when a partition covers the area or the area holds something
// other than zeros or an earlier record.
func WriteImageSafeAt(rw interface {
	io.ReaderAt
	io.WriterAt
}, size int64, d *ImageSafe) error {
	t, blank, err := readTableFor(rw, size)
	if err != nil {
		return err
	}
	if err := imageSafeRoom(t, size, blank); err != nil {
		return err
	}
	return writeImageSafeBlock(rw, d, false)
}

// writeImageSafeBlock writes the record; unless force it first checks the
// area is zeros or a record.
func writeImageSafeBlock(rw interface {
	io.ReaderAt
	io.WriterAt
}, d *ImageSafe, force bool) error {
	b, err := EncodeImageSafe(d)
	if err != nil {
		return err
	}
	if !force {
		cur := make([]byte, ImageSafeSize)
		if _, err := rw.ReadAt(cur, ImageSafeOffset); err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("read image-safe area: %w", err)
		}
		if !bytes.Equal(cur[:16], isMagic[:]) && !allZero(cur) {
			return fmt.Errorf("%w at bytes %d–%d", ErrImageSafeOccupied, ImageSafeOffset, ImageSafeOffset+ImageSafeSize)
		}
	}
	if _, err := rw.WriteAt(b, ImageSafeOffset); err != nil {
		return fmt.Errorf("write image-safe data: %w", err)
	}
	return nil
}

// clearImageSafeBlock zeroes the area if (and only if) it holds a record.
func clearImageSafeBlock(rw interface {
	io.ReaderAt
	io.WriterAt
}) error {
	cur := make([]byte, ImageSafeSize)
	if _, err := rw.ReadAt(cur, ImageSafeOffset); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("read image-safe area: %w", err)
	}
	if !bytes.Equal(cur[:16], isMagic[:]) {
		return nil
	}
	if _, err := rw.WriteAt(make([]byte, ImageSafeSize), ImageSafeOffset); err != nil {
		return fmt.Errorf("clear image-safe area: %w", err)
	}
	return nil
}

// readTableFor reads the partition table and says whether a disk without
// one is blank (its first 64 KiB are zero: no filesystem to damage).
func readTableFor(r io.ReaderAt, size int64) (t *disk.Table, blank bool, err error) {
	t, err = disk.ReadTable(r, size)
	if err != nil {
		return nil, false, fmt.Errorf("read partition table: %w", err)
	}
	if t.Kind == "none" {
		b := make([]byte, min(64<<10, size))
		if _, err := r.ReadAt(b, 0); err != nil && !errors.Is(err, io.EOF) {
			return nil, false, fmt.Errorf("read disk start: %w", err)
		}
		blank = allZero(b)
	}
	return t, blank, nil
}

// ReadImageSafe reads the image-safe record of the disk (block device or
// disk-image file) at path.
func ReadImageSafe(path string) (*ImageSafe, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	size, err := deviceSize(f)
	if err != nil {
		return nil, err
	}
	return ReadImageSafeAt(f, size)
}

// WriteImageSafe writes d as the image-safe record of the disk at path.
func WriteImageSafe(path string, d *ImageSafe) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	size, err := deviceSize(f)
	if err != nil {
		f.Close()
		return err
	}
	if d.Updated.IsZero() {
		d.Updated = time.Now().UTC()
	}
	if err := WriteImageSafeAt(f, size, d); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
