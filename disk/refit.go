package disk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
)

// Move says where one partition lands when a table is refitted.
type Move struct {
	Index             int
	Start, Size       int64 // in the source table (bytes)
	NewStart, NewSize int64
}

// Align is the step partitions move and resize by (1 MiB, what every
// partitioning tool aligns to).
const Align = 1 << 20

// ErrCannotRefit is wrapped when a table cannot be laid out with a
// resized partition (logical partitions after it, an unknown index…).
var ErrCannotRefit = errors.New("cannot resize the partition layout")

// Refit lays the table out on a disk of newSize bytes (of another size
// than the source) by resizing partition grow: it takes all the space
// after the last partition, or, when the partitions do not fit, gives up
// what they lack; every partition after it moves by the same amount (in
// Align steps, so they stay aligned), so a
// Windows Recovery partition after C: ends up at the end of the disk and
// C: takes the space. Partitions before it keep their place. GPT backup
// structures move to the new end. The moves of every partition that
// changed are returned (none when the disk is the same size). Nothing
// is written.
func (t *Table) Refit(newSize int64, grow int) (*Table, []Move, error) {
	if t.Kind != "gpt" && t.Kind != "mbr" {
		return nil, nil, fmt.Errorf("%w: a %q disk has no partition table", ErrCannotRefit, t.Kind)
	}
	if t.SectorSize != 512 && t.SectorSize != 4096 {
		return nil, nil, fmt.Errorf("unsupported sector size %d", t.SectorSize)
	}
	ss := int64(t.SectorSize)
	newSize = newSize / ss * ss
	var g *Partition
	var maxEnd int64
	for i := range t.Partitions {
		p := &t.Partitions[i]
		maxEnd = max(maxEnd, p.End())
		if p.Index == grow {
			g = p
		}
	}
	if g == nil {
		return nil, nil, fmt.Errorf("%w: the table has no partition %d", ErrCannotRefit, grow)
	}
	if g.IsExtended() || (t.Kind == "mbr" && g.Index > 4) {
		return nil, nil, fmt.Errorf("%w: partition %d is an extended or logical MBR partition", ErrCannotRefit, grow)
	}
	var after []Partition
	for _, p := range t.Partitions {
		if p.Index == g.Index || p.Size <= 0 {
			continue
		}
		switch {
		case p.Start >= g.End():
			if p.IsExtended() || (t.Kind == "mbr" && p.Index > 4) {
				return nil, nil, fmt.Errorf("%w: partition %d after %d is an extended or logical MBR partition", ErrCannotRefit, p.Index, grow)
			}
			after = append(after, p)
		case p.End() > g.Start:
			return nil, nil, fmt.Errorf("%w: partitions %d and %d overlap", ErrCannotRefit, p.Index, g.Index)
		}
	}
	oldAvail, newAvail, err := t.avail(newSize)
	if err != nil {
		return nil, nil, err
	}
	var delta int64
	switch {
	case newSize == t.DiskSize && newAvail == oldAvail:
		// The same disk size: the same layout.
	case len(after) == 0:
		// The last partition: it ends where the usable space ends.
		delta = newAvail - g.End()
	case newAvail >= maxEnd:
		delta = (newAvail - maxEnd) / Align * Align
	default:
		delta = -roundUp(maxEnd-newAvail, Align)
	}
	if g.Size+delta < Align {
		return nil, nil, fmt.Errorf("%w: partition %d (%s) cannot give up %s", ErrTooSmall, g.Index, human(g.Size), human(-delta))
	}
	if delta == 0 {
		c, err := t.ForDisk(newSize, false)
		return c, nil, err
	}
	moves := []Move{{Index: g.Index, Start: g.Start, Size: g.Size, NewStart: g.Start, NewSize: g.Size + delta}}
	sort.Slice(after, func(i, j int) bool { return after[i].Start < after[j].Start })
	for _, p := range after {
		moves = append(moves, Move{Index: p.Index, Start: p.Start, Size: p.Size, NewStart: p.Start + delta, NewSize: p.Size})
	}
	for _, m := range moves {
		if m.NewStart%ss != 0 || m.NewSize%ss != 0 || m.NewStart+m.NewSize > newAvail {
			return nil, nil, fmt.Errorf("%w: partition %d would end at byte %d of %d usable", ErrTooSmall, m.Index, m.NewStart+m.NewSize, newAvail)
		}
	}
	var c *Table
	switch t.Kind {
	case "gpt":
		c, err = t.gptEdit(newSize, func(entries []byte, p *gptHeader, _ uint64) error {
			for _, m := range moves {
				i := int64(m.Index - 1)
				if i < 0 || i >= int64(p.numEntries) {
					return fmt.Errorf("GPT entry %d out of range", m.Index)
				}
				e := entries[i*int64(p.entrySize):]
				binary.LittleEndian.PutUint64(e[32:], uint64(m.NewStart/ss))
				binary.LittleEndian.PutUint64(e[40:], uint64((m.NewStart+m.NewSize)/ss-1))
			}
			return nil
		})
	case "mbr":
		c, err = t.mbrEdit(newSize, moves)
	}
	if err != nil {
		return nil, nil, err
	}
	return c, moves, nil
}

// avail returns the end of the space partitions may use, in bytes, on
// the source disk and on a disk of newSize bytes.
func (t *Table) avail(newSize int64) (oldAvail, newAvail int64, err error) {
	if t.Kind == "mbr" {
		const lim = int64(0xffffffff) * 512
		return min(t.DiskSize, lim), min(newSize, lim), nil
	}
	_, l, err := parseGPT(t.rawReader(), t.DiskSize, t.SectorSize)
	if err != nil {
		return 0, 0, fmt.Errorf("saved GPT: %w", err)
	}
	ss := l.ss
	entrySectors := int64(len(l.primEntries)) / ss
	oldAvail = (int64(l.primary.lastUsable) + 1) * ss
	newAvail = (newSize/ss - 1 - entrySectors) * ss // backup entries start here
	return oldAvail, newAvail, nil
}

// mbrEdit applies moves to primary MBR entries on a disk of newSize bytes.
func (t *Table) mbrEdit(newSize int64, moves []Move) (*Table, error) {
	c := t.clone()
	c.DiskSize = newSize
	l, _, err := parseMBR(c.rawReader(), t.DiskSize)
	if err != nil {
		return nil, fmt.Errorf("saved MBR: %w", err)
	}
	for _, m := range moves {
		k := -1
		for i, p := range l.parts {
			if p.Index == m.Index {
				k = i
			}
		}
		if k < 0 || l.ebrOf[k] >= 0 {
			return nil, fmt.Errorf("MBR entry %d not found among the primary entries", m.Index)
		}
		e, err := at(c.Raw, l.entryOff[k], 16)
		if err != nil {
			return nil, err
		}
		start := uint32(m.NewStart / 512)
		binary.LittleEndian.PutUint32(e[8:], start)
		cs := chs(start)
		copy(e[1:4], cs[:])
		setMBRSize(e, start, uint32(m.NewSize/512))
	}
	l2, _, err := parseMBR(c.rawReader(), newSize)
	if err != nil {
		return nil, fmt.Errorf("adjusted MBR: %w", err)
	}
	c.Partitions = l2.parts
	return c, nil
}
