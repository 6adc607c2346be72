package initenv

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/preboot/preboot/tlspin"
)

// UpdateDriversPath is where the overlay lives on the server, below the
// HTTP file root (the same file is boot/updateDrivers.tgz over TFTP).
const UpdateDriversPath = "/files/boot/updateDrivers.tgz"

// maxOverlay bounds the overlay download and its unpacked size.
const maxOverlay = 1 << 30

// ApplyUpdateDrivers fetches server/files/boot/updateDrivers.tgz. When the
// server has none (404) it logs "no updateDrivers.tgz" and returns; when
// the server cannot be reached it logs a warning and returns (the agent
// will report the real problem). Otherwise it unpacks the archive over
// root, indexes the kernel modules it brought (modules.dep/modules.alias
// from the archive, or each new .ko's .modinfo) and loads the ones the
// hardware needs. It returns the modules it loaded.
func ApplyUpdateDrivers(ctx context.Context, logger *slog.Logger, server, root string, loader *Loader) ([]string, error) {
	return ApplyUpdateDriversTLS(ctx, logger, server, "", root, loader)
}

// ApplyUpdateDriversTLS is ApplyUpdateDrivers from an https server whose
// certificate is pinned by fingerprint (sha256:HEX; "" = the usual
// checks).
func ApplyUpdateDriversTLS(ctx context.Context, logger *slog.Logger, server, fingerprint, root string, loader *Loader) ([]string, error) {
	url := strings.TrimRight(server, "/") + UpdateDriversPath
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{ResponseHeaderTimeout: 30 * time.Second, Proxy: nil}
	if fingerprint != "" {
		tc, err := tlspin.Config(fingerprint)
		if err != nil {
			return nil, err
		}
		tr.TLSClientConfig = tc
	}
	client := &http.Client{Transport: tr}
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		logger.Warn("no updateDrivers.tgz: server unreachable", "url", url, "err", err)
		return nil, nil
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound:
		logger.Info("no updateDrivers.tgz", "url", url)
		return nil, nil
	case resp.StatusCode != http.StatusOK:
		logger.Warn("no updateDrivers.tgz", "url", url, "status", resp.Status)
		return nil, nil
	}
	files, err := Unpack(io.LimitReader(resp.Body, maxOverlay), root)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", url, err)
	}
	logger.Info("updateDrivers.tgz applied", "files", len(files))
	if loader == nil {
		return nil, nil
	}
	if err := reindex(loader, files, root); err != nil {
		return nil, err
	}
	return loader.Pass(ctx)
}

// reindex updates the loader's module index after an overlay: a new
// modules.dep for the running kernel replaces the index; otherwise every
// new module file is indexed from its .modinfo.
func reindex(l *Loader, files []string, root string) error {
	rel, err := filepath.Rel(root, l.Dir)
	if err != nil {
		return err
	}
	rel = filepath.ToSlash(rel)
	for _, f := range files {
		if f == rel+"/modules.dep" || f == rel+"/modules.alias" {
			idx, err := ParseModuleIndex(l.Dir)
			if err != nil {
				return err
			}
			l.Index = idx
			return nil
		}
	}
	for _, f := range files {
		if !isModuleFile(f) {
			continue
		}
		r, err := filepath.Rel(l.Dir, filepath.Join(root, f))
		if err != nil {
			continue
		}
		if _, known := l.Index.Files[ModuleName(f)]; known && l.Index.Files[ModuleName(f)] == filepath.ToSlash(r) {
			continue
		}
		if err := l.Index.AddModuleFile(l.Dir, filepath.ToSlash(r)); err != nil {
			l.Logger.Warn("updateDrivers.tgz: module not indexed", "file", f, "err", err)
		}
	}
	return nil
}

func isModuleFile(name string) bool {
	for _, ext := range []string{".ko", ".ko.zst", ".ko.gz", ".ko.xz"} {
		if strings.HasSuffix(name, ext) {
			return true
		}
	}
	return false
}

// Unpack extracts a gzip'd tar over root: directories, regular files and
// symlinks; names are taken relative to root and may not climb out of it.
// It returns the slash-separated names of the regular files written.
func Unpack(r io.Reader, root string) ([]string, error) {
	zr, err := gzip.NewReader(r)
	if err != nil {
		return nil, fmt.Errorf("not a gzip file: %w", err)
	}
	tr := tar.NewReader(zr)
	var files []string
	var total int64
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return files, fmt.Errorf("tar: %w", err)
		}
		name := path.Clean("/" + h.Name)[1:]
		if name == "" || name == "." {
			continue
		}
		if strings.HasPrefix(path.Clean(h.Name), "../") || path.Clean(h.Name) == ".." {
			return files, fmt.Errorf("tar: entry %q climbs out of the root", h.Name)
		}
		dst := filepath.Join(root, filepath.FromSlash(name))
		mode := os.FileMode(h.Mode).Perm()
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(dst, 0o755); err != nil {
				return files, err
			}
		case tar.TypeReg:
			total += h.Size
			if total > maxOverlay {
				return files, errors.New("archive too large")
			}
			if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
				return files, err
			}
			tmp := dst + ".preboot-tmp"
			f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode|0o200)
			if err != nil {
				return files, err
			}
			_, err = io.Copy(f, io.LimitReader(tr, h.Size))
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err == nil {
				err = os.Rename(tmp, dst)
			}
			if err != nil {
				os.Remove(tmp)
				return files, fmt.Errorf("unpack %s: %w", name, err)
			}
			files = append(files, name)
		case tar.TypeSymlink:
			if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
				return files, err
			}
			_ = os.Remove(dst)
			if err := os.Symlink(h.Linkname, dst); err != nil {
				return files, fmt.Errorf("unpack %s: %w", name, err)
			}
		default:
			// Devices, FIFOs, hard links: not in a driver overlay.
		}
	}
	return files, nil
}
