package image

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/preboot/preboot/disk"
)

// FuzzManifest: parsing and validating arbitrary bytes never panics, and a
// manifest that passes is self-consistent: every chunk lies inside its
// area, areas inside the disk, sizes add up.
func FuzzManifest(f *testing.F) {
	good := &Manifest{
		Version: FormatVersion, Name: "seed", ChunkSize: MinChunkSize,
		Disk:    Disk{Size: 4 * MinChunkSize, SectorSize: 512, Table: json.RawMessage(`{"kind":"mbr"}`)},
		Regions: []Area{{Name: "head", Start: 0, Size: 4096, Used: nil, Chunks: nil}},
		Partitions: []Area{
			{Index: 1, Start: MinChunkSize, Size: 2 * MinChunkSize, FSType: "ext4"},
			{Index: 2, Start: 3 * MinChunkSize, Size: MinChunkSize, FSType: "raw",
				Used: []disk.Extent{{Offset: 0, Length: 4096}}, Chunks: []Chunk{{Offset: 0, Length: MinChunkSize, Hash: Sum([]byte("b"))}}},
		},
		Sizes: Sizes{Logical: 4 * MinChunkSize},
	}
	good.Regions[0].Used = NormalizeExtents(nil)
	good.Partitions[0].Used = NormalizeExtents([]disk.Extent{{Offset: 0, Length: 4096}, {Offset: MinChunkSize + 512, Length: 100}})
	good.Partitions[0].Chunks = []Chunk{{Offset: 0, Length: MinChunkSize, Hash: Sum([]byte("a"))}, {Offset: MinChunkSize, Length: MinChunkSize, Zero: true}}
	good.Sizes.Used = good.UsedBytes()
	if err := good.Validate(); err != nil {
		f.Fatal(err)
	}
	var b bytes.Buffer
	if err := good.Encode(&b); err != nil {
		f.Fatal(err)
	}
	f.Add(b.Bytes())
	for _, lie := range lies(good) {
		var lb bytes.Buffer
		if err := lie.Encode(&lb); err == nil {
			f.Add(lb.Bytes())
		}
	}
	f.Add([]byte(`{"version":1}`))
	f.Add([]byte(`{"version":1,"name":"x","chunk_size":65536,"disk":{"size":1,"sector_size":512},"partitions":[{"index":1,"start":0,"size":9223372036854775807,"used":[{"offset":9223372036854775800,"length":100}],"chunks":[]}],"sizes":{"logical":1}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseManifest(bytes.NewReader(data))
		if err != nil {
			return
		}
		if m.Disk.Size <= 0 {
			t.Fatal("accepted a non-positive disk size")
		}
		var used int64
		for _, a := range m.Areas() {
			if a.Start < 0 || a.Start+a.Size > m.Disk.Size {
				t.Fatalf("%s outside the disk", a.Label())
			}
			for _, e := range a.Used {
				if e.Offset < 0 || e.Length <= 0 || e.End() > a.Size {
					t.Fatalf("%s: extent %+v outside", a.Label(), e)
				}
				used += e.Length
			}
			for _, c := range a.Chunks {
				if c.Offset%m.ChunkSize != 0 || c.Offset+c.Length > a.Size || c.Length <= 0 {
					t.Fatalf("%s: bad chunk %+v accepted", a.Label(), c)
				}
			}
		}
		if used != m.Sizes.Used {
			t.Fatal("used size mismatch accepted")
		}
		// Round trip.
		var out bytes.Buffer
		if err := m.Encode(&out); err != nil {
			t.Fatal(err)
		}
		if _, err := ParseManifest(&out); err != nil {
			t.Fatalf("re-encoded manifest rejected: %v", err)
		}
	})
}
