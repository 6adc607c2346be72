// Package disk reads and writes what sits around filesystems on a disk:
// partition tables (GPT, MBR) and the byte ranges in use.
package disk

// Extent is a byte range, relative to the start of whatever it describes
// (a partition or a whole disk).
type Extent struct {
	Offset int64 `json:"offset"`
	Length int64 `json:"length"`
}

// End is the first byte after the extent.
func (e Extent) End() int64 { return e.Offset + e.Length }
