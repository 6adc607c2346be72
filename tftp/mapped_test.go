package tftp

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// A regular file is sent from a memory mapping. If it shrinks under the transfer, the blocks past
// its new end cannot be read: the client gets an ERROR, not zeros, not a crash.
func TestMappedFileTruncatedDuringTransfer(t *testing.T) {
	root := t.TempDir()
	path := filepath.Join(root, "f")
	writeFile(t, path, randomBytes(7, 64<<10))
	addr := startServer(t, &Server{Root: root, Logger: discardLogger()})
	c := newTestClient(t, addr)
	c.rrq("f")
	c.mustData(1)
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	c.ack(1)
	for {
		p, err := c.recv(5 * time.Second)
		if err != nil {
			t.Fatalf("no ERROR after the file shrank: %v", err)
		}
		if e, ok := p.(*ErrorPacket); ok {
			if e.Code != ErrUndefined || e.Message != "Read error" {
				t.Fatalf("got error %d %q, want %d \"Read error\"", e.Code, e.Message, ErrUndefined)
			}
			return
		}
		// A block already on its way (or resent) before the server saw the truncation.
		if d, ok := p.(*DataPacket); !ok || d.Block > 2 {
			t.Fatalf("got %s", describe(p))
		}
	}
}
