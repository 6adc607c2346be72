package fsmap

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/preboot/preboot/disk"
)

// lvmPVEnv is a PV made by the real LVM tools on a loop device over a
// sparse file. Device-mapper is not needed (it is missing in some kernels
// and containers): LVs are created inactive (--driverloaded n) and their
// contents are written and read through the segment map LVM itself
// reports, never through this package's parser.
type lvmPVEnv struct {
	t    *testing.T
	img  string
	loop string
	vg   string
}

func lvmSetup(t *testing.T, size int64) *lvmPVEnv {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("LVM tests need root (loop devices)")
	}
	need(t, "pvcreate", "vgcreate", "lvcreate", "lvs", "losetup")
	e := &lvmPVEnv{t: t, img: sparse(t, t.TempDir(), size)}
	e.vg = fmt.Sprintf("prebootlvmtest%d_%s", os.Getpid(), strings.ReplaceAll(filepath.Base(e.img), ".", "_"))
	e.attach(e.img)
	t.Cleanup(func() { e.detach(true) })
	return e
}

func (e *lvmPVEnv) attach(img string) {
	e.t.Helper()
	e.loop = strings.TrimSpace(run(e.t, "losetup", "-f", "--show", img))
}

// detach detaches the loop device; with remove, it first removes the VG
// (best effort: it may not exist yet).
func (e *lvmPVEnv) detach(remove bool) {
	if e.loop == "" {
		return
	}
	if remove {
		exec.Command("vgremove", e.args("-ff", "-y", e.vg)...).Run()
	}
	exec.Command("losetup", "-d", e.loop).Run()
	e.loop = ""
}

// args are the common options: see only our loop device, no udev, no
// device-mapper, no backup files on the host.
func (e *lvmPVEnv) args(a ...string) []string {
	cfg := fmt.Sprintf(`devices { filter = [ "a|^%s$|", "r|.*|" ] } activation { udev_sync = 0 udev_rules = 0 } backup { backup = 0 archive = 0 }`, e.loop)
	return append([]string{"--driverloaded", "n", "--config", cfg}, a...)
}

func (e *lvmPVEnv) lvm(cmd string, a ...string) string {
	e.t.Helper()
	c := exec.Command(cmd, e.args(a...)...)
	c.Env = append(os.Environ(), "LVM_SUPPRESS_FD_WARNINGS=1")
	var stderr bytes.Buffer
	c.Stderr = &stderr
	out, err := c.Output()
	if err != nil {
		e.t.Fatalf("%s %v: %v\n%s%s", cmd, a, err, out, stderr.Bytes())
	}
	return string(out)
}

// lvmLayout is LVM's own report of where each LV lives.
type lvmLayout struct {
	peStart, extent int64
	lvs             map[string][]lvSeg // LV → its segments (LV and PV byte offsets)
	types           map[string]string
}

func (e *lvmPVEnv) layout() lvmLayout {
	e.t.Helper()
	num := func(s string) int64 {
		v, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
		if err != nil {
			e.t.Fatalf("lvm report %q: %v", s, err)
		}
		return v
	}
	l := lvmLayout{lvs: map[string][]lvSeg{}, types: map[string]string{}}
	l.peStart = num(e.lvm("pvs", "--noheadings", "--nosuffix", "--units", "b", "-o", "pe_start", e.loop))
	l.extent = num(e.lvm("vgs", "--noheadings", "--nosuffix", "--units", "b", "-o", "vg_extent_size", e.vg))
	out := e.lvm("lvs", "-a", "--segments", "--noheadings", "--nosuffix", "--units", "b", "--separator", "|",
		"-o", "lv_name,seg_start,seg_size,seg_pe_ranges,segtype", e.vg)
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Split(strings.TrimSpace(line), "|")
		if len(f) != 5 {
			e.t.Fatalf("lvs line %q", line)
		}
		name := strings.Trim(f[0], "[]")
		l.types[name] = f[4]
		if f[3] == "" {
			continue
		}
		_, rng, _ := strings.Cut(f[3], ":")
		a, b, _ := strings.Cut(rng, "-")
		pe, last := num(a), num(b)
		l.lvs[name] = append(l.lvs[name], lvSeg{lvOff: num(f[1]), pvOff: l.peStart + pe*l.extent, n: (last - pe + 1) * l.extent})
	}
	return l
}

