package httpstore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/preboot/preboot/image"
)

// Limits the Handler applies when its fields are zero.
const (
	// DefaultMaxChunkBytes bounds a PUT chunk body: the largest window
	// (image.MaxChunkSize) plus zstd's worst-case expansion and slack.
	DefaultMaxChunkBytes = image.MaxChunkSize + image.MaxChunkSize/64 + 4096
	// DefaultMaxImportBytes bounds an import body.
	DefaultMaxImportBytes = 1 << 40
	// MaxMissingHashes bounds the hashes in one POST chunks/missing.
	MaxMissingHashes = 1 << 16
	maxMissingBody   = MaxMissingHashes*(2*image.HashSize+4) + 4096
)

// membership cache: how long a loaded image's chunk set is trusted.
const (
	memberTTL     = 30 * time.Second
	memberEntries = 64
)

// Access is what one request may do, as the server's authentication
// decides (Handler.Access). The zero value may do nothing.
type Access struct {
	// Admin may do everything.
	Admin bool
	// Job is the id of the job whose token the request carries.
	Job int64
	// Image is the job's image reference: NAME for a capture, NAME or
	// NAME@N (the version pinned when the job started) for a restore.
	Image string
	// Capture: the job may upload chunks and publish a new version of
	// Image; it reads the chunks of Image's versions and its own uploads.
	Capture bool
	// Read: the job may read Image (restore, multicast): its manifest and
	// the chunks that manifest references, nothing else.
	Read bool
}

// Handler serves an image repository over HTTP under /api/v1/chunks/ and
// /api/v1/images (see the package doc for the routes). It does no
// authentication: the server wraps it with its auth middleware and tells
// it, through Access, who is asking. Mount it with mux.Handle(p, h) for
// every p in Prefixes().
//
// A job is scoped as in an OCI registry: chunk requests must name the
// job's image (?image=), a job reads only chunks of its image (a restore:
// the manifest of its pinned version; a capture: its image's versions and
// what it uploaded itself), "missing" answers "present" only for those
// (any other hash is "missing": the client uploads it, the server verifies
// it and dedupes it on disk, and nothing about other images leaks), a
// capture publishes only manifests whose chunks it uploaded or may read,
// and a job never imports, removes, rolls back or collects garbage.
type Handler struct {
	Repo   *image.Repo
	Logger *slog.Logger
	// Access tells what a request may do; nil makes every request an
	// administrator.
	Access func(r *http.Request) Access
	// MaxChunkBytes bounds a chunk upload (DefaultMaxChunkBytes when 0).
	MaxChunkBytes int64
	// MaxImportBytes bounds an import body (DefaultMaxImportBytes when 0).
	MaxImportBytes int64
	// VerifyWorkers decompress in parallel during verify (GOMAXPROCS when 0).
	VerifyWorkers int

	once sync.Once
	mux  *http.ServeMux
	// busy holds the image names a publish, remove or import is working
	// on, so "does the name exist" and the write are atomic per name
	// without one long import blocking other names.
	busyMu sync.Mutex
	busy   map[string]struct{}
	memMu  sync.Mutex
	mem    map[string]memberSet
	// uploads caches the upload records of capture jobs (see
	// image.Repo.RecordUploads), loaded on first use.
	upMu    sync.Mutex
	uploads map[int64]*jobUploads
	// bufs holds chunk upload buffers: a body is read into a buffer that
	// grows with what arrives, never sized from the declared length.
	bufs sync.Pool
}

type jobUploads struct {
	mu     sync.Mutex
	hashes map[image.Hash]struct{}
}

// lockName reserves name; it answers 409 and returns false when another
// request is writing it.
func (h *Handler) lockName(w http.ResponseWriter, name string) (unlock func(), ok bool) {
	h.busyMu.Lock()
	defer h.busyMu.Unlock()
	if _, taken := h.busy[name]; taken {
		writeError(w, http.StatusConflict, CodeBusy, fmt.Sprintf("image %s is being written by another request; try again", name))
		return nil, false
	}
	h.busy[name] = struct{}{}
	return func() {
		h.busyMu.Lock()
		delete(h.busy, name)
		h.busyMu.Unlock()
	}, true
}

type memberSet struct {
	loaded time.Time
	hashes map[image.Hash]struct{}
}

// Prefixes are the ServeMux patterns to mount the handler under.
func (h *Handler) Prefixes() []string {
	return []string{APIPrefix + "/chunks/", APIPrefix + "/images", APIPrefix + "/images/"}
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.once.Do(h.init)
	h.mux.ServeHTTP(w, r)
}

