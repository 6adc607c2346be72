package fsmap

// LVM2 physical volumes. The PV label (LABELONE, in one of the first four
// sectors) points at the metadata areas; the current VG metadata text is
// found through the mda_header's raw_locn (inside a circular buffer that
// may wrap) and parsed with a small reader for LVM's config syntax. Each LV
// made only of single-stripe segments on this PV is mapped through to its
// filesystem (the other readers of this package), and the filesystem's
// used extents are translated back to PV offsets. Everything LVM itself
// needs (label, metadata areas, the space before pe_start) is kept, so a
// plain write of the used extents recreates the same PV: restore needs no
// LVM tools. Thin pools, snapshots, mirrors/raid, cache, striping and LVs
// that continue on other PVs are kept whole (their allocated extents).

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/preboot/preboot/disk"
)

const (
	lvmSector     = 512
	lvmLabelID    = "LABELONE"
	lvmLabelType  = "LVM2 001"
	lvmMDAMagic   = " LVM2 x[5A%r0N*>"
	lvmInitialCRC = 0xf597a6cf
	lvmMDAHeader  = 512 // the mda_header; the circular text buffer follows
	// lvmMaxText bounds the metadata text read from disk (real VGs with
	// hundreds of LVs stay below a MiB).
	lvmMaxText = 32 << 20
	// lvmMaxDepth and lvmMaxNodes bound the config parser.
	lvmMaxDepth = 32
	lvmMaxNodes = 1 << 20
)

// isLVM2 reports whether head (the first sectors of a partition) holds an
// LVM2 PV label.
func isLVM2(head []byte) bool {
	_, ok := lvmLabelSector(head)
	return ok
}

func lvmLabelSector(head []byte) (int, bool) {
	for s := 0; s < 4 && (s+1)*lvmSector <= len(head); s++ {
		b := head[s*lvmSector:]
		if string(b[:8]) == lvmLabelID && string(b[24:32]) == lvmLabelType {
			return s, true
		}
	}
	return 0, false
}

// lvmCRC is LVM's calc_crc: CRC-32 (IEEE) without the final inversion,
// seeded with lvmInitialCRC.
func lvmCRC(b ...[]byte) uint32 {
	c := ^uint32(lvmInitialCRC)
	for _, p := range b {
		c = crc32.Update(c, crc32.IEEETable, p)
	}
	return ^c
}

// lvmArea is a disk_locn: a byte range of the PV (size 0: to the end).
type lvmArea struct{ off, size int64 }

// lvmPV is what the label says.
type lvmPV struct {
	uuid  string // 32 characters, no dashes
	size  int64
	data  []lvmArea
	mdas  []lvmArea
	boots []lvmArea // bootloader areas (pv_header_extension)
}

// parseLVMLabel reads the label sector (sector s of the partition).
func parseLVMLabel(sec []byte, s int, size int64) (*lvmPV, error) {
	if len(sec) < lvmSector {
		return nil, corrupt("lvm label sector short")
	}
	sec = sec[:lvmSector]
	if got := binary.LittleEndian.Uint64(sec[8:]); got != uint64(s) {
		return nil, corrupt("lvm label in sector %d says sector %d", s, got)
	}
	if want, got := binary.LittleEndian.Uint32(sec[16:]), lvmCRC(sec[20:]); want != got {
		return nil, corrupt("lvm label checksum %#x, computed %#x", want, got)
	}
	off := int(binary.LittleEndian.Uint32(sec[20:]))
	if off < 32 || off > lvmSector-40 {
		return nil, corrupt("lvm pv_header offset %d", off)
	}
	h := sec[off:]
	pv := &lvmPV{uuid: string(h[:32]), size: int64(binary.LittleEndian.Uint64(h[32:]))}
	p := 40
	list := func() ([]lvmArea, error) {
		var out []lvmArea
		for {
			if p+16 > len(h) {
				return nil, corrupt("lvm pv_header area list runs past the label sector")
			}
			o, n := binary.LittleEndian.Uint64(h[p:]), binary.LittleEndian.Uint64(h[p+8:])
			p += 16
			if o == 0 {
				return out, nil
			}
			if o >= uint64(size) || n > uint64(size) {
				return nil, corrupt("lvm area %d+%d outside the %d-byte partition", o, n, size)
			}
			out = append(out, lvmArea{int64(o), int64(n)})
		}
	}
	var err error
	if pv.data, err = list(); err != nil {
		return nil, err
	}
	if pv.mdas, err = list(); err != nil {
		return nil, err
	}
	// pv_header_extension (LVM 2.02.110+): version, flags, bootloader areas.
	if p+8 <= len(h) && binary.LittleEndian.Uint32(h[p:]) != 0 {
		p += 8
		if pv.boots, err = list(); err != nil {
			return nil, err
		}
	}
	return pv, nil
}

