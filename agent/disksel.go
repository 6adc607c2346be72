package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/preboot/preboot/bundle"
	"github.com/preboot/preboot/image"
)

// ErrNoDiskChoice is wrapped by the errors of SelectDisk: no disk or
// several disks fit the bundle's rule. The job stops before it touches
// any disk.
var ErrNoDiskChoice = errors.New("no single disk fits")

// ErrSectorSize is wrapped when a restore's target has another logical
// sector size than the image's disk: the partition table's offsets would
// be wrong.
var ErrSectorSize = errors.New("logical sector size differs")

// sysDiskAttrs fills what SYS/block/NAME tells about the whole disk
// d.Name: model, serial, rotational, removable, WWN, logical sector size
// and transport.
func sysDiskAttrs(d *DiskInfo, sys string) {
	dir := filepath.Join(sys, "block", d.Name)
	d.Model = readSys(filepath.Join(dir, "device/model"))
	d.Serial = readSys(filepath.Join(dir, "device/serial"))
	if d.Serial == "" {
		d.Serial = readSys(filepath.Join(dir, "serial"))
	}
	d.Rotational = readSys(filepath.Join(dir, "queue/rotational")) == "1"
	d.Removable = readSys(filepath.Join(dir, "removable")) == "1"
	for _, p := range []string{"device/wwid", "wwid", "device/wwn", "wwn"} {
		if w := readSys(filepath.Join(dir, p)); w != "" {
			d.WWN = strings.Join(strings.Fields(w), " ")
			break
		}
	}
	d.SectorSize = 512
	if n, err := strconv.Atoi(readSys(filepath.Join(dir, "queue/logical_block_size"))); err == nil && n >= 512 && n <= 65536 {
		d.SectorSize = n
	}
	d.Transport = diskTransport(sys, d.Name)
}

// diskTransport tells how a disk is attached from where its sysfs entry
// lives (/sys/block/sdb -> ../devices/pci…/usb2/2-1/…/block/sdb).
func diskTransport(sys, name string) string {
	real, err := filepath.EvalSymlinks(filepath.Join(sys, "block", name))
	if err != nil {
		real = ""
	}
	parts := strings.Split(filepath.ToSlash(real), "/")
	has := func(prefix string) bool {
		for _, p := range parts {
			if strings.HasPrefix(p, prefix) {
				return true
			}
		}
		return false
	}
	switch {
	case has("usb"):
		return "usb"
	case strings.HasPrefix(name, "nvme") || has("nvme"):
		return "nvme"
	case strings.HasPrefix(name, "mmcblk") || has("mmc"):
		return "mmc"
	case strings.HasPrefix(name, "vd") || has("virtio"):
		return "virtio"
	case has("ata"):
		return "ata"
	case has("host") || has("target"):
		return "scsi"
	}
	return ""
}

// candidateDisks lists the machine's whole disks (removable ones too)
// with what sysfs says about them; nothing is opened.
func candidateDisks(r hostRoots) []DiskInfo {
	var out []DiskInfo
	for _, name := range ListDisks(r.sys, true) {
		d := DiskInfo{Name: name, Path: filepath.Join(r.dev, name)}
		if n, err := strconv.ParseInt(readSys(filepath.Join(r.sys, "block", name, "size")), 10, 64); err == nil && n > 0 && n < 1<<54 {
			d.Size = n * 512 // sysfs counts 512-byte units whatever the sector size
		}
		sysDiskAttrs(&d, r.sys)
		out = append(out, d)
	}
	return out
}

// SelectDisk picks the disk a job works on from the machine's whole
// disks: the one rule matches (see bundle.DiskRule), or without a rule
// the first fixed disk. Removable and USB disks are only chosen when the
// rule names them by serial or WWN. None or several matches is an error
// wrapping ErrNoDiskChoice that lists every disk. warning, when not
// empty, says the choice was a guess among several fixed disks.
func SelectDisk(rule *bundle.DiskRule) (d DiskInfo, warning string, err error) {
	return selectDisk(candidateDisks(defaultRoots), rule)
}

// automatic reports whether a disk may be chosen without being named by
// serial or WWN.
func (d DiskInfo) automatic() bool { return !d.Removable && d.Transport != "usb" }

func selectDisk(disks []DiskInfo, rule *bundle.DiskRule) (DiskInfo, string, error) {
	if rule.IsZero() {
		var fixed []DiskInfo
		for _, d := range disks {
			if d.automatic() {
				fixed = append(fixed, d)
			}
		}
		switch len(fixed) {
		case 0:
			return DiskInfo{}, "", diskChoiceError(disks, rule, "no fixed disk (removable and USB disks are only used when named by serial or wwn)", nil)
		case 1:
			return fixed[0], "", nil
		}
		var others []string
		for _, d := range fixed[1:] {
			others = append(others, d.Path)
		}
		return fixed[0], fmt.Sprintf("%d fixed disks and no disk rule in the bundle: using the first, %s (%s); not %s — set the bundle's disk (serial, wwn, model or size) to choose",
			len(fixed), fixed[0].Path, describeChoice(fixed[0]), strings.Join(others, ", ")), nil
	}
	var sr bundle.SizeRule
	if rule.Size != "" {
		var err error
		if sr, err = bundle.ParseSizeRule(rule.Size); err != nil {
			return DiskInfo{}, "", fmt.Errorf("disk rule: %w", err)
		}
	}
	var match, excluded []DiskInfo
	for _, d := range disks {
		if !diskMatches(d, rule, sr) {
			continue
		}
		if !rule.Explicit() && !d.automatic() {
			excluded = append(excluded, d)
			continue
		}
		match = append(match, d)
	}
	if sr.Pick != "" && len(match) > 1 {
		best := match[0]
		for _, d := range match[1:] {
			if (sr.Pick == "largest" && d.Size > best.Size) || (sr.Pick == "smallest" && d.Size < best.Size) {
				best = d
			}
		}
		var same []DiskInfo
		for _, d := range match {
			if d.Size == best.Size {
				same = append(same, d)
			}
		}
		if len(same) > 1 {
			return DiskInfo{}, "", diskChoiceError(disks, rule, fmt.Sprintf("%d disks share the %s size (%s): add serial, wwn or model to the rule", len(same), sr.Pick, human(best.Size)), same)
		}
		match = same
	}
	switch len(match) {
	case 1:
		return match[0], "", nil
	case 0:
		why := "no disk matches"
		if len(excluded) > 0 {
			var names []string
			for _, d := range excluded {
				names = append(names, d.Path)
			}
			why += fmt.Sprintf(" (%s would, but removable and USB disks are only used when named by serial or wwn)", strings.Join(names, ", "))
		}
		return DiskInfo{}, "", diskChoiceError(disks, rule, why, nil)
	}
	return DiskInfo{}, "", diskChoiceError(disks, rule, fmt.Sprintf("%d disks match: make the rule narrower (serial or wwn name exactly one)", len(match)), match)
}

