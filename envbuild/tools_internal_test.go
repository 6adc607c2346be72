package envbuild

import (
	"bytes"
	"debug/elf"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// fakeRoot copies the build machine's resize2fs, its loader and the
// libraries it needs into a temporary root, leaving out skip.
func fakeRoot(t *testing.T, skip string) string {
	t.Helper()
	root := t.TempDir()
	host, err := closure("/", "usr/sbin/resize2fs")
	if err != nil {
		t.Skipf("resize2fs on this machine: %v (apt-get install e2fsprogs)", err)
	}
	for rel, f := range host {
		if filepath.Base(rel) == skip {
			continue
		}
		dst := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, f.Data, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestCollectTools(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	root := fakeRoot(t, "")
	// A script is not an ELF executable; a non-executable file is not a
	// tool.
	if err := os.WriteFile(filepath.Join(root, "usr/sbin/script"), []byte("#!/bin/sh\necho hi\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "usr/sbin/noexec"), []byte("\x7fELF"), 0o644); err != nil {
		t.Fatal(err)
	}
	tools, err := collectTools(root, []string{"resize2fs", "script", "noexec", "absent", "resize2fs"}, log)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(tools.Missing, []string{"absent", "noexec", "script"}) {
		t.Errorf("Missing = %v", tools.Missing)
	}
	if len(tools.Paths) != 1 || tools.Paths["resize2fs"] != "/usr/sbin/resize2fs" {
		t.Errorf("Paths = %v", tools.Paths)
	}
	for _, want := range []string{"usr/sbin/resize2fs", "lib64/ld-linux-x86-64.so.2", "lib/x86_64-linux-gnu/libc.so.6", "lib/x86_64-linux-gnu/libext2fs.so.2"} {
		if f, ok := tools.Files[want]; !ok || f.Mode != modeExec || !bytes.HasPrefix(f.Data, []byte("\x7fELF")) {
			t.Errorf("%s not collected as an executable ELF file", want)
		}
	}
	if _, ok := tools.Files["lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"]; ok {
		t.Error("the dynamic loader is carried twice")
	}
	if !slices.IsSorted(tools.Libraries) || !slices.Contains(tools.Libraries, "/lib/x86_64-linux-gnu/libc.so.6") ||
		slices.Contains(tools.Libraries, "/usr/sbin/resize2fs") {
		t.Errorf("Libraries = %v", tools.Libraries)
	}
	if _, err := collectTools(root, []string{"../bin/sh"}, log); err == nil {
		t.Error("a path accepted as a tool name")
	}

	// A library of the closure is missing: the tool is left out, not
	// half-carried.
	root = fakeRoot(t, "libcom_err.so.2")
	tools, err = collectTools(root, []string{"resize2fs"}, log)
	if err != nil {
		t.Fatal(err)
	}
	if len(tools.Paths) != 0 || len(tools.Files) != 0 || !slices.Equal(tools.Missing, []string{"resize2fs"}) {
		t.Errorf("incomplete closure: paths %v, %d files, missing %v", tools.Paths, len(tools.Files), tools.Missing)
	}

	// A library of another architecture is skipped, as ld.so does.
	root = fakeRoot(t, "")
	lib := filepath.Join(root, "lib/x86_64-linux-gnu/libe2p.so.2")
	good, err := os.ReadFile(lib)
	if err != nil {
		t.Fatal(err)
	}
	bad := append([]byte(nil), good...)
	bad[18] = byte(elf.EM_AARCH64) // e_machine
	if err := os.WriteFile(lib, bad, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "usr/lib/x86_64-linux-gnu"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "usr/lib/x86_64-linux-gnu/libe2p.so.2"), good, 0o755); err != nil {
		t.Fatal(err)
	}
	tools, err = collectTools(root, []string{"resize2fs"}, log)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := tools.Files["usr/lib/x86_64-linux-gnu/libe2p.so.2"]; !ok || tools.Files["lib/x86_64-linux-gnu/libe2p.so.2"].Data != nil {
		t.Errorf("foreign-architecture library not skipped: %v", tools.Libraries)
	}
}

func TestAddToolsReplacesApplet(t *testing.T) {
	fsys := map[string]File{
		"sbin/tune2fs": {Mode: modeLink, Data: []byte("../bin/busybox")},
		"bin/ls":       {Mode: modeLink, Data: []byte("busybox")},
	}
	addTools(fsys, &Tools{
		Files: map[string]File{"usr/sbin/tune2fs": {Mode: modeExec, Data: []byte("\x7fELF")}},
		Paths: map[string]string{"tune2fs": "/usr/sbin/tune2fs"},
	})
	if _, ok := fsys["sbin/tune2fs"]; ok {
		t.Error("busybox's tune2fs applet shadows Debian's in /sbin")
	}
	if _, ok := fsys["usr/sbin/tune2fs"]; !ok {
		t.Error("tune2fs not added")
	}
	if _, ok := fsys["bin/ls"]; !ok {
		t.Error("an unrelated applet was removed")
	}
}

// FuzzToolELF: the ELF readings collectTools makes (program interpreter,
// DT_NEEDED) never panic and stay bounded on any file.
func FuzzToolELF(f *testing.F) {
	f.Add([]byte("\x7fELF\x02\x01\x01"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ef, err := elf.NewFile(bytes.NewReader(b))
		if err != nil {
			return
		}
		defer ef.Close()
		if s, err := interpreter(ef); err == nil && s != "" && (!strings.HasPrefix(s, "/") || len(s) > maxInterpPath) {
			t.Errorf("interpreter %q accepted", s)
		}
		if libs, err := needed(ef, "fuzz"); err == nil {
			for _, l := range libs {
				if l == "" || strings.ContainsAny(l, "/\x00") {
					t.Errorf("library name %q accepted", l)
				}
			}
		}
	})
}
