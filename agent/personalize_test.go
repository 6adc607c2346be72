package agent

import (
	"bytes"
	"context"
	"encoding/xml"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/preboot/preboot/disk"
)

const unattendWithName = `<?xml version="1.0" encoding="utf-8"?>
<unattend xmlns="urn:schemas-microsoft-com:unattend">
  <settings pass="specialize">
    <component name="Microsoft-Windows-Shell-Setup" processorArchitecture="amd64" publicKeyToken="31bf3856ad364e35" language="neutral" versionScope="nonSxS">
      <ComputerName>GOLDEN-IMAGE</ComputerName>
      <TimeZone>W. Europe Standard Time</TimeZone>
    </component>
  </settings>
  <!-- <ComputerName>IN-A-COMMENT</ComputerName> -->
  <settings pass="oobeSystem">
    <component name="Microsoft-Windows-Shell-Setup" processorArchitecture="amd64" publicKeyToken="31bf3856ad364e35" language="neutral" versionScope="nonSxS">
      <ComputerName />
    </component>
  </settings>
</unattend>
`

const unattendNoName = `<?xml version="1.0" encoding="utf-8"?>
<unattend xmlns="urn:schemas-microsoft-com:unattend">
  <settings pass="specialize">
    <component name="Microsoft-Windows-Shell-Setup" processorArchitecture="arm64" publicKeyToken="31bf3856ad364e35" language="neutral" versionScope="nonSxS">
      <TimeZone>UTC</TimeZone>
    </component>
  </settings>
</unattend>
`

const unattendNoComponent = "\xef\xbb\xbf" + `<?xml version="1.0" encoding="utf-8"?>
<unattend xmlns="urn:schemas-microsoft-com:unattend">
  <settings pass="specialize">
    <component name="Microsoft-Windows-International-Core" processorArchitecture="x86" publicKeyToken="31bf3856ad364e35" language="neutral" versionScope="nonSxS">
      <InputLocale>en-US</InputLocale>
    </component>
  </settings>
</unattend>
`

const unattendNoPass = `<unattend xmlns="urn:schemas-microsoft-com:unattend"><settings pass="oobeSystem"></settings></unattend>`

// computerNames lists the ComputerName values of an answer file and the
// pass each is in.
func computerNames(t *testing.T, doc []byte) []string {
	t.Helper()
	var u struct {
		Settings []struct {
			Pass       string `xml:"pass,attr"`
			Components []struct {
				Name         string  `xml:"name,attr"`
				Arch         string  `xml:"processorArchitecture,attr"`
				ComputerName *string `xml:"ComputerName"`
			} `xml:"component"`
		} `xml:"settings"`
	}
	if err := xml.Unmarshal(bytes.TrimPrefix(doc, []byte("\xef\xbb\xbf")), &u); err != nil {
		t.Fatalf("%v\n%s", err, doc)
	}
	var out []string
	for _, s := range u.Settings {
		for _, c := range s.Components {
			if c.ComputerName != nil {
				out = append(out, s.Pass+"/"+c.Name+"/"+c.Arch+"="+*c.ComputerName)
			}
		}
	}
	return out
}

