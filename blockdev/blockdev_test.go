package blockdev

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (loop devices)")
	}
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i/512) ^ seed
	}
	return b
}

// TestLoopRange attaches a loop over a byte range of a file: it reads and
// writes exactly that range, and the file sees the writes.
func TestLoopRange(t *testing.T) {
	needRoot(t)
	file := filepath.Join(t.TempDir(), "disk.img")
	data := pattern(4<<20, 1)
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := AttachLoop(file, 1<<20, 2<<20, false)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	f, err := os.OpenFile(l.Path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 2<<20)
	if _, err := f.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data[1<<20:3<<20]) {
		t.Fatal("loop does not show the range")
	}
	if n, err := f.ReadAt(got[:512], 2<<20); n != 0 || err == nil {
		t.Fatalf("read past the size limit: %d, %v", n, err)
	}
	w := pattern(4096, 9)
	if _, err := f.WriteAt(w, 4096); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	back, _ := os.ReadFile(file)
	if !bytes.Equal(back[1<<20+4096:1<<20+8192], w) || !bytes.Equal(back[:1<<20], data[:1<<20]) {
		t.Fatal("the file does not hold the loop's write, or bytes outside the range changed")
	}
}

// TestLinearJoin joins two loop devices into one device-mapper device
// (where the kernel has device-mapper).
func TestLinearJoin(t *testing.T) {
	needRoot(t)
	if err := DMAvailable(); err != nil {
		t.Skip(err)
	}
	dir := t.TempDir()
	a, b := pattern(1<<20, 3), pattern(1<<20, 5)
	fa, fb := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	os.WriteFile(fa, a, 0o600)
	os.WriteFile(fb, b, 0o600)
	la, err := AttachLoop(fa, 0, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	defer la.Close()
	lb, err := AttachLoop(fb, 0, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	defer lb.Close()
	m, err := CreateLinear("preboot-test-"+filepath.Base(dir), []Segment{
		{Major: la.Major, Minor: la.Minor, Offset: 1024, Sectors: 1024},
		{Major: lb.Major, Minor: lb.Minor, Offset: 0, Sectors: 2048},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Remove()
	got, err := os.ReadFile(m.Path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, append(append([]byte(nil), a[512<<10:]...), b...)) {
		t.Fatal("the linear device does not show a's second half then b")
	}
}
