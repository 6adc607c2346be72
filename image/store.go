package image

import (
	"context"
	"errors"
	"fmt"
	"runtime"

	"github.com/klauspost/compress/zstd"
)

// ChunkStore is where chunks live: a local Repo, or (later) an HTTP client
// talking to the server's repository. Chunks are addressed by the hash of
// their uncompressed content and stored as one zstd frame each.
//
// Implementations must be safe for concurrent use.
type ChunkStore interface {
	// Missing returns the subset of hashes the store does not hold.
	Missing(ctx context.Context, hashes []Hash) (map[Hash]struct{}, error)
	// Put stores one compressed chunk. It must not retain data after it
	// returns. Putting a chunk that exists is a cheap no-op.
	Put(ctx context.Context, h Hash, data []byte) error
	// Get appends the compressed chunk to dst[:0] and returns it. A chunk
	// the store does not hold yields an error wrapping ErrNotFound.
	Get(ctx context.Context, h Hash, dst []byte) ([]byte, error)
}

// Publisher makes a captured image visible. Publish must fail, without
// publishing, unless every chunk the manifest lists is durably stored.
type Publisher interface {
	Publish(ctx context.Context, m *Manifest) error
}

// Errors callers may test with errors.Is.
var (
	ErrNotFound       = errors.New("not found")
	ErrMissingChunks  = errors.New("chunks missing from store")
	ErrCorruptChunk   = errors.New("corrupt chunk")
	ErrTargetTooSmall = errors.New("target disk too small")
	// ErrTableMismatch: a partition restore onto a disk whose partition
	// table does not have the selected partitions where the image has them.
	ErrTableMismatch = errors.New("the target's partition table does not match the image's")
)

// ChunkError names the chunk and where in the image it belongs.
type ChunkError struct {
	Hash   Hash
	Area   string // "partition 2", "region mbr-gap"
	Offset int64  // window offset inside the area
	Err    error
}

func (e *ChunkError) Error() string {
	if e.Area == "" {
		return fmt.Sprintf("chunk %s: %v", e.Hash, e.Err)
	}
	return fmt.Sprintf("chunk %s (%s, offset %d): %v", e.Hash, e.Area, e.Offset, e.Err)
}

func (e *ChunkError) Unwrap() error { return e.Err }

// DefaultLevel is the zstd level used when none is given (like zstd -3).
const DefaultLevel = 3

// newEncoder returns an encoder for EncodeAll from up to n goroutines.
func newEncoder(level, n int) (*zstd.Encoder, error) {
	if level == 0 {
		level = DefaultLevel
	}
	enc, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstd.EncoderLevelFromZstd(level)),
		zstd.WithEncoderConcurrency(max(n, 1)),
		zstd.WithZeroFrames(true),
		zstd.WithEncoderCRC(false), // the BLAKE3 hash covers the content
	)
	if err != nil {
		return nil, fmt.Errorf("zstd encoder: %w", err)
	}
	return enc, nil
}

// newDecoder returns a decoder for DecodeAll from up to n goroutines,
// refusing frames that expand past MaxChunkSize.
func newDecoder(n int) (*zstd.Decoder, error) {
	dec, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(max(n, 1)),
		zstd.WithDecoderMaxMemory(MaxChunkSize),
		zstd.WithDecoderMaxWindow(MaxChunkSize),
	)
	if err != nil {
		return nil, fmt.Errorf("zstd decoder: %w", err)
	}
	return dec, nil
}

// decodeVerify decompresses data into dst (cap at least want) and checks
// the length and hash. It returns the decoded bytes.
func decodeVerify(dec *zstd.Decoder, h Hash, data []byte, want int64, dst []byte) ([]byte, error) {
	var hdr zstd.Header
	if err := hdr.Decode(data); err != nil {
		return nil, fmt.Errorf("%w: bad zstd frame header: %w", ErrCorruptChunk, err)
	}
	if hdr.HasFCS && want >= 0 && hdr.FrameContentSize != uint64(want) {
		return nil, fmt.Errorf("%w: frame holds %d bytes, window is %d", ErrCorruptChunk, hdr.FrameContentSize, want)
	}
	out, err := dec.DecodeAll(data, dst[:0])
	if err != nil {
		return nil, fmt.Errorf("%w: decompress: %w", ErrCorruptChunk, err)
	}
	if want >= 0 && int64(len(out)) != want {
		return nil, fmt.Errorf("%w: decompressed to %d bytes, window is %d", ErrCorruptChunk, len(out), want)
	}
	if Sum(out) != h {
		return nil, fmt.Errorf("%w: content hash mismatch", ErrCorruptChunk)
	}
	return out, nil
}

// VerifyChunk decompresses a stored chunk and checks it hashes to h. It is
// what a server runs on chunks received from untrusted clients.
func VerifyChunk(h Hash, data []byte) error {
	dec, err := newDecoder(1)
	if err != nil {
		return err
	}
	defer dec.Close()
	_, err = decodeVerify(dec, h, data, -1, nil)
	return err
}

func workers(n int) int {
	if n > 0 {
		return n
	}
	return runtime.GOMAXPROCS(0)
}