func (h *Handler) init() {
	m := http.NewServeMux()
	m.HandleFunc("POST "+APIPrefix+"/chunks/missing", h.missing)
	m.HandleFunc("PUT "+APIPrefix+"/chunks/{hash}", h.putChunk)
	m.HandleFunc("GET "+APIPrefix+"/chunks/{hash}", h.getChunk)
	m.HandleFunc("GET "+APIPrefix+"/images", h.list)
	m.HandleFunc("PUT "+APIPrefix+"/images/{name}", h.putImage)
	m.HandleFunc("GET "+APIPrefix+"/images/{name}", h.getImage)
	m.HandleFunc("DELETE "+APIPrefix+"/images/{name}", h.deleteImage)
	m.HandleFunc("GET "+APIPrefix+"/images/{name}/versions", h.versions)
	m.HandleFunc("POST "+APIPrefix+"/images/{name}/rollback", h.rollback)
	m.HandleFunc("POST "+APIPrefix+"/images/{name}/verify", h.verify)
	m.HandleFunc("GET "+APIPrefix+"/images/{name}/export", h.export)
	m.HandleFunc("POST "+APIPrefix+"/images/import", h.importImage)
	m.HandleFunc("POST "+APIPrefix+"/images/gc", h.gc)
	// The image explorer (explore.go).
	m.HandleFunc("GET "+APIPrefix+"/images/{name}/partitions", h.partitions)
	m.HandleFunc("GET "+APIPrefix+"/images/{name}/partitions/{n}/files", h.files)
	m.HandleFunc("GET "+APIPrefix+"/images/{name}/partitions/{n}/content", h.content)
	m.HandleFunc("GET "+APIPrefix+"/images/{name}/diff/{other}", h.diff)
	notFound := func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, CodeNotFound, "no such image API endpoint: "+r.Method+" "+r.URL.Path)
	}
	m.HandleFunc(APIPrefix+"/chunks/", notFound)
	m.HandleFunc(APIPrefix+"/images/", notFound)
	m.HandleFunc(APIPrefix+"/images", notFound)
	h.mux = m
	h.mem = make(map[string]memberSet)
	h.busy = make(map[string]struct{})
	h.uploads = make(map[int64]*jobUploads)
}

func (h *Handler) log() *slog.Logger {
	if h.Logger != nil {
		return h.Logger
	}
	return slog.New(slog.DiscardHandler)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, ErrorBody{Error: msg, Code: code})
}

// fail maps an error from the repository to an answer and logs server-side
// failures.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		writeError(w, http.StatusRequestEntityTooLarge, CodeTooLarge, fmt.Sprintf("request body larger than %d bytes", mbe.Limit))
		return
	case errors.Is(err, image.ErrNotFound):
		writeError(w, http.StatusNotFound, CodeNotFound, err.Error())
		return
	case errors.Is(err, image.ErrExists):
		writeError(w, http.StatusConflict, CodeExists, err.Error())
		return
	case errors.Is(err, image.ErrNoVersion):
		writeError(w, http.StatusConflict, CodeNoVersion, err.Error())
		return
	case errors.Is(err, image.ErrMissingChunks):
		writeError(w, http.StatusConflict, CodeMissingChunks, err.Error())
		return
	case errors.Is(err, image.ErrCorruptChunk):
		writeError(w, http.StatusUnprocessableEntity, CodeCorrupt, err.Error())
		return
	case errors.Is(err, image.ErrQuota):
		h.log().WarnContext(r.Context(), "image repository quota reached", "method", r.Method, "path", r.URL.Path, "err", err)
		writeError(w, http.StatusInsufficientStorage, CodeQuota, err.Error())
		return
	case errors.Is(err, syscall.ENOSPC):
		h.log().ErrorContext(r.Context(), "image repository full", "method", r.Method, "path", r.URL.Path, "err", err)
		writeError(w, http.StatusInsufficientStorage, CodeNoSpace, "image repository is full: "+err.Error())
		return
	case r.Context().Err() != nil:
		// The client went away; nobody reads the answer.
		h.log().InfoContext(r.Context(), "image request canceled", "method", r.Method, "path", r.URL.Path, "err", err)
		writeError(w, http.StatusServiceUnavailable, "", err.Error())
		return
	}
	h.log().ErrorContext(r.Context(), "image request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	writeError(w, http.StatusInternalServerError, "", "internal error: "+err.Error())
}