func TestSetComputerName(t *testing.T) {
	for _, c := range []struct {
		name, doc string
		want      []string
	}{
		{"replace every value", unattendWithName, []string{"specialize/Microsoft-Windows-Shell-Setup/amd64=LAB-PC-12", "oobeSystem/Microsoft-Windows-Shell-Setup/amd64=LAB-PC-12"}},
		{"insert into Shell-Setup", unattendNoName, []string{"specialize/Microsoft-Windows-Shell-Setup/arm64=LAB-PC-12"}},
		{"insert the component", unattendNoComponent, []string{"specialize/Microsoft-Windows-Shell-Setup/x86=LAB-PC-12"}},
		{"insert the pass", unattendNoPass, []string{"specialize/Microsoft-Windows-Shell-Setup/amd64=LAB-PC-12"}},
	} {
		out, err := SetComputerName([]byte(c.doc), "LAB-PC-12")
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if got := computerNames(t, out); strings.Join(got, " ") != strings.Join(c.want, " ") {
			t.Errorf("%s: names %v, want %v\n%s", c.name, got, c.want, out)
		}
		if strings.HasPrefix(c.doc, "\xef\xbb\xbf") != bytes.HasPrefix(out, []byte("\xef\xbb\xbf")) {
			t.Errorf("%s: the byte-order mark changed", c.name)
		}
		again, err := SetComputerName(out, "LAB-PC-12")
		if err != nil || !bytes.Equal(again, out) {
			t.Errorf("%s: not idempotent: %v\n%s", c.name, err, again)
		}
	}
	// Everything else stays byte for byte: the comment too.
	out, _ := SetComputerName([]byte(unattendWithName), "PC1")
	want := strings.Replace(strings.Replace(unattendWithName, ">GOLDEN-IMAGE<", ">PC1<", 1), "<ComputerName />", "<ComputerName>PC1</ComputerName>", 1)
	if string(out) != want {
		t.Errorf("edit is not minimal:\n%s", out)
	}
	for doc, msg := range map[string]string{
		"<unattend>":                     "no complete <unattend> document",
		"<other/>":                       "the root element is <other>",
		"<unattend><a></b></unattend>":   "",
		"\xff\xfe<\x00u\x00":             "UTF-16",
		"not xml":                        "no complete",
		strings.Repeat("<a>", 100) + "x": "",
		"<unattend>&bogus;</unattend>":   "not well-formed",
	} {
		_, err := SetComputerName([]byte(doc), "PC1")
		if err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("%q: got %v, want an error with %q", doc, err, msg)
		}
	}
	for _, bad := range []string{"", "lab-pc", "A B", "TOO-LONG-FOR-NETBIOS", "<X>"} {
		if _, err := SetComputerName([]byte(unattendNoName), bad); err == nil {
			t.Errorf("name %q accepted", bad)
		}
	}
}

func TestSetHostsName(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1\tlocalhost\n127.0.1.1\tgolden\n::1 localhost\n":                     "127.0.0.1\tlocalhost\n127.0.1.1\tlab-pc-12\n::1 localhost\n",
		"127.0.0.1 localhost\r\n127.0.1.1 golden.corp.example golden # set by d-i\r\n": "127.0.0.1 localhost\r\n127.0.1.1\tlab-pc-12.corp.example lab-pc-12\r\n",
		"127.0.1.1 golden": "127.0.1.1\tlab-pc-12",
	} {
		got, ok := setHostsName([]byte(in), "lab-pc-12")
		if !ok || string(got) != want {
			t.Errorf("%q: got %q %v, want %q", in, got, ok, want)
		}
	}
	in := "127.0.0.1 localhost\n# 127.0.1.1 x\n"
	if got, ok := setHostsName([]byte(in), "x"); ok || string(got) != in {
		t.Errorf("no 127.0.1.1 line: %q %v", got, ok)
	}
}

// FuzzSetComputerName: an answer file comes from the restored disk; any
// content yields an error or a document that parses and names the
// computer, never a panic.
func FuzzSetComputerName(f *testing.F) {
	for _, s := range []string{unattendWithName, unattendNoName, unattendNoComponent, unattendNoPass, "<unattend/>", "<unattend><ComputerName/></unattend>"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		if len(doc) > 1<<20 {
			return
		}
		out, err := SetComputerName(doc, "PC-7")
		if err != nil {
			return
		}
		if !bytes.Contains(out, []byte(">PC-7</")) {
			t.Fatalf("no name in\n%s", out)
		}
		if again, err := SetComputerName(out, "PC-7"); err != nil || !bytes.Equal(again, out) {
			t.Fatalf("not stable: %v\n%s\n%s", err, out, again)
		}
	})
}

func pRun(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}

