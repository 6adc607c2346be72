package httpstore

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/preboot/preboot/image"
	"github.com/preboot/preboot/imagefs"
)

// The image explorer: files inside an image's partitions, read straight
// from its chunks (image.AreaReader + imagefs), administrators only.
//
//	GET /api/v1/images/{name}/partitions                   → PartitionList
//	GET /api/v1/images/{name}/partitions/{n}/files?path=P  → FileList (a directory's entries, or the file itself)
//	GET /api/v1/images/{name}/partitions/{n}/content?path=P → the file's bytes (Range, Content-Disposition);
//	                                                         &check=true: read it all, send nothing (204 or the error)
//	GET /api/v1/images/{name}/diff/{other}                 → image.DiffResult

// Error codes of the explorer.
const (
	CodeEscape      = "path_escape" // 400: the path leaves the filesystem's root
	CodeNotDir      = "not_dir"     // 400
	CodeIsDir       = "is_dir"      // 400
	CodeUnsupported = "unsupported" // 422: a filesystem the explorer does not read
)

// PartitionList answers GET /images/{name}/partitions.
type PartitionList struct {
	Image      string             `json:"image"`
	Version    int                `json:"version"`
	Partitions []ExplorePartition `json:"partitions"`
}

// ExplorePartition is one partition of an image.
type ExplorePartition struct {
	Index  int    `json:"index"`
	Start  int64  `json:"start"`
	Size   int64  `json:"size"`
	FSType string `json:"fstype"`
	Used   int64  `json:"used"`
	// Browsable: the explorer reads this filesystem.
	Browsable bool `json:"browsable"`
}

// FileEntry is one file in a FileList.
type FileEntry struct {
	Name string `json:"name"`
	// Type is dir, file, symlink or other.
	Type string `json:"type"`
	Size int64  `json:"size"`
	// Mode is as ls -l shows it ("drwxr-xr-x"), Perm the permission bits.
	Mode   string    `json:"mode"`
	Perm   uint32    `json:"perm"`
	MTime  time.Time `json:"mtime"`
	Target string    `json:"target,omitempty"`
}

// FileList answers GET /images/{name}/partitions/{n}/files.
type FileList struct {
	Image     string `json:"image"`
	Partition int    `json:"partition"`
	FSType    string `json:"fstype"`
	// Path is the cleaned path asked for; Entry describes it (a symbolic
	// link itself); Entries are a directory's contents (symbolic links
	// to directories are followed), sorted by name.
	Path    string      `json:"path"`
	Entry   FileEntry   `json:"entry"`
	Entries []FileEntry `json:"entries"`
}

// Browsable reports whether the explorer reads filesystems of type fstype.
func Browsable(fstype string) bool {
	switch fstype {
	case "ext2", "ext3", "ext4", "fat12", "fat16", "fat32", "vfat", "ntfs":
		return true
	}
	return false
}

func fileEntry(e imagefs.Entry) FileEntry {
	t := "other"
	switch {
	case e.Mode.IsDir():
		t = "dir"
	case e.Mode.IsRegular():
		t = "file"
	case e.Mode&fs.ModeSymlink != 0:
		t = "symlink"
	}
	return FileEntry{Name: e.Name, Type: t, Size: e.Size, Mode: lsMode(e.Mode), Perm: uint32(e.Mode.Perm()), MTime: e.ModTime, Target: e.Target}
}

// lsMode writes a mode as ls -l does: "drwxr-xr-x", "lrwxrwxrwx", "-rwsr-xr-x".
func lsMode(m fs.FileMode) string {
	b := []byte("----------")
	switch {
	case m.IsDir():
		b[0] = 'd'
	case m&fs.ModeSymlink != 0:
		b[0] = 'l'
	case m&fs.ModeCharDevice != 0:
		b[0] = 'c'
	case m&fs.ModeDevice != 0:
		b[0] = 'b'
	case m&fs.ModeNamedPipe != 0:
		b[0] = 'p'
	case m&fs.ModeSocket != 0:
		b[0] = 's'
	case !m.IsRegular():
		b[0] = '?'
	}
	for i, c := range "rwxrwxrwx" {
		if m&(1<<uint(8-i)) != 0 {
			b[1+i] = byte(c)
		}
	}
	special := func(i int, set bool, on, off byte) {
		if set {
			if b[i] == 'x' {
				b[i] = on
			} else {
				b[i] = off
			}
		}
	}
	special(3, m&fs.ModeSetuid != 0, 's', 'S')
	special(6, m&fs.ModeSetgid != 0, 's', 'S')
	special(9, m&fs.ModeSticky != 0, 't', 'T')
	return string(b)
}

