package agent

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"unicode"
)

// PartitionDevice names partition n of the whole-disk device dev as Linux
// does: /dev/sda → /dev/sda2, /dev/nvme0n1 → /dev/nvme0n1p2, /dev/loop0 →
// /dev/loop0p2.
func PartitionDevice(dev string, n int) string {
	if r, err := filepath.EvalSymlinks(dev); err == nil {
		dev = r
	}
	base := strings.TrimRight(dev, "/")
	if base != "" && unicode.IsDigit(rune(base[len(base)-1])) {
		return fmt.Sprintf("%sp%d", base, n)
	}
	return fmt.Sprintf("%s%d", base, n)
}

func findTool(name string) (string, error) {
	for _, d := range []string{"/sbin", "/usr/sbin", "/bin", "/usr/bin"} {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p, nil
		}
	}
	return exec.LookPath(name)
}