func pNeedTools(t *testing.T, tools ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (loop devices, mount)")
	}
	for _, x := range tools {
		if _, err := exec.LookPath(x); err != nil {
			t.Skipf("no %s", x)
		}
	}
}

var machineIDRE = regexp.MustCompile(`^[0-9a-f]{32}\n$`)

// TestPersonalizeDisk personalizes a real disk (a loop device with a GPT):
// an ext4 Debian-like root, a Btrfs root in a subvolume, an ext4 /boot
// without /etc, and an NTFS Windows volume with a sysprep answer file.
func TestPersonalizeDisk(t *testing.T) {
	pNeedTools(t, "losetup", "sgdisk", "mkfs.ext4", "debugfs", "mkfs.btrfs", "btrfs", "mkntfs", "ntfscp", "ntfscat", "ntfs-3g")
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := os.Truncate(img, 512<<20); err != nil {
		t.Fatal(err)
	}
	pRun(t, "sgdisk", "-n1:2048:+64M", "-t1:8300", "-n2:0:+160M", "-t2:8300", "-n3:0:+16M", "-t3:8300", "-n4:0:+64M", "-t4:0700", img)

	rootDir := filepath.Join(dir, "root")
	writeFiles(t, rootDir, map[string]string{
		"etc/os-release":          `PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"`,
		"etc/hostname":            "golden",
		"etc/hosts":               "127.0.0.1\tlocalhost\n127.0.1.1\tgolden.lab.example\tgolden\n",
		"etc/machine-id":          "0123456789abcdef0123456789abcdef",
		"var/lib/dbus/machine-id": "0123456789abcdef0123456789abcdef",
	})
	bootDir := filepath.Join(dir, "boot")
	writeFiles(t, bootDir, map[string]string{"grub/grub.cfg": "set default=0"})

	dev := strings.TrimSpace(pRun(t, "losetup", "--find", "--show", "--partscan", img))
	t.Cleanup(func() { _ = exec.Command("losetup", "-d", dev).Run() })
	ctx := context.Background()
	// Partition devices: the kernel's nodes when it scans loop devices,
	// else loop devices over the partitions (as Personalize does).
	parts, err := restoredPartitions(ctx, dev)
	if err != nil || len(parts) != 0 { // nothing formatted yet
		t.Fatalf("blank disk: %+v %v", parts, err)
	}
	df, _ := os.Open(dev)
	tbl, err := disk.ReadTable(df, 512<<20)
	df.Close()
	if err != nil || len(tbl.Partitions) != 4 {
		t.Fatalf("table %+v %v", tbl, err)
	}
	var releases []func() error
	p := func(i int) string {
		q := tbl.Partitions[i-1]
		node, release, err := partitionDevice(ctx, dev, restoredPart{index: q.Index, start: q.Start, size: q.Size})
		if err != nil {
			t.Fatal(err)
		}
		releases = append(releases, release)
		return node
	}
	// Loop devices over partitions are let go before Personalize makes
	// its own (two would cache the same blocks apart).
	releaseAll := func() {
		for _, r := range releases {
			if err := r(); err != nil {
				t.Error(err)
			}
		}
		releases = nil
	}
	t.Cleanup(releaseAll)
	p1, p2, p3, p4 := p(1), p(2), p(3), p(4)
	pRun(t, "mkfs.ext4", "-q", "-F", "-d", rootDir, p1)
	pRun(t, "mkfs.ext4", "-q", "-F", "-d", bootDir, p3)

	// Btrfs: Fedora's layout, the root in subvolume "root", the
	// symbolic link /etc/machine-id -> /etc/outside does not escape.
	pRun(t, "mkfs.btrfs", "-q", "-f", p2)
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	pRun(t, "mount", p2, mnt)
	pRun(t, "btrfs", "subvolume", "create", filepath.Join(mnt, "root"))
	writeFiles(t, filepath.Join(mnt, "root"), map[string]string{"etc/hostname": "fedora-golden", "etc/machine-id": "ffffffffffffffffffffffffffffffff"})
	pRun(t, "umount", mnt)

	// NTFS with Windows\Panther\unattend.xml put there by ntfscp (the
	// directories by ntfs-3g: ntfscp cannot make them).
	pRun(t, "mkntfs", "-Q", "-q", p4)
	if out, err := exec.Command("ntfs-3g", p4, mnt).CombinedOutput(); err != nil {
		t.Skipf("ntfs-3g mount: %v %s", err, out)
	}
	for _, d := range []string{"Windows/Panther", "Windows/System32/Sysprep"} {
		if err := os.MkdirAll(filepath.Join(mnt, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	pRun(t, "umount", mnt)
	ua := filepath.Join(dir, "unattend.xml")
	if err := os.WriteFile(ua, []byte(unattendWithName), 0o644); err != nil {
		t.Fatal(err)
	}
	pRun(t, "ntfscp", p4, ua, "/Windows/Panther/unattend.xml")

	releaseAll()
	var logs bytes.Buffer
	res := Personalize(ctx, PersonalizeOptions{Device: dev, Hostname: "Lab PC 12", Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if len(res.Linux) != 2 || len(res.Windows) != 1 {
		t.Fatalf("changed linux %v windows %v\n%s", res.Linux, res.Windows, logs.String())
	}
	p1, p2, p3, p4 = p(1), p(2), p(3), p(4)

	// ext4, read back with debugfs (no mount).
	cat := func(part, path string) string {
		out, err := exec.Command("debugfs", "-R", "cat "+path, part).Output()
		if err != nil {
			t.Fatalf("debugfs %s %s: %v", part, path, err)
		}
		return string(out)
	}
	if got := cat(p1, "/etc/hostname"); got != "lab-pc-12\n" {
		t.Errorf("hostname %q", got)
	}
	if got := cat(p1, "/etc/hosts"); got != "127.0.0.1\tlocalhost\n127.0.1.1\tlab-pc-12.lab.example lab-pc-12\n\n" {
		t.Errorf("hosts %q", got)
	}
	id := cat(p1, "/etc/machine-id")
	if !machineIDRE.MatchString(id) || id == "0123456789abcdef0123456789abcdef\n" {
		t.Errorf("machine-id %q", id)
	}
	if got := cat(p1, "/var/lib/dbus/machine-id"); got != id {
		t.Errorf("dbus machine-id %q, want %q", got, id)
	}
	if strings.Contains(cat(p3, "/etc/hostname"), "lab-pc") {
		t.Error("/boot got an /etc/hostname")
	}
	pRun(t, "e2fsck", "-fn", p1)
	// Btrfs: the root subvolume.
	pRun(t, "mount", "-o", "ro", p2, mnt)
	hb, _ := os.ReadFile(filepath.Join(mnt, "root/etc/hostname"))
	mb, _ := os.ReadFile(filepath.Join(mnt, "root/etc/machine-id"))
	pRun(t, "umount", mnt)
	if string(hb) != "lab-pc-12\n" || !machineIDRE.Match(mb) || string(mb) == id {
		t.Errorf("btrfs: hostname %q machine-id %q", hb, mb)
	}
	// NTFS: read back with ntfscat.
	doc := pRun(t, "ntfscat", p4, "/Windows/Panther/unattend.xml")
	if got := computerNames(t, []byte(doc)); len(got) != 2 || !strings.HasSuffix(got[0], "=LAB-PC-12") || !strings.HasSuffix(got[1], "=LAB-PC-12") {
		t.Errorf("unattend names %v\n%s", got, doc)
	}
	if !strings.Contains(doc, "<!-- <ComputerName>IN-A-COMMENT</ComputerName> -->") {
		t.Error("the comment changed")
	}
	if strings.Contains(logs.String(), "level=WARN") {
		t.Errorf("warnings:\n%s", logs.String())
	}
	// Nothing stays mounted.
	if m, _ := os.ReadFile("/proc/self/mounts"); strings.Contains(string(m), "preboot-personalize-") {
		t.Errorf("left mounted:\n%s", m)
	}
}
