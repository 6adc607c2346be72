package agent

import (
	"cmp"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/preboot/preboot/bundle"
	"github.com/preboot/preboot/image"
)

// fakeDisk is one disk of a fake sysfs tree: its entry under
// sys/devices/PARENT/block/NAME, linked from sys/block/NAME as the kernel
// does.
type fakeDisk struct {
	name, parent          string
	sectors               int64
	model, serial, wwid   string
	removable, rotational bool
	logicalBlock          string
	wwidAt                string // "device/wwid" (default), "wwid", "device/wwn"
}

func fakeSys(t *testing.T, disks ...fakeDisk) hostRoots {
	t.Helper()
	root := t.TempDir()
	sys := filepath.Join(root, "sys")
	for _, d := range disks {
		dir := filepath.Join(sys, "devices", d.parent, "block", d.name)
		b := func(v bool) string {
			if v {
				return "1"
			}
			return "0"
		}
		files := map[string]string{
			"size": strconv.FormatInt(d.sectors, 10), "removable": b(d.removable), "queue/rotational": b(d.rotational),
			"device/model": d.model + "   ", "device/serial": d.serial,
		}
		if d.logicalBlock != "" {
			files["queue/logical_block_size"] = d.logicalBlock
		}
		if d.wwid != "" {
			files[cmp.Or(d.wwidAt, "device/wwid")] = d.wwid
		}
		writeFiles(t, dir, files)
		if err := os.MkdirAll(filepath.Join(sys, "block"), 0o755); err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(filepath.Join(sys, "block"), dir)
		if err := os.Symlink(rel, filepath.Join(sys, "block", d.name)); err != nil {
			t.Fatal(err)
		}
	}
	return hostRoots{sys: sys, proc: filepath.Join(root, "proc"), dev: "/dev"}
}

const gib = int64(1) << 30

// fleet is a machine with an NVMe system disk, two SATA data disks (one
// 4Kn), a USB stick, a USB hard disk that says it is not removable, a
// virtio disk and the devices that never count (loop, sr).
func fleet(t *testing.T) hostRoots {
	return fakeSys(t,
		fakeDisk{name: "nvme0n1", parent: "pci0000:00/0000:00:1d.0/0000:3d:00.0/nvme/nvme0", sectors: 500 * gib / 512,
			model: "Samsung SSD 980 PRO 500GB", serial: "S69ENF0R123456", wwid: "eui.002538b11150c1b2", wwidAt: "wwid", logicalBlock: "512"},
		fakeDisk{name: "sda", parent: "pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0", sectors: 2000 * gib / 512,
			model: "ST2000DM008-2FR102", serial: "ZFL1ABCD", wwid: "naa.5000c500a1b2c3d4", rotational: true, logicalBlock: "512"},
		fakeDisk{name: "sdb", parent: "pci0000:00/0000:00:17.0/ata2/host1/target1:0:0/1:0:0:0", sectors: 2000 * gib / 512,
			model: "ST2000DM008-2FR102", serial: "ZFL1WXYZ", wwid: "naa.5000c500a1b2ffff", rotational: true, logicalBlock: "4096"},
		fakeDisk{name: "sdc", parent: "pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0", sectors: 32 * gib / 512,
			model: "Ultra Fit", serial: "4C530001230815", removable: true},
		fakeDisk{name: "sdd", parent: "pci0000:00/0000:00:14.0/usb3/3-2/3-2:1.0/host7/target7:0:0/7:0:0:0", sectors: 1000 * gib / 512,
			model: "Expansion HDD", serial: "NAAB1234", wwid: "naa.5000000000000001"},
		fakeDisk{name: "vda", parent: "pci0000:00/0000:00:05.0/virtio2", sectors: 40 * gib / 512},
		fakeDisk{name: "loop0", parent: "virtual", sectors: 100},
		fakeDisk{name: "sr0", parent: "pci0000:00/0000:00:17.0/ata3/host2/target2:0:0/2:0:0:0", sectors: 100, removable: true},
	)
}

