package initenv

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"
)

// ModuleIndex is the part of a kernel's module metadata the loader needs:
// modules.dep (file → dependencies), modules.alias (glob → module name) and
// modules.softdep (pre: dependencies). File paths are relative to the
// module directory (lib/modules/<version>).
type ModuleIndex struct {
	Files   map[string]string   // module name → file
	Deps    map[string][]string // file → dependency files
	Aliases []Alias
	Softdep map[string][]string // module name → names loaded before it
	Builtin map[string]bool     // modules built into the kernel
}

// Alias is one line of modules.alias.
type Alias struct {
	Pattern string
	Module  string
}

// ModuleName turns a module file name or path into the kernel's module name:
// "kernel/drivers/net/virtio_net.ko.zst" → "virtio_net", "nvme-core" →
// "nvme_core".
func ModuleName(file string) string {
	base := path.Base(filepath.ToSlash(file))
	for _, ext := range []string{".xz", ".zst", ".gz"} {
		base = strings.TrimSuffix(base, ext)
	}
	base = strings.TrimSuffix(base, ".ko")
	return strings.ReplaceAll(base, "-", "_")
}

// ParseModuleIndex reads modules.dep, modules.alias and (when present)
// modules.softdep and modules.builtin from dir.
func ParseModuleIndex(dir string) (*ModuleIndex, error) {
	idx := &ModuleIndex{Files: map[string]string{}, Deps: map[string][]string{}, Softdep: map[string][]string{}, Builtin: map[string]bool{}}
	dep, err := os.ReadFile(filepath.Join(dir, "modules.dep"))
	if err != nil {
		return nil, fmt.Errorf("module index: %w", err)
	}
	idx.addDep(dep)
	alias, err := os.ReadFile(filepath.Join(dir, "modules.alias"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("module index: %w", err)
	}
	idx.addAlias(alias)
	if b, err := os.ReadFile(filepath.Join(dir, "modules.softdep")); err == nil {
		idx.addSoftdep(b)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "modules.builtin")); err == nil {
		for _, l := range strings.Fields(string(b)) {
			idx.Builtin[ModuleName(l)] = true
		}
	}
	return idx, nil
}

func (idx *ModuleIndex) addDep(b []byte) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		file, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || strings.HasPrefix(file, "#") {
			continue
		}
		file = strings.TrimSpace(file)
		idx.Deps[file] = strings.Fields(rest)
		idx.Files[ModuleName(file)] = file
	}
}

func (idx *ModuleIndex) addAlias(b []byte) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 3 && f[0] == "alias" {
			idx.Aliases = append(idx.Aliases, Alias{Pattern: f[1], Module: ModuleName(f[2])})
		}
	}
}

func (idx *ModuleIndex) addSoftdep(b []byte) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 3 || f[0] != "softdep" {
			continue
		}
		mod := ModuleName(f[1])
		pre := false
		for _, w := range f[2:] {
			switch w {
			case "pre:":
				pre = true
			case "post:":
				pre = false
			default:
				if pre {
					idx.Softdep[mod] = append(idx.Softdep[mod], w)
				}
			}
		}
	}
}

// Match returns the modules whose alias patterns match a modalias string,
// sorted and without duplicates.
func (idx *ModuleIndex) Match(modalias string) []string {
	seen := map[string]bool{}
	var out []string
	for _, a := range idx.Aliases {
		if ok, err := path.Match(a.Pattern, modalias); err == nil && ok && !seen[a.Module] {
			seen[a.Module] = true
			out = append(out, a.Module)
		}
	}
	sort.Strings(out)
	return out
}

// Resolve returns the module files to load for module names or aliases,
// dependencies and soft dependencies first. Names not in the index resolve
// through the aliases (e.g. "crc32c" → crc32c_generic, crc32c_intel);
// unknown names are an error, built-in ones are skipped.
func (idx *ModuleIndex) Resolve(names ...string) ([]string, error) {
	return idx.resolve(true, names)
}

// ResolveHard is Resolve without soft dependencies.
func (idx *ModuleIndex) ResolveHard(names ...string) ([]string, error) {
	return idx.resolve(false, names)
}

