//go:build linux

package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// devSectorSize reads SYS/dev/block/MAJ:MIN/queue/logical_block_size of
// the block device fi; 0 when unknown.
func devSectorSize(sys string, fi os.FileInfo) int {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0
	}
	rdev := uint64(st.Rdev)
	p := filepath.Join(sys, "dev/block", fmt.Sprintf("%d:%d", devMajor(rdev), devMinor(rdev)), "queue/logical_block_size")
	n, err := strconv.Atoi(readSys(p))
	if err != nil {
		return 0
	}
	return n
}