// lvmMetadata reads one metadata area: its current text, or "" when the
// area holds none (an orphan PV, or an area marked ignored).
func lvmMetadata(r io.ReaderAt, size int64, a lvmArea) (string, error) {
	if a.size < lvmMDAHeader*2 || a.off > size-a.size {
		return "", corrupt("lvm metadata area %d+%d outside the partition", a.off, a.size)
	}
	h := make([]byte, lvmMDAHeader)
	if err := disk.ReadFull(r, h, a.off); err != nil {
		return "", fmt.Errorf("read lvm mda_header: %w", err)
	}
	if string(h[4:20]) != lvmMDAMagic {
		return "", corrupt("lvm mda_header magic missing at %d", a.off)
	}
	if want, got := binary.LittleEndian.Uint32(h), lvmCRC(h[4:]); want != got {
		return "", corrupt("lvm mda_header checksum %#x, computed %#x", want, got)
	}
	if v := binary.LittleEndian.Uint32(h[20:]); v != 1 {
		return "", corrupt("lvm mda_header version %d", v)
	}
	if st, sz := binary.LittleEndian.Uint64(h[24:]), binary.LittleEndian.Uint64(h[32:]); st != uint64(a.off) || sz != uint64(a.size) {
		return "", corrupt("lvm mda_header says %d+%d, label says %d+%d", st, sz, a.off, a.size)
	}
	// raw_locn[0] is the committed metadata.
	loc := h[40:]
	off, n := binary.LittleEndian.Uint64(loc), binary.LittleEndian.Uint64(loc[8:])
	sum, flags := binary.LittleEndian.Uint32(loc[16:]), binary.LittleEndian.Uint32(loc[20:])
	if off == 0 || flags&1 != 0 { // no metadata, or RAW_LOCN_IGNORED
		return "", nil
	}
	buf := uint64(a.size - lvmMDAHeader) // the circular buffer's length
	if off < lvmMDAHeader || off >= uint64(a.size) || n == 0 || n > buf || n > lvmMaxText {
		return "", corrupt("lvm raw_locn %d+%d in a %d-byte metadata area", off, n, a.size)
	}
	text := make([]byte, n)
	first := min(n, uint64(a.size)-off)
	if err := disk.ReadFull(r, text[:first], a.off+int64(off)); err != nil {
		return "", fmt.Errorf("read lvm metadata: %w", err)
	}
	if first < n { // wrapped around to the start of the buffer
		if err := disk.ReadFull(r, text[first:], a.off+lvmMDAHeader); err != nil {
			return "", fmt.Errorf("read lvm metadata: %w", err)
		}
	}
	if got := lvmCRC(text); got != sum {
		return "", corrupt("lvm metadata checksum %#x, computed %#x", sum, got)
	}
	if i := bytes.IndexByte(text, 0); i >= 0 {
		text = text[:i]
	}
	return string(text), nil
}

// cfgValue is a value of LVM's config syntax: a string, a number (also
// kept as its text), or a flat list.
type cfgValue struct {
	str   string
	num   int64
	isNum bool
	list  []cfgValue
	isLst bool
}

// cfgSection is `name { key = value ... sub { ... } }`.
type cfgSection struct {
	name string
	keys []string
	vals []cfgValue
	subs []*cfgSection
}