func (idx *ModuleIndex) resolve(soft bool, names []string) ([]string, error) {
	var order []string
	seen := map[string]bool{}
	var visit func(file string, depth int)
	visit = func(file string, depth int) {
		if seen[file] || depth > 64 {
			return
		}
		seen[file] = true
		if soft {
			for _, pre := range idx.Softdep[ModuleName(file)] {
				for _, f := range idx.lookup(pre) {
					visit(f, depth+1)
				}
			}
		}
		for _, dep := range idx.Deps[file] {
			visit(dep, depth+1)
		}
		order = append(order, file)
	}
	for _, n := range names {
		files := idx.lookup(n)
		if len(files) == 0 {
			if idx.Builtin[ModuleName(n)] {
				continue
			}
			return nil, fmt.Errorf("module %s: not in modules.dep or modules.alias", n)
		}
		for _, f := range files {
			visit(f, 0)
		}
	}
	return order, nil
}

// lookup maps a module name or alias to module files.
func (idx *ModuleIndex) lookup(name string) []string {
	if f, ok := idx.Files[ModuleName(name)]; ok {
		return []string{f}
	}
	var out []string
	for _, m := range idx.Match(name) {
		if f, ok := idx.Files[m]; ok {
			out = append(out, f)
		}
	}
	return out
}

// AddModuleFile indexes a module file that is not in modules.dep (a driver
// from updateDrivers.tgz) from its .modinfo section: its aliases and
// dependencies. rel is the path relative to the module directory.
func (idx *ModuleIndex) AddModuleFile(dir, rel string) error {
	data, err := readModule(filepath.Join(dir, rel))
	if err != nil {
		return err
	}
	ef, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("module %s: %w", rel, err)
	}
	sec := ef.Section(".modinfo")
	if sec == nil {
		return fmt.Errorf("module %s: no .modinfo section", rel)
	}
	info, err := sec.Data()
	if err != nil {
		return fmt.Errorf("module %s: %w", rel, err)
	}
	name := ModuleName(rel)
	var deps, aliases []string
	for _, kv := range bytes.Split(info, []byte{0}) {
		k, v, ok := strings.Cut(string(kv), "=")
		if !ok {
			continue
		}
		switch k {
		case "name":
			name = ModuleName(v)
		case "alias":
			aliases = append(aliases, v)
		case "depends":
			for _, d := range strings.Split(v, ",") {
				if d = strings.TrimSpace(d); d != "" {
					deps = append(deps, d)
				}
			}
		}
	}
	for _, a := range aliases {
		idx.Aliases = append(idx.Aliases, Alias{Pattern: a, Module: name})
	}
	var depFiles []string
	for _, d := range deps {
		if f, ok := idx.Files[ModuleName(d)]; ok {
			depFiles = append(depFiles, f)
		}
	}
	idx.Files[name] = rel
	idx.Deps[rel] = depFiles
	return nil
}

// readModule returns a module file's ELF bytes, decompressing .gz and .zst.
func readModule(file string) ([]byte, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("module: %w", err)
	}
	switch {
	case strings.HasSuffix(file, ".zst"):
		d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, fmt.Errorf("module %s: %w", file, err)
		}
		defer d.Close()
		out, err := d.DecodeAll(raw, nil)
		if err != nil {
			return nil, fmt.Errorf("module %s: %w", file, err)
		}
		return out, nil
	case strings.HasSuffix(file, ".gz"):
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			return nil, fmt.Errorf("module %s: %w", file, err)
		}
		out, err := io.ReadAll(zr)
		if err != nil {
			return nil, fmt.Errorf("module %s: %w", file, err)
		}
		return out, nil
	case strings.HasSuffix(file, ".xz"):
		return nil, fmt.Errorf("module %s: xz-compressed modules are not supported (envbuild stores them uncompressed)", file)
	}
	return raw, nil
}

// Loader loads kernel modules for the devices in sysfs.
type Loader struct {
	Dir    string // module directory, /lib/modules/<version>
	SysDir string // /sys
	Index  *ModuleIndex
	Logger *slog.Logger
	// Load inserts one module file into the kernel; nil means
	// finit_module(2) (init_module(2) for compressed files).
	Load   func(file string) error
	loaded map[string]bool
	failed map[string]bool
}

// LoadModule loads one module file (absolute path) into the running kernel.
// A module that is already loaded is not an error.
func LoadModule(file string) error {
	var err error
	if strings.HasSuffix(file, ".ko") {
		var f *os.File
		f, err = os.Open(file)
		if err != nil {
			return err
		}
		err = unix.FinitModule(int(f.Fd()), "", 0)
		f.Close()
	} else {
		var data []byte
		data, err = readModule(file)
		if err != nil {
			return err
		}
		err = unix.InitModule(data, "")
	}
	if errors.Is(err, unix.EEXIST) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("load module %s: %w", filepath.Base(file), err)
	}
	return nil
}

