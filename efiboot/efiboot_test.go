package efiboot

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/preboot/preboot/disk"
)

func need(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
}

func run(t *testing.T, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// makeESP makes a FAT image of sizeMiB with mkfs.vfat (fatBits 12, 16 or
// 32) and copies files (path → content) onto it with mtools; directories
// are made as needed, names keep their case (long names where needed).
func makeESP(t *testing.T, sizeMiB int64, fatBits string, files map[string]string) string {
	t.Helper()
	need(t, "mkfs.vfat", "mmd", "mcopy")
	dir := t.TempDir()
	img := filepath.Join(dir, "esp.img")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, sizeMiB<<20); err != nil {
		t.Fatal(err)
	}
	run(t, nil, "mkfs.vfat", "-F", fatBits, "-n", "ESP", img)
	made := map[string]bool{}
	env := []string{"MTOOLS_SKIP_CHECK=1"}
	names := make([]string, 0, len(files))
	for p := range files {
		names = append(names, p)
	}
	slices.Sort(names)
	for _, p := range names {
		comps := strings.Split(strings.Trim(p, "/"), "/")
		for i := 1; i < len(comps); i++ {
			d := strings.Join(comps[:i], "/")
			if !made[d] {
				run(t, env, "mmd", "-i", img, "::/"+d)
				made[d] = true
			}
		}
		src := filepath.Join(dir, "src")
		if err := os.WriteFile(src, []byte(files[p]), 0o644); err != nil {
			t.Fatal(err)
		}
		run(t, env, "mcopy", "-i", img, src, "::/"+strings.Trim(p, "/"))
	}
	return img
}