func (h *Handler) access(r *http.Request) Access {
	if h.Access == nil {
		return Access{Admin: true}
	}
	return h.Access(r)
}

func forbid(w http.ResponseWriter, msg string) {
	writeError(w, http.StatusForbidden, CodeForbidden, msg)
}

// adminOnly answers 403 to anyone but an administrator.
func (h *Handler) adminOnly(w http.ResponseWriter, r *http.Request, what string) bool {
	if h.access(r).Admin {
		return true
	}
	forbid(w, "a job token may not "+what+": that needs an administrator")
	return false
}

// readRef decides which image reference a request for ref may read: ref
// itself for an administrator; for a job, ref when it names the job's
// image (a restore job pinned to NAME@N reads NAME@N whatever version the
// request names without one). It answers 403 and returns false otherwise.
func (h *Handler) readRef(w http.ResponseWriter, acc Access, ref string) (string, bool) {
	if acc.Admin {
		return ref, true
	}
	deny := func() (string, bool) {
		forbid(w, fmt.Sprintf("not allowed to read image %q with this job's token", ref))
		return "", false
	}
	if ref == "" || acc.Image == "" || (!acc.Read && !acc.Capture) {
		return deny()
	}
	name, v, err := image.ParseRef(ref)
	jname, jv, jerr := image.ParseRef(acc.Image)
	if err != nil || jerr != nil || name != jname {
		return deny()
	}
	if acc.Read && jv != 0 {
		if v != 0 && v != jv {
			return deny()
		}
		return acc.Image, true
	}
	return ref, true
}

func pathName(w http.ResponseWriter, r *http.Request) (string, bool) {
	name := r.PathValue("name")
	if err := image.ValidName(name); err != nil {
		writeError(w, http.StatusBadRequest, CodeInvalid, err.Error())
		return "", false
	}
	return name, true
}

// pathRef is the NAME or NAME@N of the path.
func pathRef(w http.ResponseWriter, r *http.Request) (string, bool) {
	ref := r.PathValue("name")
	if err := image.ValidRef(ref); err != nil {
		writeError(w, http.StatusBadRequest, CodeInvalid, err.Error())
		return "", false
	}
	return ref, true
}

func pathHash(w http.ResponseWriter, r *http.Request) (image.Hash, bool) {
	hash, err := image.ParseHash(r.PathValue("hash"))
	if err != nil {
		writeError(w, http.StatusBadRequest, CodeInvalid, err.Error())
		return hash, false
	}
	return hash, true
}

// chunkImage is the ?image= of a chunk request ("" when absent).
func chunkImage(w http.ResponseWriter, r *http.Request) (string, bool) {
	ref := r.URL.Query().Get("image")
	if ref == "" {
		return "", true
	}
	if err := image.ValidRef(ref); err != nil {
		writeError(w, http.StatusBadRequest, CodeInvalid, err.Error())
		return "", false
	}
	return ref, true
}

// chunkScope is what a job's chunk request may see: in reports whether a
// chunk is one it may read. For an administrator it is nil (everything).
type chunkScope struct {
	in func(image.Hash) bool
	// capture: the job's uploads are recorded (job id), and hashes it is
	// told are present join its record.
	job int64
}

// scope works out a chunk request's scope from its ?image=; it answers
// and returns false when the request may not proceed.
func (h *Handler) scope(w http.ResponseWriter, r *http.Request, write bool) (*chunkScope, bool) {
	ref, ok := chunkImage(w, r)
	if !ok {
		return nil, false
	}
	acc := h.access(r)
	if acc.Admin {
		return nil, true
	}
	if ref == "" {
		forbid(w, "a job token must name its image (?image=NAME) on chunk requests")
		return nil, false
	}
	if write {
		if !acc.Capture || image.RefName(acc.Image) != ref {
			forbid(w, fmt.Sprintf("not allowed to upload chunks for image %q with this job's token", ref))
			return nil, false
		}
	}
	eff, ok := h.readRef(w, acc, ref)
	if !ok {
		return nil, false
	}
	if acc.Capture {
		name := image.RefName(eff)
		up, err := h.jobUploads(acc.Job)
		if err != nil {
			h.fail(w, r, err)
			return nil, false
		}
		sets, err := h.versionSets(r.Context(), name)
		if err != nil {
			h.fail(w, r, err)
			return nil, false
		}
		return &chunkScope{job: acc.Job, in: func(c image.Hash) bool {
			if up.has(c) {
				return true
			}
			for _, s := range sets {
				if _, ok := s[c]; ok {
					return true
				}
			}
			return false
		}}, true
	}
	set, err := h.chunkSet(r.Context(), eff)
	if err != nil {
		h.fail(w, r, err)
		return nil, false
	}
	return &chunkScope{in: func(c image.Hash) bool { _, ok := set[c]; return ok }}, true
}

