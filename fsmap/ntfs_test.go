package fsmap

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/preboot/preboot/disk"
)

// mkNTFS makes an NTFS volume of size bytes in a sparse file.
func mkNTFS(t testing.TB, size int64, args ...string) string {
	t.Helper()
	img := sparse(t, t.TempDir(), size)
	run(t, "mkfs.ntfs", append(append([]string{"-F", "-f", "-Q", "-q"}, args...), img)...)
	return img
}

// ntfsPut copies data into the volume as the file name (ntfscp: POSIX namespace).
func ntfsPut(t testing.TB, img, name string, data []byte) {
	t.Helper()
	src := filepath.Join(t.TempDir(), "src")
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, "ntfscp", "-q", img, src, name)
}

// fileOf is n bytes: head, then fill.
func fileOf(n int, head string, fill byte) []byte {
	b := bytes.Repeat([]byte{fill}, n)
	copy(b, head)
	return b
}

// inspectImg runs Inspect on an image file and checks the invariants every
// Info must keep: Used and Zero sorted and merged, Zero inside Used.
func inspectImg(t testing.TB, img string) Info {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	info, err := Inspect(f, st.Size())
	if err != nil {
		t.Fatalf("Inspect(%s): %v", img, err)
	}
	if info.FSType != "ntfs" {
		t.Fatalf("type %s (warnings %q)", info.FSType, info.Warnings)
	}
	checkSorted(t, info.Used, st.Size())
	checkSorted(t, info.Zero, st.Size())
	checkSubset(t, info.Zero, info.Used)
	return info
}

func checkSubset(t testing.TB, sub, of []disk.Extent) {
	t.Helper()
	if got := intersectExtents(sub, of); !equalExtents(got, sub) {
		t.Fatalf("extents %v not inside %v", sub, of)
	}
}

var ntfsRunLine = regexp.MustCompile(`^\s+(\d+)\s+(-?\d+)\s+(\d+)\s*$`)

// ntfsFileClusters is where ntfs-3g (ntfscluster -F) says the file's
// non-resident $DATA lives, as byte extents.
func ntfsFileClusters(t testing.TB, img, path string) []disk.Extent {
	t.Helper()
	out := run(t, "ntfscluster", "-f", "-F", path, img)
	cs := grabInt(t, run(t, "ntfsinfo", "-f", "-m", img), `Cluster Size: (\d+)`)
	var ex []disk.Extent
	inData := false
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, " - ") {
			inData = strings.Contains(l, "0x80 - non-resident")
			continue
		}
		if m := ntfsRunLine.FindStringSubmatch(l); inData && m != nil {
			lcn, _ := strconv.ParseInt(m[2], 10, 64)
			n, _ := strconv.ParseInt(m[3], 10, 64)
			if lcn >= 0 {
				ex = append(ex, disk.Extent{Offset: lcn * cs, Length: n * cs})
			}
		}
	}
	if len(ex) == 0 {
		t.Fatalf("no clusters for %s in\n%s", path, out)
	}
	return ex
}

