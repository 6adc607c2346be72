// Package image implements Preboot's disk image format: a versioned JSON
// manifest plus content-addressed, zstd-compressed chunks kept once in a
// repository, and the capture/restore engine that moves the used bytes of a
// disk between an io.ReaderAt/io.WriterAt and a ChunkStore.
//
// See docs/image-format.md for the on-disk and on-wire formats.
package image

import (
	"encoding/hex"
	"fmt"

	"github.com/zeebo/blake3"
)

// HashSize is the length of a chunk hash (BLAKE3-256).
const HashSize = 32

// Hash is the BLAKE3-256 of a chunk's uncompressed window content.
type Hash [HashSize]byte

// Sum returns the BLAKE3-256 hash of b.
func Sum(b []byte) Hash { return Hash(blake3.Sum256(b)) }

// String is the lowercase hex form used in manifests, file names and URLs.
func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// IsZero reports whether h is the all-zero value (no hash).
func (h Hash) IsZero() bool { return h == Hash{} }

// MarshalText implements encoding.TextMarshaler.
func (h Hash) MarshalText() ([]byte, error) {
	b := make([]byte, 2*HashSize)
	hex.Encode(b, h[:])
	return b, nil
}

// UnmarshalText implements encoding.TextUnmarshaler; it accepts exactly 64
// lowercase hex digits.
func (h *Hash) UnmarshalText(b []byte) error {
	p, err := ParseHash(string(b))
	if err != nil {
		return err
	}
	*h = p
	return nil
}

// ParseHash parses the 64-digit lowercase hex form of a hash.
func ParseHash(s string) (Hash, error) {
	var h Hash
	if len(s) != 2*HashSize {
		return h, fmt.Errorf("hash %.80q: want %d hex digits, got %d", s, 2*HashSize, len(s))
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return h, fmt.Errorf("hash %.80q: not lowercase hex", s)
		}
	}
	if _, err := hex.Decode(h[:], []byte(s)); err != nil {
		return h, fmt.Errorf("hash %.80q: %w", s, err)
	}
	return h, nil
}