func TestCandidateDisks(t *testing.T) {
	ds := candidateDisks(fleet(t))
	got := map[string]DiskInfo{}
	var names []string
	for _, d := range ds {
		got[d.Name] = d
		names = append(names, d.Name)
	}
	if strings.Join(names, " ") != "nvme0n1 sda sdb sdc sdd vda" {
		t.Fatalf("disks %v", names)
	}
	for name, want := range map[string]DiskInfo{
		"nvme0n1": {Path: "/dev/nvme0n1", Size: 500 * gib, Model: "Samsung SSD 980 PRO 500GB", Serial: "S69ENF0R123456", WWN: "eui.002538b11150c1b2", SectorSize: 512, Transport: "nvme"},
		"sda":     {Path: "/dev/sda", Size: 2000 * gib, Model: "ST2000DM008-2FR102", Serial: "ZFL1ABCD", WWN: "naa.5000c500a1b2c3d4", SectorSize: 512, Transport: "ata", Rotational: true},
		"sdb":     {Path: "/dev/sdb", Size: 2000 * gib, Model: "ST2000DM008-2FR102", Serial: "ZFL1WXYZ", WWN: "naa.5000c500a1b2ffff", SectorSize: 4096, Transport: "ata", Rotational: true},
		"sdc":     {Path: "/dev/sdc", Size: 32 * gib, Model: "Ultra Fit", Serial: "4C530001230815", SectorSize: 512, Transport: "usb", Removable: true},
		"sdd":     {Path: "/dev/sdd", Size: 1000 * gib, Model: "Expansion HDD", Serial: "NAAB1234", WWN: "naa.5000000000000001", SectorSize: 512, Transport: "usb"},
		"vda":     {Path: "/dev/vda", Size: 40 * gib, SectorSize: 512, Transport: "virtio"},
	} {
		d := got[name]
		want.Name = name
		if d.Name != want.Name || d.Path != want.Path || d.Size != want.Size || d.Model != want.Model || d.Serial != want.Serial ||
			d.WWN != want.WWN || d.SectorSize != want.SectorSize || d.Transport != want.Transport || d.Removable != want.Removable || d.Rotational != want.Rotational {
			t.Errorf("%s:\n got %+v\nwant %+v", name, d, want)
		}
	}
}

func TestSelectDisk(t *testing.T) {
	disks := candidateDisks(fleet(t))
	for _, c := range []struct {
		name string
		rule *bundle.DiskRule
		want string
	}{
		{"serial", &bundle.DiskRule{Serial: "zfl1wxyz"}, "/dev/sdb"},
		{"serial of a usb stick (named explicitly)", &bundle.DiskRule{Serial: "4C530001230815"}, "/dev/sdc"},
		{"wwn lsblk style", &bundle.DiskRule{WWN: "0x5000C500A1B2C3D4"}, "/dev/sda"},
		{"wwn sysfs style", &bundle.DiskRule{WWN: "naa.5000c500a1b2c3d4"}, "/dev/sda"},
		{"wwn eui", &bundle.DiskRule{WWN: "eui.002538B11150C1B2"}, "/dev/nvme0n1"},
		{"wwn of a usb disk (named explicitly)", &bundle.DiskRule{WWN: "0x5000000000000001"}, "/dev/sdd"},
		{"model exact", &bundle.DiskRule{Model: "samsung ssd 980 pro 500gb"}, "/dev/nvme0n1"},
		{"model glob", &bundle.DiskRule{Model: "Samsung*"}, "/dev/nvme0n1"},
		{"model glob + serial", &bundle.DiskRule{Model: "ST2000*", Serial: "ZFL1ABCD"}, "/dev/sda"},
		{"size range", &bundle.DiskRule{Size: "400G-600G"}, "/dev/nvme0n1"},
		{"size bound", &bundle.DiskRule{Size: "<=100G"}, "/dev/vda"},
		{"smallest", &bundle.DiskRule{Size: "smallest"}, "/dev/vda"},
		{"largest among a model", &bundle.DiskRule{Model: "*SSD*", Size: "largest"}, "/dev/nvme0n1"},
		{"model + size", &bundle.DiskRule{Model: "ST2000DM008-2FR10?", Size: ">=1TB", Serial: "ZFL1WXYZ"}, "/dev/sdb"},
	} {
		d, warn, err := selectDisk(disks, c.rule)
		if err != nil || d.Path != c.want || warn != "" {
			t.Errorf("%s: got %s %q %v, want %s", c.name, d.Path, warn, err, c.want)
		}
	}
}