func (u *jobUploads) has(c image.Hash) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	_, ok := u.hashes[c]
	return ok
}

// jobUploads returns the cached upload record of a capture job.
func (h *Handler) jobUploads(job int64) (*jobUploads, error) {
	h.upMu.Lock()
	u, ok := h.uploads[job]
	h.upMu.Unlock()
	if ok {
		return u, nil
	}
	hs, err := h.Repo.Uploads(job)
	if err != nil {
		return nil, err
	}
	h.upMu.Lock()
	defer h.upMu.Unlock()
	if u, ok := h.uploads[job]; ok {
		return u, nil
	}
	if len(h.uploads) >= maxCachedJobs {
		for k := range h.uploads { // reloaded from disk when needed
			delete(h.uploads, k)
			break
		}
	}
	u = &jobUploads{hashes: hs}
	h.uploads[job] = u
	return u, nil
}

const maxCachedJobs = 256

// record adds hashes to a capture job's upload record (on disk first).
func (h *Handler) record(job int64, hashes []image.Hash) error {
	if len(hashes) == 0 {
		return nil
	}
	u, err := h.jobUploads(job)
	if err != nil {
		return err
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	var add []image.Hash
	for _, c := range hashes {
		if _, ok := u.hashes[c]; !ok {
			add = append(add, c)
		}
	}
	if err := h.Repo.RecordUploads(job, add); err != nil {
		return err
	}
	for _, c := range add {
		u.hashes[c] = struct{}{}
	}
	return nil
}

func (h *Handler) dropUploads(job int64) error {
	h.upMu.Lock()
	delete(h.uploads, job)
	h.upMu.Unlock()
	return h.Repo.DropUploads(job)
}

func (h *Handler) missing(w http.ResponseWriter, r *http.Request) {
	sc, ok := h.scope(w, r, false)
	if !ok {
		return
	}
	var req MissingRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxMissingBody))
	if err := dec.Decode(&req); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			h.fail(w, r, err)
			return
		}
		writeError(w, http.StatusBadRequest, CodeInvalid, "decode request: "+err.Error())
		return
	}
	if len(req.Hashes) > MaxMissingHashes {
		writeError(w, http.StatusRequestEntityTooLarge, CodeTooLarge, fmt.Sprintf("%d hashes, at most %d per request", len(req.Hashes), MaxMissingHashes))
		return
	}
	hashes := make([]image.Hash, 0, len(req.Hashes))
	for _, s := range req.Hashes {
		hash, err := image.ParseHash(s)
		if err != nil {
			writeError(w, http.StatusBadRequest, CodeInvalid, err.Error())
			return
		}
		hashes = append(hashes, hash)
	}
	// A job learns about chunks it may read only; any other hash is
	// "missing" (it uploads it, the server verifies and dedupes it).
	ask := hashes
	var out map[image.Hash]struct{} // out of the job's scope
	if sc != nil {
		ask = make([]image.Hash, 0, len(hashes))
		out = make(map[image.Hash]struct{})
		for _, c := range hashes {
			if sc.in(c) {
				ask = append(ask, c)
			} else {
				out[c] = struct{}{}
			}
		}
	}
	miss, err := h.Repo.Missing(r.Context(), ask)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if sc != nil && sc.job != 0 {
		// Chunks a capture is told are present are protected from GC
		// until it publishes, like those it uploads.
		var present []image.Hash
		for _, c := range ask {
			if _, m := miss[c]; !m {
				present = append(present, c)
			}
		}
		if err := h.record(sc.job, present); err != nil {
			h.fail(w, r, err)
			return
		}
	}
	for c := range out {
		miss[c] = struct{}{}
	}
	resp := MissingResponse{Missing: make([]string, 0, len(miss))}
	for _, hash := range hashes { // request order, each once
		if _, ok := miss[hash]; ok {
			resp.Missing = append(resp.Missing, hash.String())
			delete(miss, hash)
		}
	}
	writeJSON(w, http.StatusOK, resp)
}

func (h *Handler) maxChunk() int64 {
	if h.MaxChunkBytes > 0 {
		return h.MaxChunkBytes
	}
	return DefaultMaxChunkBytes
}