// ntfsRoundTrip writes what a capture stores and a restore writes (the Used
// extents, zeros for the Zero ones) into a new image, checks it with
// ntfsfix and reads the files back: want holds the expected contents,
// zeroed the names that must read back as zeros.
func ntfsRoundTrip(t testing.TB, img string, info Info, want map[string][]byte, zeroed map[string]int) {
	t.Helper()
	cp := copyUsed(t, img, info.Used)
	f, err := os.OpenFile(cp, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, z := range info.Zero {
		if _, err := f.WriteAt(make([]byte, z.Length), z.Offset); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	run(t, "ntfsfix", "-n", cp)
	for name, w := range want {
		got, err := exec.Command("ntfscat", cp, name).Output()
		if err != nil || !bytes.Equal(got, w) {
			t.Errorf("%s differs after the round trip (%v)", name, err)
		}
	}
	for name, n := range zeroed {
		got, err := exec.Command("ntfscat", cp, name).Output()
		if err != nil || len(got) != n || !disk.AllZero(got) {
			t.Errorf("%s: %d bytes, not %d zeros, after the round trip (%v)", name, len(got), n, err)
		}
	}
}

// usedClusters checks Used against ntfs-3g's count of used clusters.
func usedClusters(t testing.TB, img string, info Info) {
	t.Helper()
	m := run(t, "ntfsinfo", "-f", "-m", img)
	cs := grabInt(t, m, `Cluster Size: (\d+)`)
	vol := grabInt(t, m, `Volume Size in Clusters: (\d+)`)
	free := grabInt(t, run(t, "ntfscluster", "-f", "-i", img), `bytes of free space\s*: (\d+)`)
	var inVol int64
	for _, e := range info.Used {
		inVol += max(0, min(e.End(), vol*cs)-e.Offset)
	}
	if inVol/cs != vol-free/cs {
		t.Errorf("%d used clusters, ntfs-3g says %d", inVol/cs, vol-free/cs)
	}
}

func TestNTFSWindowsFiles(t *testing.T) {
	need(t, "mkfs.ntfs", "ntfscp", "ntfscat", "ntfsfix", "ntfsinfo", "ntfscluster")
	for _, tc := range []struct {
		name string
		args []string
	}{{"4k", nil}, {"512", []string{"-c", "512"}}} {
		t.Run(tc.name, func(t *testing.T) {
			img := mkNTFS(t, 64<<20, tc.args...)
			want := map[string][]byte{}
			for i, n := range []int{1, 5000, 300 << 10} {
				name := fmt.Sprintf("/file%d.bin", i)
				want[name] = fileOf(n, name, byte(i+1))
				ntfsPut(t, img, name, want[name])
			}
			zeroed := map[string]int{"/pagefile.sys": 4 << 20, "/swapfile.sys": 256 << 10, "/hiberfil.sys": 1 << 20}
			ntfsPut(t, img, "/pagefile.sys", fileOf(4<<20, "", 0xaa))
			ntfsPut(t, img, "/swapfile.sys", fileOf(256<<10, "", 0xbb))
			ntfsPut(t, img, "/hiberfil.sys", fileOf(1<<20, "\x00\x00\x00\x00", 0xcc))
			info := inspectImg(t, img)
			if info.Unsafe != nil || len(info.Warnings) > 0 {
				t.Fatalf("unsafe %v, warnings %q", info.Unsafe, info.Warnings)
			}
			var all []disk.Extent
			for name := range zeroed {
				all = append(all, ntfsFileClusters(t, img, name)...)
			}
			if all = mergeExtents(all); !equalExtents(info.Zero, all) {
				t.Fatalf("Zero %v, ntfs-3g says the paging files are at %v", info.Zero, all)
			}
			usedClusters(t, img, info)
			ntfsRoundTrip(t, img, info, want, zeroed)
		})
	}
}

func TestNTFSHibernated(t *testing.T) {
	need(t, "mkfs.ntfs", "ntfscp", "ntfscluster")
	for _, tc := range []struct {
		name, head string
		hibernated bool
	}{{"hibr", "hibr", true}, {"HIBR", "HIBR", true}, {"wake", "wake", false}, {"zeros", "\x00\x00\x00\x00", false}} {
		t.Run(tc.name, func(t *testing.T) {
			img := mkNTFS(t, 32<<20)
			ntfsPut(t, img, "/pagefile.sys", fileOf(1<<20, "", 0xaa))
			ntfsPut(t, img, "/hiberfil.sys", fileOf(2<<20, tc.head, 0xcc))
			// ntfs-3g (ntfs_volume_check_hiberfile) refuses to write to a
			// hibernated volume: the same verdict from another reader.
			src := filepath.Join(t.TempDir(), "x")
			os.WriteFile(src, []byte("x"), 0o644)
			out, err := exec.Command("ntfscp", "-q", img, src, "/x").CombinedOutput()
			if (err != nil) != tc.hibernated || tc.hibernated && !strings.Contains(string(out), "hibernated") {
				t.Fatalf("ntfs-3g on header %q: %v\n%s", tc.head, err, out)
			}
			info := inspectImg(t, img)
			pf := ntfsFileClusters(t, img, "/pagefile.sys")
			hf := ntfsFileClusters(t, img, "/hiberfil.sys")
			if got := errors.Is(info.Unsafe, ErrNTFSHibernated); got != tc.hibernated {
				t.Fatalf("header %q: Unsafe %v", tc.head, info.Unsafe)
			}
			if errors.Is(info.Unsafe, ErrNTFSDirty) {
				t.Fatalf("clean volume reported dirty: %v", info.Unsafe)
			}
			wantZero := pf
			if !tc.hibernated {
				wantZero = mergeExtents(append(pf, hf...))
			} else if !strings.Contains(info.Unsafe.Error(), "powercfg /h off") {
				t.Errorf("Unsafe does not say how to fix it: %v", info.Unsafe)
			}
			if !equalExtents(info.Zero, wantZero) {
				t.Fatalf("Zero %v, want %v", info.Zero, wantZero)
			}
		})
	}
}

// TestNTFSDirty uses ntfsresize, which leaves the volume marked dirty (so
// Windows runs chkdsk), and ntfsfix -d, which clears the mark.
func TestNTFSDirty(t *testing.T) {
	need(t, "mkfs.ntfs", "ntfsresize", "ntfsfix")
	img := mkNTFS(t, 32<<20)
	ntfsPut(t, img, "/a.txt", []byte("hello"))
	if info := inspectImg(t, img); info.Unsafe != nil {
		t.Fatalf("fresh volume: %v", info.Unsafe)
	}
	if err := os.Truncate(img, 48<<20); err != nil {
		t.Fatal(err)
	}
	run(t, "ntfsresize", "-f", "-f", img)
	if out, err := exec.Command("ntfsinfo", "-m", img).CombinedOutput(); err == nil || !strings.Contains(string(out), "scheduled for check") {
		t.Fatalf("ntfsresize did not leave the volume dirty: %v\n%s", err, out)
	}
	info := inspectImg(t, img)
	if !errors.Is(info.Unsafe, ErrNTFSDirty) || errors.Is(info.Unsafe, ErrNTFSHibernated) {
		t.Fatalf("dirty volume: Unsafe %v", info.Unsafe)
	}
	if msg := info.Unsafe.Error(); !strings.Contains(msg, "chkdsk /f") || !strings.Contains(msg, "--force") {
		t.Errorf("Unsafe does not say how to fix it: %v", msg)
	}
	run(t, "ntfsfix", "-d", img)
	if info := inspectImg(t, img); info.Unsafe != nil {
		t.Fatalf("after ntfsfix -d: %v", info.Unsafe)
	}
}

// TestNTFSAmbiguous: two root entries that Windows would both open as
// pagefile.sys (POSIX names differing in case): neither is zeroed.
func TestNTFSAmbiguous(t *testing.T) {
	need(t, "mkfs.ntfs", "ntfscp")
	img := mkNTFS(t, 32<<20)
	ntfsPut(t, img, "/pagefile.sys", fileOf(1<<20, "", 0xaa))
	ntfsPut(t, img, "/PAGEFILE.SYS", fileOf(1<<20, "", 0xbb))
	ntfsPut(t, img, "/swapfile.sys", fileOf(64<<10, "", 0xbb))
	info := inspectImg(t, img)
	if want := ntfsFileClusters(t, img, "/swapfile.sys"); !equalExtents(info.Zero, want) {
		t.Fatalf("Zero %v, want only swapfile.sys's %v", info.Zero, want)
	}
	if len(info.Warnings) != 1 || !strings.Contains(info.Warnings[0], "pagefile.sys") {
		t.Fatalf("warnings %q", info.Warnings)
	}
}

// ntfsMount mounts img with ntfs-3g (FUSE) for fn; the test skips when FUSE
// is not available.
func ntfsMount(t *testing.T, img string, fn func(dir string)) {
	t.Helper()
	for _, tool := range []string{"ntfs-3g", "fusermount"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed: no FUSE mount", tool)
		}
	}
	dir := t.TempDir()
	if out, err := exec.Command("ntfs-3g", img, dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount with ntfs-3g (FUSE): %v\n%s", err, out)
	}
	mounted := true
	umount := func() {
		if mounted {
			mounted = false
			run(t, "fusermount", "-u", dir)
		}
	}
	defer umount()
	fn(dir)
	umount()
}

// TestNTFSMounted covers what only a mount makes: Win32 & DOS names (as
// Windows writes them), a fragmented pagefile, a pagefile.sys outside the
// root directory, and one whose record has an attribute list.
func TestNTFSMounted(t *testing.T) {
	need(t, "mkfs.ntfs", "ntfscat", "ntfsfix", "ntfscluster")
	t.Run("win32-dos-fragmented", func(t *testing.T) {
		img := mkNTFS(t, 16<<20)
		want := map[string][]byte{}
		ntfsMount(t, img, func(dir string) {
			// Fill the volume with one-cluster files and free every other
			// one, so the pagefile lands in many fragments.
			var i int
			for i = 0; i < 5000; i++ {
				if os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%d", i)), fileOf(4096, "", byte(i)), 0o644) != nil {
					break
				}
			}
			for j := 0; j < i; j += 2 {
				if err := os.Remove(filepath.Join(dir, fmt.Sprintf("f%d", j))); err != nil {
					t.Fatal(err)
				}
			}
			for j := 1; j < i; j += 98 {
				want[fmt.Sprintf("/f%d", j)] = fileOf(4096, "", byte(j))
			}
			if err := os.WriteFile(filepath.Join(dir, "pagefile.sys"), fileOf(1<<20, "", 0xaa), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := syscall.Setxattr(filepath.Join(dir, "pagefile.sys"), "system.ntfs_dos_name", []byte("PAGEFILE.SYS"), 0); err != nil {
				t.Fatalf("set the DOS name: %v", err)
			}
			if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
				t.Fatal(err)
			}
			want["/sub/hiberfil.sys"] = fileOf(8192, "hibr", 0xdd)
			want["/sub/swapfile.sys"] = fileOf(8192, "", 0xee)
			for name, b := range want {
				if strings.HasPrefix(name, "/sub/") {
					if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
						t.Fatal(err)
					}
				}
			}
		})
		if out := run(t, "ntfsinfo", "-F", "/pagefile.sys", img); !strings.Contains(out, "Win32 & DOS") {
			t.Fatalf("pagefile.sys has no Win32 & DOS name:\n%s", out)
		}
		pf := mergeExtents(ntfsFileClusters(t, img, "/pagefile.sys"))
		if len(pf) < 3 {
			t.Fatalf("pagefile.sys in %d fragments only", len(pf))
		}
		info := inspectImg(t, img)
		if info.Unsafe != nil || len(info.Warnings) > 0 {
			t.Fatalf("unsafe %v, warnings %q (hiberfil.sys outside the root is no hibernation file)", info.Unsafe, info.Warnings)
		}
		if !equalExtents(info.Zero, pf) {
			t.Fatalf("Zero %v, pagefile.sys at %v", info.Zero, pf)
		}
		t.Logf("pagefile.sys in %d fragments", len(pf))
		usedClusters(t, img, info)
		ntfsRoundTrip(t, img, info, want, map[string]int{"/pagefile.sys": 1 << 20})
	})
	t.Run("attribute-list", func(t *testing.T) {
		img := mkNTFS(t, 16<<20)
		ntfsMount(t, img, func(dir string) {
			pf := filepath.Join(dir, "pagefile.sys")
			if err := os.WriteFile(pf, fileOf(1<<20, "", 0xaa), 0o644); err != nil {
				t.Fatal(err)
			}
			// Long hard links overflow the record: ntfs-3g adds an $ATTRIBUTE_LIST.
			for i := 0; i < 6; i++ {
				if err := os.Link(pf, filepath.Join(dir, strings.Repeat("x", 200)+strconv.Itoa(i))); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.WriteFile(filepath.Join(dir, "swapfile.sys"), fileOf(64<<10, "", 0xbb), 0o644); err != nil {
				t.Fatal(err)
			}
		})
		if out := run(t, "ntfsinfo", "-F", "/pagefile.sys", img); !strings.Contains(out, "$ATTRIBUTE_LIST") {
			t.Fatalf("pagefile.sys has no attribute list:\n%s", out)
		}
		info := inspectImg(t, img)
		if want := ntfsFileClusters(t, img, "/swapfile.sys"); !equalExtents(info.Zero, want) {
			t.Fatalf("Zero %v, want only swapfile.sys's %v", info.Zero, want)
		}
		if len(info.Warnings) != 1 || !strings.Contains(info.Warnings[0], "attribute list") {
			t.Fatalf("warnings %q", info.Warnings)
		}
		ntfsRoundTrip(t, img, info, map[string][]byte{"/pagefile.sys": fileOf(1<<20, "", 0xaa)}, nil)
	})
}