func diskMatches(d DiskInfo, rule *bundle.DiskRule, sr bundle.SizeRule) bool {
	if rule.Serial != "" && !strings.EqualFold(strings.TrimSpace(d.Serial), strings.TrimSpace(rule.Serial)) {
		return false
	}
	if rule.WWN != "" && (d.WWN == "" || normalWWN(d.WWN) != normalWWN(rule.WWN)) {
		return false
	}
	if rule.Model != "" && !globMatch(strings.ToLower(strings.TrimSpace(rule.Model)), strings.ToLower(strings.TrimSpace(d.Model))) {
		return false
	}
	if rule.Size != "" && !sr.Match(d.Size) {
		return false
	}
	return true
}

// normalWWN makes the spellings of one WWN equal: lsblk's 0x5000c500…,
// sysfs's naa.5000c500… or eui.…, any case.
func normalWWN(w string) string {
	w = strings.ToLower(strings.Join(strings.Fields(w), " "))
	for _, p := range []string{"wwn-0x", "0x", "naa.", "eui.", "wwn-"} {
		if strings.HasPrefix(w, p) {
			return w[len(p):]
		}
	}
	return w
}

// globMatch matches name against pattern with * (any run) and ? (one
// character); nothing else is special. Linear backtracking, no recursion.
func globMatch(pattern, name string) bool {
	p, n := []rune(pattern), []rune(name)
	pi, ni, star, mark := 0, 0, -1, 0
	for ni < len(n) {
		switch {
		case pi < len(p) && (p[pi] == '?' || p[pi] == n[ni]):
			pi++
			ni++
		case pi < len(p) && p[pi] == '*':
			star, mark = pi, ni
			pi++
		case star >= 0:
			pi = star + 1
			mark++
			ni = mark
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}

func describeChoice(d DiskInfo) string {
	var f []string
	q := func(k, v string) {
		if v == "" {
			v = "-"
		}
		f = append(f, k+" "+strconv.Quote(v))
	}
	q("model", d.Model)
	q("serial", d.Serial)
	q("wwn", d.WWN)
	f = append(f, human(d.Size))
	kind := "fixed"
	if d.Removable {
		kind = "removable"
	}
	if d.Transport != "" {
		kind += ", " + d.Transport
	}
	f = append(f, kind)
	if d.SectorSize != 0 && d.SectorSize != 512 {
		f = append(f, fmt.Sprintf("%d-byte sectors", d.SectorSize))
	}
	return strings.Join(f, ", ")
}

// diskChoiceError says why no single disk was chosen, with every disk of
// the machine (those in mark flagged as matching).
func diskChoiceError(disks []DiskInfo, rule *bundle.DiskRule, why string, mark []DiskInfo) error {
	var b strings.Builder
	fmt.Fprintf(&b, "disk rule %s: %s; no disk was touched. Disks:", rule, why)
	if len(disks) == 0 {
		b.WriteString(" none found")
	}
	for _, d := range disks {
		flag := ""
		for _, m := range mark {
			if m.Path == d.Path {
				flag = " [matches]"
			}
		}
		fmt.Fprintf(&b, "\n  %s: %s%s", d.Path, describeChoice(d), flag)
	}
	return fmt.Errorf("%w: %s", ErrNoDiskChoice, b.String())
}

// CheckSectorSize refuses to restore m onto the block device dev when its
// logical sector size differs from the image's disk (a GPT and partition
// offsets counted in sectors would point elsewhere). Files and devices
// whose sector size cannot be read pass.
func CheckSectorSize(dev string, m *image.Manifest) error {
	fi, err := os.Stat(dev)
	if err != nil {
		return fmt.Errorf("target %s: %w", dev, err)
	}
	if fi.Mode()&os.ModeDevice == 0 {
		return nil
	}
	return checkSectorSize(dev, devSectorSize(defaultRoots.sys, fi), m)
}

func checkSectorSize(dev string, diskSS int, m *image.Manifest) error {
	imgSS := m.Disk.SectorSize
	if imgSS == 0 {
		imgSS = 512
	}
	if diskSS == 0 || int64(diskSS) == imgSS {
		return nil
	}
	return fmt.Errorf("restore %s onto %s: %w: the image's disk had %d-byte sectors, this disk has %d-byte sectors; its partition table would point to the wrong places, nothing was written (restore onto a disk with %d-byte sectors, or capture an image from one like this)",
		m.Name, dev, ErrSectorSize, imgSS, diskSS, imgSS)
}
