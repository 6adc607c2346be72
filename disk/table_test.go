package disk

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// need fails the test when a tool is missing (the Makefile installs them).
func need(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: install Debian packages fdisk gdisk dosfstools (make deps-test)", tool)
		}
	}
}

func run(t testing.TB, stdin string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %v: %v\n%s%s", name, args, err, out.String(), errb.String())
	}
	return out.String()
}

func sparse(t testing.TB, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return p
}

func readTableFile(t testing.TB, path string) *Table {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	tab, err := ReadTable(f, st.Size())
	if err != nil {
		t.Fatalf("ReadTable(%s): %v", path, err)
	}
	return tab
}

type sfJSON struct {
	PT struct {
		Label      string `json:"label"`
		ID         string `json:"id"`
		SectorSize int    `json:"sectorsize"`
		LastLBA    int64  `json:"lastlba"`
		Partitions []struct {
			Node     string `json:"node"`
			Start    int64  `json:"start"`
			Size     int64  `json:"size"`
			Type     string `json:"type"`
			UUID     string `json:"uuid"`
			Name     string `json:"name"`
			Bootable bool   `json:"bootable"`
			Attrs    string `json:"attrs"`
		} `json:"partitions"`
	} `json:"partitiontable"`
}

func sfdiskJSON(t testing.TB, path string) sfJSON {
	t.Helper()
	var j sfJSON
	if err := json.Unmarshal([]byte(run(t, "", "sfdisk", "--json", path)), &j); err != nil {
		t.Fatal(err)
	}
	return j
}

// compareSfdisk checks a parsed table against sfdisk's own reading.
func compareSfdisk(t *testing.T, path string, tab *Table) {
	t.Helper()
	j := sfdiskJSON(t, path)
	wantKind := map[string]string{"dos": "mbr", "gpt": "gpt"}[j.PT.Label]
	if tab.Kind != wantKind {
		t.Fatalf("kind %q, sfdisk says %q", tab.Kind, j.PT.Label)
	}
	if !strings.EqualFold(tab.DiskID, j.PT.ID) {
		t.Errorf("disk id %q, sfdisk %q", tab.DiskID, j.PT.ID)
	}
	if len(tab.Partitions) != len(j.PT.Partitions) {
		t.Fatalf("%d partitions, sfdisk %d: %+v", len(tab.Partitions), len(j.PT.Partitions), tab.Partitions)
	}
	for i, sp := range j.PT.Partitions {
		p := tab.Partitions[i]
		idx, _ := strconv.Atoi(strings.TrimPrefix(sp.Node, path))
		if p.Index != idx || p.Start != sp.Start*512 || p.Size != sp.Size*512 {
			t.Errorf("partition %d: %+v, sfdisk %+v", i, p, sp)
		}
		if tab.Kind == "mbr" {
			if p.Type != "0x"+fmtPad(sp.Type) || p.Bootable != sp.Bootable {
				t.Errorf("partition %d: type %s boot %v, sfdisk %s %v", i, p.Type, p.Bootable, sp.Type, sp.Bootable)
			}
		} else {
			if p.Type != strings.ToLower(sp.Type) || p.UUID != strings.ToLower(sp.UUID) || p.Name != sp.Name {
				t.Errorf("partition %d: %+v, sfdisk %+v", i, p, sp)
			}
		}
	}
}

func fmtPad(s string) string {
	if len(s) == 1 {
		return "0" + s
	}
	return s
}

