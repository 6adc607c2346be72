package agent

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"

	"github.com/preboot/preboot/disk"
)

// Info is what the agent reports about the machine (POST /api/v1/agent/info
// and `preboot agent info`).
type Info struct {
	Hostname string     `json:"hostname"`
	Hardware Hardware   `json:"hardware"`
	Disks    []DiskInfo `json:"disks"`
	// ImageSafe is the record of the imaging disk (the device asked for,
	// else the first disk that has one).
	ImageSafe *ImageSafe `json:"image_safe,omitempty"`
}

// Hardware is the SMBIOS identity, CPUs, memory and NICs.
type Hardware struct {
	Vendor      string `json:"vendor,omitempty"`
	Product     string `json:"product,omitempty"`
	Serial      string `json:"serial,omitempty"`
	UUID        string `json:"uuid,omitempty"`
	BIOSVendor  string `json:"bios_vendor,omitempty"`
	BIOSVersion string `json:"bios_version,omitempty"`
	Firmware    string `json:"firmware"` // "uefi" or "bios"
	CPUs        int    `json:"cpus"`
	CPUModel    string `json:"cpu_model,omitempty"`
	MemoryBytes int64  `json:"memory_bytes,omitempty"`
	NICs        []NIC  `json:"nics,omitempty"`
	// SecureBoot: the firmware's Secure Boot state and the kernel's
	// lockdown mode (UEFI machines only).
	SecureBoot *SecureBootState `json:"secure_boot,omitempty"`
}

// NIC is one network interface.
type NIC struct {
	Name   string `json:"name"`
	MAC    string `json:"mac"`
	State  string `json:"state,omitempty"`
	Speed  int    `json:"speed_mbps,omitempty"`
	Duplex string `json:"duplex,omitempty"` // full, half (sysfs duplex, when the link is up)
	Driver string `json:"driver,omitempty"`
}

// DiskInfo is one disk with its partitions.
type DiskInfo struct {
	Name       string `json:"name"`
	Path       string `json:"path"`
	Size       int64  `json:"size"`
	Model      string `json:"model,omitempty"`
	Serial     string `json:"serial,omitempty"`
	Rotational bool   `json:"rotational"`
	Removable  bool   `json:"removable"`
	// WWN is the World Wide Name (sysfs wwid/wwn: naa.…, eui.…, t10.…).
	WWN string `json:"wwn,omitempty"`
	// SectorSize is the logical sector size (512 when sysfs does not say).
	SectorSize int `json:"sector_size,omitempty"`
	// Transport is how the disk is attached, when sysfs shows it: usb,
	// nvme, mmc, virtio, ata, scsi.
	Transport  string          `json:"transport,omitempty"`
	Table      string          `json:"table,omitempty"` // gpt, mbr, none
	DiskID     string          `json:"disk_id,omitempty"`
	Partitions []PartitionInfo `json:"partitions,omitempty"`
	ImageSafe  *ImageSafe      `json:"image_safe,omitempty"`
	Error      string          `json:"error,omitempty"`
}

// PartitionInfo is one partition and the filesystem found in it.
type PartitionInfo struct {
	Index    int    `json:"index"`
	Start    int64  `json:"start"`
	Size     int64  `json:"size"`
	Type     string `json:"type"`
	Name     string `json:"name,omitempty"`
	Bootable bool   `json:"bootable,omitempty"`
	FSType   string `json:"fstype,omitempty"`
}

// hostRoots are where Info reads the system; tests point them elsewhere.
type hostRoots struct{ sys, proc, dev string }

var defaultRoots = hostRoots{sys: "/sys", proc: "/proc", dev: "/dev"}

// GetInfo describes the machine. dev, when set, limits the disks to that one
// (a block device or a disk-image file) and picks its image-safe record.
func GetInfo(ctx context.Context, dev string) (Info, error) {
	return collectInfo(ctx, dev, defaultRoots)
}

func collectInfo(ctx context.Context, dev string, r hostRoots) (Info, error) {
	var in Info
	in.Hostname, _ = os.Hostname()
	in.Hardware = hardware(r)
	if dev != "" {
		d, err := describeDisk(dev, r)
		if err != nil {
			return in, err
		}
		in.Disks = []DiskInfo{d}
	} else {
		for _, name := range ListDisks(r.sys, true) {
			if err := ctx.Err(); err != nil {
				return in, err
			}
			d, err := describeDisk(filepath.Join(r.dev, name), r)
			if err != nil {
				d = DiskInfo{Name: name, Path: filepath.Join(r.dev, name), Error: err.Error()}
			}
			in.Disks = append(in.Disks, d)
		}
	}
	for _, d := range in.Disks {
		if d.ImageSafe != nil {
			in.ImageSafe = d.ImageSafe
			break
		}
	}
	return in, nil
}

func readSys(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func hardware(r hostRoots) Hardware {
	dmi := filepath.Join(r.sys, "class/dmi/id")
	h := Hardware{
		Vendor: readSys(filepath.Join(dmi, "sys_vendor")), Product: readSys(filepath.Join(dmi, "product_name")),
		Serial: readSys(filepath.Join(dmi, "product_serial")), UUID: strings.ToLower(readSys(filepath.Join(dmi, "product_uuid"))),
		BIOSVendor: readSys(filepath.Join(dmi, "bios_vendor")), BIOSVersion: readSys(filepath.Join(dmi, "bios_version")),
		Firmware: "bios", CPUs: runtime.NumCPU(),
	}
	if _, err := os.Stat(filepath.Join(r.sys, "firmware/efi")); err == nil {
		h.Firmware = "uefi"
		h.SecureBoot = readSecureBoot(r)
	}
	if f, err := os.Open(filepath.Join(r.proc, "cpuinfo")); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				h.CPUModel = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	if f, err := os.Open(filepath.Join(r.proc, "meminfo")); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fs := strings.Fields(sc.Text())
			if len(fs) >= 2 && fs[0] == "MemTotal:" {
				if kb, err := strconv.ParseInt(fs[1], 10, 64); err == nil {
					h.MemoryBytes = kb * 1024
				}
				break
			}
		}
		f.Close()
	}
	h.NICs = nics(r.sys)
	return h
}

