//go:build !linux

package agent

func mountFS(dev, dir, fstype string) error { return errNotLinux }

func unmountFS(dir string) error { return errNotLinux }

func sysDirOf(f interface{ Fd() uintptr }) (string, error) { return "", errNotLinux }

func attachPartLoop(dev string, off, size int64) (string, func() error, error) {
	return "", nil, errNotLinux
}
