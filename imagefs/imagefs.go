// Package imagefs reads the files inside a captured filesystem, read only,
// from any io.ReaderAt over its partition (image.AreaReader reads one
// straight from an image's chunks): ext2/3/4 and FAT12/16/32 with readers
// of its own, NTFS with www.velocidex.com/golang/go-ntfs.
//
// Paths are slash-separated and relative to the filesystem's root; a path
// or a symbolic link that would lead above the root is refused
// (ErrEscape), an absolute link target is resolved inside the filesystem.
package imagefs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"slices"
	"strings"
	"time"
)

// Errors callers test with errors.Is.
var (
	ErrNotExist    = fs.ErrNotExist
	ErrEscape      = errors.New("path escapes the filesystem root")
	ErrNotDir      = errors.New("not a directory")
	ErrIsDir       = errors.New("is a directory")
	ErrLoop        = errors.New("too many levels of symbolic links")
	ErrUnsupported = errors.New("filesystem not supported by the image explorer")
	ErrCorrupt     = errors.New("corrupt filesystem structure")
)

// maxLinks bounds the symbolic links followed while resolving one path.
const maxLinks = 40

// Entry describes one file.
type Entry struct {
	Name    string      `json:"name"`
	Size    int64       `json:"size"`
	Mode    fs.FileMode `json:"-"`
	ModTime time.Time   `json:"mtime"`
	// Target is a symbolic link's target, as stored.
	Target string `json:"target,omitempty"`
}

// IsDir reports whether e is a directory.
func (e Entry) IsDir() bool { return e.Mode.IsDir() }

// node is a driver's handle on one file.
type node any

// driver is one filesystem format.
type driver interface {
	root() (node, error)
	// lookup finds name in directory dir (ErrNotExist when absent).
	lookup(dir node, name string) (node, error)
	stat(n node) (Entry, error)
	// list returns the entries of directory dir, without "." and "..".
	list(dir node) ([]Entry, error)
	readlink(n node) (string, error)
	open(n node) (io.ReaderAt, int64, error)
}

// FS is one filesystem.
type FS struct {
	// Type is the format: "ext4", "fat32", "ntfs", ...
	Type string
	d    driver
}

// Open reads the filesystem of type fstype (as fsmap names it: "ext2",
// "ext3", "ext4", "fat12", "fat16", "fat32", "vfat", "ntfs"; "" detects)
// from r, size bytes.
func Open(r io.ReaderAt, size int64, fstype string) (*FS, error) {
	if fstype == "" {
		fstype = Detect(r)
	}
	var (
		d   driver
		err error
	)
	switch fstype {
	case "ext2", "ext3", "ext4":
		d, err = openExt(r, size)
	case "fat12", "fat16", "fat32", "vfat", "fat":
		var f *fatFS
		f, err = openFAT(r, size)
		if err == nil {
			d, fstype = f, f.kind
		}
	case "ntfs":
		d, err = openNTFS(r, size)
	default:
		return nil, fmt.Errorf("%w: %q (ext2/3/4, FAT12/16/32 and NTFS are)", ErrUnsupported, fstype)
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", fstype, err)
	}
	return &FS{Type: fstype, d: d}, nil
}

// Detect names the filesystem at the start of r: "ext4", "fat32", "ntfs"
// ... or "" when it knows none.
func Detect(r io.ReaderAt) string {
	b := make([]byte, 2048)
	if n, _ := r.ReadAt(b, 0); n < len(b) {
		return ""
	}
	switch {
	case string(b[3:11]) == "NTFS    ":
		return "ntfs"
	case b[1024+0x38] == 0x53 && b[1024+0x39] == 0xEF:
		return "ext4"
	case b[510] == 0x55 && b[511] == 0xAA && (string(b[0x36:0x39]) == "FAT" || string(b[0x52:0x57]) == "FAT32"):
		return "vfat"
	}
	return ""
}

// Clean checks a path given to the explorer and returns it absolute and
// clean. ".." that would climb above the root is ErrEscape.
func Clean(p string) (string, error) {
	depth := 0
	for c := range strings.SplitSeq(p, "/") {
		switch c {
		case "", ".":
		case "..":
			depth--
			if depth < 0 {
				return "", fmt.Errorf("%q: %w", p, ErrEscape)
			}
		default:
			depth++
		}
	}
	if strings.ContainsRune(p, 0) {
		return "", fmt.Errorf("%q: %w", p, ErrNotExist)
	}
	return path.Clean("/" + p), nil
}

