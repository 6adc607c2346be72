package tftp

import (
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// mapFile maps a regular file read-only for the duration of a transfer: blocks are sent from the
// page cache without a read(2) per block and without copying. It returns nil when the file cannot
// be mapped (empty, or a file system without mmap): the transfer then reads it.
func mapFile(f *os.File, size int64) []byte {
	if size <= 0 || int64(int(size)) != size {
		return nil
	}
	if pos, err := f.Seek(0, io.SeekCurrent); err != nil || pos != 0 {
		return nil // a generated file handed over part read: read it
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return nil
	}
	var b []byte
	if err := rc.Control(func(fd uintptr) {
		b, err = unix.Mmap(int(fd), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	}); err != nil || b == nil {
		return nil
	}
	_ = unix.Madvise(b, unix.MADV_SEQUENTIAL)
	return b
}

func unmapFile(b []byte) {
	if b != nil {
		_ = unix.Munmap(b)
	}
}