func TestSelectDiskFailsClosed(t *testing.T) {
	disks := candidateDisks(fleet(t))
	for _, c := range []struct {
		name string
		rule *bundle.DiskRule
		want []string
	}{
		{"missing serial", &bundle.DiskRule{Serial: "NOPE"}, []string{`disk rule serial="NOPE": no disk matches; no disk was touched`}},
		{"two of one model", &bundle.DiskRule{Model: "ST2000DM008-2FR102"}, []string{"2 disks match", "/dev/sda: " + `model "ST2000DM008-2FR102"` + `, serial "ZFL1ABCD", wwn "naa.5000c500a1b2c3d4", 2.0 TiB, fixed, ata [matches]`,
			`/dev/sdb: model "ST2000DM008-2FR102", serial "ZFL1WXYZ", wwn "naa.5000c500a1b2ffff", 2.0 TiB, fixed, ata, 4096-byte sectors [matches]`}},
		{"largest tie", &bundle.DiskRule{Size: "largest"}, []string{"2 disks share the largest size (2.0 TiB)", "/dev/sda", "/dev/sdb"}},
		{"usb stick by model", &bundle.DiskRule{Model: "Ultra*"}, []string{"no disk matches (/dev/sdc would, but removable and USB disks are only used when named by serial or wwn)",
			`/dev/sdc: model "Ultra Fit", serial "4C530001230815", wwn "-", 32.0 GiB, removable, usb`}},
		{"usb hdd by size", &bundle.DiskRule{Size: "900G-1100G"}, []string{"(/dev/sdd would, but removable and USB", `/dev/sdd: model "Expansion HDD", serial "NAAB1234", wwn "naa.5000000000000001", 1000.0 GiB, fixed, usb`}},
		{"serial and a contradicting model", &bundle.DiskRule{Serial: "ZFL1ABCD", Model: "Samsung*"}, []string{"no disk matches"}},
		{"size fits none", &bundle.DiskRule{Size: ">=10T"}, []string{`size=">=10T": no disk matches`, "/dev/nvme0n1", "/dev/vda"}},
		{"bad size rule", &bundle.DiskRule{Size: "huge"}, []string{`disk rule: "huge"`}},
	} {
		d, _, err := selectDisk(disks, c.rule)
		if err == nil {
			t.Errorf("%s: chose %s", c.name, d.Path)
			continue
		}
		if c.name != "bad size rule" && !errors.Is(err, ErrNoDiskChoice) {
			t.Errorf("%s: %v does not wrap ErrNoDiskChoice", c.name, err)
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error lacks %q:\n%v", c.name, w, err)
			}
		}
		if c.name != "bad size rule" {
			for _, p := range []string{"/dev/nvme0n1", "/dev/sda", "/dev/sdb", "/dev/sdc", "/dev/sdd", "/dev/vda"} {
				if !strings.Contains(err.Error(), "\n  "+p+": ") {
					t.Errorf("%s: error does not list %s:\n%v", c.name, p, err)
				}
			}
		}
	}
}

func TestSelectDiskDefault(t *testing.T) {
	// Several fixed disks, no rule: the first, with a warning naming it.
	d, warn, err := selectDisk(candidateDisks(fleet(t)), nil)
	if err != nil || d.Path != "/dev/nvme0n1" {
		t.Fatalf("got %s %v", d.Path, err)
	}
	for _, w := range []string{"4 fixed disks and no disk rule", "using the first, /dev/nvme0n1 (model \"Samsung SSD 980 PRO 500GB\"", "not /dev/sda, /dev/sdb, /dev/vda"} {
		if !strings.Contains(warn, w) {
			t.Errorf("warning lacks %q: %s", w, warn)
		}
	}
	// One fixed disk and USB ones: that one, silently; an empty rule is no rule.
	r := fakeSys(t,
		fakeDisk{name: "sda", parent: "pci0000:00/0000:00:14.0/usb2/2-1/host6/target6:0:0/6:0:0:0", sectors: 1 << 20, model: "USB HDD"},
		fakeDisk{name: "sdb", parent: "pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0", sectors: 1 << 20, model: "SATA SSD"},
		fakeDisk{name: "sdc", parent: "pci0000:00/0000:00:17.0/ata2/host1/target1:0:0/1:0:0:0", sectors: 1 << 20, removable: true, model: "Card reader"},
	)
	for _, rule := range []*bundle.DiskRule{nil, {}} {
		d, warn, err = selectDisk(candidateDisks(r), rule)
		if err != nil || d.Path != "/dev/sdb" || warn != "" {
			t.Errorf("got %s %q %v, want /dev/sdb", d.Path, warn, err)
		}
	}
	// Only USB and removable disks: no default.
	r = fakeSys(t, fakeDisk{name: "sda", parent: "pci0000:00/0000:00:14.0/usb2/2-1/host6/target6:0:0/6:0:0:0", sectors: 1 << 20, model: "USB HDD"})
	_, _, err = selectDisk(candidateDisks(r), nil)
	if !errors.Is(err, ErrNoDiskChoice) || !strings.Contains(err.Error(), "no fixed disk (removable and USB disks are only used when named by serial or wwn)") ||
		!strings.Contains(err.Error(), "/dev/sda: model \"USB HDD\"") {
		t.Errorf("got %v", err)
	}
	// No disks at all.
	_, _, err = selectDisk(nil, &bundle.DiskRule{Size: "largest"})
	if !errors.Is(err, ErrNoDiskChoice) || !strings.Contains(err.Error(), "Disks: none found") {
		t.Errorf("got %v", err)
	}
}