// resolve walks p from the root, following symbolic links (the last one
// only with follow).
func (f *FS) resolve(p string, follow bool) (node, error) {
	clean, err := Clean(p)
	if err != nil {
		return nil, err
	}
	root, err := f.d.root()
	if err != nil {
		return nil, err
	}
	stack := []node{root}
	todo := splitPath(clean)
	links := 0
	walked := "/"
	for len(todo) > 0 {
		c := todo[0]
		todo = todo[1:]
		switch c {
		case ".":
			continue
		case "..":
			if len(stack) == 1 {
				return nil, fmt.Errorf("%s: %w", p, ErrEscape)
			}
			stack = stack[:len(stack)-1]
			walked = path.Dir(walked)
			continue
		}
		dir := stack[len(stack)-1]
		de, err := f.d.stat(dir)
		if err != nil {
			return nil, err
		}
		if !de.IsDir() {
			return nil, fmt.Errorf("%s: %s: %w", p, walked, ErrNotDir)
		}
		n, err := f.d.lookup(dir, c)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path.Join(walked, c), err)
		}
		e, err := f.d.stat(n)
		if err != nil {
			return nil, err
		}
		if e.Mode&fs.ModeSymlink != 0 && (len(todo) > 0 || follow) {
			links++
			if links > maxLinks {
				return nil, fmt.Errorf("%s: %w", p, ErrLoop)
			}
			target, err := f.d.readlink(n)
			if err != nil {
				return nil, err
			}
			if target == "" {
				return nil, fmt.Errorf("%s: empty symbolic link: %w", path.Join(walked, c), ErrNotExist)
			}
			if strings.HasPrefix(target, "/") {
				// Inside the image: an absolute target starts at its root.
				stack = stack[:1]
				walked = "/"
			}
			// The link's components replace it; ".." in them climbs
			// from the link's directory and may not leave the root.
			todo = append(splitPath(target), todo...)
			continue
		}
		stack = append(stack, n)
		walked = path.Join(walked, c)
	}
	return stack[len(stack)-1], nil
}

func splitPath(p string) []string {
	var out []string
	for c := range strings.SplitSeq(p, "/") {
		if c != "" {
			out = append(out, c)
		}
	}
	return out
}

// Lstat describes the file at p (a symbolic link itself, not its target).
func (f *FS) Lstat(p string) (Entry, error) {
	n, err := f.resolve(p, false)
	if err != nil {
		return Entry{}, err
	}
	e, err := f.d.stat(n)
	if err != nil {
		return Entry{}, err
	}
	if clean, _ := Clean(p); clean == "/" {
		e.Name = "/"
	}
	return e, nil
}

// Stat describes the file at p, following symbolic links.
func (f *FS) Stat(p string) (Entry, error) {
	n, err := f.resolve(p, true)
	if err != nil {
		return Entry{}, err
	}
	return f.d.stat(n)
}

// ReadDir lists the directory at p, sorted by name.
func (f *FS) ReadDir(p string) ([]Entry, error) {
	n, err := f.resolve(p, true)
	if err != nil {
		return nil, err
	}
	e, err := f.d.stat(n)
	if err != nil {
		return nil, err
	}
	if !e.IsDir() {
		return nil, fmt.Errorf("%s: %w", p, ErrNotDir)
	}
	es, err := f.d.list(n)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	slices.SortFunc(es, func(a, b Entry) int { return strings.Compare(a.Name, b.Name) })
	return es, nil
}

// File is an open regular file.
type File struct {
	io.ReaderAt
	Entry
}

// Open opens the regular file at p, following symbolic links.
func (f *FS) Open(p string) (*File, error) {
	n, err := f.resolve(p, true)
	if err != nil {
		return nil, err
	}
	e, err := f.d.stat(n)
	if err != nil {
		return nil, err
	}
	if e.IsDir() {
		return nil, fmt.Errorf("%s: %w", p, ErrIsDir)
	}
	if !e.Mode.IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file (%s)", p, e.Mode.Type())
	}
	r, size, err := f.d.open(n)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	e.Size = size
	return &File{ReaderAt: r, Entry: e}, nil
}