func fileBytes(t testing.TB, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeTableFile(t testing.TB, tab *Table) string {
	t.Helper()
	p := sparse(t, tab.DiskSize)
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := WriteTable(f, tab); err != nil {
		t.Fatal(err)
	}
	return p
}

const mbrScript = `label: dos
label-id: 0x1234abcd
start=2048, size=8M, type=83, bootable
size=4M, type=c
size=3M, type=82
size=30M, type=5
size=5M, type=83
size=5M, type=83
type=7
`

const gptScript = `label: gpt
label-id: 6E6A1B5E-1A2B-4C3D-8E9F-0123456789AB
size=4M, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="EFI system", attrs="RequiredPartition"
size=8M, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="root fs", uuid=11111111-2222-3333-4444-555555555555, attrs="GUID:60,63"
size=8M, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, name="data ünïcode"
`

func TestMBRReadWriteGrow(t *testing.T) {
	need(t, "sfdisk")
	src := sparse(t, 64<<20)
	run(t, mbrScript, "sfdisk", "-q", src)
	// Boot code in sector 0 and a boot loader in the gap, as GRUB leaves them.
	f, _ := os.OpenFile(src, os.O_RDWR, 0)
	f.WriteAt(bytes.Repeat([]byte{0xfa}, 400), 0)
	f.WriteAt(bytes.Repeat([]byte("core.img"), 3000), 512*10)
	f.Close()

	tab := readTableFile(t, src)
	compareSfdisk(t, src, tab)
	if len(tab.Partitions) != 7 || tab.Partitions[4].Index != 5 || !tab.Partitions[3].IsExtended() {
		t.Fatalf("partitions: %+v", tab.Partitions)
	}
	// JSON round trip, as the image manifest stores it.
	js, _ := json.Marshal(tab)
	var back Table
	if err := json.Unmarshal(js, &back); err != nil {
		t.Fatal(err)
	}
	same, err := back.ForDisk(64<<20, false)
	if err != nil {
		t.Fatal(err)
	}
	dst := writeTableFile(t, same)
	// Everything outside the partitions' contents must be identical.
	a, b := fileBytes(t, src), fileBytes(t, dst)
	if !bytes.Equal(a, b) {
		t.Fatal("written table differs from the source disk")
	}

	big, err := back.ForDisk(100<<20, true)
	if err != nil {
		t.Fatal(err)
	}
	p2 := writeTableFile(t, big)
	run(t, "", "sfdisk", "--verify", p2)
	j := sfdiskJSON(t, p2)
	last := j.PT.Partitions[len(j.PT.Partitions)-1]
	if (last.Start+last.Size)*512 != 100<<20 {
		t.Errorf("last partition ends at %d, want the disk end", (last.Start+last.Size)*512)
	}
	ext := j.PT.Partitions[3]
	if (ext.Start+ext.Size)*512 != 100<<20 {
		t.Errorf("extended partition ends at %d, want the disk end", (ext.Start+ext.Size)*512)
	}
	compareSfdisk(t, p2, big)
	// Without growLast the partitions are unchanged.
	keep, err := back.ForDisk(100<<20, false)
	if err != nil {
		t.Fatal(err)
	}
	for i := range keep.Partitions {
		if keep.Partitions[i] != tab.Partitions[i] {
			t.Errorf("partition changed: %+v -> %+v", tab.Partitions[i], keep.Partitions[i])
		}
	}

	_, err = back.ForDisk(32<<20, false)
	if !errors.Is(err, ErrTooSmall) || !strings.Contains(err.Error(), "need") {
		t.Fatalf("smaller disk: err = %v", err)
	}
	t.Log(err)
}

func TestMBRPrimaryGrow(t *testing.T) {
	need(t, "sfdisk")
	src := sparse(t, 32<<20)
	run(t, "label: dos\n size=8M, type=83\n size=8M, type=83\n", "sfdisk", "-q", src)
	tab := readTableFile(t, src)
	big, err := tab.ForDisk(48<<20, true)
	if err != nil {
		t.Fatal(err)
	}
	p := writeTableFile(t, big)
	run(t, "", "sfdisk", "--verify", p)
	compareSfdisk(t, p, big)
	if big.Partitions[1].End() != 48<<20 || big.Partitions[0] != tab.Partitions[0] {
		t.Errorf("grown: %+v", big.Partitions)
	}
	// A smaller disk the partitions still fit on is fine.
	if _, err := tab.ForDisk(20<<20, false); err != nil {
		t.Errorf("partitions end at 17 MiB, 20 MiB disk refused: %v", err)
	}
}

func TestGPTReadWriteGrow(t *testing.T) {
	need(t, "sfdisk", "sgdisk")
	src := sparse(t, 64<<20)
	run(t, gptScript, "sfdisk", "-q", src)
	tab := readTableFile(t, src)
	compareSfdisk(t, src, tab)
	if tab.Partitions[0].Attrs != 1 || tab.Partitions[1].Attrs != 1<<60|1<<63 {
		t.Errorf("attrs: %x %x", tab.Partitions[0].Attrs, tab.Partitions[1].Attrs)
	}
	if tab.Partitions[1].UUID != "11111111-2222-3333-4444-555555555555" {
		t.Errorf("uuid %s", tab.Partitions[1].UUID)
	}
	js, _ := json.Marshal(tab)
	var back Table
	if err := json.Unmarshal(js, &back); err != nil {
		t.Fatal(err)
	}
	same, err := back.ForDisk(64<<20, false)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(fileBytes(t, src), fileBytes(t, writeTableFile(t, same))) {
		t.Fatal("written GPT differs from the source disk")
	}

	for _, grow := range []bool{false, true} {
		big, err := back.ForDisk(200<<20+4096, grow)
		if err != nil {
			t.Fatal(err)
		}
		p := writeTableFile(t, big)
		out := run(t, "", "sgdisk", "-v", p)
		if !strings.Contains(out, "No problems found") {
			t.Errorf("sgdisk -v: %s", out)
		}
		run(t, "", "sfdisk", "--verify", p)
		compareSfdisk(t, p, big)
		j := sfdiskJSON(t, p)
		if j.PT.LastLBA != (200<<20+4096)/512-34 {
			t.Errorf("last usable LBA %d", j.PT.LastLBA)
		}
		last := big.Partitions[2]
		if grow && last.End() != (j.PT.LastLBA+1)*512 {
			t.Errorf("grown last partition ends at %d", last.End())
		}
		if !grow && last != tab.Partitions[2] {
			t.Errorf("last partition changed without growLast: %+v", last)
		}
	}

	// The partitions end at 21 MiB: 22 MiB fits, 21 MiB does not (no room for the backup).
	if _, err := back.ForDisk(22<<20, false); err != nil {
		t.Errorf("22 MiB: %v", err)
	}
	_, err = back.ForDisk(21<<20, false)
	if !errors.Is(err, ErrTooSmall) {
		t.Fatalf("21 MiB: %v", err)
	}
	t.Log(err)
}

func TestGPTPrimaryDamaged(t *testing.T) {
	need(t, "sfdisk", "sgdisk")
	src := sparse(t, 32<<20)
	run(t, gptScript, "sfdisk", "-q", src)
	want := readTableFile(t, src)
	f, _ := os.OpenFile(src, os.O_RDWR, 0)
	f.WriteAt(make([]byte, 512), 512) // primary header gone
	f.Close()
	tab := readTableFile(t, src)
	if tab.Kind != "gpt" || len(tab.Partitions) != 3 || tab.Partitions[1] != want.Partitions[1] {
		t.Fatalf("from backup: %+v", tab)
	}
	p := writeTableFile(t, tab)
	if out := run(t, "", "sgdisk", "-v", p); !strings.Contains(out, "No problems found") {
		t.Errorf("sgdisk -v: %s", out)
	}
}

func TestGPTBackupDamaged(t *testing.T) {
	need(t, "sfdisk", "sgdisk")
	src := sparse(t, 32<<20)
	run(t, gptScript, "sfdisk", "-q", src)
	want := fileBytes(t, src)
	f, _ := os.OpenFile(src, os.O_RDWR, 0)
	f.WriteAt(make([]byte, 512), 32<<20-512) // backup header gone
	f.Close()
	tab := readTableFile(t, src)
	if tab.Kind != "gpt" || len(tab.Partitions) != 3 {
		t.Fatalf("%+v", tab)
	}
	p := writeTableFile(t, tab)
	if out := run(t, "", "sgdisk", "-v", p); !strings.Contains(out, "No problems found") {
		t.Errorf("sgdisk -v: %s", out)
	}
	if !bytes.Equal(fileBytes(t, p), want) {
		t.Error("rebuilt backup differs from the original")
	}
}

func TestNoTable(t *testing.T) {
	need(t, "mkfs.fat")
	need(t, "mkfs.ntfs")
	for _, mk := range [][]string{{"mkfs.fat", "-F", "12"}, {"mkfs.fat", "-F", "16"}, {"mkfs.fat", "-F", "32", "-s", "1"}, {"mkfs.ntfs", "-F", "-Q", "-q"}} {
		p := sparse(t, 40<<20)
		run(t, "", mk[0], append(mk[1:], p)...)
		tab := readTableFile(t, p)
		if tab.Kind != "none" || len(tab.Partitions) != 1 || tab.Partitions[0].Size != 40<<20 {
			t.Fatalf("whole-disk %v: %+v", mk, tab)
		}
	}
	blank := readTableFile(t, sparse(t, 1<<20))
	if blank.Kind != "none" {
		t.Fatalf("blank: %+v", blank)
	}
}