func TestGlobMatch(t *testing.T) {
	for _, c := range []struct {
		p, n string
		ok   bool
	}{
		{"*", "", true}, {"a*b", "ab", true}, {"a*b", "axxb", true}, {"a*b", "axxbc", false},
		{"?", "", false}, {"a?c", "abc", true}, {"*ssd*", "samsung ssd 980", true}, {"a/b*", "a/bc", true},
		{"[x]", "[x]", true}, {"**a", "bba", true}, {"*a*a*a*b", strings.Repeat("a", 200), false},
	} {
		if got := globMatch(c.p, c.n); got != c.ok {
			t.Errorf("globMatch(%q, %q) = %v", c.p, c.n, got)
		}
	}
}

func TestCheckSectorSize(t *testing.T) {
	m := &image.Manifest{Name: "win11", Disk: image.Disk{SectorSize: 512}}
	if err := checkSectorSize("/dev/sdb", 512, m); err != nil {
		t.Fatal(err)
	}
	if err := checkSectorSize("/dev/sdb", 0, m); err != nil { // unknown: the restore's own checks decide
		t.Fatal(err)
	}
	err := checkSectorSize("/dev/sdb", 4096, m)
	if !errors.Is(err, ErrSectorSize) || !strings.Contains(err.Error(), "restore win11 onto /dev/sdb: logical sector size differs: the image's disk had 512-byte sectors, this disk has 4096-byte sectors") ||
		!strings.Contains(err.Error(), "nothing was written") {
		t.Fatalf("got %v", err)
	}
	// A disk-image file has no sector size of its own.
	f := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(f, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := CheckSectorSize(f, &image.Manifest{Disk: image.Disk{SectorSize: 4096}}); err != nil {
		t.Fatal(err)
	}
}

// TestCheckSectorSizeLoop reads the sector size of real loop devices
// (losetup --sector-size).
func TestCheckSectorSizeLoop(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for loop devices")
	}
	if _, err := exec.LookPath("losetup"); err != nil {
		t.Skip("no losetup")
	}
	f := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(f, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(f, 8<<20); err != nil {
		t.Fatal(err)
	}
	for _, ss := range []string{"512", "4096"} {
		out, err := exec.Command("losetup", "--find", "--show", "--sector-size", ss, f).CombinedOutput()
		if err != nil {
			t.Skipf("losetup: %v %s", err, out)
		}
		dev := strings.TrimSpace(string(out))
		t.Cleanup(func() { _ = exec.Command("losetup", "-d", dev).Run() })
		err512 := CheckSectorSize(dev, &image.Manifest{Name: "img", Disk: image.Disk{SectorSize: 512}})
		err4k := CheckSectorSize(dev, &image.Manifest{Name: "img", Disk: image.Disk{SectorSize: 4096}})
		if ss == "512" && (err512 != nil || !errors.Is(err4k, ErrSectorSize)) {
			t.Errorf("%s (512-byte sectors): %v / %v", dev, err512, err4k)
		}
		if ss == "4096" && (err4k != nil || !errors.Is(err512, ErrSectorSize) || !strings.Contains(err512.Error(), "this disk has 4096-byte sectors")) {
			t.Errorf("%s (4096-byte sectors): %v / %v", dev, err512, err4k)
		}
	}
}
