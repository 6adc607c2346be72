package bootmedia

import (
	"bytes"
	"context"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const testPin = "sha256:0000000000000000000000000000000000000000000000000000000000000001"

func requireTools(t *testing.T) {
	t.Helper()
	if miss := MissingTools(); len(miss) > 0 {
		t.Fatalf("missing %s: apt-get install %s (the Makefile's TEST_DEBS)", strings.Join(miss, ", "), Packages)
	}
}

func fakeEnv(t *testing.T) (dir, kernel, initrd string) {
	t.Helper()
	dir = t.TempDir()
	kernel, initrd = filepath.Join(dir, "kernel"), filepath.Join(dir, "initrd")
	if err := os.WriteFile(kernel, bytes.Repeat([]byte("K"), 300<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(initrd, bytes.Repeat([]byte("I"), 500<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, kernel, initrd
}

// TestBuildHybrid builds a medium and reads it back with xorriso: two El
// Torito entries (BIOS isolinux, UEFI ESP), an isohybrid MBR with the
// ESP as partition 2, and both boot menus carrying the server, the pin
// and the media marker.
func TestBuildHybrid(t *testing.T) {
	requireTools(t)
	dir, kernel, initrd := fakeEnv(t)
	out := filepath.Join(dir, "preboot.iso")
	err := Build(context.Background(), Options{Kernel: kernel, Initrd: initrd, Out: out, Server: "https://10.1.2.3:8443/", TLS: testPin, Serial: true})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := exec.Command("xorriso", "-indev", out, "-report_el_torito", "plain", "-report_system_area", "plain").CombinedOutput()
	if err != nil {
		t.Fatalf("xorriso report: %v\n%s", err, rep)
	}
	r := string(rep)
	for _, want := range []string{
		"El Torito boot img :   1  BIOS  y   none",
		"El Torito boot img :   2  UEFI  y   none",
		"El Torito img path :   1  /isolinux/isolinux.bin",
		"MBR isohybrid",
		"Volume id    : 'PREBOOT'",
	} {
		if !strings.Contains(r, want) {
			t.Errorf("xorriso report lacks %q:\n%s", want, r)
		}
	}
	// The MBR: boot signature, partition 1 active (the ISO), partition 2
	// of type 0xEF (the EFI system partition a USB boot finds).
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	mbr := make([]byte, 512)
	if _, err := f.ReadAt(mbr, 0); err != nil {
		t.Fatal(err)
	}
	if mbr[510] != 0x55 || mbr[511] != 0xAA {
		t.Errorf("no MBR boot signature: % x", mbr[510:])
	}
	p1, p2 := mbr[446:462], mbr[462:478]
	if p1[0] != 0x80 {
		t.Errorf("partition 1 not active: % x", p1)
	}
	if p2[4] != 0xEF || binary.LittleEndian.Uint32(p2[12:]) == 0 {
		t.Errorf("partition 2 is not an EFI system partition: % x", p2)
	}
	// The configurations on the medium.
	want := "preboot.server=https://10.1.2.3:8443 preboot.tls=" + testPin + " preboot.media=1"
	for _, file := range []string{"/isolinux/isolinux.cfg", "/boot/grub/grub.cfg", MarkerFile} {
		dst := filepath.Join(dir, filepath.Base(file))
		if b, err := exec.Command("xorriso", "-osirrox", "on", "-indev", out, "-extract", file, dst).CombinedOutput(); err != nil {
			t.Fatalf("extract %s: %v\n%s", file, err, b)
		}
		b, err := os.ReadFile(dst)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), want) {
			t.Errorf("%s does not carry %q:\n%s", file, want, b)
		}
		if file != MarkerFile && !strings.Contains(string(b), serialConsole+" quiet "+want) {
			t.Errorf("%s: the first entry is not the serial console one:\n%s", file, b)
		}
	}
	// The kernel and initrd are the environment's, byte for byte.
	for _, file := range []string{kernel, initrd} {
		dst := filepath.Join(dir, "x-"+filepath.Base(file))
		if b, err := exec.Command("xorriso", "-osirrox", "on", "-indev", out, "-extract", "/boot/"+filepath.Base(file), dst).CombinedOutput(); err != nil {
			t.Fatalf("extract: %v\n%s", err, b)
		}
		a, _ := os.ReadFile(file)
		b, _ := os.ReadFile(dst)
		if !bytes.Equal(a, b) {
			t.Errorf("%s differs on the medium", file)
		}
	}
	// Nothing left behind but the output and the inputs.
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".preboot-media-") {
			t.Errorf("staging directory left behind: %s", e.Name())
		}
	}
}

// TestBuildRefuses: bad servers and pins, and a missing environment, are
// refused before anything is written; an existing output stays as it was.
func TestBuildRefuses(t *testing.T) {
	dir, kernel, initrd := fakeEnv(t)
	out := filepath.Join(dir, "preboot.iso")
	if err := os.WriteFile(out, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		server, pin, kernel, want string
	}{
		{"http://[::1", "", kernel, "server URL"},
		{"ftp://10.0.0.1", "", kernel, "want http:// or https://"},
		{"https://", testPin, kernel, "no host"},
		{"https://10.0.0.1:8443", "", kernel, "give the pin"},
		{"https://10.0.0.1:8443", "sha256:zz", kernel, "TLS pin"},
		{"http://10.0.0.1:8080/boot.ipxe", "", kernel, "only scheme, host and port"},
		{"http://user:pw@10.0.0.1:8080", "", kernel, "credentials"},
		{"10.0.0.1:8080", "", kernel, "server URL"},
		{"preboot.example", "", kernel, "want http"},
		{"http://10.0.0.1:8080", "", filepath.Join(dir, "nokernel"), "preboot env build"},
	}
	for _, c := range cases {
		err := Build(context.Background(), Options{Kernel: c.kernel, Initrd: initrd, Out: out, Server: c.server, TLS: c.pin})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("server %q pin %q: err %v, want %q", c.server, c.pin, err, c.want)
		}
	}
	if b, _ := os.ReadFile(out); string(b) != "old" {
		t.Errorf("the existing output was touched: %q", b)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 3 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("files left behind: %v", names)
	}
}

func TestCmdline(t *testing.T) {
	if got := Cmdline("quiet", "", ""); got != "quiet preboot.media=1" {
		t.Errorf("no server: %q", got)
	}
	if got, err := CheckServer("http://h.example:8080", ""); err != nil || got != "http://h.example:8080" {
		t.Errorf("CheckServer: %q %v", got, err)
	}
}