func nics(sys string) []NIC {
	es, _ := os.ReadDir(filepath.Join(sys, "class/net"))
	var out []NIC
	for _, e := range es {
		dir := filepath.Join(sys, "class/net", e.Name())
		// Physical NICs have a device link; lo, bridges, veths do not.
		if _, err := os.Stat(filepath.Join(dir, "device")); err != nil {
			continue
		}
		n := NIC{Name: e.Name(), MAC: readSys(filepath.Join(dir, "address")), State: readSys(filepath.Join(dir, "operstate"))}
		if s, err := strconv.Atoi(readSys(filepath.Join(dir, "speed"))); err == nil && s > 0 {
			n.Speed = s
		}
		if d := readSys(filepath.Join(dir, "duplex")); d == "full" || d == "half" {
			n.Duplex = d
		}
		if l, err := os.Readlink(filepath.Join(dir, "device/driver")); err == nil {
			n.Driver = filepath.Base(l)
		}
		out = append(out, n)
	}
	return out
}

// ListDisks returns the whole disks under SYS/block, sorted by name,
// without loop, ram, zram, optical (sr), device-mapper and md devices.
// With removable false, removable disks are left out too.
func ListDisks(sys string, removable bool) []string {
	es, _ := os.ReadDir(filepath.Join(sys, "block"))
	var out []string
	for _, e := range es {
		n := e.Name()
		if hasAnyPrefix(n, "loop", "ram", "zram", "sr", "dm-", "md", "fd", "nbd") {
			continue
		}
		dir := filepath.Join(sys, "block", n)
		if readSys(filepath.Join(dir, "size")) == "0" {
			continue
		}
		if !removable && readSys(filepath.Join(dir, "removable")) == "1" {
			continue
		}
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// DefaultDisk is the disk a job without a device works on: the first
// non-removable disk.
func DefaultDisk() (string, error) {
	ds := ListDisks(defaultRoots.sys, false)
	if len(ds) == 0 {
		return "", errors.New("no disk found (no non-removable disk in /sys/block)")
	}
	return filepath.Join(defaultRoots.dev, ds[0]), nil
}

func hasAnyPrefix(s string, ps ...string) bool {
	for _, p := range ps {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

func describeDisk(path string, r hostRoots) (DiskInfo, error) {
	d := DiskInfo{Name: filepath.Base(path), Path: path}
	f, err := os.Open(path)
	if err != nil {
		return d, err
	}
	defer f.Close()
	if d.Size, err = deviceSize(f); err != nil {
		return d, err
	}
	if isBlockDevice(f) {
		sysDiskAttrs(&d, r.sys) // disksel.go
	}
	t, err := disk.ReadTable(f, d.Size)
	if err != nil {
		d.Error = err.Error()
		return d, nil
	}
	d.Table, d.DiskID = t.Kind, t.DiskID
	for _, p := range t.Partitions {
		pi := PartitionInfo{Index: p.Index, Start: p.Start, Size: p.Size, Type: p.Type, Name: p.Name, Bootable: p.Bootable}
		if !p.IsExtended() && p.End() <= d.Size {
			pi.FSType = SniffFS(io.NewSectionReader(f, p.Start, p.Size))
		}
		d.Partitions = append(d.Partitions, pi)
	}
	if t.Kind == "none" && (len(d.Partitions) == 0 || d.Partitions[0].FSType == "") {
		d.Partitions = nil
	}
	if rec, err := ReadImageSafeAt(f, d.Size); err == nil {
		d.ImageSafe = rec
	} else if !errors.Is(err, ErrNoImageSafe) {
		d.Error = err.Error()
	}
	return d, nil
}

// SniffFS names the filesystem (or volume format) whose signature starts
// r, "" when none is recognised. It reads at most 68 KiB.
func SniffFS(r io.ReaderAt) string {
	b := make([]byte, 0x10100)
	n, _ := r.ReadAt(b, 0)
	b = b[:n]
	has := func(off int, sig string) bool {
		return len(b) >= off+len(sig) && string(b[off:off+len(sig)]) == sig
	}
	switch {
	case len(b) >= 1024+0x68 && binary.LittleEndian.Uint16(b[1024+0x38:]) == 0xef53:
		compat := binary.LittleEndian.Uint32(b[1024+0x5c:])
		incompat := binary.LittleEndian.Uint32(b[1024+0x60:])
		switch {
		case incompat&0x2c0 != 0: // extents, 64bit, flex_bg
			return "ext4"
		case compat&0x4 != 0: // has_journal
			return "ext3"
		}
		return "ext2"
	case has(3, "NTFS    "):
		return "ntfs"
	case has(3, "EXFAT   "):
		return "exfat"
	case has(82, "FAT32   "):
		return "fat32"
	case has(54, "FAT16   "):
		return "fat16"
	case has(54, "FAT12   "):
		return "fat12"
	case has(0, "XFSB"):
		return "xfs"
	case has(0x10040, "_BHRfS_M"):
		return "btrfs"
	case has(4086, "SWAPSPACE2"), has(4086, "SWAP-SPACE"):
		return "swap"
	case has(512, "LABELONE"):
		return "lvm2"
	case len(b) >= 6 && bytes.Equal(b[:6], []byte("LUKS\xba\xbe")):
		return "crypto_LUKS"
	}
	return ""
}