// getBuf returns an empty buffer for a chunk body; putBuf gives it back.
func (h *Handler) getBuf() *bytes.Buffer {
	if b, ok := h.bufs.Get().(*bytes.Buffer); ok {
		b.Reset()
		return b
	}
	return new(bytes.Buffer)
}

func (h *Handler) putBuf(b *bytes.Buffer) {
	if int64(b.Cap()) <= 2*h.maxChunk() {
		h.bufs.Put(b)
	}
}

func (h *Handler) putChunk(w http.ResponseWriter, r *http.Request) {
	hash, ok := pathHash(w, r)
	if !ok {
		return
	}
	sc, ok := h.scope(w, r, true)
	if !ok {
		return
	}
	limit := h.maxChunk()
	if r.ContentLength > limit {
		writeError(w, http.StatusRequestEntityTooLarge, CodeTooLarge, fmt.Sprintf("chunk %s: %d bytes, limit %d", hash, r.ContentLength, limit))
		return
	}
	// The buffer grows with the bytes that arrive: a declared length
	// allocates nothing, so stalled uploads cost what they sent.
	buf := h.getBuf()
	defer h.putBuf(buf)
	if _, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, limit)); err != nil {
		h.fail(w, r, fmt.Errorf("chunk %s: read body: %w", hash, err))
		return
	}
	miss, err := h.Repo.Missing(r.Context(), []image.Hash{hash})
	if err != nil {
		h.fail(w, r, err)
		return
	}
	_, absent := miss[hash]
	if !absent && sc == nil {
		w.WriteHeader(http.StatusNoContent) // already stored (dedupe)
		return
	}
	// A job proves it holds the content of every chunk it records, even
	// one the repository already has: that is what lets it name the chunk
	// in its manifest.
	if err := image.VerifyChunk(hash, buf.Bytes()); err != nil {
		h.log().WarnContext(r.Context(), "corrupt chunk refused", "hash", hash.String(), "bytes", buf.Len(), "remote", r.RemoteAddr, "err", err)
		writeError(w, http.StatusUnprocessableEntity, CodeCorrupt, fmt.Sprintf("chunk %s: %v", hash, err))
		return
	}
	if sc != nil && sc.job != 0 {
		// Recorded before it is stored: GC keeps what an open job's
		// record names, so the chunk is never unprotected.
		if err := h.record(sc.job, []image.Hash{hash}); err != nil {
			h.fail(w, r, err)
			return
		}
	}
	if err := h.Repo.Put(r.Context(), hash, buf.Bytes()); err != nil {
		h.fail(w, r, err)
		return
	}
	if !absent {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	w.WriteHeader(http.StatusCreated)
}

func (h *Handler) getChunk(w http.ResponseWriter, r *http.Request) {
	hash, ok := pathHash(w, r)
	if !ok {
		return
	}
	sc, ok := h.scope(w, r, false)
	if !ok {
		return
	}
	if sc != nil && !sc.in(hash) {
		forbid(w, fmt.Sprintf("chunk %s is not part of image %q", hash, r.URL.Query().Get("image")))
		return
	}
	// Streamed from the file (sendfile where the connection allows it):
	// no copy of the chunk in memory.
	f, size, err := h.Repo.OpenChunk(r.Context(), hash)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	defer f.Close()
	w.Header().Set("Content-Type", "application/zstd")
	w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	w.WriteHeader(http.StatusOK)
	_, _ = io.Copy(w, f)
}

