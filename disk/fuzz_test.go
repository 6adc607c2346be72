package disk

import (
	"bytes"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// The fuzz inputs describe a sparse disk, so small corpus files can hold
// real tables from big disks: 8 bytes disk size (clipped to maxFuzzDisk),
// then records of 4 bytes offset, 2 bytes length, data. Zeros elsewhere.
const maxFuzzDisk = 1 << 40

type overlay struct {
	size int64
	rr   []RawRegion
}

func decodeOverlay(b []byte) *overlay {
	o := &overlay{}
	if len(b) < 8 {
		return o
	}
	o.size = int64(binary.LittleEndian.Uint64(b) % maxFuzzDisk)
	b = b[8:]
	for len(b) >= 6 {
		off := int64(binary.LittleEndian.Uint32(b))
		n := int(binary.LittleEndian.Uint16(b[4:]))
		b = b[6:]
		n = min(n, len(b))
		o.rr = append(o.rr, RawRegion{Offset: off, Data: b[:n]})
		b = b[n:]
	}
	return o
}

func (o *overlay) ReadAt(p []byte, off int64) (int, error) {
	return (&rawReader{o.rr, o.size}).ReadAt(p, off)
}

// encodeOverlay keeps the non-zero 512-byte sectors of a disk image.
func encodeOverlay(img []byte) []byte {
	out := binary.LittleEndian.AppendUint64(nil, uint64(len(img)))
	for s := 0; s < len(img); s += 512 {
		sec := img[s:min(s+512, len(img))]
		if AllZero(sec) {
			continue
		}
		out = binary.LittleEndian.AppendUint32(out, uint32(s))
		out = binary.LittleEndian.AppendUint16(out, uint16(len(sec)))
		out = append(out, sec...)
	}
	return out
}

// memDisk records writes as raw regions: a sparse disk of any size.
type memDisk struct {
	size int64
	rr   []RawRegion
}

func (m *memDisk) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > m.size {
		return 0, io.ErrShortWrite
	}
	m.rr = append(m.rr, RawRegion{Offset: off, Data: append([]byte(nil), p...)})
	return len(p), nil
}

func (m *memDisk) ReadAt(p []byte, off int64) (int, error) {
	return (&rawReader{m.rr, m.size}).ReadAt(p, off)
}

func FuzzReadTable(f *testing.F) { f.Fuzz(fuzzReadTable) }

func fuzzReadTable(t *testing.T, data []byte) {
	o := decodeOverlay(data)
	tab, err := ReadTable(o, o.size)
	if err != nil {
		return
	}
	var raw int64
	for _, p := range tab.Partitions {
		if p.Size < 0 || p.Start < 0 {
			t.Fatalf("negative partition %+v", p)
		}
	}
	for _, r := range tab.Raw {
		raw += int64(len(r.Data))
	}
	if raw > 64<<20 {
		t.Fatalf("%d raw bytes", raw)
	}
	// Same disk as is, and a larger one with the last partition grown: what
	// is written must read back as the same kind of table.
	for _, c := range []struct {
		size int64
		grow bool
	}{{o.size, false}, {o.size + 1<<20, true}} {
		nt, err := tab.ForDisk(c.size, c.grow)
		if err != nil {
			continue
		}
		m := &memDisk{size: nt.DiskSize}
		if err := WriteTable(m, nt); err != nil {
			t.Fatalf("WriteTable after ForDisk: %v", err)
		}
		back, err := ReadTable(m, nt.DiskSize)
		if err != nil || back.Kind != nt.Kind || len(back.Partitions) != len(nt.Partitions) {
			t.Fatalf("re-read %v: %+v vs %+v", err, back, nt)
		}
	}
}

var updateSeeds = flag.Bool("update-seeds", false, "rewrite testdata/fuzz seed corpora from images made with the real tools")

// TestWriteFuzzSeeds regenerates testdata/fuzz/FuzzReadTable from real tables
// made with sfdisk: go test -run TestWriteFuzzSeeds ./disk/ -update-seeds
func TestWriteFuzzSeeds(t *testing.T) {
	if !*updateSeeds {
		return // the corpus is checked in; -update-seeds rewrites it
	}
	need(t, "sfdisk")
	dir := filepath.Join("testdata", "fuzz", "FuzzReadTable")
	os.MkdirAll(dir, 0o755)
	for name, script := range map[string]string{
		"mbr-logical": mbrScript,
		"gpt":         gptScript,
		"gpt-small":   "label: gpt\ntable-length: 4\nsize=1M, name=x\nsize=1M\n",
	} {
		p := sparse(t, 64<<20)
		run(t, script, "sfdisk", "-q", p)
		seed := encodeOverlay(fileBytes(t, p))
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", seed)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func readSeed(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "fuzz", "FuzzReadTable", name))
	if err != nil {
		t.Fatal(err)
	}
	_, lit, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	s, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lit, "[]byte("), ")"))
	if err != nil {
		t.Fatal(err)
	}
	return []byte(s)
}

// TestGPT4K reads a GPT made by sfdisk on a 4096-byte-sector loop device
// (the seed gpt-4k) and moves it to a larger disk.
func TestGPT4K(t *testing.T) {
	o := decodeOverlay(readSeed(t, "gpt-4k"))
	tab, err := ReadTable(o, o.size)
	if err != nil {
		t.Fatal(err)
	}
	if tab.Kind != "gpt" || tab.SectorSize != 4096 || len(tab.Partitions) != 2 ||
		tab.Partitions[0].Start != 256*4096 || tab.Partitions[1].Size != 4096*4096 ||
		tab.Partitions[0].Name != "efi" || tab.DiskID != "4f880244-51b4-f14e-aaf2-d605adefdbde" {
		t.Fatalf("%+v", tab)
	}
	same, _ := tab.ForDisk(o.size, false)
	m := &memDisk{size: o.size}
	if err := WriteTable(m, same); err != nil {
		t.Fatal(err)
	}
	a, b := make([]byte, o.size), make([]byte, o.size)
	o.ReadAt(a, 0)
	m.ReadAt(b, 0)
	if !bytes.Equal(a, b) {
		t.Fatal("rewritten 4K GPT differs")
	}
	big, err := tab.ForDisk(o.size*2, true)
	if err != nil {
		t.Fatal(err)
	}
	m = &memDisk{size: big.DiskSize}
	WriteTable(m, big)
	back, err := ReadTable(m, big.DiskSize)
	if err != nil || back.SectorSize != 4096 {
		t.Fatal(err, back)
	}
	_, l, err := parseGPT(m, big.DiskSize, 4096)
	if err != nil || l.backup == nil || l.backup.myLBA != uint64(big.DiskSize/4096-1) {
		t.Fatalf("backup GPT: %v %+v", err, l)
	}
	if end := back.Partitions[1].End(); end != int64(l.primary.lastUsable+1)*4096 {
		t.Errorf("last partition ends at %d", end)
	}
}