func (s *cfgSection) value(key string) (cfgValue, bool) {
	for i, k := range s.keys {
		if k == key {
			return s.vals[i], true
		}
	}
	return cfgValue{}, false
}

func (s *cfgSection) sub(name string) *cfgSection {
	for _, c := range s.subs {
		if c.name == name {
			return c
		}
	}
	return nil
}

func (s *cfgSection) str(key string) string {
	v, _ := s.value(key)
	return v.str
}

// int returns a non-negative number, or an error naming the key.
func (s *cfgSection) int(key string) (int64, error) {
	v, ok := s.value(key)
	if !ok || !v.isNum || v.num < 0 {
		return 0, corrupt("lvm metadata: %s %q: want a non-negative number", s.name, key)
	}
	return v.num, nil
}

type cfgParser struct {
	s     string
	p     int
	nodes int
}

func isCfgWord(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("_.+-/:@%", c) >= 0
}

// skip passes white space and comments.
func (p *cfgParser) skip() {
	for p.p < len(p.s) {
		switch c := p.s[p.p]; {
		case c == '#':
			for p.p < len(p.s) && p.s[p.p] != '\n' {
				p.p++
			}
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			p.p++
		default:
			return
		}
	}
}

func (p *cfgParser) errf(format string, a ...any) error {
	return corrupt("lvm metadata at byte %d: %s", p.p, fmt.Sprintf(format, a...))
}

func (p *cfgParser) word() string {
	st := p.p
	for p.p < len(p.s) && isCfgWord(p.s[p.p]) {
		p.p++
	}
	return p.s[st:p.p]
}

// parseCfg parses LVM's config text format.
func parseCfg(text string) (*cfgSection, error) {
	p := &cfgParser{s: text}
	root := &cfgSection{}
	if err := p.section(root, 0); err != nil {
		return nil, err
	}
	return root, nil
}

func (p *cfgParser) section(s *cfgSection, depth int) error {
	if depth > lvmMaxDepth {
		return p.errf("sections nested deeper than %d", lvmMaxDepth)
	}
	for {
		p.skip()
		if p.p >= len(p.s) {
			if depth > 0 {
				return p.errf("section %q not closed", s.name)
			}
			return nil
		}
		if p.s[p.p] == '}' {
			if depth == 0 {
				return p.errf("unexpected '}'")
			}
			p.p++
			return nil
		}
		if p.nodes++; p.nodes > lvmMaxNodes {
			return p.errf("more than %d entries", lvmMaxNodes)
		}
		var name string
		if p.s[p.p] == '"' {
			v, err := p.quoted()
			if err != nil {
				return err
			}
			name = v
		} else if name = p.word(); name == "" {
			return p.errf("unexpected %q", p.s[p.p])
		}
		p.skip()
		if p.p >= len(p.s) {
			return p.errf("%q: unexpected end", name)
		}
		switch p.s[p.p] {
		case '{':
			p.p++
			c := &cfgSection{name: name}
			if err := p.section(c, depth+1); err != nil {
				return err
			}
			s.subs = append(s.subs, c)
		case '=':
			p.p++
			v, err := p.value(true)
			if err != nil {
				return err
			}
			s.keys = append(s.keys, name)
			s.vals = append(s.vals, v)
		default:
			return p.errf("%q: want '=' or '{'", name)
		}
	}
}

func (p *cfgParser) quoted() (string, error) {
	p.p++ // opening quote
	var b strings.Builder
	for p.p < len(p.s) {
		c := p.s[p.p]
		p.p++
		switch c {
		case '"':
			return b.String(), nil
		case '\\':
			if p.p < len(p.s) {
				b.WriteByte(p.s[p.p])
				p.p++
			}
		default:
			b.WriteByte(c)
		}
	}
	return "", p.errf("string not closed")
}

