//go:build !linux

package agent

import (
	"errors"
	"os"
)

var errNotLinux = errors.New("block devices are only supported on Linux")

func blockSize(f *os.File) (int64, error) { return 0, errNotLinux }

func rereadPartitions(f *os.File) error { return errNotLinux }
