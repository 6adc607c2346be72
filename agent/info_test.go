package agent

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

func writeFiles(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for p, v := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestInfo(t *testing.T) {
	dir := t.TempDir()
	d := buildDisk(t, dir, "gpt", 64*MiB)
	if err := WriteImageSafe(d.path, &ImageSafe{DeviceID: "dev-9", Hostname: "pc9"}); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	sys, proc := filepath.Join(root, "sys"), filepath.Join(root, "proc")
	writeFiles(t, sys, map[string]string{
		"class/dmi/id/sys_vendor": "QEMU", "class/dmi/id/product_name": "Standard PC",
		"class/dmi/id/product_serial": "SN123", "class/dmi/id/product_uuid": "ABCD-EF",
		"class/net/eth0/address": "52:54:00:12:34:56", "class/net/eth0/operstate": "up",
		"class/net/eth0/device/vendor": "0x8086",
		"class/net/eth0/speed":         "100", "class/net/eth0/duplex": "half",
		"class/net/lo/address": "00:00:00:00:00:00",
		"block/sda/size":       "131072", "block/sda/removable": "0",
		"block/sdb/size": "2048", "block/sdb/removable": "1",
		"block/loop0/size": "2048", "block/sr0/size": "2048", "block/vdz/size": "0",
	})
	writeFiles(t, proc, map[string]string{
		"cpuinfo": "processor\t: 0\nmodel name\t: Test CPU @ 1GHz", "meminfo": "MemTotal:        2048000 kB\nMemFree: 1 kB",
	})
	in, err := collectInfo(context.Background(), d.path, hostRoots{sys: sys, proc: proc, dev: "/dev"})
	if err != nil {
		t.Fatal(err)
	}
	h := in.Hardware
	if h.Vendor != "QEMU" || h.Serial != "SN123" || h.UUID != "abcd-ef" || h.CPUModel != "Test CPU @ 1GHz" ||
		h.MemoryBytes != 2048000*1024 || len(h.NICs) != 1 || h.NICs[0].MAC != "52:54:00:12:34:56" ||
		h.NICs[0].Speed != 100 || h.NICs[0].Duplex != "half" {
		t.Errorf("hardware %+v", h)
	}
	if len(in.Disks) != 1 || in.Disks[0].Table != "gpt" || len(in.Disks[0].Partitions) != 2 ||
		in.Disks[0].Partitions[0].FSType != "fat16" || in.Disks[0].Partitions[1].FSType != "ext4" {
		t.Errorf("disks %+v", in.Disks)
	}
	if in.ImageSafe == nil || in.ImageSafe.DeviceID != "dev-9" {
		t.Errorf("image-safe %+v", in.ImageSafe)
	}
	if _, err := json.Marshal(in); err != nil {
		t.Fatal(err)
	}
	if got := ListDisks(sys, false); len(got) != 1 || got[0] != "sda" {
		t.Errorf("ListDisks(non-removable) = %v", got)
	}
	if got := ListDisks(sys, true); len(got) != 2 {
		t.Errorf("ListDisks(all) = %v", got)
	}
}
