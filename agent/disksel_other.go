//go:build !linux

package agent

import "os"

// devSectorSize is unknown (0) off Linux.
func devSectorSize(sys string, fi os.FileInfo) int { return 0 }