// chunkSet returns the chunks of one image version (ref resolved to
// NAME@N; versions never change, so the cache only bounds staleness after
// a removal).
func (h *Handler) chunkSet(ctx context.Context, ref string) (map[image.Hash]struct{}, error) {
	name, v, err := h.Repo.Resolve(ref)
	if err != nil {
		return nil, err
	}
	key := image.Ref(name, v)
	h.memMu.Lock()
	set, ok := h.mem[key]
	h.memMu.Unlock()
	if ok && time.Since(set.loaded) <= memberTTL {
		return set.hashes, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m, err := h.Repo.Manifest(key)
	if err != nil {
		return nil, err
	}
	set = memberSet{loaded: time.Now(), hashes: make(map[image.Hash]struct{})}
	for _, c := range m.ChunkHashes() {
		set.hashes[c] = struct{}{}
	}
	h.memMu.Lock()
	if len(h.mem) >= memberEntries {
		for k, v := range h.mem { // drop expired entries, else any one
			if time.Since(v.loaded) > memberTTL || len(h.mem) >= memberEntries {
				delete(h.mem, k)
			}
		}
	}
	h.mem[key] = set
	h.memMu.Unlock()
	return set.hashes, nil
}

// versionSets returns the chunk sets of every version of image name (none
// when it does not exist yet).
func (h *Handler) versionSets(ctx context.Context, name string) ([]map[image.Hash]struct{}, error) {
	vs, err := h.Repo.VersionNumbers(name)
	if errors.Is(err, image.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	out := make([]map[image.Hash]struct{}, 0, len(vs))
	for _, v := range vs {
		set, err := h.chunkSet(ctx, image.Ref(name, v))
		if errors.Is(err, image.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, set)
	}
	return out, nil
}

func (h *Handler) forget(name string) {
	h.memMu.Lock()
	for k := range h.mem {
		if image.RefName(k) == name {
			delete(h.mem, k)
		}
	}
	h.memMu.Unlock()
}

func (h *Handler) list(w http.ResponseWriter, r *http.Request) {
	acc := h.access(r)
	u, err := h.Repo.Usage(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := ImageList{Images: []ImageInfo{}, Chunks: u.Chunks, StoredBytes: u.StoredBytes, GarbageBytes: u.GarbageBytes, MaxBytes: h.Repo.MaxBytes()}
	for _, iu := range u.Images {
		ref := iu.Name
		if !acc.Admin {
			if acc.Image == "" || (!acc.Read && !acc.Capture) || image.RefName(acc.Image) != iu.Name {
				continue
			}
			if acc.Read {
				ref = acc.Image
			}
		}
		m, err := h.Repo.Manifest(ref)
		if errors.Is(err, image.ErrNotFound) {
			continue // removed meanwhile
		}
		if err != nil {
			h.fail(w, r, err)
			return
		}
		out.Images = append(out.Images, withUsage(infoFromManifest(m), iu))
	}
	writeJSON(w, http.StatusOK, out)
}

func withUsage(info ImageInfo, u image.ImageUsage) ImageInfo {
	info.Stored, info.Unique, info.Shared, info.Chunks = u.Stored, u.Unique, u.Shared, u.Chunks
	info.Version, info.Versions = u.Version, u.Versions
	return info
}

// readManifest loads the manifest of the image the path names, if the
// request may read it; otherwise it has answered and returns false. ref
// is the version read (NAME@N).
func (h *Handler) readManifest(w http.ResponseWriter, r *http.Request) (string, *image.Manifest, bool) {
	ref, ok := pathRef(w, r)
	if !ok {
		return "", nil, false
	}
	if ref, ok = h.readRef(w, h.access(r), ref); !ok {
		return "", nil, false
	}
	name, v, err := h.Repo.Resolve(ref)
	if err != nil {
		h.fail(w, r, err)
		return "", nil, false
	}
	ref = image.Ref(name, v)
	m, err := h.Repo.Manifest(ref)
	if err != nil {
		h.fail(w, r, err)
		return "", nil, false
	}
	return ref, m, true
}

func (h *Handler) getImage(w http.ResponseWriter, r *http.Request) {
	ref, m, ok := h.readManifest(w, r)
	if !ok {
		return
	}
	_, v, _ := image.ParseRef(ref)
	if r.URL.Query().Get("only") == "manifest" {
		var buf bytes.Buffer
		if err := m.Encode(&buf); err != nil {
			h.fail(w, r, err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
		w.Header().Set(VersionHeader, strconv.Itoa(v))
		_, _ = w.Write(buf.Bytes())
		return
	}
	u, err := h.Repo.Usage(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	d := ImageDetail{Info: infoFromManifest(m), Manifest: m}
	for _, iu := range u.Images {
		if iu.Name == m.Name {
			d.Info = withUsage(d.Info, iu)
		}
	}
	d.Info.Version = v
	writeJSON(w, http.StatusOK, d)
}

func (h *Handler) putImage(w http.ResponseWriter, r *http.Request) {
	name, ok := pathName(w, r)
	if !ok {
		return
	}
	acc := h.access(r)
	if !acc.Admin && (!acc.Capture || image.RefName(acc.Image) != name) {
		forbid(w, fmt.Sprintf("not allowed to publish image %q with this job's token", name))
		return
	}
	replace := false
	if s := r.URL.Query().Get("replace"); s != "" {
		var err error
		if replace, err = strconv.ParseBool(s); err != nil {
			writeError(w, http.StatusBadRequest, CodeInvalid, "replace: "+err.Error())
			return
		}
	}
	m, err := image.ParseManifest(http.MaxBytesReader(w, r.Body, image.MaxManifestSize+1))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			h.fail(w, r, err)
			return
		}
		writeError(w, http.StatusUnprocessableEntity, CodeInvalid, "invalid manifest: "+err.Error())
		return
	}
	if m.Name != name {
		writeError(w, http.StatusUnprocessableEntity, CodeInvalid, fmt.Sprintf("manifest names image %q, URL names %q", m.Name, name))
		return
	}
	unlock, ok := h.lockName(w, name)
	if !ok {
		return
	}
	defer unlock()
	// A capture publishes a new version: it never needs ?replace.
	if !replace && acc.Admin {
		_, err := h.Repo.Manifest(name)
		if err == nil {
			writeError(w, http.StatusConflict, CodeExists, fmt.Sprintf("image %s exists (publish with ?replace=true to add a new version)", name))
			return
		}
		if !errors.Is(err, image.ErrNotFound) {
			h.fail(w, r, err)
			return
		}
	}
	hashes := m.ChunkHashes()
	if !acc.Admin {
		// Only chunks this job uploaded (and proved it holds) or may read
		// (its image's versions): no copying another image by hash.
		up, err := h.jobUploads(acc.Job)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		sets, err := h.versionSets(r.Context(), name)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		var foreign []string
		for _, c := range hashes {
			in := up.has(c)
			for _, s := range sets {
				if _, ok := s[c]; ok {
					in = true
				}
			}
			if !in {
				foreign = append(foreign, c.String())
			}
		}
		if len(foreign) > 0 {
			writeError(w, http.StatusForbidden, CodeForbidden, fmt.Sprintf("image %s: %d of its %d chunks were neither uploaded by this job nor part of the image's versions (first %s): upload them",
				name, len(foreign), len(hashes), foreign[0]))
			return
		}
	}
	miss, err := h.Repo.Missing(r.Context(), hashes)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if len(miss) > 0 {
		body := ErrorBody{Code: CodeMissingChunks, MissingCount: len(miss)}
		for _, hash := range hashes {
			if _, ok := miss[hash]; ok && len(body.Missing) < MaxMissingListed {
				body.Missing = append(body.Missing, hash.String())
			}
		}
		body.Error = fmt.Sprintf("image %s: %d of its %d chunks are missing from the repository (first %s)", name, len(miss), len(hashes), body.Missing[0])
		writeJSON(w, http.StatusConflict, body)
		return
	}
	v, err := h.Repo.PublishVersion(r.Context(), m)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if !acc.Admin {
		if err := h.dropUploads(acc.Job); err != nil {
			h.log().WarnContext(r.Context(), "upload record not removed (GC drops it)", "job", acc.Job, "err", err)
		}
	}
	h.log().InfoContext(r.Context(), "image uploaded", "image", name, "version", v, "job", acc.Job, "chunks", len(hashes), "remote", r.RemoteAddr)
	info := infoFromManifest(m)
	info.Version = v
	writeJSON(w, http.StatusCreated, info)
}

func (h *Handler) deleteImage(w http.ResponseWriter, r *http.Request) {
	ref, ok := pathRef(w, r)
	if !ok || !h.adminOnly(w, r, "remove images") {
		return
	}
	name := image.RefName(ref)
	unlock, ok := h.lockName(w, name)
	if !ok {
		return
	}
	defer unlock()
	if err := h.Repo.Remove(r.Context(), ref); err != nil {
		h.fail(w, r, err)
		return
	}
	h.forget(name)
	w.WriteHeader(http.StatusNoContent)
}

func (h *Handler) versions(w http.ResponseWriter, r *http.Request) {
	name, ok := pathName(w, r)
	if !ok {
		return
	}
	if _, ok := h.readRef(w, h.access(r), name); !ok {
		return
	}
	h.writeVersions(w, r, name)
}

// writeVersions answers an image's versions and which is current.
func (h *Handler) writeVersions(w http.ResponseWriter, r *http.Request, name string) {
	vs, err := h.Repo.Versions(name)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := ImageVersions{Name: name, Versions: vs}
	for _, v := range vs {
		if v.Current {
			out.Current = v.Version
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *Handler) rollback(w http.ResponseWriter, r *http.Request) {
	name, ok := pathName(w, r)
	if !ok || !h.adminOnly(w, r, "roll images back") {
		return
	}
	var req RollbackRequest
	if r.ContentLength != 0 {
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096))
		if err := dec.Decode(&req); err != nil && !errors.Is(err, io.EOF) {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				h.fail(w, r, err)
				return
			}
			writeError(w, http.StatusBadRequest, CodeInvalid, "decode request: "+err.Error())
			return
		}
	}
	if req.To < 0 {
		writeError(w, http.StatusBadRequest, CodeInvalid, fmt.Sprintf("to %d: want a version number, or 0 for the previous one", req.To))
		return
	}
	unlock, ok := h.lockName(w, name)
	if !ok {
		return
	}
	defer unlock()
	if _, err := h.Repo.Rollback(r.Context(), name, req.To); err != nil {
		h.fail(w, r, err)
		return
	}
	h.writeVersions(w, r, name)
}

func (h *Handler) gc(w http.ResponseWriter, r *http.Request) {
	if !h.adminOnly(w, r, "collect garbage") {
		return
	}
	st, err := h.Repo.GC(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func (h *Handler) verify(w http.ResponseWriter, r *http.Request) {
	ref, m, ok := h.readManifest(w, r)
	if !ok {
		return
	}
	res := VerifyResult{Name: ref, OK: true, Chunks: len(m.ChunkHashes())}
	if err := h.Repo.Verify(r.Context(), ref, h.VerifyWorkers); err != nil {
		if r.Context().Err() != nil || isImageGone(h.Repo, ref) {
			h.fail(w, r, err)
			return
		}
		res.OK, res.Error = false, err.Error()
		h.log().WarnContext(r.Context(), "image verify failed", "image", ref, "err", err)
	}
	writeJSON(w, http.StatusOK, res)
}

// isImageGone reports whether image ref disappeared (removed during a
// verify), as opposed to missing chunks.
func isImageGone(repo *image.Repo, ref string) bool {
	_, err := repo.Manifest(ref)
	return errors.Is(err, image.ErrNotFound)
}

func (h *Handler) export(w http.ResponseWriter, r *http.Request) {
	ref, _, ok := h.readManifest(w, r)
	if !ok {
		return
	}
	w.Header().Set("Content-Type", "application/x-tar")
	w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", strings.ReplaceAll(ref, "@", "-v")+".pbi"))
	w.WriteHeader(http.StatusOK)
	if err := h.Repo.Export(r.Context(), ref, w); err != nil {
		// The status is sent: abort the stream so the client sees a
		// truncated body instead of a well-formed but partial tar.
		h.log().ErrorContext(r.Context(), "image export failed", "image", ref, "err", err)
		panic(http.ErrAbortHandler)
	}
}

func (h *Handler) importImage(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("name")
	if name != "" {
		if err := image.ValidName(name); err != nil {
			writeError(w, http.StatusBadRequest, CodeInvalid, err.Error())
			return
		}
	}
	if !h.adminOnly(w, r, "import images") {
		return
	}
	limit := h.MaxImportBytes
	if limit <= 0 {
		limit = DefaultMaxImportBytes
	}
	// Import checks the name is free before it stores anything and
	// publishes at the end; the reservation keeps a publish of the same
	// name from slipping in between. (Without ?name the archive's name is
	// only known inside Import, which checks it at the start.)
	if name != "" {
		unlock, ok := h.lockName(w, name)
		if !ok {
			return
		}
		defer unlock()
	}
	m, err := h.Repo.Import(r.Context(), http.MaxBytesReader(w, r.Body, limit), name)
	if err != nil {
		var mbe *http.MaxBytesError
		var pe *fs.PathError
		var errno syscall.Errno
		switch {
		case errors.As(err, &mbe), errors.Is(err, image.ErrExists), errors.Is(err, image.ErrCorruptChunk),
			errors.Is(err, image.ErrQuota), errors.Is(err, syscall.ENOSPC), r.Context().Err() != nil:
			h.fail(w, r, err)
		case errors.As(err, &pe), errors.As(err, &errno):
			h.fail(w, r, err)
		default: // a bad archive or manifest
			writeError(w, http.StatusUnprocessableEntity, CodeInvalid, err.Error())
		}
		return
	}
	h.forget(m.Name)
	h.log().InfoContext(r.Context(), "image imported", "image", m.Name, "remote", r.RemoteAddr)
	info := infoFromManifest(m)
	info.Version = 1
	writeJSON(w, http.StatusCreated, info)
}
