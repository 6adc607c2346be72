package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
	"unicode"

	"github.com/preboot/preboot/disk"
	"github.com/preboot/preboot/image"
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

// growLastFS runs e2fsck -fy and resize2fs on the last partition when its
// filesystem is ext2/3/4 and the tools exist.
func growLastFS(ctx context.Context, dev string, m *image.Manifest, tbl *disk.Table, log *slog.Logger) error {
	last := lastPartition(m)
	if last == nil || !isExt(last.FSType) || tbl == nil || tbl.Kind == "none" {
		return nil
	}
	resize, err := findTool("resize2fs")
	if err != nil {
		log.InfoContext(ctx, "resize2fs not available; the last filesystem keeps its size")
		return nil
	}
	fsck, err := findTool("e2fsck")
	if err != nil {
		return fmt.Errorf("e2fsck not available: %w", err)
	}
	part := PartitionDevice(dev, last.Index)
	// devtmpfs creates the node shortly after BLKRRPART.
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := os.Stat(part); err == nil {
			break
		} else if !errors.Is(err, os.ErrNotExist) || time.Now().After(deadline) {
			return fmt.Errorf("partition device %s: %w", part, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	out, err := exec.CommandContext(ctx, fsck, "-fy", part).CombinedOutput()
	// e2fsck exit 1: errors corrected; only ≥ 4 is a failure.
	var ee *exec.ExitError
	if err != nil && !(errors.As(err, &ee) && ee.ExitCode() < 4) {
		return fmt.Errorf("e2fsck -fy %s: %w: %s", part, err, strings.TrimSpace(string(out)))
	}
	out, err = exec.CommandContext(ctx, resize, part).CombinedOutput()
	if err != nil {
		return fmt.Errorf("resize2fs %s: %w: %s", part, err, strings.TrimSpace(string(out)))
	}
	log.InfoContext(ctx, "filesystem grown", "partition", part, "fstype", last.FSType)
	return nil
}