// Modaliases returns the distinct modalias strings under SysDir/devices.
func (l *Loader) Modaliases() ([]string, error) {
	seen := map[string]bool{}
	root := filepath.Join(l.SysDir, "devices")
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			// Devices come and go while we walk: skip what vanished.
			if p == root {
				return err
			}
			return nil
		}
		if d.Type()&fs.ModeSymlink != 0 {
			return nil
		}
		if d.IsDir() || d.Name() != "modalias" {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil
		}
		if s := strings.TrimSpace(string(b)); s != "" {
			seen[s] = true
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("modalias walk: %w", err)
	}
	out := make([]string, 0, len(seen))
	for s := range seen {
		out = append(out, s)
	}
	sort.Strings(out)
	return out, nil
}

// Pass loads the modules for every device currently in sysfs and returns
// the names of the modules it loaded in this pass.
func (l *Loader) Pass(ctx context.Context) ([]string, error) {
	if l.loaded == nil {
		l.loaded, l.failed = map[string]bool{}, map[string]bool{}
	}
	aliases, err := l.Modaliases()
	if err != nil {
		return nil, err
	}
	var want []string
	seen := map[string]bool{}
	for _, a := range aliases {
		for _, m := range l.Index.Match(a) {
			if !seen[m] && !l.loaded[m] && !l.failed[m] {
				seen[m] = true
				want = append(want, m)
			}
		}
	}
	sort.Strings(want)
	var done []string
	for _, m := range want {
		if err := ctx.Err(); err != nil {
			return done, err
		}
		got, err := l.LoadNamed(m)
		done = append(done, got...)
		if err != nil {
			l.failed[m] = true
			l.Logger.Warn("module not loaded", "module", m, "err", err)
		}
	}
	return done, nil
}

// LoadNamed loads a module by name or alias with its dependencies and
// returns the modules it inserted. Soft dependencies ("softdep X pre: Y")
// are tried first and may fail (crct10dif_pclmul on a CPU without
// PCLMULQDQ); a hard dependency that fails fails the module.
func (l *Loader) LoadNamed(name string) ([]string, error) {
	if l.loaded == nil {
		l.loaded, l.failed = map[string]bool{}, map[string]bool{}
	}
	hard, err := l.Index.ResolveHard(name)
	if err != nil {
		return nil, err
	}
	var done []string
	for _, f := range hard {
		for _, pre := range l.Index.Softdep[ModuleName(f)] {
			files, err := l.Index.ResolveHard(pre)
			if err != nil {
				continue
			}
			for _, sf := range files {
				got, err := l.loadFile(sf)
				done = append(done, got...)
				if err != nil {
					l.Logger.Debug("optional module not loaded", "module", ModuleName(sf), "for", ModuleName(f), "err", err)
				}
			}
		}
	}
	for _, f := range hard {
		got, err := l.loadFile(f)
		done = append(done, got...)
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

// loadFile inserts one module file unless it is loaded or failed before.
func (l *Loader) loadFile(f string) ([]string, error) {
	m := ModuleName(f)
	if l.loaded[m] {
		return nil, nil
	}
	if l.failed[m] {
		return nil, fmt.Errorf("module %s failed before", m)
	}
	load := l.Load
	if load == nil {
		load = LoadModule
	}
	if err := load(filepath.Join(l.Dir, f)); err != nil {
		l.failed[m] = true
		return nil, err
	}
	l.loaded[m] = true
	l.Logger.Info("module loaded", "module", m)
	return []string{m}, nil
}

// Coldplug runs passes until one loads nothing new and the device set is
// stable (drivers that find a controller add devices — ATA disks behind
// ahci need sd_mod), at most maxPasses, waiting settle between passes.
func (l *Loader) Coldplug(ctx context.Context, maxPasses int, settle time.Duration) ([]string, error) {
	var all []string
	prev := -1
	for i := 0; i < maxPasses; i++ {
		got, err := l.Pass(ctx)
		all = append(all, got...)
		if err != nil {
			return all, err
		}
		n, _ := l.Modaliases()
		if len(got) == 0 && len(n) == prev {
			break
		}
		prev = len(n)
		select {
		case <-ctx.Done():
			return all, ctx.Err()
		case <-time.After(settle):
		}
	}
	return all, nil
}
