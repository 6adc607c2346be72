//go:build linux

package agent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// wipeStep is how much one ioctl or fallback pass covers between progress
// updates and cancellation checks.
const wipeStep = 256 << 20

// wipeTarget is a disk checked and opened for wiping.
type wipeTarget struct {
	path  string
	f     *os.File
	size  int64
	block bool
}

func wipe(ctx context.Context, o WipeOptions, r hostRoots) error {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	mode := o.Mode
	switch mode {
	case "":
		mode = WipeZero
	case WipeZero, WipeDiscard:
	default:
		return fmt.Errorf("wipe: mode %q: want %s or %s", o.Mode, WipeZero, WipeDiscard)
	}
	disks := o.Disks
	if len(disks) == 0 {
		for _, n := range ListDisks(r.sys, false) {
			disks = append(disks, filepath.Join(r.dev, n))
		}
		if len(disks) == 0 {
			return errors.New("wipe: no fixed disk found (no non-removable disk in /sys/block)")
		}
	}
	busy, err := busyDevices(r)
	if err != nil {
		return fmt.Errorf("wipe: cannot tell which disks the system uses, so none is wiped: %w", err)
	}
	var targets []*wipeTarget
	defer func() {
		for _, t := range targets {
			t.f.Close()
		}
	}()
	var total int64
	seen := map[string]bool{}
	for _, d := range disks {
		var st syscall.Stat_t
		if err := syscall.Stat(d, &st); err == nil { // errors come from openWipeTarget
			key := fmt.Sprintf("%d:%d:%d", st.Dev, st.Ino, st.Rdev)
			if seen[key] {
				return fmt.Errorf("wipe: %s is listed twice; nothing was wiped", d)
			}
			seen[key] = true
		}
		t, err := openWipeTarget(d, mode, busy, r)
		if err != nil {
			return fmt.Errorf("wipe: %w; nothing was wiped", err)
		}
		targets = append(targets, t)
		total += t.size
	}

	var done atomic.Int64
	var cur atomic.Value
	cur.Store("")
	start := time.Now()
	snapshot := func() WipeProgress {
		p := WipeProgress{Disk: cur.Load().(string), Done: done.Load(), Total: total}
		if s := time.Since(start).Seconds(); s > 0 {
			p.Rate = float64(p.Done) / s
		}
		return p
	}
	stop := func() {}
	if o.Progress != nil {
		interval := o.ProgressInterval
		if interval <= 0 {
			interval = time.Second
		}
		quit := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			tk := time.NewTicker(interval)
			defer tk.Stop()
			for {
				select {
				case <-quit:
					return
				case <-tk.C:
					o.Progress(snapshot())
				}
			}
		})
		stop = func() {
			close(quit)
			wg.Wait()
			o.Progress(snapshot())
		}
	}
	defer func() { stop() }()

	for _, t := range targets {
		cur.Store(t.path)
		log.InfoContext(ctx, "wipe start", "disk", t.path, "size", t.size, "mode", mode)
		how, err := wipeOne(ctx, t, mode, &done, log)
		if err != nil {
			return fmt.Errorf("wipe %s (%s): %w", t.path, mode, err)
		}
		if err := t.f.Sync(); err != nil {
			return fmt.Errorf("wipe %s: sync: %w", t.path, err)
		}
		if t.block {
			if err := rereadPartitions(t.f); err != nil {
				log.WarnContext(ctx, "kernel did not re-read the partition table", "disk", t.path, "err", err)
			}
		}
		log.InfoContext(ctx, "wipe done", "disk", t.path, "bytes", t.size, "mode", mode, "how", how)
	}
	return nil
}

// openWipeTarget checks one disk and opens it for writing.
func openWipeTarget(path, mode string, busy []string, r hostRoots) (*wipeTarget, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	t := &wipeTarget{path: path}
	switch {
	case fi.Mode().IsRegular():
	case fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0:
		t.block = true
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return nil, fmt.Errorf("%s: no device number", path)
		}
		dir, err := sysBlockDir(r.sys, uint64(st.Rdev))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		whole := dir
		if _, err := os.Stat(filepath.Join(dir, "partition")); err == nil {
			whole = filepath.Dir(dir)
		}
		if readSys(filepath.Join(whole, "removable")) == "1" {
			return nil, fmt.Errorf("%w: %s is a removable disk (%s)", ErrWipeRefused, path, filepath.Base(whole))
		}
		for _, b := range busy {
			if b == dir || strings.HasPrefix(b, dir+"/") || strings.HasPrefix(dir, b+"/") {
				return nil, fmt.Errorf("%w: %s holds a mounted filesystem or active swap (%s): the running system uses it",
					ErrWipeRefused, path, filepath.Base(b))
			}
		}
		if mode == WipeDiscard {
			if v := readSys(filepath.Join(whole, "queue/discard_max_bytes")); v == "" || v == "0" {
				return nil, fmt.Errorf("%w: %s does not support discard (queue/discard_max_bytes is %q): use mode zero",
					ErrWipeRefused, path, v)
			}
		}
	default:
		return nil, fmt.Errorf("%s is neither a block device nor a regular file", path)
	}
	flags := os.O_RDWR
	if t.block {
		flags |= syscall.O_EXCL // the kernel refuses a device in use (mounted, held by dm/md)
	}
	f, err := os.OpenFile(path, flags, 0)
	if errors.Is(err, syscall.EBUSY) {
		return nil, fmt.Errorf("%w: %s is in use by the system (mounted, swap, or part of a RAID/LVM/dm device)", ErrWipeRefused, path)
	}
	if err != nil {
		return nil, err
	}
	t.f = f
	if t.size, err = deviceSize(f); err != nil {
		f.Close()
		return nil, err
	}
	return t, nil
}

