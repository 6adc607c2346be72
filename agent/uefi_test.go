package agent

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/preboot/preboot/efiboot"
)

// uefiDisk makes a GPT disk file whose partition 1 is a FAT32 ESP holding
// files (made with mkfs.vfat and mtools, as an installer leaves it) and
// partition 2 a Linux partition.
func uefiDisk(t *testing.T, espType string, files ...string) *os.File {
	t.Helper()
	needTools(t, "sgdisk", "mkfs.vfat", "mmd", "mcopy")
	t.Setenv("MTOOLS_SKIP_CHECK", "1")
	dir := t.TempDir()
	p := filepath.Join(dir, "disk.img")
	makeFile(t, p, 80<<20)
	run(t, "", "sgdisk", "-o", "-n", "1:2048:+64M", "-t", "1:"+espType,
		"-u", "1:5c0f7f52-3b1e-4d8a-9f0c-2a6e7b9d1c44", "-n", "2:0:0", "-t", "2:8300", p)
	run(t, "", "mkfs.vfat", "-F", "32", "--offset=2048", p, "65536")
	loader := filepath.Join(dir, "loader")
	if err := os.WriteFile(loader, []byte("MZ loader"), 0o644); err != nil {
		t.Fatal(err)
	}
	made := map[string]bool{}
	for _, f := range files {
		comps := strings.Split(f, "/")
		for i := 1; i < len(comps); i++ {
			d := strings.Join(comps[:i], "/")
			if !made[d] {
				run(t, "", "mmd", "-i", p+"@@1M", "::/"+d)
				made[d] = true
			}
		}
		run(t, "", "mcopy", "-i", p+"@@1M", loader, "::/"+f)
	}
	fh, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fh.Close() })
	return fh
}

// fakeUEFI is a firmware directory and an efivars directory with the
// efivarfs file format; pxe puts an OVMF-style PXE entry Boot0000 first.
func fakeUEFI(t *testing.T, pxe bool) uefiHost {
	t.Helper()
	h := uefiHost{firmware: t.TempDir(), vars: t.TempDir()}
	if pxe {
		v := efiboot.Vars{Dir: h.vars}
		mac := make([]byte, 33)
		mac[32] = 1
		o := efiboot.LoadOption{Attributes: efiboot.LoadOptionActive, Description: "UEFI PXEv4",
			FilePath: efiboot.DevicePath{{Type: efiboot.TypeMessaging, SubType: efiboot.SubMAC, Data: mac}}}
		b, err := o.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if err := v.Set("Boot0000", efiboot.DefaultAttrs, b); err != nil {
			t.Fatal(err)
		}
		if err := v.SetBootOrder([]uint16{0}); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

func TestBootEntry(t *testing.T) {
	ctx := context.Background()
	const esp = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
	debian := uefiDisk(t, esp, "EFI/debian/shimx64.efi", "EFI/debian/grubx64.efi")
	size := int64(80 << 20)
	wantDP := `HD(1,GPT,5c0f7f52-3b1e-4d8a-9f0c-2a6e7b9d1c44,0x800,0x20000)/File(\EFI\debian\shimx64.efi)`

	for _, tc := range []struct {
		mode  string
		order []uint16
	}{{"", []uint16{0, 1}}, {BootEntryAuto, []uint16{0, 1}}, {BootEntryDiskFirst, []uint16{1, 0}}} {
		t.Run("mode="+tc.mode, func(t *testing.T) {
			host := fakeUEFI(t, true)
			var logs bytes.Buffer
			log := slog.New(slog.NewTextHandler(&logs, nil))
			e, ok := bootEntry(ctx, debian, size, tc.mode, host, log)
			if !ok || e.Num != 1 || e.Description != "debian" || e.DevicePath != wantDP {
				t.Fatalf("entry %+v ok=%v\n%s", e, ok, logs.String())
			}
			order, _, err := efiboot.Vars{Dir: host.vars}.BootOrder()
			if err != nil || !slices.Equal(order, tc.order) {
				t.Errorf("BootOrder %v (%v), want %v", order, err, tc.order)
			}
			if !strings.Contains(logs.String(), `msg="uefi boot entry created" entry=Boot0001 description=debian path=\EFI\debian\shimx64.efi`) {
				t.Errorf("log:\n%s", logs.String())
			}
		})
	}

	t.Run("off", func(t *testing.T) {
		host := fakeUEFI(t, false)
		if _, ok := bootEntry(ctx, debian, size, BootEntryOff, host, slog.New(slog.DiscardHandler)); ok {
			t.Error("off created an entry")
		}
		if ents, _ := os.ReadDir(host.vars); len(ents) != 0 {
			t.Errorf("off wrote variables: %v", ents)
		}
	})
	t.Run("bios", func(t *testing.T) {
		host := fakeUEFI(t, false)
		host.firmware = filepath.Join(host.firmware, "missing")
		if _, ok := bootEntry(ctx, debian, size, BootEntryAuto, host, slog.New(slog.DiscardHandler)); ok {
			t.Error("entry created on a BIOS machine")
		}
		if ents, _ := os.ReadDir(host.vars); len(ents) != 0 {
			t.Errorf("variables written on a BIOS machine: %v", ents)
		}
	})
	t.Run("bad mode", func(t *testing.T) {
		if err := ValidBootEntry("sometimes"); err == nil {
			t.Error("ValidBootEntry accepted a bad mode")
		}
		host := fakeUEFI(t, false)
		var logs bytes.Buffer
		if _, ok := bootEntry(ctx, debian, size, "sometimes", host, slog.New(slog.NewTextHandler(&logs, nil))); ok ||
			!strings.Contains(logs.String(), "level=WARN") {
			t.Errorf("bad mode: ok=%v log %s", ok, logs.String())
		}
	})
	t.Run("no loader", func(t *testing.T) {
		d := uefiDisk(t, esp, "EFI/debian/grub.cfg")
		host := fakeUEFI(t, true)
		var logs bytes.Buffer
		if _, ok := bootEntry(ctx, d, size, BootEntryAuto, host, slog.New(slog.NewTextHandler(&logs, nil))); ok {
			t.Error("entry without a loader")
		}
		if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "may not boot") {
			t.Errorf("log:\n%s", logs.String())
		}
		if order, _, _ := (efiboot.Vars{Dir: host.vars}).BootOrder(); !slices.Equal(order, []uint16{0}) {
			t.Errorf("BootOrder changed to %v", order)
		}
	})
	t.Run("no ESP", func(t *testing.T) {
		d := uefiDisk(t, "0700", "EFI/debian/shimx64.efi")
		host := fakeUEFI(t, false)
		if _, ok := bootEntry(ctx, d, size, BootEntryAuto, host, slog.New(slog.DiscardHandler)); ok {
			t.Error("entry without an ESP")
		}
		if ents, _ := os.ReadDir(host.vars); len(ents) != 0 {
			t.Errorf("variables written without an ESP: %v", ents)
		}
	})
	t.Run("windows", func(t *testing.T) {
		d := uefiDisk(t, "ef00", "EFI/Microsoft/Boot/bootmgfw.efi", "EFI/Boot/bootx64.efi")
		host := fakeUEFI(t, false)
		e, ok := bootEntry(ctx, d, size, BootEntryAuto, host, slog.New(slog.DiscardHandler))
		if !ok || e.Num != 0 || e.Description != "Windows Boot Manager" || e.Path != `\EFI\Microsoft\Boot\bootmgfw.efi` {
			t.Errorf("entry %+v ok=%v", e, ok)
		}
	})
}