func TestExtentSets(t *testing.T) {
	ex := func(v ...int64) (out []disk.Extent) {
		for i := 0; i+1 < len(v); i += 2 {
			out = append(out, disk.Extent{Offset: v[i], Length: v[i+1] - v[i]})
		}
		return out
	}
	a := ex(0, 10, 20, 30, 40, 50)
	b := ex(5, 25, 28, 45)
	if got, want := intersectExtents(a, b), ex(5, 10, 20, 25, 28, 30, 40, 45); !equalExtents(got, want) {
		t.Errorf("intersect %v, want %v", got, want)
	}
	if got, want := subtractExtents(a, b), ex(0, 5, 25, 28, 45, 50); !equalExtents(got, want) {
		t.Errorf("subtract %v, want %v", got, want)
	}
	if got, want := mergeExtents(ex(20, 30, 0, 10, 5, 21)), ex(0, 30); !equalExtents(got, want) {
		t.Errorf("merge %v, want %v", got, want)
	}
}

// FuzzNTFS feeds the NTFS reader (boot sector, $Bitmap, $Volume and the MFT
// scan) a sparse partition (see decodeOverlay) with an NTFS signature.
func FuzzNTFS(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		o := decodeOverlay(data)
		head := make([]byte, 512)
		o.ReadAt(head, 0)
		copy(head[3:], "NTFS    ")
		info, err := ntfsInspect(o, o.size, head)
		if err != nil {
			if !errors.Is(err, errCorrupt) {
				t.Fatalf("reading an in-memory disk: %v", err)
			}
			return
		}
		checkSorted(t, info.Used, o.size)
		checkSorted(t, info.Zero, o.size)
		checkSubset(t, info.Zero, info.Used)
	})
}