// sysBlockDir resolves a block device number to its directory under
// SYS/devices (e.g. …/block/sda/sda2).
func sysBlockDir(sys string, rdev uint64) (string, error) {
	link := filepath.Join(sys, "dev/block", fmt.Sprintf("%d:%d", devMajor(rdev), devMinor(rdev)))
	dir, err := filepath.EvalSymlinks(link)
	if err != nil {
		return "", fmt.Errorf("block device %d:%d not in sysfs: %w", devMajor(rdev), devMinor(rdev), err)
	}
	return dir, nil
}

// busyDevices returns the sysfs directories of the block devices the
// running system uses: mounted filesystems and active swap areas, and
// recursively the devices under them (slaves of dm, md, loop…).
func busyDevices(r hostRoots) ([]string, error) {
	var nums []string
	f, err := os.Open(filepath.Join(r.proc, "self/mountinfo"))
	if err != nil {
		return nil, err
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if fs := strings.Fields(sc.Text()); len(fs) > 2 {
			nums = append(nums, fs[2])
		}
	}
	err = sc.Err()
	f.Close()
	if err != nil {
		return nil, err
	}
	if b, err := os.ReadFile(filepath.Join(r.proc, "swaps")); err == nil {
		for i, l := range strings.Split(string(b), "\n") {
			fs := strings.Fields(l)
			if i == 0 || len(fs) == 0 {
				continue
			}
			var st syscall.Stat_t
			if syscall.Stat(strings.ReplaceAll(fs[0], `\040`, " "), &st) != nil {
				continue
			}
			if st.Mode&syscall.S_IFMT == syscall.S_IFBLK {
				nums = append(nums, fmt.Sprintf("%d:%d", devMajor(uint64(st.Rdev)), devMinor(uint64(st.Rdev))))
			} else {
				nums = append(nums, fmt.Sprintf("%d:%d", devMajor(uint64(st.Dev)), devMinor(uint64(st.Dev))))
			}
		}
	}
	seen := map[string]bool{}
	var out []string
	var add func(dir string, depth int)
	add = func(dir string, depth int) {
		if seen[dir] || depth > 8 {
			return
		}
		seen[dir] = true
		out = append(out, dir)
		es, _ := os.ReadDir(filepath.Join(dir, "slaves"))
		for _, e := range es {
			if d, err := filepath.EvalSymlinks(filepath.Join(dir, "slaves", e.Name())); err == nil {
				add(d, depth+1)
			}
		}
	}
	for _, n := range nums {
		// Filesystems without a block device (proc, tmpfs…) have no entry.
		if d, err := filepath.EvalSymlinks(filepath.Join(r.sys, "dev/block", n)); err == nil {
			add(d, 0)
		}
	}
	return out, nil
}

// wipeOne wipes one disk and says how.
func wipeOne(ctx context.Context, t *wipeTarget, mode string, done *atomic.Int64, log *slog.Logger) (string, error) {
	var off int64
	if mode == WipeDiscard {
		for off < t.size {
			if err := ctx.Err(); err != nil {
				return "", err
			}
			n := min(wipeStep, t.size-off)
			var err error
			if t.block {
				err = blkDiscard(t.f, off, n)
			} else {
				err = punchHole(t.f, off, n)
			}
			if err != nil {
				if off == 0 && isUnsupported(err) {
					return "", fmt.Errorf("%w: the device does not support discard (%w): use mode zero", ErrWipeRefused, err)
				}
				return "", fmt.Errorf("discard bytes %d–%d: %w", off, off+n, err)
			}
			off += n
			done.Add(n)
		}
		if t.block {
			return "BLKDISCARD", nil
		}
		return "punched holes", nil
	}
	if t.block {
		for off < t.size {
			if err := ctx.Err(); err != nil {
				return "", err
			}
			n := min(wipeStep, t.size-off)
			if err := blkZeroOut(t.f, off, n); err != nil {
				if isUnsupported(err) {
					log.InfoContext(ctx, "BLKZEROOUT not supported; writing zeros", "disk", t.path, "err", err)
					break
				}
				return "", fmt.Errorf("zero bytes %d–%d: %w", off, off+n, err)
			}
			off += n
			done.Add(n)
		}
		if off == t.size {
			return "BLKZEROOUT", nil
		}
	}
	if err := writeZeros(ctx, t.f, off, t.size, done); err != nil {
		return "", err
	}
	return "wrote zeros", nil
}

// writeZeros writes zeros over [off, size) of f, syncing every wipeStep so
// the page cache does not fill with dirty zeros.
func writeZeros(ctx context.Context, f *os.File, off, size int64, done *atomic.Int64) error {
	buf := make([]byte, 4<<20)
	var sinceSync int64
	for off < size {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := min(int64(len(buf)), size-off)
		if _, err := f.WriteAt(buf[:n], off); err != nil {
			return fmt.Errorf("write zeros at byte %d: %w", off, err)
		}
		off += n
		done.Add(n)
		if sinceSync += n; sinceSync >= wipeStep {
			if err := f.Sync(); err != nil {
				return fmt.Errorf("sync: %w", err)
			}
			sinceSync = 0
		}
	}
	return nil
}

func isUnsupported(err error) bool {
	return errors.Is(err, syscall.EOPNOTSUPP) || errors.Is(err, syscall.ENOTTY) || errors.Is(err, syscall.EINVAL) ||
		errors.Is(err, errNotSupported)
}

var errNotSupported = errors.New("not supported on this system")