func (h *Handler) explorerManifest(w http.ResponseWriter, r *http.Request) (string, *image.Manifest, bool) {
	if !h.adminOnly(w, r, "browse images") {
		return "", nil, false
	}
	ref, ok := pathRef(w, r)
	if !ok {
		return "", nil, false
	}
	m, err := h.Repo.Manifest(ref)
	if err != nil {
		h.fail(w, r, err)
		return "", nil, false
	}
	return ref, m, true
}

func (h *Handler) partitions(w http.ResponseWriter, r *http.Request) {
	ref, m, ok := h.explorerManifest(w, r)
	if !ok {
		return
	}
	_, v, _ := image.ParseRef(ref)
	if v == 0 {
		if vs, err := h.Repo.Versions(ref); err == nil {
			for _, x := range vs {
				if x.Current {
					v = x.Version
				}
			}
		}
	}
	out := PartitionList{Image: m.Name, Version: v, Partitions: []ExplorePartition{}}
	for _, p := range m.Partitions {
		var used int64
		for _, e := range p.Used {
			used += e.Length
		}
		out.Partitions = append(out.Partitions, ExplorePartition{Index: p.Index, Start: p.Start, Size: p.Size, FSType: p.FSType, Used: used, Browsable: Browsable(p.FSType)})
	}
	writeJSON(w, http.StatusOK, out)
}

// openFS opens partition {n} of the request's image.
func (h *Handler) openFS(w http.ResponseWriter, r *http.Request) (*image.Manifest, *image.Area, *imagefs.FS, func(), bool) {
	_, m, ok := h.explorerManifest(w, r)
	if !ok {
		return nil, nil, nil, nil, false
	}
	n, err := strconv.Atoi(r.PathValue("n"))
	if err != nil || n < 0 {
		writeError(w, http.StatusBadRequest, CodeInvalid, fmt.Sprintf("partition %q: want its number (0 for a filesystem on the whole disk)", r.PathValue("n")))
		return nil, nil, nil, nil, false
	}
	a := m.Partition(n)
	if a == nil {
		writeError(w, http.StatusNotFound, CodeNotFound, fmt.Sprintf("image %s has no partition %d", m.Name, n))
		return nil, nil, nil, nil, false
	}
	if !Browsable(a.FSType) {
		writeError(w, http.StatusUnprocessableEntity, CodeUnsupported, fmt.Sprintf("partition %d holds %s: the explorer reads ext2/3/4, FAT and NTFS", n, a.FSType))
		return nil, nil, nil, nil, false
	}
	ar, err := image.NewAreaReader(r.Context(), m, a, h.Repo, image.AreaReaderOptions{})
	if err != nil {
		h.fail(w, r, err)
		return nil, nil, nil, nil, false
	}
	fsys, err := imagefs.Open(ar, ar.Size(), a.FSType)
	if err != nil {
		ar.Close()
		h.explorerFail(w, r, fmt.Errorf("image %s partition %d: %w", m.Name, n, err))
		return nil, nil, nil, nil, false
	}
	return m, a, fsys, func() { ar.Close() }, true
}

// explorerFail maps the filesystem readers' errors, then the repository's.
func (h *Handler) explorerFail(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, imagefs.ErrEscape):
		writeError(w, http.StatusBadRequest, CodeEscape, err.Error())
	case errors.Is(err, imagefs.ErrNotExist):
		writeError(w, http.StatusNotFound, CodeNotFound, err.Error())
	case errors.Is(err, imagefs.ErrNotDir):
		writeError(w, http.StatusBadRequest, CodeNotDir, err.Error())
	case errors.Is(err, imagefs.ErrIsDir):
		writeError(w, http.StatusBadRequest, CodeIsDir, err.Error())
	case errors.Is(err, imagefs.ErrLoop):
		writeError(w, http.StatusBadRequest, CodeInvalid, err.Error())
	case errors.Is(err, imagefs.ErrUnsupported):
		writeError(w, http.StatusUnprocessableEntity, CodeUnsupported, err.Error())
	case errors.Is(err, imagefs.ErrCorrupt):
		writeError(w, http.StatusUnprocessableEntity, CodeCorrupt, err.Error())
	default:
		h.fail(w, r, err)
	}
}

func queryPath(w http.ResponseWriter, r *http.Request) (string, bool) {
	p, err := imagefs.Clean(r.URL.Query().Get("path"))
	if err != nil {
		writeError(w, http.StatusBadRequest, CodeEscape, err.Error())
		return "", false
	}
	return p, true
}