// lvFile copies an LV out of a PV image into a file of its own.
func lvFile(t *testing.T, pvImg string, segs []lvSeg) string {
	t.Helper()
	f, err := os.Open(pvImg)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var size int64
	for _, s := range segs {
		size = max(size, s.lvOff+s.n)
	}
	out := sparse(t, t.TempDir(), size)
	copyMapped(t, &lvReader{r: f, segs: segs, size: size}, out, func(o int64) int64 { return o }, size)
	return out
}

// lvWrite writes the image file img into the LV's place in the PV image.
func lvWrite(t *testing.T, img, pvImg string, segs []lvSeg) {
	t.Helper()
	in, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	st, _ := in.Stat()
	lv := &lvReader{segs: segs}
	copyMapped(t, in, pvImg, func(o int64) (pv int64) {
		lv.translate(disk.Extent{Offset: o, Length: 1}, func(off, _ int64) { pv = off })
		return pv
	}, st.Size())
}

// copyMapped copies the non-zero 64 KiB blocks of src's first n bytes to
// dst at to(offset).
func copyMapped(t *testing.T, src io.ReaderAt, dst string, to func(int64) int64, n int64) {
	t.Helper()
	out, err := os.OpenFile(dst, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	buf := make([]byte, RawGranularity)
	for off := int64(0); off < n; off += int64(len(buf)) {
		b := buf[:min(int64(len(buf)), n-off)]
		if err := disk.ReadFull(src, b, off); err != nil {
			t.Fatal(err)
		}
		if disk.AllZero(b) {
			continue
		}
		if _, err := out.WriteAt(b, to(off)); err != nil {
			t.Fatal(err)
		}
	}
}

// mounted mounts a filesystem image read-only and returns the mount point.
func mounted(t *testing.T, img string) string {
	t.Helper()
	dir := t.TempDir()
	run(t, "mount", "-o", "ro,loop", img, dir)
	t.Cleanup(func() { exec.Command("umount", dir).Run() })
	return dir
}

func inspectFile(t *testing.T, path string) Info {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	info, err := Inspect(f, st.Size())
	if err != nil {
		t.Fatalf("Inspect(%s): %v", path, err)
	}
	checkSorted(t, info.Used, st.Size())
	return info
}

// TestLVM makes a PV with an ext4 LV in two segments, an XFS LV and an
// LV of unknown data, copies only the used extents into a
// fresh zero file and checks that LVM, e2fsck and xfs_repair accept the
// copy and every file is intact.
func TestLVM(t *testing.T) {
	need(t, "mkfs.ext4", "mkfs.xfs", "e2fsck", "xfs_repair", "mount")
	e := lvmSetup(t, 512<<20)
	e.lvm("pvcreate", "-y", "-ff", e.loop)
	e.lvm("vgcreate", "-s", "1m", e.vg, e.loop)
	for _, lv := range [][2]string{{"root", "20m"}, {"data", "320m"}, {"blob", "8m"}} {
		e.lvm("lvcreate", "-an", "-Zn", "-Wn", "-y", "-L", lv[1], "-n", lv[0], e.vg)
	}
	e.lvm("lvextend", "-y", "-L", "+12m", e.vg+"/root") // root gets a second segment after blob
	lay := e.layout()
	if len(lay.lvs["root"]) != 2 {
		t.Fatalf("root should have two segments: %+v", lay.lvs["root"])
	}

	files := tree(t, 7, 200)
	dir := t.TempDir()
	rootImg := sparse(t, dir, 32<<20)
	run(t, "mkfs.ext4", "-q", "-F", "-d", files, rootImg)
	dataImg := sparse(t, dir, 320<<20)
	run(t, "mkfs.xfs", "-q", "-f", dataImg)
	func() {
		mnt := t.TempDir()
		run(t, "mount", "-o", "loop", dataImg, mnt)
		defer run(t, "umount", mnt)
		run(t, "cp", "-a", files+"/.", mnt)
	}()
	blob := make([]byte, 1<<20)
	rand.Read(blob)
	blobImg := filepath.Join(dir, "blob.img")
	os.WriteFile(blobImg, append(make([]byte, 2<<20), blob...), 0o644)
	lvWrite(t, rootImg, e.img, lay.lvs["root"])
	lvWrite(t, dataImg, e.img, lay.lvs["data"])
	lvWrite(t, blobImg, e.img, lay.lvs["blob"])

	info := inspectFile(t, e.img)
	t.Logf("%s: %s used; %q", info.FSType, lvmSize(total(info.Used)), info.Warnings)
	if info.FSType != "lvm2" {
		t.Fatalf("FSType %q", info.FSType)
	}
	for _, want := range []string{"lv root: ext4", "lv data: xfs", "lv blob: no known filesystem"} {
		if !strings.Contains(strings.Join(info.Warnings, "\n"), want) {
			t.Errorf("no warning %q in %q", want, info.Warnings)
		}
	}
	// Every used byte is LVM's own (before pe_start) or inside an LV;
	// the XFS LV is far from whole.
	var allocated []disk.Extent
	for _, segs := range lay.lvs {
		for _, s := range segs {
			allocated = append(allocated, disk.Extent{Offset: s.pvOff, Length: s.n})
		}
	}
	allocated = append(allocated, disk.Extent{Length: lay.peStart})
	if out := subtract(info.Used, (&collector{ex: allocated}).result(1<<62)); len(out) > 0 {
		t.Errorf("used outside the label, metadata and LVs: %+v", out)
	}
	if u := total(info.Used); u > 100<<20 {
		t.Errorf("%d bytes used: the XFS LV was not mapped through its filesystem", u)
	}

	// What a restore writes, into a fresh zero file; the original goes
	// away first (the copy has the same VG and PV UUIDs).
	cp := copyUsed(t, e.img, info.Used)
	e.detach(false)
	e.attach(cp)
	e.lvm("vgck", e.vg)
	if got := e.layout(); fmt.Sprint(got) != fmt.Sprint(lay) {
		t.Fatalf("LVM sees another layout on the copy:\n%+v\n%+v", got, lay)
	}
	root := lvFile(t, cp, lay.lvs["root"])
	run(t, "e2fsck", "-fn", root)
	sameTree(t, files, mounted(t, root))
	data := lvFile(t, cp, lay.lvs["data"])
	run(t, "xfs_repair", "-n", data)
	sameTree(t, files, mounted(t, data))
	for _, lv := range []string{"blob"} {
		a, _ := os.ReadFile(lvFile(t, e.img, lay.lvs[lv]))
		b, _ := os.ReadFile(lvFile(t, cp, lay.lvs[lv]))
		if !bytes.Equal(a, b) {
			t.Errorf("lv %s differs after the round trip", lv)
		}
	}

	// The same metadata, moved so that it wraps around the end of the
	// circular buffer: LVM reads it, and so must we.
	wrapped := filepath.Join(t.TempDir(), "wrapped.img")
	run(t, "cp", "--sparse=always", e.img, wrapped)
	wrapMetadata(t, wrapped, 700)
	e.detach(false)
	e.attach(wrapped)
	e.lvm("vgck", e.vg)
	if got := e.layout(); fmt.Sprint(got) != fmt.Sprint(lay) {
		t.Fatalf("LVM sees another layout after wrapping:\n%+v\n%+v", got, lay)
	}
	winfo := inspectFile(t, wrapped)
	if !equalExtents(winfo.Used, info.Used) {
		t.Errorf("wrapped metadata maps differently:\n%+v\n%+v", winfo.Used, info.Used)
	}
}

// wrapMetadata rewrites the first metadata area of the PV image so that
// its current text starts tail bytes before the end of the buffer.
func wrapMetadata(t *testing.T, img string, tail int64) {
	t.Helper()
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	head := make([]byte, 4096)
	disk.ReadFull(f, head, 0)
	s, _ := lvmLabelSector(head)
	pv, err := parseLVMLabel(head[s*512:], s, 1<<40)
	if err != nil {
		t.Fatal(err)
	}
	a := pv.mdas[0]
	text, err := lvmMetadata(f, 1<<40, a)
	if err != nil {
		t.Fatal(err)
	}
	h := make([]byte, 512)
	disk.ReadFull(f, h, a.off)
	n := binary.LittleEndian.Uint64(h[48:])
	raw := make([]byte, n) // the text plus its NUL, as LVM stores it
	copy(raw, text)
	if int64(n) <= tail {
		t.Fatalf("metadata of %d bytes cannot wrap at %d", n, tail)
	}
	off := a.size - tail
	f.WriteAt(raw[:tail], a.off+off)
	f.WriteAt(raw[tail:], a.off+512)
	binary.LittleEndian.PutUint64(h[40:], uint64(off))
	binary.LittleEndian.PutUint32(h[56:], lvmCRC(raw))
	binary.LittleEndian.PutUint32(h, lvmCRC(h[4:]))
	if _, err := f.WriteAt(h, a.off); err != nil {
		t.Fatal(err)
	}
}

// TestLVMCorruptFallsBack: a damaged metadata checksum makes the PV raw,
// never partly mapped.
func TestLVMCorruptFallsBack(t *testing.T) {
	e := lvmSetup(t, 16<<20)
	e.lvm("pvcreate", "-y", "-ff", e.loop)
	e.lvm("vgcreate", "-s", "1m", e.vg, e.loop)
	e.lvm("lvcreate", "-an", "-Zn", "-Wn", "-y", "-L", "4m", "-n", "a", e.vg)
	e.detach(false)
	f, err := os.OpenFile(e.img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// Flip a byte of the text the first metadata area points at.
	h := make([]byte, 512)
	disk.ReadFull(f, h, 4096)
	at := 4096 + int64(binary.LittleEndian.Uint64(h[40:])) + 20
	b := []byte{0}
	f.ReadAt(b, at)
	b[0] ^= 0x20
	f.WriteAt(b, at)
	_, err = lvmInspect(f, 16<<20, func() []byte { x := make([]byte, 4096); f.ReadAt(x, 0); return x }())
	if !errors.Is(err, errCorrupt) {
		t.Fatalf("damaged metadata: %v, want errCorrupt", err)
	}
	info := inspectFile(t, e.img)
	if info.FSType != "raw" {
		t.Fatalf("FSType %q, want raw", info.FSType)
	}
}

func TestLVMConfigParser(t *testing.T) {
	text := `# comment
vg0 {
	id = "abc-def"
	seqno = 7
	status = ["RESIZEABLE", "READ", "WRITE"]
	extent_size = 8192 # 4 MiB
	physical_volumes {
		pv0 { id = "abcdef" pe_start = 2048 pe_count = 10 }
	}
	logical_volumes {
		"lv.1" {
			status = ["READ", "VISIBLE"]
			segment1 { start_extent = 0 extent_count = 2 type = "striped" stripe_count = 1 stripes = [ "pv0", 3 ] }
		}
	}
}
description = "quote \" and backslash \\"
`
	vg, err := parseLVMVG(text, "abcdef")
	if err != nil {
		t.Fatal(err)
	}
	if vg.seqno != 7 || vg.extent != 4<<20 || vg.peStart != 1<<20 || vg.peCount != 10 || len(vg.lvs) != 1 {
		t.Fatalf("%+v", vg)
	}
	lv := vg.lvs[0]
	if lv.name != "lv.1" || !lv.visible || len(lv.segs) != 1 || lv.segs[0].areas[0] != (lvmStripe{pv: "pv0", pe: 3}) {
		t.Fatalf("%+v", lv)
	}
	root, _ := parseCfg(text)
	if d := root.str("description"); d != `quote " and backslash \` {
		t.Errorf("description %q", d)
	}
	for _, bad := range []string{"a {", "a = ", "a = [1, 2", `a = "x`, "}", "a b", strings.Repeat("a {", 100) + strings.Repeat("}", 100)} {
		if _, err := parseCfg(bad); !errors.Is(err, errCorrupt) {
			t.Errorf("parseCfg(%q) = %v, want errCorrupt", bad, err)
		}
	}
}

