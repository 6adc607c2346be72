package bootfiles

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Names of the Secure Boot chain's programs in the TFTP root. Shim loads
// grubx64.efi from the directory it was itself loaded from; GRUB then
// reads grub/grub.cfg (its built-in prefix is /grub).
const (
	ShimName = "shimx64.efi"
	GRUBName = "grubx64.efi"
)

// ErrSignedMissing is returned (wrapped) when the signed programs of the
// Secure Boot path cannot be staged.
var ErrSignedMissing = errors.New("Secure Boot programs (Debian's signed shim and GRUB) are not available")

// Signed lists the Secure Boot chain: Microsoft-signed shim and the
// Debian-signed network GRUB (served as grubx64.efi, the name shim asks
// for). Source is the path inside the package (and on a machine where the
// package is installed).
func Signed() []File {
	return []File{
		{"/usr/lib/shim/shimx64.efi.signed", ShimName, "shim-signed"},
		{"/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed", GRUBName, "grub-efi-amd64-signed"},
	}
}

// StageSigned puts the signed shim and GRUB into root. It takes them from
// the installed packages when they are there; otherwise from the packages
// downloaded with `apt-get download` into cacheDir and unpacked with
// `dpkg -x` (kept there: the next start downloads nothing). It never
// substitutes anything unsigned: when a program cannot be had, the error
// wraps ErrSignedMissing and says what to install.
func StageSigned(ctx context.Context, root, cacheDir string, log *slog.Logger) error {
	files := Signed()
	var stage []File
	for _, f := range files {
		if _, err := os.Stat(f.Source); err == nil {
			stage = append(stage, f) // installed package
			continue
		}
		unpacked := filepath.Join(cacheDir, f.Package, "root", f.Source)
		if _, err := os.Stat(unpacked); err != nil {
			if err := fetchDeb(ctx, cacheDir, f.Package, log); err != nil {
				if _, derr := os.Stat(filepath.Join(root, f.Name)); derr == nil {
					log.WarnContext(ctx, "signed boot program could not be refreshed: keeping the staged copy", "file", f.Name, "err", err)
					continue
				}
				return fmt.Errorf("%w: %s (package %s): %w; install it (apt-get install %s) or let the server reach a Debian mirror",
					ErrSignedMissing, f.Name, f.Package, err, f.Package)
			}
		}
		f.Source = unpacked
		stage = append(stage, f)
	}
	missing, err := Stage(ctx, root, stage, log)
	if err != nil {
		return err
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: %s", ErrSignedMissing, strings.Join(missing, ", "))
	}
	return nil
}

// fetchDeb downloads pkg into cacheDir/pkg and unpacks it into
// cacheDir/pkg/root.
func fetchDeb(ctx context.Context, cacheDir, pkg string, log *slog.Logger) error {
	dir := filepath.Join(cacheDir, pkg)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("signed package cache: %w", err)
	}
	tmp, err := os.MkdirTemp(dir, "tmp-")
	if err != nil {
		return fmt.Errorf("signed package cache: %w", err)
	}
	defer os.RemoveAll(tmp)
	cmd := exec.CommandContext(ctx, "apt-get", "download", pkg)
	cmd.Dir = tmp
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("apt-get download %s: %w: %s", pkg, err, strings.TrimSpace(string(out)))
	}
	debs, _ := filepath.Glob(filepath.Join(tmp, pkg+"_*.deb"))
	if len(debs) != 1 {
		return fmt.Errorf("apt-get download %s: got %v", pkg, debs)
	}
	unpack := filepath.Join(tmp, "root")
	if out, err := exec.CommandContext(ctx, "dpkg", "-x", debs[0], unpack).CombinedOutput(); err != nil {
		return fmt.Errorf("dpkg -x %s: %w: %s", filepath.Base(debs[0]), err, strings.TrimSpace(string(out)))
	}
	final := filepath.Join(dir, "root")
	if err := os.RemoveAll(final); err != nil {
		return fmt.Errorf("signed package cache: %w", err)
	}
	if err := os.Rename(unpack, final); err != nil {
		return fmt.Errorf("signed package cache: %w", err)
	}
	log.InfoContext(ctx, "downloaded signed boot package", "package", pkg, "deb", filepath.Base(debs[0]), "cache", dir)
	return nil
}