func openESP(t *testing.T, img string) *FS {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	fs, err := OpenFS(f, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	return fs
}

var fleetESP = map[string]string{
	"EFI/Microsoft/Boot/bootmgfw.efi":            "MZ windows",
	"EFI/Microsoft/Boot/BCD":                     "bcd",
	"EFI/debian/shimx64.efi":                     "MZ shim",
	"EFI/debian/grubx64.efi":                     "MZ grub",
	"EFI/fedora/grubx64.efi":                     "MZ fedora grub",
	"EFI/opensuse-tumbleweed-long-name/grub.cfg": "no loader here",
	"EFI/BOOT/BOOTX64.EFI":                       "MZ fallback",
	"EFI/ubuntu/shimaa64.efi":                    "MZ arm shim",
	"EFI/ubuntu/empty/x":                         "",
	"a very long file name at the root.txt":      strings.Repeat("x", 5000),
}

func TestFindLoaders(t *testing.T) {
	for _, tc := range []struct {
		bits string
		mib  int64
	}{{"12", 4}, {"16", 32}, {"32", 64}} {
		t.Run("FAT"+tc.bits, func(t *testing.T) {
			fs := openESP(t, makeESP(t, tc.mib, tc.bits, fleetESP))
			if got := fs.Type(); got != map[string]int{"12": 12, "16": 16, "32": 32}[tc.bits] {
				t.Errorf("FAT type %d, want %s", got, tc.bits)
			}
			got, err := FindLoaders(fs, "amd64")
			if err != nil {
				t.Fatal(err)
			}
			want := []Loader{
				{`\EFI\Microsoft\Boot\bootmgfw.efi`, "Windows Boot Manager"},
				{`\EFI\debian\shimx64.efi`, "debian"},
				{`\EFI\fedora\grubx64.efi`, "fedora"},
				{`\EFI\BOOT\BOOTX64.EFI`, "UEFI OS"},
			}
			if !slices.Equal(got, want) {
				t.Errorf("loaders\n got %q\nwant %q", got, want)
			}
			arm, err := FindLoaders(fs, "arm64")
			if err != nil {
				t.Fatal(err)
			}
			wantArm := []Loader{{`\EFI\Microsoft\Boot\bootmgfw.efi`, "Windows Boot Manager"}, {`\EFI\ubuntu\shimaa64.efi`, "ubuntu"}}
			if !slices.Equal(arm, wantArm) {
				t.Errorf("arm64 loaders\n got %q\nwant %q", arm, wantArm)
			}
			// Long names across several LFN entries, case-insensitive lookups.
			e, err := fs.Stat(`/efi/OPENSUSE-TUMBLEWEED-LONG-NAME/GRUB.CFG`)
			if err != nil || e.Name != "grub.cfg" || e.Size != uint32(len("no loader here")) {
				t.Errorf("stat long-name dir file: %+v, %v", e, err)
			}
			e, err = fs.Stat(`\a very long file name at the root.txt`)
			if err != nil || e.Size != 5000 || e.IsDir {
				t.Errorf("stat root long name: %+v, %v", e, err)
			}
			if _, err := fs.Stat(`\EFI\nothere\x.efi`); !errors.Is(err, ErrNotExist) {
				t.Errorf("missing path: %v, want ErrNotExist", err)
			}
		})
	}
}

func TestFindLoadersOnlyDistro(t *testing.T) {
	// An ESP as a Debian install without the removable-media fallback
	// leaves it: grub only, no shim, no \EFI\BOOT.
	fs := openESP(t, makeESP(t, 64, "32", map[string]string{"EFI/debian/grubx64.efi": "MZ", "EFI/debian/grub.cfg": "cfg"}))
	got, err := FindLoaders(fs, "amd64")
	if err != nil {
		t.Fatal(err)
	}
	if want := []Loader{{`\EFI\debian\grubx64.efi`, "debian"}}; !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestFindLoadersManyEntries(t *testing.T) {
	// A directory spanning several clusters (FAT16 root is fixed; FAT32
	// directories are cluster chains).
	files := map[string]string{"EFI/zz/grubx64.efi": "MZ"}
	for i := range 200 {
		files["EFI/filler-with-a-long-name-"+strings.Repeat("q", i%30)+"-"+string(rune('a'+i%26))+hex.EncodeToString([]byte{byte(i)})+".txt"] = "x"
	}
	fs := openESP(t, makeESP(t, 64, "32", files))
	got, err := FindLoaders(fs, "amd64")
	if err != nil {
		t.Fatal(err)
	}
	if want := []Loader{{`\EFI\zz\grubx64.efi`, "zz"}}; !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	ents, err := fs.ReadDir(`\EFI`)
	if err != nil || len(ents) != 201 {
		t.Errorf("ReadDir \\EFI: %d entries, %v; want 201", len(ents), err)
	}
}

const testGUID = "0a1b2c3d-4e5f-4678-9abc-def012345678"

func TestLoadOptionBytes(t *testing.T) {
	sig, err := ParseGUID(testGUID)
	if err != nil {
		t.Fatal(err)
	}
	o := LoadOption{
		Attributes:  LoadOptionActive,
		Description: "debian",
		FilePath: DevicePath{
			HardDrive{PartitionNumber: 1, Start: 0x800, Size: 0x100000, Signature: sig, MBRType: MBRTypeGPT, SignatureType: SigTypeGUID}.Node(),
			FilePathNode(`\EFI\debian\shimx64.efi`),
		},
	}
	got, err := o.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	// By hand from UEFI 2.10 §3.1.3 (EFI_LOAD_OPTION) and §10.3.5.1/§10.3.5.4.
	want := "01000000" + // Attributes: LOAD_OPTION_ACTIVE
		"6200" + // FilePathListLength: 42 + 52 + 4 = 98
		"640065006200690061006e000000" + // "debian\0"
		"04012a00" + // Hard Drive node, length 42
		"01000000" + // partition 1
		"0008000000000000" + // start LBA 0x800
		"0000100000000000" + // size 0x100000 LBAs
		"3d2c1b0a5f4e78469abcdef012345678" + // GUID, first three fields little-endian
		"02" + "02" + // GPT, GUID signature
		"04043400" + // File Path node, length 4 + 24*2
		"5c00450046004900" + "5c00640065006200690061006e00" + "5c007300680069006d007800360034002e00650066006900" + "0000" +
		"7fff0400" // End Entire
	if hex.EncodeToString(got) != want {
		t.Errorf("load option\n got %x\nwant %s", got, want)
	}
	back, err := ParseLoadOption(got)
	if err != nil {
		t.Fatal(err)
	}
	if back.Description != "debian" || !back.Active() || len(back.OptionalData) != 0 {
		t.Errorf("decoded %+v", back)
	}
	text := `HD(1,GPT,` + testGUID + `,0x800,0x100000)/File(\EFI\debian\shimx64.efi)`
	if s := back.FilePath.String(); s != text {
		t.Errorf("text %s, want %s", s, text)
	}
	if !back.FilePath.SameTarget(o.FilePath) || back.FilePath.IsNetwork() {
		t.Error("round trip lost the target")
	}
	if GUIDString(sig) != testGUID {
		t.Errorf("GUIDString %s", GUIDString(sig))
	}
}

func TestLoadOptionRoundTrip(t *testing.T) {
	opts := []LoadOption{
		{Attributes: LoadOptionActive | LoadOptionHidden, Description: "Windows Boot Manager",
			FilePath:     DevicePath{HardDrive{PartitionNumber: 2, Start: 2048, Size: 204800, MBRType: MBRTypePCAT, SignatureType: SigTypeMBR, Signature: [16]byte{1, 2, 3, 4}}.Node(), FilePathNode(`\EFI\Microsoft\Boot\bootmgfw.efi`)},
			OptionalData: []byte("WINDOWS\x00\x01\x00\x00\x00")},
		{Description: "UEFI PXEv4 (MAC:525400123456)", FilePath: netPath()},
		{Description: "ünïcødé €", FilePath: DevicePath{}},
	}
	for _, o := range opts {
		b, err := o.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		back, err := ParseLoadOption(b)
		if err != nil {
			t.Fatalf("%q: %v", o.Description, err)
		}
		b2, err := back.Marshal()
		if err != nil || !bytes.Equal(b, b2) {
			t.Errorf("%q: re-encoded %x, want %x (%v)", o.Description, b2, b, err)
		}
		if back.Description != o.Description || back.Attributes != o.Attributes || !bytes.Equal(back.OptionalData, o.OptionalData) {
			t.Errorf("decoded %+v, want %+v", back, o)
		}
	}
	if s := opts[0].FilePath.String(); s != `HD(2,MBR,0x04030201,0x800,0x32000)/File(\EFI\Microsoft\Boot\bootmgfw.efi)` {
		t.Errorf("MBR text %s", s)
	}
	if s := opts[1].FilePath.String(); s != `PciRoot(0x0)/Pci(0x3,0x0)/MAC(525400123456,0x1)/IPv4(0.0.0.0)` {
		t.Errorf("network text %s", s)
	}
	for _, bad := range [][]byte{
		nil, {1, 0, 0, 0, 0},
		{1, 0, 0, 0, 4, 0, 'a', 0},                          // unterminated description
		{1, 0, 0, 0, 8, 0, 0, 0, 0x7f, 0xff, 4, 0},          // path list longer than the option
		{1, 0, 0, 0, 4, 0, 0, 0, 0x04, 0x01, 2, 0},          // node length < 4
		{1, 0, 0, 0, 6, 0, 0, 0, 0x04, 0x01, 0x40, 0, 0, 0}, // node beyond the list
	} {
		if _, err := ParseLoadOption(bad); err == nil {
			t.Errorf("ParseLoadOption(%x) accepted", bad)
		}
	}
}

func netPath() DevicePath {
	mac := make([]byte, 33)
	copy(mac, []byte{0x52, 0x54, 0, 0x12, 0x34, 0x56})
	mac[32] = 1
	return DevicePath{
		{Type: TypeACPI, SubType: SubACPI, Data: []byte{0xd0, 0x41, 0x03, 0x0a, 0, 0, 0, 0}},
		{Type: TypeHardware, SubType: SubPCI, Data: []byte{0, 3}},
		{Type: TypeMessaging, SubType: SubMAC, Data: mac},
		{Type: TypeMessaging, SubType: SubIPv4, Data: make([]byte, 23)},
	}
}

func TestNewOrder(t *testing.T) {
	net := map[uint16]bool{1: true, 4: true, 5: true}
	isNet := func(n uint16) bool { return net[n] }
	for _, tc := range []struct {
		cur     []uint16
		num     uint16
		keep    bool
		current int
		want    []uint16
	}{
		{nil, 3, true, -1, []uint16{3}},
		{[]uint16{0, 1, 2}, 3, false, -1, []uint16{3, 0, 1, 2}},
		{[]uint16{0, 1, 2}, 3, true, -1, []uint16{1, 3, 0, 2}},
		// The first network entry, then the disk, then the rest as they were.
		{[]uint16{4, 0, 1, 3, 2}, 3, true, -1, []uint16{4, 3, 0, 1, 2}},
		{[]uint16{2, 2, 3, 0, 3, 4}, 3, true, -1, []uint16{4, 3, 2, 0}},
		{[]uint16{3, 1}, 3, false, -1, []uint16{3, 1}},
		// OVMF: PXEv4 (1) booted the machine, PXEv6 (4) and HTTP (5) come after the disk.
		{[]uint16{1, 4, 5, 0, 2}, 7, true, 1, []uint16{1, 7, 4, 5, 0, 2}},
		// BootCurrent names a later network entry: that one goes first.
		{[]uint16{4, 1, 0}, 7, true, 1, []uint16{1, 7, 4, 0}},
		// BootCurrent is not a network entry (a one-time disk boot): the first network entry.
		{[]uint16{0, 4, 1}, 7, true, 0, []uint16{4, 7, 0, 1}},
		// No network entry at all: the disk first.
		{[]uint16{0, 2}, 7, true, 2, []uint16{7, 0, 2}},
	} {
		if got := NewOrder(tc.cur, tc.num, tc.keep, isNet, tc.current); !slices.Equal(got, tc.want) {
			t.Errorf("NewOrder(%v, %d, %v, %d) = %v, want %v", tc.cur, tc.num, tc.keep, tc.current, got, tc.want)
		}
	}
}

// gptDisk makes a disk image holding esp as GPT partition 1 (unique GUID
// testGUID) at 1 MiB and a Linux partition after it.
func gptDisk(t *testing.T, esp string) (*os.File, *disk.Table) {
	t.Helper()
	need(t, "sgdisk")
	data, err := os.ReadFile(esp)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	size := int64(len(data)) + 4<<20
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
	run(t, nil, "sgdisk", "-o", "-n", "1:2048:+"+strconv.Itoa(len(data)>>10)+"K", "-t", "1:ef00", "-u", "1:"+testGUID,
		"-n", "2:0:0", "-t", "2:8300", p)
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if _, err := f.WriteAt(data, 1<<20); err != nil {
		t.Fatal(err)
	}
	tbl, err := disk.ReadTable(f, size)
	if err != nil {
		t.Fatal(err)
	}
	return f, tbl
}

func writeVar(t *testing.T, dir, name string, data []byte) {
	t.Helper()
	if err := (Vars{Dir: dir}).Set(name, DefaultAttrs, data); err != nil {
		t.Fatal(err)
	}
}

func mustMarshal(t *testing.T, o LoadOption) []byte {
	t.Helper()
	b, err := o.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestEnsure(t *testing.T) {
	f, tbl := gptDisk(t, makeESP(t, 64, "32", map[string]string{
		"EFI/debian/shimx64.efi": "MZ shim", "EFI/debian/grubx64.efi": "MZ grub"}))
	vars := t.TempDir()
	// NVRAM as OVMF leaves it on a fresh machine: a PXE entry and the
	// built-in shell, PXE first; Boot0000 is taken, 0002 is only in
	// BootOrder (a dangling number).
	writeVar(t, vars, "Boot0000", mustMarshal(t, LoadOption{Attributes: LoadOptionActive, Description: "EFI Internal Shell",
		FilePath: DevicePath{{Type: TypeMedia, SubType: SubFvFile, Data: make([]byte, 16)}}}))
	writeVar(t, vars, "Boot0001", mustMarshal(t, LoadOption{Attributes: LoadOptionActive, Description: "UEFI PXEv4", FilePath: netPath()}))
	if err := (Vars{Dir: vars}).SetBootOrder([]uint16{1, 0, 2}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	e, err := Ensure(ctx, EnsureOptions{Disk: f, Table: tbl, VarsDir: vars, KeepNetworkFirst: true, Arch: "amd64"})
	if err != nil {
		t.Fatal(err)
	}
	wantDP := `HD(1,GPT,` + testGUID + `,0x800,0x20000)/File(\EFI\debian\shimx64.efi)`
	if e.Num != 3 || !e.Created || e.Description != "debian" || e.DevicePath != wantDP || e.ESP != 1 {
		t.Errorf("entry %+v", e)
	}
	if want := []uint16{1, 3, 0, 2}; !slices.Equal(e.BootOrder, want) {
		t.Errorf("BootOrder %v, want %v", e.BootOrder, want)
	}
	v := Vars{Dir: vars}
	data, attrs, err := v.Get("Boot0003")
	if err != nil || attrs != 7 {
		t.Fatalf("Boot0003: attrs %d, %v", attrs, err)
	}
	lo, err := ParseLoadOption(data)
	if err != nil || lo.FilePath.String() != wantDP || !lo.Active() {
		t.Errorf("Boot0003 decodes to %+v, %v", lo, err)
	}
	// efibootmgr reads the same variables (libefivar honours EFIVARFS_PATH).
	if _, err := exec.LookPath("efibootmgr"); err == nil {
		out := run(t, []string{"EFIVARFS_PATH=" + vars + "/"}, "efibootmgr", "-v")
		if !strings.Contains(out, "BootOrder: 0001,0003,0000,0002") ||
			!strings.Contains(out, "Boot0003* debian\t"+wantDP) {
			t.Errorf("efibootmgr -v:\n%s", out)
		}
	}

	// Again: the entry is reused, nothing rewritten; without
	// KeepNetworkFirst the disk goes first.
	e2, err := Ensure(ctx, EnsureOptions{Disk: f, Table: tbl, VarsDir: vars, KeepNetworkFirst: false, Arch: "amd64"})
	if err != nil {
		t.Fatal(err)
	}
	if e2.Num != 3 || e2.Created || e2.Updated {
		t.Errorf("second Ensure %+v", e2)
	}
	if want := []uint16{3, 1, 0, 2}; !slices.Equal(e2.BootOrder, want) {
		t.Errorf("BootOrder %v, want %v", e2.BootOrder, want)
	}
	// An inactive entry for the same file (upper-case path) is made active.
	inactive := lo
	inactive.Attributes = 0
	inactive.FilePath = DevicePath{lo.FilePath[0], FilePathNode(`\EFI\DEBIAN\SHIMX64.EFI`)}
	writeVar(t, vars, "Boot0003", mustMarshal(t, inactive))
	e3, err := Ensure(ctx, EnsureOptions{Disk: f, Table: tbl, VarsDir: vars, Arch: "amd64"})
	if err != nil {
		t.Fatal(err)
	}
	if data, _, _ := v.Get("Boot0003"); e3.Num != 3 || e3.Created || !e3.Updated || !bytes.Equal(data, mustMarshal(t, lo)) {
		t.Errorf("third Ensure %+v", e3)
	}
}

func TestEnsureEmptyNVRAM(t *testing.T) {
	f, tbl := gptDisk(t, makeESP(t, 32, "16", map[string]string{"EFI/Microsoft/Boot/bootmgfw.efi": "MZ"}))
	vars := t.TempDir()
	e, err := Ensure(context.Background(), EnsureOptions{Disk: f, Table: tbl, VarsDir: vars, KeepNetworkFirst: true})
	if err != nil {
		t.Fatal(err)
	}
	if e.Num != 0 || e.Description != "Windows Boot Manager" || !slices.Equal(e.BootOrder, []uint16{0}) {
		t.Errorf("entry %+v", e)
	}
	order, ok, err := (Vars{Dir: vars}).BootOrder()
	if err != nil || !ok || !slices.Equal(order, []uint16{0}) {
		t.Errorf("BootOrder %v %v %v", order, ok, err)
	}
}

func TestEnsureNoLoader(t *testing.T) {
	f, tbl := gptDisk(t, makeESP(t, 64, "32", map[string]string{"EFI/debian/grub.cfg": "x"}))
	vars := t.TempDir()
	_, err := Ensure(context.Background(), EnsureOptions{Disk: f, Table: tbl, VarsDir: vars})
	if !errors.Is(err, ErrNoLoader) {
		t.Errorf("err %v, want ErrNoLoader", err)
	}
	if ents, _ := os.ReadDir(vars); len(ents) != 0 {
		t.Errorf("variables written without a loader: %v", ents)
	}
	// No ESP at all.
	tbl.Partitions[0].Type = "0fc63daf-8379-4772-8475-0de4c7bc3ac1"
	if _, err := Ensure(context.Background(), EnsureOptions{Disk: f, Table: tbl, VarsDir: vars}); err == nil {
		t.Error("no ESP accepted")
	}
}

// TestSetImmutable rewrites a variable whose file is immutable, as
// efivarfs makes existing variables; filesystems without inode flags are
// tolerated.
func TestSetImmutable(t *testing.T) {
	dir := t.TempDir()
	v := Vars{Dir: dir}
	if err := v.Set("BootOrder", DefaultAttrs, []byte{1, 0, 2, 0, 3, 0}); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "BootOrder-"+GlobalVariable)
	immutable := false
	if _, err := exec.LookPath("chattr"); err == nil && os.Geteuid() == 0 {
		immutable = exec.Command("chattr", "+i", p).Run() == nil
	}
	t.Cleanup(func() {
		if immutable {
			_ = exec.Command("chattr", "-i", p).Run()
		}
	})
	if immutable {
		if err := os.WriteFile(p, []byte("x"), 0o644); err == nil {
			t.Fatal("chattr +i did not make the file immutable")
		}
	} else {
		t.Log("no immutable flag here; testing the plain rewrite only")
	}
	if err := v.SetBootOrder([]uint16{7}); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(p)
	if err != nil || !bytes.Equal(got, []byte{7, 0, 0, 0, 7, 0}) {
		t.Errorf("BootOrder file %x, %v", got, err)
	}
	if _, _, err := v.Get("Boot0000"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing variable: %v", err)
	}
}

// TestDirectoryLoop makes a directory's cluster chain point back at
// itself: reading it fails instead of looping.
func TestDirectoryLoop(t *testing.T) {
	files := map[string]string{"EFI/debian/grubx64.efi": "MZ"}
	for i := range 40 {
		files["EFI/long-file-name-number-"+strconv.Itoa(i)+".txt"] = "x"
	}
	img := makeESP(t, 64, "32", files)
	fs := openESP(t, img)
	efi, err := fs.Stat(`\EFI`)
	if err != nil {
		t.Fatal(err)
	}
	next, err := fs.next(efi.Cluster)
	if err != nil || fs.isEOC(next) {
		t.Fatalf("\\EFI is one cluster (next %#x, %v); the test needs a chain", next, err)
	}
	// FAT32 entry of the second cluster → the first.
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := []byte{byte(efi.Cluster), byte(efi.Cluster >> 8), byte(efi.Cluster >> 16), byte(efi.Cluster >> 24)}
	if _, err := f.WriteAt(b, fs.fatOff+4*int64(next)); err != nil {
		t.Fatal(err)
	}
	fs = openESP(t, img)
	if _, err := fs.ReadDir(`\EFI`); err == nil || !strings.Contains(err.Error(), "loops") {
		t.Errorf("ReadDir of a looping directory: %v", err)
	}
	if _, err := FindLoaders(fs, "amd64"); err == nil {
		t.Error("FindLoaders read a looping \\EFI")
	}
}