func (p *cfgParser) value(listOK bool) (cfgValue, error) {
	p.skip()
	if p.p >= len(p.s) {
		return cfgValue{}, p.errf("value missing")
	}
	switch c := p.s[p.p]; {
	case c == '"':
		s, err := p.quoted()
		return cfgValue{str: s}, err
	case c == '[' && listOK:
		p.p++
		v := cfgValue{isLst: true}
		for {
			p.skip()
			if p.p >= len(p.s) {
				return cfgValue{}, p.errf("list not closed")
			}
			if p.s[p.p] == ']' {
				p.p++
				return v, nil
			}
			if len(v.list) > 0 {
				if p.s[p.p] != ',' {
					return cfgValue{}, p.errf("want ',' in a list")
				}
				p.p++
			}
			if p.nodes++; p.nodes > lvmMaxNodes {
				return cfgValue{}, p.errf("more than %d entries", lvmMaxNodes)
			}
			e, err := p.value(false)
			if err != nil {
				return cfgValue{}, err
			}
			v.list = append(v.list, e)
		}
	case isCfgWord(c):
		w := p.word()
		v := cfgValue{str: w}
		if n, err := strconv.ParseInt(w, 10, 64); err == nil {
			v.num, v.isNum = n, true
		}
		return v, nil
	}
	return cfgValue{}, p.errf("unexpected %q", p.s[p.p])
}

// lvmVG is the part of the VG metadata the mapping needs.
type lvmVG struct {
	name    string
	seqno   int64
	extent  int64             // bytes
	pvs     map[string]string // pvN → uuid without dashes
	self    string            // our pvN
	peStart int64             // bytes
	peCount int64
	lvs     []*lvmLV
}

type lvmLV struct {
	name    string
	visible bool
	segs    []lvmSeg
	refs    []string // LV and PV names the non-striped segments name
}

type lvmSeg struct {
	start, count int64 // logical extents
	typ          string
	stripes      int64
	areas        []lvmStripe // PV areas (striped segments)
}

type lvmStripe struct {
	pv string
	pe int64
	n  int64 // extents (only for the overlap check)
}

// parseLVMVG reads the VG metadata text for the PV whose label uuid is given.
func parseLVMVG(text, uuid string) (*lvmVG, error) {
	root, err := parseCfg(text)
	if err != nil {
		return nil, err
	}
	var vgs *cfgSection
	for _, s := range root.subs {
		if s.sub("physical_volumes") != nil {
			vgs = s
			break
		}
	}
	if vgs == nil {
		return nil, corrupt("lvm metadata holds no volume group")
	}
	vg := &lvmVG{name: vgs.name, pvs: map[string]string{}}
	if vg.seqno, err = vgs.int("seqno"); err != nil {
		return nil, err
	}
	es, err := vgs.int("extent_size")
	if err != nil {
		return nil, err
	}
	if es == 0 || es > 1<<32 {
		return nil, corrupt("lvm extent_size %d sectors", es)
	}
	vg.extent = es * lvmSector
	for _, p := range vgs.sub("physical_volumes").subs {
		id := strings.ReplaceAll(p.str("id"), "-", "")
		vg.pvs[p.name] = id
		if id != uuid {
			continue
		}
		if vg.self != "" {
			return nil, corrupt("lvm metadata lists PV %s twice", uuid)
		}
		vg.self = p.name
		ps, err := p.int("pe_start")
		if err != nil {
			return nil, err
		}
		if ps > 1<<50 {
			return nil, corrupt("lvm pe_start %d sectors", ps)
		}
		vg.peStart = ps * lvmSector
		if vg.peCount, err = p.int("pe_count"); err != nil {
			return nil, err
		}
	}
	if vg.self == "" {
		return nil, corrupt("lvm metadata of VG %q does not list this PV", vg.name)
	}
	if lvs := vgs.sub("logical_volumes"); lvs != nil {
		for _, l := range lvs.subs {
			lv, err := parseLVMLV(l)
			if err != nil {
				return nil, err
			}
			vg.lvs = append(vg.lvs, lv)
		}
	}
	return vg, nil
}

