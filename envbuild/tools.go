package envbuild

import (
	"debug/elf"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// DefaultTools are the Debian programs the environment carries, taken
// unmodified from the build machine's installed packages (e2fsprogs,
// ntfs-3g, fatresize) with their shared-library closure and the dynamic
// loader: the agent grows file systems after a restore onto a larger disk
// and repairs or reads NTFS volumes with them.
var DefaultTools = []string{
	// e2fsprogs
	"e2fsck", "resize2fs", "tune2fs",
	// ntfs-3g
	"ntfsresize", "ntfsfix", "ntfscat", "ntfscp", "ntfsls", "ntfsinfo",
	// fatresize (libparted)
	"fatresize",
}

// toolDirs are where a tool is looked up on the build machine, in order;
// it keeps the same path in the initrd.
var toolDirs = []string{"usr/sbin", "usr/bin", "sbin", "bin"}

// libDirs are the dynamic loader's default search path on Debian amd64
// (no /etc/ld.so.cache in the initrd): a library keeps the path where it
// was found.
var libDirs = []string{"lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib64", "usr/lib64", "lib", "usr/lib"}

const (
	maxLibraries  = 256     // per tool closure; Debian's tools need ~15
	maxInterpPath = 4096    // PT_INTERP length
	maxToolBytes  = 1 << 28 // one binary or library (256 MiB)
)

// Tools is what collectTools carries into the initrd.
type Tools struct {
	Files     map[string]File   // initrd path (no leading slash) → content
	Paths     map[string]string // tool name → its path in the environment ("/usr/sbin/resize2fs")
	Libraries []string          // absolute paths of the libraries and loaders, sorted
	Missing   []string          // tools not carried (not installed, or unusable), sorted
}

// collectTools finds each named tool under root (the build machine: "/")
// and collects it with the dynamic loader and every library it needs
// (DT_NEEDED, recursively). A tool that is missing or whose closure is
// incomplete is logged and listed in Missing; it is not an error.
func collectTools(root string, names []string, log *slog.Logger) (*Tools, error) {
	t := &Tools{Files: map[string]File{}, Paths: map[string]string{}}
	libs := map[string]bool{}
	for _, name := range names {
		if name == "" || strings.ContainsAny(name, "/\x00") || name == "." || name == ".." {
			return nil, fmt.Errorf("tool %q: not a program name", name)
		}
		if _, dup := t.Paths[name]; dup {
			continue
		}
		bin, err := findHostTool(root, name)
		if err != nil {
			log.Warn("tool not carried into the imaging environment", "tool", name, "err", err)
			t.Missing = append(t.Missing, name)
			continue
		}
		files, err := closure(root, bin)
		if err != nil {
			log.Warn("tool not carried into the imaging environment", "tool", name, "path", "/"+bin, "err", err)
			t.Missing = append(t.Missing, name)
			continue
		}
		for p, f := range files {
			t.Files[p] = f
			if p != bin {
				libs["/"+p] = true
			}
		}
		t.Paths[name] = "/" + bin
	}
	t.Libraries = sortedKeys(libs)
	sort.Strings(t.Missing)
	return t, nil
}

// findHostTool returns the path (relative to root) of an executable
// regular file named name in toolDirs.
func findHostTool(root, name string) (string, error) {
	for _, d := range toolDirs {
		rel := d + "/" + name
		fi, err := os.Stat(filepath.Join(root, rel))
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			continue
		}
		return rel, nil
	}
	return "", fmt.Errorf("%s not found in /%s (install its Debian package)", name, strings.Join(toolDirs, ", /"))
}

// closure reads the executable bin (relative to root) and returns it with
// its program interpreter and the transitive DT_NEEDED libraries, keyed by
// their initrd paths.
func closure(root, bin string) (map[string]File, error) {
	files := map[string]File{}
	data, f, err := readELF(root, bin)
	if err != nil {
		return nil, err
	}
	files[bin] = File{Mode: modeExec, Data: data}
	class, machine := f.Class, f.Machine
	interp, err := interpreter(f)
	if err != nil {
		return nil, fmt.Errorf("/%s: %w", bin, err)
	}
	if interp == "" { // static
		return files, nil
	}
	ld := strings.TrimPrefix(path.Clean(interp), "/")
	ldData, ldf, err := readELF(root, ld)
	if err != nil {
		return nil, fmt.Errorf("/%s: program interpreter: %w", bin, err)
	}
	if ldf.Class != class || ldf.Machine != machine {
		return nil, fmt.Errorf("/%s: program interpreter %s is %v/%v, not %v/%v", bin, interp, ldf.Class, ldf.Machine, class, machine)
	}
	files[ld] = File{Mode: modeExec, Data: ldData}

	queue, err := needed(f, bin)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for len(queue) > 0 {
		soname := queue[0]
		queue = queue[1:]
		if seen[soname] {
			continue
		}
		seen[soname] = true
		if len(seen) > maxLibraries {
			return nil, fmt.Errorf("/%s: more than %d libraries", bin, maxLibraries)
		}
		if soname == path.Base(ld) {
			continue // the loader itself (libc needs it): already mapped, never searched
		}
		rel, data, lf, err := findLibrary(root, soname, class, machine)
		if err != nil {
			return nil, fmt.Errorf("/%s: %w", bin, err)
		}
		files[rel] = File{Mode: modeExec, Data: data}
		more, err := needed(lf, rel)
		if err != nil {
			return nil, err
		}
		queue = append(queue, more...)
	}
	return files, nil
}