// FuzzLVM runs the PV reader over a sparse disk (the FuzzUsed encoding).
func FuzzLVM(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		o := decodeOverlay(data)
		o.size = min(o.size, 16<<20) // the LVs are scanned raw: keep it quick
		head := make([]byte, 4096)
		n, _ := o.ReadAt(head, 0)
		if !isLVM2(head[:n]) {
			return
		}
		info, err := lvmInspect(o, o.size, head[:n])
		if err != nil && !errors.Is(err, errCorrupt) {
			t.Fatalf("reading an in-memory disk: %v", err)
		}
		checkSorted(t, info.Used, o.size)
		checkSorted(t, info.Zero, o.size)
	})
}

// FuzzLVMText runs the metadata text parser.
func FuzzLVMText(f *testing.F) {
	f.Fuzz(func(t *testing.T, text string, uuid string) {
		vg, err := parseLVMVG(text, uuid)
		if err != nil {
			if !errors.Is(err, errCorrupt) {
				t.Fatalf("error not marked corrupt: %v", err)
			}
			return
		}
		if vg.extent <= 0 || vg.peStart < 0 || vg.peCount < 0 {
			t.Fatalf("%+v", vg)
		}
	})
}

// TestWriteLVMSeeds regenerates testdata/fuzz/FuzzLVM*/ from PVs made with
// the real tools: go test -run TestWriteLVMSeeds ./fsmap/ -update-seeds
func TestWriteLVMSeeds(t *testing.T) {
	if !*updateSeeds {
		return // the corpus is checked in; -update-seeds rewrites it
	}
	need(t, "mke2fs")
	e := lvmSetup(t, 8<<20)
	e.lvm("pvcreate", "-y", "-ff", e.loop)
	e.lvm("vgcreate", "-s", "1m", e.vg, e.loop)
	e.lvm("lvcreate", "-an", "-Zn", "-Wn", "-y", "-L", "2m", "-n", "a", e.vg)
	e.lvm("lvcreate", "-an", "-Zn", "-Wn", "-y", "-L", "1m", "-n", "b", e.vg)
	e.lvm("lvextend", "-y", "-L", "+1m", e.vg+"/a")
	lay := e.layout()
	fs := sparse(t, t.TempDir(), 3<<20)
	run(t, "mke2fs", "-q", "-F", "-t", "ext2", "-b", "1024", "-N", "16", "-I", "128", fs)
	lvWrite(t, fs, e.img, lay.lvs["a"])
	os.WriteFile(fs, bytes.Repeat([]byte("raw!"), 1024), 0o644)
	lvWrite(t, fs, e.img, lay.lvs["b"])
	e.detach(false)
	wrapped := filepath.Join(t.TempDir(), "wrapped.img")
	run(t, "cp", "--sparse=always", e.img, wrapped)
	wrapMetadata(t, wrapped, 300)
	write := func(dir, name, body string) {
		os.MkdirAll(filepath.Join("testdata", "fuzz", dir), 0o755)
		if len(body) > 64<<10 {
			t.Errorf("seed %s/%s is %d bytes", dir, name, len(body))
		}
		if err := os.WriteFile(filepath.Join("testdata", "fuzz", dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for name, img := range map[string]string{"pv": e.img, "pv-wrapped": wrapped} {
		b, err := os.ReadFile(img)
		if err != nil {
			t.Fatal(err)
		}
		// The label, the mda_header, the current text (older copies are
		// left out) and the LVs.
		h := b[4096:]
		size := int64(binary.LittleEndian.Uint64(h[32:]))
		off, n := int64(binary.LittleEndian.Uint64(h[40:])), int64(binary.LittleEndian.Uint64(h[48:]))
		keep := func(o int64) bool {
			r := o - 4096 // offset in the metadata area
			return o < 4096+512 || o >= 1<<20 ||
				r+512 > off && r < min(off+n, size) ||
				off+n > size && r >= 512 && r < 512+off+n-size
		}
		enc := encodeOverlay(b, keep)
		write("FuzzLVM", name, fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", enc))
		info, err := lvmInspect(decodeOverlay(enc), int64(len(b)), b[:4096])
		t.Logf("%s: %d bytes encoded, %+v %v", name, len(enc), info, err)
	}
	f, _ := os.Open(e.img)
	defer f.Close()
	head := make([]byte, 4096)
	f.ReadAt(head, 0)
	pv, err := parseLVMLabel(head[512:], 1, 8<<20)
	if err != nil {
		t.Fatal(err)
	}
	text, err := lvmMetadata(f, 8<<20, pv.mdas[0])
	if err != nil {
		t.Fatal(err)
	}
	write("FuzzLVMText", "vg", fmt.Sprintf("go test fuzz v1\nstring(%q)\nstring(%q)\n", text, pv.uuid))
}