func parseLVMLV(l *cfgSection) (*lvmLV, error) {
	lv := &lvmLV{name: l.name}
	st, _ := l.value("status")
	for _, v := range st.list {
		lv.visible = lv.visible || v.str == "VISIBLE"
	}
	for _, s := range l.subs {
		if !strings.HasPrefix(s.name, "segment") {
			continue
		}
		var sg lvmSeg
		var err error
		if sg.start, err = s.int("start_extent"); err != nil {
			return nil, err
		}
		if sg.count, err = s.int("extent_count"); err != nil {
			return nil, err
		}
		sg.typ = s.str("type")
		if stripes, ok := s.value("stripes"); ok {
			if sg.stripes, err = s.int("stripe_count"); err != nil {
				return nil, err
			}
			if sg.stripes == 0 || int64(len(stripes.list)) != 2*sg.stripes || sg.count%sg.stripes != 0 {
				return nil, corrupt("lvm lv %s %s: %d stripes, list of %d", l.name, s.name, sg.stripes, len(stripes.list))
			}
			for i := 0; i < len(stripes.list); i += 2 {
				pv, pe := stripes.list[i], stripes.list[i+1]
				if pv.isNum || !pe.isNum || pe.num < 0 {
					return nil, corrupt("lvm lv %s %s: bad stripe list", l.name, s.name)
				}
				sg.areas = append(sg.areas, lvmStripe{pv: pv.str, pe: pe.num})
			}
		}
		if sg.typ != "striped" && sg.typ != "linear" {
			// Whatever strings a thin/raid/mirror/snapshot/cache segment
			// names (sub-LVs, origins, pools) make those LVs part of a
			// structure this reader does not map.
			for _, v := range s.vals {
				for _, e := range append([]cfgValue{v}, v.list...) {
					if !e.isNum && e.str != "" {
						lv.refs = append(lv.refs, e.str)
					}
				}
			}
		}
		lv.segs = append(lv.segs, sg)
	}
	return lv, nil
}

// lvmInspect maps an LVM2 PV partition.
func lvmInspect(r io.ReaderAt, size int64, head []byte) (Info, error) {
	info := Info{FSType: "lvm2"}
	s, _ := lvmLabelSector(head)
	pv, err := parseLVMLabel(head[s*lvmSector:], s, size)
	if err != nil {
		return info, err
	}
	var c collector
	// The newest metadata of all areas (they normally agree).
	// A damaged area is tolerated when another one is sound, as LVM does.
	var vg *lvmVG
	var bad error
	for _, a := range pv.mdas {
		c.add(a.off, a.size)
		text, err := lvmMetadata(r, size, a)
		var v *lvmVG
		if err == nil && text != "" {
			v, err = parseLVMVG(text, pv.uuid)
		}
		switch {
		case errors.Is(err, errCorrupt):
			bad = err
		case err != nil:
			return info, err
		case v != nil && (vg == nil || v.seqno > vg.seqno):
			vg = v
		}
	}
	if bad != nil {
		if vg == nil {
			return info, bad
		}
		info.Warnings = append(info.Warnings, fmt.Sprintf("lvm metadata area not used: %v", bad))
	}
	for _, a := range pv.boots {
		c.add(a.off, a.size)
	}
	if vg == nil {
		// No VG metadata here (an orphan PV, or the VG keeps it on other
		// PVs only): keep the head and every non-zero block of the data.
		start := int64(lvmMDAHeader)
		if len(pv.data) > 0 {
			start = pv.data[0].off
		}
		c.add(0, start)
		raw, err := Raw(io.NewSectionReader(r, start, size-start), size-start)
		if err != nil {
			return info, err
		}
		for _, e := range raw {
			c.add(start+e.Offset, e.Length)
		}
		info.Warnings = append(info.Warnings, "lvm pv without volume group metadata: data area copied raw (every non-zero block)")
		info.Used = c.result(size)
		return info, nil
	}
	if vg.peStart < lvmMDAHeader || vg.peStart > size || vg.peCount > (size-vg.peStart)/vg.extent {
		return info, corrupt("lvm pv %s: %d extents of %d bytes from %d do not fit the %d-byte partition",
			vg.self, vg.peCount, vg.extent, vg.peStart, size)
	}
	c.add(0, vg.peStart)
	var zero collector
	if err := vg.mapLVs(r, &c, &zero, &info); err != nil {
		return info, err
	}
	info.Used = c.result(size)
	info.Zero = zero.result(size)
	return info, nil
}

