//go:build !linux

package agent

import (
	"context"
	"errors"
	"os"
	"os/exec"
)

var errNotLinux = errors.New("block devices are only supported on Linux")

func blockSize(f *os.File) (int64, error) { return 0, errNotLinux }

func rereadPartitions(f *os.File) error { return errNotLinux }

func wipe(ctx context.Context, o WipeOptions, r hostRoots) error { return errNotLinux }

// Scripts (RunScript) run only on Linux.
func startProcessGroup(cmd *exec.Cmd) {}

func killProcessGroup(pid int) error { return errNotLinux }

func waitExited(pid int) error { return errNotLinux }