// readELF reads an ELF file (following symlinks on the build machine) and
// parses it.
func readELF(root, rel string) ([]byte, *elf.File, error) {
	file := filepath.Join(root, rel)
	fh, err := os.Open(file)
	if err != nil {
		return nil, nil, err
	}
	defer fh.Close()
	data, err := io.ReadAll(io.LimitReader(fh, maxToolBytes+1))
	if err != nil {
		return nil, nil, fmt.Errorf("read %s: %w", file, err)
	}
	if len(data) > maxToolBytes {
		return nil, nil, fmt.Errorf("%s: larger than %d bytes", file, maxToolBytes)
	}
	f, err := elf.NewFile(bytesReaderAt(data))
	if err != nil {
		return nil, nil, fmt.Errorf("%s: not an ELF file: %w", file, err)
	}
	return data, f, nil
}

type bytesReaderAt []byte

func (b bytesReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off >= int64(len(b)) {
		return 0, io.EOF
	}
	n := copy(p, b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// interpreter returns the PT_INTERP path ("" for a static executable).
func interpreter(f *elf.File) (string, error) {
	for _, p := range f.Progs {
		if p.Type != elf.PT_INTERP {
			continue
		}
		if p.Filesz == 0 || p.Filesz > maxInterpPath {
			return "", fmt.Errorf("program interpreter of %d bytes", p.Filesz)
		}
		b := make([]byte, p.Filesz)
		if _, err := p.ReadAt(b, 0); err != nil {
			return "", fmt.Errorf("program interpreter: %w", err)
		}
		s := strings.TrimRight(string(b), "\x00")
		if !strings.HasPrefix(s, "/") || strings.ContainsRune(s, 0) {
			return "", fmt.Errorf("program interpreter %q: not an absolute path", s)
		}
		return s, nil
	}
	return "", nil
}

// needed lists the DT_NEEDED entries of f (named rel in errors).
func needed(f *elf.File, rel string) ([]string, error) {
	libs, err := f.DynString(elf.DT_NEEDED)
	if err != nil {
		return nil, fmt.Errorf("/%s: DT_NEEDED: %w", rel, err)
	}
	for _, l := range libs {
		if l == "" || strings.ContainsAny(l, "/\x00") {
			return nil, fmt.Errorf("/%s: DT_NEEDED %q: not a library name", rel, l)
		}
	}
	if len(libs) > maxLibraries {
		return nil, fmt.Errorf("/%s: %d DT_NEEDED entries", rel, len(libs))
	}
	return libs, nil
}

// findLibrary looks soname up in libDirs as the dynamic loader does,
// skipping files of another ELF class or machine.
func findLibrary(root, soname string, class elf.Class, machine elf.Machine) (string, []byte, *elf.File, error) {
	for _, d := range libDirs {
		rel := d + "/" + soname
		if _, err := os.Stat(filepath.Join(root, rel)); err != nil {
			continue
		}
		data, f, err := readELF(root, rel)
		if err != nil || f.Class != class || f.Machine != machine {
			continue
		}
		return rel, data, f, nil
	}
	return "", nil, nil, fmt.Errorf("library %s not found in /%s", soname, strings.Join(libDirs, ", /"))
}

// addTools merges the tools into the initrd's files. A busybox applet of
// the same name is removed, so the agent (which looks in /sbin first) and
// the shell find Debian's program.
func addTools(fsys map[string]File, t *Tools) {
	for name := range t.Paths {
		for _, d := range toolDirs {
			p := d + "/" + name
			if f, ok := fsys[p]; ok && f.Mode == modeLink && path.Base(string(f.Data)) == "busybox" {
				delete(fsys, p)
			}
		}
	}
	for p, f := range t.Files {
		fsys[p] = f
	}
}