// mapLVs adds every LV's extents on this PV: the used part of simple LVs'
// filesystems, everything allocated for the rest.
func (vg *lvmVG) mapLVs(r io.ReaderAt, c, zero *collector, info *Info) error {
	referenced := map[string]bool{}
	// LVM never gives a PE to two LVs; metadata that does is not trusted
	// (it would also make the LVs' filesystems be read more than once).
	var pes []lvmStripe
	for _, lv := range vg.lvs {
		for _, n := range lv.refs {
			referenced[n] = true
		}
		for _, sg := range lv.segs {
			for _, a := range sg.areas {
				if a.pv == vg.self {
					pes = append(pes, lvmStripe{pe: a.pe, n: sg.count / max(sg.stripes, 1)})
				}
			}
		}
	}
	sort.Slice(pes, func(i, j int) bool { return pes[i].pe < pes[j].pe })
	for i := 1; i < len(pes); i++ {
		if pes[i].pe < pes[i-1].pe+pes[i-1].n {
			return corrupt("lvm metadata gives extent %d of pv %s twice", pes[i].pe, vg.self)
		}
	}
	for _, lv := range vg.lvs {
		var (
			whole   []string // why the LV is kept whole
			mine    []lvSeg  // this PV's areas of the LV, logical order
			elsewhr bool
			lvOff   int64
		)
		sort.Slice(lv.segs, func(i, j int) bool { return lv.segs[i].start < lv.segs[j].start })
		var next int64
		for _, sg := range lv.segs {
			if sg.start != next {
				whole = append(whole, "segments do not follow each other")
			}
			next = sg.start + sg.count
			if sg.typ != "striped" && sg.typ != "linear" {
				whole = append(whole, sg.typ+" segment")
			} else if sg.stripes > 1 {
				whole = append(whole, fmt.Sprintf("striped over %d", sg.stripes))
			}
			for _, a := range sg.areas {
				if _, ok := vg.pvs[a.pv]; !ok {
					return corrupt("lvm lv %s names unknown pv %q", lv.name, a.pv)
				}
				n := sg.count / sg.stripes
				if a.pv != vg.self {
					elsewhr = true
					continue
				}
				if a.pe > vg.peCount || n > vg.peCount-a.pe {
					return corrupt("lvm lv %s: extents %d+%d beyond pe_count %d", lv.name, a.pe, n, vg.peCount)
				}
				mine = append(mine, lvSeg{lvOff: lvOff, pvOff: vg.peStart + a.pe*vg.extent, n: n * vg.extent})
				lvOff += n * vg.extent
			}
		}
		if elsewhr {
			whole = append(whole, "continues on other PVs")
		}
		if referenced[lv.name] {
			whole = append(whole, "part of a thin pool, snapshot, mirror, raid or cache")
		}
		if !lv.visible && len(whole) == 0 {
			whole = append(whole, "hidden LV")
		}
		var alloc int64
		for _, s := range mine {
			alloc += s.n
		}
		if len(mine) == 0 {
			continue // nothing of it on this PV (thin LVs, other PVs)
		}
		if len(whole) > 0 {
			for _, s := range mine {
				c.add(s.pvOff, s.n)
			}
			info.Warnings = append(info.Warnings, fmt.Sprintf("lv %s: %s: all %s allocated on this pv copied",
				lv.name, strings.Join(lvmDedup(whole), ", "), lvmSize(alloc)))
			continue
		}
		if err := lvmMapFS(c, zero, info, lv.name, &lvReader{r: r, segs: mine, size: alloc}); err != nil {
			return err
		}
	}
	return nil
}

