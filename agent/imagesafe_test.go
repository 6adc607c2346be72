package agent

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestImageSafeEncoding(t *testing.T) {
	rec := &ImageSafe{DeviceID: "d1", Hostname: "h", Network: &NetworkSettings{Mode: "dhcp", MAC: "aa:bb:cc:dd:ee:ff"},
		Extra: map[string]string{"site": "lab"}}
	b, err := EncodeImageSafe(rec)
	if err != nil || len(b) != ImageSafeSize {
		t.Fatal(len(b), err)
	}
	got, err := DecodeImageSafe(b)
	if err != nil || got.DeviceID != "d1" || got.Network.MAC != "aa:bb:cc:dd:ee:ff" || got.Extra["site"] != "lab" {
		t.Fatalf("%+v %v", got, err)
	}
	for i := 16; i < 100; i += 7 {
		c := bytes.Clone(b)
		c[i] ^= 0x40
		if _, err := DecodeImageSafe(c); !errors.Is(err, ErrImageSafeCorrupt) {
			t.Errorf("flip at %d: %v", i, err)
		}
	}
	if _, err := DecodeImageSafe(make([]byte, ImageSafeSize)); !errors.Is(err, ErrNoImageSafe) {
		t.Errorf("zeros: %v", err)
	}
	big := &ImageSafe{Hostname: string(bytes.Repeat([]byte("x"), ImageSafeSize))}
	if _, err := EncodeImageSafe(big); err == nil {
		t.Error("oversized record accepted")
	}
}

func FuzzDecodeImageSafe(f *testing.F) {
	b, _ := EncodeImageSafe(&ImageSafe{DeviceID: "x"})
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < ImageSafeSize {
			b = append(b, make([]byte, ImageSafeSize-len(b))...)
		}
		rec, err := DecodeImageSafe(b)
		if err == nil {
			if _, err := EncodeImageSafe(rec); err != nil {
				t.Fatalf("decoded record does not encode: %v", err)
			}
		}
	})
}

func TestImageSafeRefusals(t *testing.T) {
	dir := t.TempDir()
	// A filesystem on the whole disk: no room.
	p := filepath.Join(dir, "whole.img")
	makeFile(t, p, 8*MiB)
	needTools(t, "mkfs.ext4", "sfdisk")
	run(t, "", "mkfs.ext4", "-q", "-F", p)
	if err := WriteImageSafe(p, &ImageSafe{DeviceID: "x"}); !errors.Is(err, ErrImageSafeNoRoom) {
		t.Errorf("whole-disk fs: %v", err)
	}
	// A partition starting at sector 63 covers the area.
	p2 := filepath.Join(dir, "dos.img")
	makeFile(t, p2, 8*MiB)
	run(t, "label: dos\nstart=63, type=83\n", "sfdisk", "-q", p2)
	if err := WriteImageSafe(p2, &ImageSafe{DeviceID: "x"}); !errors.Is(err, ErrImageSafeNoRoom) {
		t.Errorf("partition at 63: %v", err)
	}
	// Foreign data in the area is not overwritten.
	p3 := filepath.Join(dir, "foreign.img")
	makeFile(t, p3, 8*MiB)
	run(t, "label: dos\nstart=2048, type=83\n", "sfdisk", "-q", p3)
	f, _ := os.OpenFile(p3, os.O_RDWR, 0)
	_, _ = f.WriteAt([]byte("GRUB core.img tail"), ImageSafeOffset+100)
	f.Close()
	if err := WriteImageSafe(p3, &ImageSafe{DeviceID: "x"}); !errors.Is(err, ErrImageSafeOccupied) {
		t.Errorf("foreign data: %v", err)
	}
	if _, err := ReadImageSafe(p3); !errors.Is(err, ErrNoImageSafe) {
		t.Errorf("read foreign: %v", err)
	}
	// A blank disk and a partitioned one have room; a rewrite replaces.
	p4 := filepath.Join(dir, "blank.img")
	makeFile(t, p4, 8*MiB)
	for _, id := range []string{"one", "two"} {
		if err := WriteImageSafe(p4, &ImageSafe{DeviceID: id}); err != nil {
			t.Fatal(err)
		}
		if rec, err := ReadImageSafe(p4); err != nil || rec.DeviceID != id {
			t.Fatalf("%+v %v", rec, err)
		}
	}
}

func TestPartitionDevice(t *testing.T) {
	for dev, want := range map[string]string{"/dev/sda": "/dev/sda2", "/dev/nvme0n1": "/dev/nvme0n1p2",
		"/dev/loop7": "/dev/loop7p2", "/dev/vda": "/dev/vda2", "/dev/mmcblk0": "/dev/mmcblk0p2"} {
		if got := PartitionDevice(dev, 2); got != want {
			t.Errorf("%s: %s, want %s", dev, got, want)
		}
	}
}
