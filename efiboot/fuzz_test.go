package efiboot

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// FuzzLoadOption decodes load options as read from NVRAM (any firmware
// or OS may have written them): no panic, and what decodes re-encodes to
// an option that decodes the same.
func FuzzLoadOption(f *testing.F) {
	f.Add([]byte{1, 0, 0, 0, 4, 0, 'a', 0, 0, 0, 0x7f, 0xff, 4, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		o, err := ParseLoadOption(b)
		if err != nil {
			return
		}
		_ = o.FilePath.String()
		_ = o.FilePath.IsNetwork()
		_ = o.FilePath.File()
		enc, err := o.Marshal()
		if err != nil {
			return
		}
		o2, err := ParseLoadOption(enc)
		if err != nil {
			t.Fatalf("re-encoded option does not decode: %v", err)
		}
		if o2.Attributes != o.Attributes || o2.FilePath.String() != o.FilePath.String() ||
			!bytes.Equal(o2.OptionalData, o.OptionalData) || len(o2.FilePath) != len(o.FilePath) {
			t.Fatalf("round trip changed the option: %+v → %+v", o, o2)
		}
	})
}

// FuzzESP reads a FAT filesystem from hostile bytes (the restored ESP is
// whatever the image held): no panic, no hang, bounded memory.
func FuzzESP(f *testing.F) {
	f.Add(make([]byte, 512))
	f.Fuzz(func(t *testing.T, b []byte) {
		fs, err := OpenFS(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return
		}
		_, _ = FindLoaders(fs, "amd64")
		_, _ = fs.ReadDir(`\`)
		_, _ = fs.Stat(`\EFI\Microsoft\Boot\bootmgfw.efi`)
		_, _ = fs.ReadDir(`\EFI\..\EFI\.\BOOT`)
	})
}

// TestFuzzSeeds checks the seed corpora reach the deep paths: the FAT
// seeds (compacted images made by mkfs.vfat and mtools) hold loaders, the
// load-option seeds decode.
func TestFuzzSeeds(t *testing.T) {
	for _, name := range []string{"fat12", "fat16"} {
		b := readSeed(t, "FuzzESP", name)
		fs, err := OpenFS(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got, err := FindLoaders(fs, "amd64")
		if err != nil || len(got) != 4 || got[2].Description != "Red Hat Enterprise Linux 9" {
			t.Errorf("%s: loaders %q, %v", name, got, err)
		}
	}
	want := map[string]string{
		"debian":         `HD(1,GPT,0a1b2c3d-4e5f-4678-9abc-def012345678,0x800,0x100000)/File(\EFI\debian\shimx64.efi)`,
		"windows_mbr":    `HD(2,MBR,0x04030201,0x800,0x32000)/File(\EFI\Microsoft\Boot\bootmgfw.efi)`,
		"ovmf_pxe":       `PciRoot(0x0)/Pci(0x3,0x0)/MAC(525400123456,0x1)/IPv4(0.0.0.0)`,
		"http_uri":       `MAC(525400123456,0x1)/IPv4(0.0.0.0)/Uri(http://10.0.0.1/ipxe.efi)`,
		"shell_fvfile":   `Path(4,7,00000000000000000000000000000000)/Path(4,6,00000000000000000000000000000000)`,
		"multi_instance": `File(\a)/,/File(b)`,
	}
	for name, text := range want {
		o, err := ParseLoadOption(readSeed(t, "FuzzLoadOption", name))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if s := o.FilePath.String(); s != text {
			t.Errorf("%s: %s, want %s", name, s, text)
		}
		if net := strings.HasPrefix(name, "ovmf") || strings.HasPrefix(name, "http"); o.FilePath.IsNetwork() != net {
			t.Errorf("%s: IsNetwork %v", name, !net)
		}
	}
}

func readSeed(t *testing.T, target, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "fuzz", target, name))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitN(string(b), "\n", 3)
	if len(lines) < 2 || lines[0] != "go test fuzz v1" || !strings.HasPrefix(lines[1], "[]byte(") {
		t.Fatalf("%s/%s: not a fuzz corpus file", target, name)
	}
	s, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "[]byte("), ")"))
	if err != nil {
		t.Fatalf("%s/%s: %v", target, name, err)
	}
	return []byte(s)
}
