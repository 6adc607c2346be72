package tftp

import (
	"path/filepath"
	"strconv"
	"testing"
)

// BenchmarkDownload measures a 4 MiB download over loopback with the test client (which is
// itself part of the cost); allocations are the server's and the client's.
func BenchmarkDownload(b *testing.B) {
	root := b.TempDir()
	data := randomBytes(40, 4<<20)
	if err := writeFileErr(filepath.Join(root, "f"), data); err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct{ blk, win int }{{512, 1}, {1468, 1}, {1468, 16}, {8192, 8}} {
		b.Run("blksize"+strconv.Itoa(c.blk)+"/window"+strconv.Itoa(c.win), func(b *testing.B) {
			addr := startServer(b, &Server{Root: root, Logger: discardLogger()})
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				if got := download(b, addr, "f", c.blk, c.win); len(got) != len(data) {
					b.Fatalf("got %d bytes", len(got))
				}
			}
		})
	}
}
