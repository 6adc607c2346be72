package envbuild

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/preboot/preboot/initenv"
)

// Kernel is a Debian kernel unpacked in the cache: vmlinuz, its config,
// and the modules the environment needs with the full module metadata
// (modules.dep made by depmod, modules.alias, modules.softdep,
// modules.builtin).
type Kernel struct {
	Version string
	Dir     string // CacheDir/kernels/<version>
	Vmlinuz string
	Config  string
	ModDir  string // Dir/lib/modules/<version>
}

var dependsRE = regexp.MustCompile(`Depends:\s+linux-image-(\S+-amd64)\b`)

var versionRE = regexp.MustCompile(`^[0-9][0-9A-Za-z.+~-]*$`)

// CurrentVersion asks apt for the version behind Debian's
// linux-image-amd64 metapackage; without package lists it falls back to
// the newest kernel already in the cache.
func CurrentVersion(ctx context.Context, cacheDir string) (string, error) {
	out, err := exec.CommandContext(ctx, "apt-cache", "depends", "linux-image-amd64").CombinedOutput()
	if m := dependsRE.FindSubmatch(out); err == nil && m != nil {
		return string(m[1]), nil
	}
	matches, _ := filepath.Glob(filepath.Join(cacheDir, "kernels", "*", "ok"))
	if len(matches) == 0 {
		return "", fmt.Errorf("find the Debian kernel version (apt-cache depends linux-image-amd64; run apt-get update?): %v: %s", err, out)
	}
	sort.Strings(matches)
	return filepath.Base(filepath.Dir(matches[len(matches)-1])), nil
}

// CachedKernel returns kernel version from the cache, downloading
// linux-image-<version> with apt-get (the .deb is kept in the cache) and
// unpacking it with dpkg -x when the cache lacks it or lacks one of the
// modules (names or aliases, with their dependencies and soft
// dependencies).
func CachedKernel(ctx context.Context, cacheDir, version string, modules []string, logger *slog.Logger) (*Kernel, error) {
	if !versionRE.MatchString(version) {
		return nil, fmt.Errorf("kernel version %q: not a Debian kernel version", version)
	}
	dir := filepath.Join(cacheDir, "kernels", version)
	k := &Kernel{
		Version: version,
		Dir:     dir,
		Vmlinuz: filepath.Join(dir, "vmlinuz"),
		Config:  filepath.Join(dir, "config"),
		ModDir:  filepath.Join(dir, "lib", "modules", version),
	}
	if k.complete(modules) == nil {
		return k, nil
	}
	logger.Info("fetching Debian kernel", "version", version, "cache", cacheDir)
	if err := fetchKernel(ctx, cacheDir, version, modules, logger); err != nil {
		return nil, err
	}
	if err := k.complete(modules); err != nil {
		return nil, fmt.Errorf("kernel cache %s incomplete after unpacking: %w", dir, err)
	}
	return k, nil
}

// complete checks that the cache holds vmlinuz and every module file
// needed for modules.
func (k *Kernel) complete(modules []string) error {
	if _, err := os.Stat(filepath.Join(k.Dir, "ok")); err != nil {
		return err
	}
	if _, err := os.Stat(k.Vmlinuz); err != nil {
		return err
	}
	idx, err := initenv.ParseModuleIndex(k.ModDir)
	if err != nil {
		return err
	}
	files, err := idx.Resolve(modules...)
	if err != nil {
		return err
	}
	for _, f := range files {
		if _, err := os.Stat(filepath.Join(k.ModDir, f)); err != nil {
			return err
		}
	}
	return nil
}