func (h *Handler) files(w http.ResponseWriter, r *http.Request) {
	m, a, fsys, done, ok := h.openFS(w, r)
	if !ok {
		return
	}
	defer done()
	p, ok := queryPath(w, r)
	if !ok {
		return
	}
	e, err := fsys.Lstat(p)
	if err != nil {
		h.explorerFail(w, r, err)
		return
	}
	out := FileList{Image: m.Name, Partition: a.Index, FSType: fsys.Type, Path: p, Entry: fileEntry(e), Entries: []FileEntry{}}
	dir := e.IsDir()
	if e.Mode&fs.ModeSymlink != 0 {
		if t, err := fsys.Stat(p); err == nil && t.IsDir() {
			dir = true
		}
	}
	if dir {
		es, err := fsys.ReadDir(p)
		if err != nil {
			h.explorerFail(w, r, err)
			return
		}
		for _, e := range es {
			out.Entries = append(out.Entries, fileEntry(e))
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *Handler) content(w http.ResponseWriter, r *http.Request) {
	_, _, fsys, done, ok := h.openFS(w, r)
	if !ok {
		return
	}
	defer done()
	p, ok := queryPath(w, r)
	if !ok {
		return
	}
	f, err := fsys.Open(p)
	if err != nil {
		h.explorerFail(w, r, err)
		return
	}
	// Read where the answer starts before sending anything: a corrupt
	// chunk there is a clear error (what a client that lost a download
	// halfway asks with a Range from where it broke off).
	start := rangeStart(r.Header.Get("Range"), f.Size)
	probe := int64(1)
	if r.URL.Query().Get("check") == "true" {
		// Read everything from start, send nothing: 204 or the error.
		probe = f.Size - start
	}
	buf := make([]byte, min(probe, 1<<20))
	for off := start; off < start+probe && off < f.Size; off += int64(len(buf)) {
		n := min(int64(len(buf)), f.Size-off)
		if _, err := f.ReadAt(buf[:n], off); err != nil {
			h.explorerFail(w, r, fmt.Errorf("%s at byte %d: %w", p, off, err))
			return
		}
	}
	if probe != 1 {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	// Bytes from an image are never rendered by the browser: a download,
	// no sniffing.
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": path.Base(p)}))
	// A chunk found corrupt halfway cuts the answer short of its
	// Content-Length: the client sees a truncated body, never wrong bytes.
	http.ServeContent(w, r, "", f.ModTime, &loggingReader{r: io.NewSectionReader(f, 0, f.Size), h: h, req: r})
}

// rangeStart is the first byte a Range header asks for (0 without one or
// when it does not parse: http.ServeContent judges it).
func rangeStart(h string, size int64) int64 {
	spec, ok := strings.CutPrefix(h, "bytes=")
	if !ok {
		return 0
	}
	first, _, _ := strings.Cut(spec, ",")
	from, to, _ := strings.Cut(strings.TrimSpace(first), "-")
	if from == "" {
		n, err := strconv.ParseInt(to, 10, 64)
		if err != nil || n <= 0 {
			return 0
		}
		return max(size-n, 0)
	}
	n, err := strconv.ParseInt(from, 10, 64)
	if err != nil || n < 0 {
		return 0
	}
	return n
}

// loggingReader logs the first read error of a download (the client only
// sees the connection end).
type loggingReader struct {
	r      io.ReadSeeker
	h      *Handler
	req    *http.Request
	logged bool
}

func (l *loggingReader) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	if err != nil && err != io.EOF && !l.logged {
		l.logged = true
		l.h.log().ErrorContext(l.req.Context(), "image explorer download failed", "path", l.req.URL.Path, "file", l.req.URL.Query().Get("path"), "err", err)
	}
	return n, err
}

func (l *loggingReader) Seek(off int64, whence int) (int64, error) { return l.r.Seek(off, whence) }

func (h *Handler) diff(w http.ResponseWriter, r *http.Request) {
	_, a, ok := h.explorerManifest(w, r)
	if !ok {
		return
	}
	other := r.PathValue("other")
	if err := image.ValidRef(other); err != nil {
		writeError(w, http.StatusBadRequest, CodeInvalid, err.Error())
		return
	}
	b, err := h.Repo.Manifest(other)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	d := image.Diff(a, b)
	d.A, d.B = r.PathValue("name"), other
	writeJSON(w, http.StatusOK, d)
}
