package server

import (
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
)

// DataDirMode is the mode of the data directory: the database, the image
// repository, the TFTP root and the first console password are the
// server's alone. When the admin socket lives in the data directory and the
// group "preboot" exists, that group may traverse it (0710: reach the
// socket, list and read nothing).
const DataDirMode fs.FileMode = 0o700

// secureDataDir creates the data directory with DataDirMode, or tightens
// an existing one (saying so when it was open to others), and the TFTP
// root inside it the same way.
func secureDataDir(dir, adminSocket, tftpRoot string, log *slog.Logger) error {
	mode, gid := DataDirMode, -1
	if adminSocket != "" && within(dir, adminSocket) {
		if g, err := user.LookupGroup(AdminGroup); err == nil {
			if id, err := strconv.Atoi(g.Gid); err == nil {
				mode, gid = 0o710, id
			}
		}
	}
	if err := tighten(dir, mode, gid, log); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	if tftpRoot != "" && within(dir, tftpRoot) {
		if err := tighten(tftpRoot, DataDirMode, -1, log); err != nil {
			return fmt.Errorf("TFTP root: %w", err)
		}
	}
	return nil
}

// tighten creates dir with mode or removes every permission beyond mode
// from an existing one (and gives it to group gid when gid >= 0).
func tighten(dir string, mode fs.FileMode, gid int, log *slog.Logger) error {
	fi, err := os.Stat(dir)
	switch {
	case os.IsNotExist(err):
		if err := os.MkdirAll(dir, mode); err != nil {
			return err
		}
	case err != nil:
		return err
	case !fi.IsDir():
		return fmt.Errorf("%s is not a directory", dir)
	}
	if gid >= 0 {
		if err := os.Chown(dir, -1, gid); err != nil {
			log.Warn("cannot give the data directory to group "+AdminGroup+"; its members cannot reach the admin socket", "dir", dir, "err", err)
			mode = DataDirMode
		}
	}
	if fi != nil && fi.Mode().Perm()&^mode != 0 {
		log.Warn("directory was open to other users; tightened", "dir", dir, "was", fi.Mode().Perm().String(), "now", mode.String())
	}
	if err := os.Chmod(dir, mode); err != nil {
		return err
	}
	return nil
}

// within reports whether path is dir or under it.
func within(dir, path string) bool {
	d, err1 := filepath.Abs(dir)
	p, err2 := filepath.Abs(path)
	if err1 != nil || err2 != nil {
		return false
	}
	return p == d || strings.HasPrefix(p, d+string(filepath.Separator))
}