func lvmDedup(s []string) []string {
	var out []string
	for _, v := range s {
		if !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}

// lvmMapFS maps one LV's contents with this package's readers and adds the
// used extents, translated to PV offsets.
func lvmMapFS(c, zero *collector, info *Info, name string, lv *lvReader) error {
	head := make([]byte, 4096)
	n, err := lv.ReadAt(head[:min(int64(len(head)), lv.size)], 0)
	if err != nil && err != io.EOF {
		return fmt.Errorf("read lv %s: %w", name, err)
	}
	var in Info
	what := ""
	if isLVM2(head[:n]) {
		what = "holds an lvm pv: copied raw (every non-zero block)"
	} else {
		in, err = detectFS(lv, lv.size)
		switch {
		case errors.Is(err, errCorrupt):
			what = fmt.Sprintf("%s structures not trusted (%v): copied raw (every non-zero block)", in.FSType, err)
			in = Info{}
		case err != nil:
			return fmt.Errorf("lv %s: %w", name, err)
		case in.FSType == "":
			what = "no known filesystem: copied raw (every non-zero block)"
		}
	}
	if in.FSType == "" {
		if in.Used, err = Raw(lv, lv.size); err != nil {
			return fmt.Errorf("lv %s: %w", name, err)
		}
		in.FSType = "raw"
	}
	used := lvmTotal(in.Used)
	if what == "" {
		what = fmt.Sprintf("%s, %s used", in.FSType, lvmSize(used))
	} else {
		what = fmt.Sprintf("%s, %s", what, lvmSize(used))
	}
	info.Warnings = append(info.Warnings, fmt.Sprintf("lv %s: %s", name, what))
	for _, w := range in.Warnings {
		info.Warnings = append(info.Warnings, fmt.Sprintf("lv %s: %s", name, w))
	}
	if in.Unsafe != nil && info.Unsafe == nil {
		info.Unsafe = fmt.Errorf("lv %s: %w", name, in.Unsafe)
	}
	for _, e := range in.Used {
		lv.translate(e, c.add)
	}
	for _, e := range in.Zero {
		lv.translate(e, zero.add)
	}
	return nil
}

func lvmTotal(ex []disk.Extent) (n int64) {
	for _, e := range ex {
		n += e.Length
	}
	return n
}

func lvmSize(n int64) string {
	for _, u := range []struct {
		s string
		v int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.v {
			return fmt.Sprintf("%.1f %s", float64(n)/float64(u.v), u.s)
		}
	}
	return fmt.Sprintf("%d B", n)
}

// lvSeg maps n bytes of an LV at lvOff to the PV at pvOff.
type lvSeg struct{ lvOff, pvOff, n int64 }

// lvReader reads an LV through its segments on the PV.
type lvReader struct {
	r    io.ReaderAt
	segs []lvSeg // ascending, contiguous lvOff
	size int64
}

func (l *lvReader) find(off int64) int {
	return sort.Search(len(l.segs), func(i int) bool { return l.segs[i].lvOff+l.segs[i].n > off })
}

func (l *lvReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("lv read at a negative offset")
	}
	done := 0
	for i := l.find(off); done < len(p) && i < len(l.segs); i++ {
		s := l.segs[i]
		o := off + int64(done) - s.lvOff
		k := int(min(int64(len(p)-done), s.n-o))
		n, err := l.r.ReadAt(p[done:done+k], s.pvOff+o)
		done += n
		if err != nil && !(err == io.EOF && n == k) {
			return done, err
		}
	}
	if done < len(p) {
		return done, io.EOF
	}
	return done, nil
}

// translate calls add for the PV ranges of the LV extent e.
func (l *lvReader) translate(e disk.Extent, add func(off, n int64)) {
	for i := l.find(e.Offset); i < len(l.segs) && l.segs[i].lvOff < e.End(); i++ {
		s := l.segs[i]
		lo, hi := max(e.Offset, s.lvOff), min(e.End(), s.lvOff+s.n)
		add(s.pvOff+lo-s.lvOff, hi-lo)
	}
}
