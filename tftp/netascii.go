package tftp

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// netasciiReader converts a byte stream to netascii (RFC 764 as used by RFC 1350): LF is sent
// as CR LF and a bare CR as CR NUL, so a client that decodes netascii gets the file back as it
// is on disk.
type netasciiReader struct {
	r       *bufio.Reader
	pending int // byte to emit next, or -1
}

func newNetasciiReader(r io.Reader) *netasciiReader {
	return &netasciiReader{r: bufio.NewReaderSize(r, 64<<10), pending: -1}
}

func (n *netasciiReader) Read(p []byte) (int, error) {
	i := 0
	for i < len(p) {
		if n.pending >= 0 {
			p[i] = byte(n.pending)
			n.pending = -1
			i++
			continue
		}
		c, err := n.r.ReadByte()
		if err != nil {
			if i > 0 && errors.Is(err, io.EOF) {
				return i, nil
			}
			return i, err
		}
		switch c {
		case '\n':
			p[i], n.pending = '\r', '\n'
		case '\r':
			p[i], n.pending = '\r', 0
		default:
			p[i] = c
		}
		i++
	}
	return i, nil
}

// netasciiSize returns the size of r's content once converted to netascii, reading r to its end.
func netasciiSize(r io.Reader) (int64, error) {
	buf := make([]byte, 64<<10)
	var size int64
	for {
		n, err := r.Read(buf)
		size += int64(n) + int64(bytes.Count(buf[:n], []byte{'\n'})+bytes.Count(buf[:n], []byte{'\r'}))
		if errors.Is(err, io.EOF) {
			return size, nil
		}
		if err != nil {
			return 0, fmt.Errorf("measuring netascii size: %w", err)
		}
	}
}

// newBufferedReader reads ahead from the file so that small blocks do not cost a system call each.
func newBufferedReader(r io.Reader) io.Reader {
	return bufio.NewReaderSize(r, sourceBuffer)
}
