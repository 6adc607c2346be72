package image

import (
	"cmp"
	"slices"
)

// Area states in a Diff.
const (
	DiffSame    = "same"
	DiffChanged = "changed"
	DiffAdded   = "added"
	DiffRemoved = "removed"
)

// AreaDiff compares one partition or region of two images.
type AreaDiff struct {
	// Area is its label: "partition 2", "region head".
	Area   string `json:"area"`
	Index  int    `json:"index"`
	Name   string `json:"name,omitempty"`
	FSType string `json:"fstype,omitempty"`
	// Status is same, changed, added (only in B) or removed (only in A).
	Status string `json:"status"`
	// Moved: the area's start or size differs (its chunks are compared
	// by their offset inside it all the same).
	Moved bool `json:"moved,omitempty"`
	// Chunks counts the windows whose content differs (present in one
	// image only, or with another hash); Bytes sums their lengths (the
	// larger of the two).
	Chunks      int   `json:"chunks"`
	Bytes       int64 `json:"bytes"`
	ChunksTotal int   `json:"chunks_total"`
}

// DiffResult compares image A with image B, area by area.
type DiffResult struct {
	A     string     `json:"a"`
	B     string     `json:"b"`
	Same  bool       `json:"same"`
	Areas []AreaDiff `json:"areas"`
	// NewChunks counts the distinct stored chunks B references that A
	// does not (what a re-capture from A to B added); NewBytes their
	// uncompressed size.
	NewChunks int   `json:"new_chunks"`
	NewBytes  int64 `json:"new_bytes"`
	// Chunks and Bytes total the differing windows of every area.
	Chunks int   `json:"chunks"`
	Bytes  int64 `json:"bytes"`
}

// Diff compares two manifests: partitions by index, regions by name, and
// inside each the chunk windows by offset.
func Diff(a, b *Manifest) DiffResult {
	res := DiffResult{A: a.Name, B: b.Name, Same: true}
	key := func(x *Area) string {
		if x.Name != "" {
			return "r:" + x.Name
		}
		return "p:" + x.Label()
	}
	inA := map[string]*Area{}
	for _, x := range a.Areas() {
		inA[key(x)] = x
	}
	seen := map[string]bool{}
	for _, y := range b.Areas() {
		k := key(y)
		seen[k] = true
		x := inA[k]
		d := AreaDiff{Area: y.Label(), Index: y.Index, Name: y.Name, FSType: y.FSType, ChunksTotal: len(y.Chunks)}
		if x == nil {
			d.Status = DiffAdded
			d.Chunks = len(y.Chunks)
			for _, c := range y.Chunks {
				d.Bytes += c.Length
			}
		} else {
			d.Moved = x.Start != y.Start || x.Size != y.Size
			d.Chunks, d.Bytes = diffChunks(x.Chunks, y.Chunks)
			d.Status = DiffSame
			if d.Chunks > 0 || d.Moved || x.FSType != y.FSType || !slices.Equal(x.Used, y.Used) {
				d.Status = DiffChanged
			}
		}
		res.Areas = append(res.Areas, d)
	}
	for _, x := range a.Areas() {
		if seen[key(x)] {
			continue
		}
		d := AreaDiff{Area: x.Label(), Index: x.Index, Name: x.Name, FSType: x.FSType, Status: DiffRemoved, Chunks: len(x.Chunks)}
		for _, c := range x.Chunks {
			d.Bytes += c.Length
		}
		res.Areas = append(res.Areas, d)
	}
	slices.SortStableFunc(res.Areas, func(p, q AreaDiff) int {
		// Partitions by index, then regions by name.
		if (p.Name == "") != (q.Name == "") {
			if p.Name == "" {
				return -1
			}
			return 1
		}
		return cmp.Or(cmp.Compare(p.Index, q.Index), cmp.Compare(p.Name, q.Name))
	})
	for _, d := range res.Areas {
		if d.Status != DiffSame {
			res.Same = false
		}
		res.Chunks += d.Chunks
		res.Bytes += d.Bytes
	}
	have := map[Hash]struct{}{}
	for _, h := range a.ChunkHashes() {
		have[h] = struct{}{}
	}
	counted := map[Hash]struct{}{}
	for _, y := range b.Areas() {
		for _, c := range y.Chunks {
			if c.Zero {
				continue
			}
			if _, ok := have[c.Hash]; ok {
				continue
			}
			if _, ok := counted[c.Hash]; ok {
				continue
			}
			counted[c.Hash] = struct{}{}
			res.NewChunks++
			res.NewBytes += c.Length
		}
	}
	return res
}

// diffChunks counts the windows that differ between two sorted chunk
// lists and the bytes they cover.
func diffChunks(xs, ys []Chunk) (n int, bytes int64) {
	i, j := 0, 0
	for i < len(xs) || j < len(ys) {
		switch {
		case j == len(ys) || (i < len(xs) && xs[i].Offset < ys[j].Offset):
			if !xs[i].Zero {
				n++
				bytes += xs[i].Length
			}
			i++
		case i == len(xs) || ys[j].Offset < xs[i].Offset:
			if !ys[j].Zero {
				n++
				bytes += ys[j].Length
			}
			j++
		default:
			x, y := xs[i], ys[j]
			if x.Zero != y.Zero || x.Hash != y.Hash || x.Length != y.Length {
				n++
				bytes += max(x.Length, y.Length)
			}
			i++
			j++
		}
	}
	return n, bytes
}
