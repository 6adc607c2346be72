// Package bootfiles puts the boot programs Preboot hands out — iPXE and
// pxelinux, as Debian packages them — into the TFTP root.
package bootfiles

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
)

// File is one boot program: where Debian installs it and its name in the
// TFTP root.
type File struct {
	Source  string // absolute path on this machine
	Name    string // path relative to the TFTP root
	Package string // Debian package that ships it
}

// Debian lists the boot programs taken from Debian's packages.
func Debian() []File {
	return []File{
		{"/usr/lib/ipxe/undionly.kpxe", "undionly.kpxe", "ipxe"},
		{"/usr/lib/ipxe/ipxe.efi", "ipxe.efi", "ipxe"},
		{"/usr/lib/ipxe/snponly.efi", "snponly.efi", "ipxe"},
		{"/usr/lib/ipxe/ipxe.pxe", "ipxe.pxe", "ipxe"},
		{"/usr/lib/PXELINUX/pxelinux.0", "pxelinux.0", "pxelinux"},
		{"/usr/lib/PXELINUX/lpxelinux.0", "lpxelinux.0", "pxelinux"},
		{"/usr/lib/syslinux/modules/bios/ldlinux.c32", "ldlinux.c32", "syslinux-common"},
		{"/usr/lib/syslinux/modules/bios/menu.c32", "menu.c32", "syslinux-common"},
		{"/usr/lib/syslinux/modules/bios/libutil.c32", "libutil.c32", "syslinux-common"},
		{"/usr/lib/syslinux/modules/bios/libcom32.c32", "libcom32.c32", "syslinux-common"},
	}
}

// Stage copies files into root when they are missing or differ in size or
// age from the source, so that an upgraded Debian package is picked up at
// the next start and an admin's own file of another name is never touched.
// It returns the names of the files that are not available.
func Stage(ctx context.Context, root string, files []File, log *slog.Logger) (missing []string, err error) {
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, fmt.Errorf("create TFTP root: %w", err)
	}
	for _, f := range files {
		if err := ctx.Err(); err != nil {
			return missing, err
		}
		src, err := os.Stat(f.Source)
		if err != nil {
			if _, derr := os.Stat(filepath.Join(root, f.Name)); derr == nil {
				continue // already staged, package since removed: keep it
			}
			missing = append(missing, f.Name)
			log.WarnContext(ctx, "boot program not available", "file", f.Name, "source", f.Source, "package", f.Package,
				"hint", "apt-get install "+f.Package)
			continue
		}
		dst := filepath.Join(root, f.Name)
		if cur, err := os.Stat(dst); err == nil && cur.Size() == src.Size() && !cur.ModTime().Before(src.ModTime()) {
			continue
		}
		if err := copyFile(f.Source, dst); err != nil {
			return missing, fmt.Errorf("stage %s: %w", f.Name, err)
		}
		log.InfoContext(ctx, "staged boot program", "file", f.Name, "source", f.Source)
	}
	return missing, nil
}

// copyFile copies via a temporary file and a rename, so a TFTP transfer
// never sees a half-written boot program.
func copyFile(src, dst string) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".staging-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			os.Remove(tmp.Name())
		}
	}()
	if _, err := io.Copy(tmp, in); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), dst)
}