// fetchKernel downloads (or reuses) the .deb, unpacks it in a temporary
// directory, runs depmod, and keeps vmlinuz, config, the module metadata
// and the module closure of modules (plus the modules of a previous cache
// entry).
func fetchKernel(ctx context.Context, cacheDir, version string, modules []string, logger *slog.Logger) error {
	kdir := filepath.Join(cacheDir, "kernels")
	if err := os.MkdirAll(kdir, 0o755); err != nil {
		return fmt.Errorf("kernel cache: %w", err)
	}
	pkg := "linux-image-" + version
	deb := filepath.Join(kdir, pkg+".deb")
	tmp, err := os.MkdirTemp(kdir, "tmp-")
	if err != nil {
		return fmt.Errorf("kernel cache: %w", err)
	}
	defer os.RemoveAll(tmp)
	if _, err := os.Stat(deb); err != nil {
		dl := filepath.Join(tmp, "dl")
		if err := os.Mkdir(dl, 0o755); err != nil {
			return err
		}
		cmd := exec.CommandContext(ctx, "apt-get", "download", pkg)
		cmd.Dir = dl
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("apt-get download %s: %w: %s", pkg, err, out)
		}
		debs, _ := filepath.Glob(filepath.Join(dl, pkg+"_*.deb"))
		if len(debs) != 1 {
			return fmt.Errorf("apt-get download %s: got %v", pkg, debs)
		}
		if err := os.Rename(debs[0], deb); err != nil {
			return fmt.Errorf("kernel cache: %w", err)
		}
	}
	root := filepath.Join(tmp, "root")
	if out, err := exec.CommandContext(ctx, "dpkg", "-x", deb, root).CombinedOutput(); err != nil {
		_ = os.Remove(deb) // a broken download is fetched again next time
		return fmt.Errorf("dpkg -x %s: %w: %s", deb, err, out)
	}
	depmod, err := exec.LookPath("depmod")
	if err != nil {
		depmod = "/usr/sbin/depmod" // kmod; /usr/sbin may not be in PATH
	}
	if out, err := exec.CommandContext(ctx, depmod, "-b", root, version).CombinedOutput(); err != nil {
		return fmt.Errorf("depmod -b %s %s (apt-get install kmod): %w: %s", root, version, err, out)
	}
	fullMod := filepath.Join(root, "lib", "modules", version)
	idx, err := initenv.ParseModuleIndex(fullMod)
	if err != nil {
		return err
	}
	final := filepath.Join(kdir, version)
	// Keep what an earlier entry had, so alternating builds with different
	// module sets do not unpack the kernel every time.
	want := append([]string(nil), modules...)
	if prev, err := os.ReadFile(filepath.Join(final, "ok")); err == nil {
		want = append(want, strings.Fields(string(prev))...)
	}
	files, err := idx.Resolve(modules...)
	if err != nil {
		return err
	}
	if more, err := idx.Resolve(want...); err == nil {
		files = more
	}
	stage := filepath.Join(tmp, version)
	stageMod := filepath.Join(stage, "lib", "modules", version)
	keep := []string{"modules.dep", "modules.alias", "modules.softdep", "modules.builtin", "modules.order"}
	keep = append(keep, files...)
	for _, f := range keep {
		src := filepath.Join(fullMod, f)
		if _, err := os.Stat(src); errors.Is(err, fs.ErrNotExist) && strings.HasPrefix(f, "modules.") {
			continue
		}
		if err := copyFile(src, filepath.Join(stageMod, f)); err != nil {
			return err
		}
	}
	if err := copyFile(filepath.Join(root, "boot", "vmlinuz-"+version), filepath.Join(stage, "vmlinuz")); err != nil {
		return err
	}
	if err := copyFile(filepath.Join(root, "boot", "config-"+version), filepath.Join(stage, "config")); err != nil {
		return err
	}
	names := map[string]bool{}
	for _, m := range want {
		names[m] = true
	}
	list := make([]string, 0, len(names))
	for m := range names {
		list = append(list, m)
	}
	sort.Strings(list)
	if err := os.WriteFile(filepath.Join(stage, "ok"), []byte(strings.Join(list, "\n")+"\n"), 0o644); err != nil {
		return fmt.Errorf("kernel cache: %w", err)
	}
	old := filepath.Join(tmp, "old")
	if err := os.Rename(final, old); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("kernel cache: %w", err)
	}
	if err := os.Rename(stage, final); err != nil {
		return fmt.Errorf("kernel cache: %w", err)
	}
	logger.Info("kernel cached", "version", version, "dir", final, "modules", len(files))
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("copy: %w", err)
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Errorf("copy: %w", err)
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("copy: %w", err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy %s: %w", src, err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("copy %s: %w", dst, err)
	}
	return nil
}