// TestWriteNTFSFuzzSeeds regenerates testdata/fuzz/FuzzNTFS from volumes
// made with the real tools, keeping only the sectors the reader looks at:
// go test -run TestWriteNTFSFuzzSeeds ./fsmap/ -update-seeds
func TestWriteNTFSFuzzSeeds(t *testing.T) {
	if !*updateSeeds {
		return // the corpus is checked in; -update-seeds rewrites it
	}
	need(t, "mkfs.ntfs", "ntfscp", "ntfscluster", "ntfsresize")
	dir := filepath.Join("testdata", "fuzz", "FuzzNTFS")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	seeds := []struct {
		name string
		mk   func() string
	}{
		{"hibernated-4k", func() string {
			img := mkNTFS(t, 8<<20)
			ntfsPut(t, img, "/pagefile.sys", fileOf(64<<10, "", 0xaa))
			ntfsPut(t, img, "/swapfile.sys", fileOf(8<<10, "", 0xbb))
			ntfsPut(t, img, "/hiberfil.sys", fileOf(8<<10, "hibr", 0xcc))
			return img
		}},
		{"clean-512", func() string {
			img := mkNTFS(t, 4<<20, "-c", "512")
			ntfsPut(t, img, "/pagefile.sys", fileOf(16<<10, "", 0xaa))
			ntfsPut(t, img, "/hiberfil.sys", fileOf(8<<10, "wake", 0xcc))
			return img
		}},
		{"dirty-ambiguous", func() string {
			img := mkNTFS(t, 8<<20)
			ntfsPut(t, img, "/pagefile.sys", fileOf(8<<10, "", 0xaa))
			ntfsPut(t, img, "/PAGEFILE.SYS", fileOf(8<<10, "", 0xaa))
			if err := os.Truncate(img, 10<<20); err != nil {
				t.Fatal(err)
			}
			run(t, "ntfsresize", "-f", "-f", img)
			return img
		}},
	}
	for _, s := range seeds {
		img := s.mk()
		b, err := os.ReadFile(img)
		if err != nil {
			t.Fatal(err)
		}
		v, err := ntfsBoot(int64(len(b)), b)
		if err != nil {
			t.Fatal(err)
		}
		cs, mft, rec := v.cs, v.mftLCN*v.cs, v.rec
		m6, err := v.readFixedRecord(bytes.NewReader(b), ntfsRecBitmap)
		if err != nil {
			t.Fatal(err)
		}
		d, err := ntfsUnnamedData(m6)
		if err != nil {
			t.Fatal(err)
		}
		bmRuns, err := ntfsRuns(d.runlist, v.clusters)
		if err != nil {
			t.Fatal(err)
		}
		var heads []int64 // the first sector of each paging file's data
		for _, name := range []string{"/pagefile.sys", "/hiberfil.sys"} {
			if out, err := exec.Command("ntfscluster", "-f", "-F", name, img).Output(); err == nil && strings.Contains(string(out), "non-resident") {
				heads = append(heads, ntfsFileClusters(t, img, name)[0].Offset)
			}
		}
		keep := func(off int64) bool {
			if off < v.bps {
				return true // boot sector
			}
			if n := (off - mft) / rec; off >= mft && (n == 0 || n == ntfsRecVolume || n == ntfsRecBitmap || n >= 64 && n < 80) {
				return true
			}
			for _, r := range bmRuns {
				if off >= r.lcn*cs && off < (r.lcn+r.n)*cs {
					return true
				}
			}
			for _, h := range heads {
				if off == h {
					return true
				}
			}
			return false
		}
		enc := encodeOverlay(b, keep)
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", enc)
		if len(body) > 64<<10 {
			t.Errorf("seed %s is %d bytes", s.name, len(body))
		}
		if err := os.WriteFile(filepath.Join(dir, s.name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		o := decodeOverlay(enc)
		info, err := ntfsInspect(o, o.size, b[:512])
		t.Logf("%s: %d bytes, %d zero extents, unsafe %v, warnings %q (%v)", s.name, len(body), len(info.Zero), info.Unsafe, info.Warnings, err)
	}
}
