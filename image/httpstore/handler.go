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

// Handler serves an image repository over HTTP under /api/v1/chunks/ and
// /api/v1/images (see the package doc for the routes). It does no
// authentication: the server wraps it with its auth middleware. Mount it
// with mux.Handle(p, h) for every p in Prefixes().
type Handler struct {
	Repo   *image.Repo
	Logger *slog.Logger
	// Allow, when set, is asked before every request touches an image:
	// image is the image name (for chunk requests the ?image= parameter,
	// "" when absent; for an import the ?name= parameter, "" when the
	// archive's own name is used), write tells a modification (chunk
	// upload, publish, remove, import; asking which chunks are missing is
	// a read). A false answer is 403. With Allow
	// set, GET of a chunk with ?image=NAME also checks the chunk belongs to
	// image NAME. A nil Allow allows everything.
	Allow func(r *http.Request, image string, write bool) bool
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
	m.HandleFunc("POST "+APIPrefix+"/images/{name}/verify", h.verify)
	m.HandleFunc("GET "+APIPrefix+"/images/{name}/export", h.export)
	m.HandleFunc("POST "+APIPrefix+"/images/import", h.importImage)
	notFound := func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, CodeNotFound, "no such image API endpoint: "+r.Method+" "+r.URL.Path)
	}
	m.HandleFunc(APIPrefix+"/chunks/", notFound)
	m.HandleFunc(APIPrefix+"/images/", notFound)
	m.HandleFunc(APIPrefix+"/images", notFound)
	h.mux = m
	h.mem = make(map[string]memberSet)
	h.busy = make(map[string]struct{})
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
	case errors.Is(err, image.ErrMissingChunks):
		writeError(w, http.StatusConflict, CodeMissingChunks, err.Error())
		return
	case errors.Is(err, image.ErrCorruptChunk):
		writeError(w, http.StatusUnprocessableEntity, CodeCorrupt, err.Error())
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

// allowed runs the Allow hook and answers 403 when it refuses.
func (h *Handler) allowed(w http.ResponseWriter, r *http.Request, name string, write bool) bool {
	if h.Allow == nil || h.Allow(r, name, write) {
		return true
	}
	what := "read"
	if write {
		what = "modify"
	}
	target := "image " + strconv.Quote(name)
	if name == "" {
		target = "the image repository"
	}
	writeError(w, http.StatusForbidden, CodeForbidden, fmt.Sprintf("not allowed to %s %s", what, target))
	return false
}

func pathName(w http.ResponseWriter, r *http.Request) (string, bool) {
	name := r.PathValue("name")
	if err := image.ValidName(name); err != nil {
		writeError(w, http.StatusBadRequest, CodeInvalid, err.Error())
		return "", false
	}
	return name, true
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
	name := r.URL.Query().Get("image")
	if name == "" {
		return "", true
	}
	if err := image.ValidName(name); err != nil {
		writeError(w, http.StatusBadRequest, CodeInvalid, err.Error())
		return "", false
	}
	return name, true
}

func (h *Handler) missing(w http.ResponseWriter, r *http.Request) {
	name, ok := chunkImage(w, r)
	if !ok || !h.allowed(w, r, name, false) { // capture and restore both ask
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
	miss, err := h.Repo.Missing(r.Context(), hashes)
	if err != nil {
		h.fail(w, r, err)
		return
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

func (h *Handler) putChunk(w http.ResponseWriter, r *http.Request) {
	hash, ok := pathHash(w, r)
	if !ok {
		return
	}
	name, ok := chunkImage(w, r)
	if !ok || !h.allowed(w, r, name, true) {
		return
	}
	limit := h.maxChunk()
	if r.ContentLength > limit {
		writeError(w, http.StatusRequestEntityTooLarge, CodeTooLarge, fmt.Sprintf("chunk %s: %d bytes, limit %d", hash, r.ContentLength, limit))
		return
	}
	var buf bytes.Buffer
	if r.ContentLength > 0 {
		buf.Grow(int(r.ContentLength))
	}
	if _, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, limit)); err != nil {
		h.fail(w, r, fmt.Errorf("chunk %s: read body: %w", hash, err))
		return
	}
	miss, err := h.Repo.Missing(r.Context(), []image.Hash{hash})
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if _, ok := miss[hash]; !ok {
		w.WriteHeader(http.StatusNoContent) // already stored (dedupe)
		return
	}
	if err := image.VerifyChunk(hash, buf.Bytes()); err != nil {
		h.log().WarnContext(r.Context(), "corrupt chunk refused", "hash", hash.String(), "bytes", buf.Len(), "remote", r.RemoteAddr, "err", err)
		writeError(w, http.StatusUnprocessableEntity, CodeCorrupt, fmt.Sprintf("chunk %s: %v", hash, err))
		return
	}
	if err := h.Repo.Put(r.Context(), hash, buf.Bytes()); err != nil {
		h.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusCreated)
}

func (h *Handler) getChunk(w http.ResponseWriter, r *http.Request) {
	hash, ok := pathHash(w, r)
	if !ok {
		return
	}
	name, ok := chunkImage(w, r)
	if !ok || !h.allowed(w, r, name, false) {
		return
	}
	if h.Allow != nil && name != "" {
		in, err := h.inImage(r.Context(), name, hash)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		if !in {
			writeError(w, http.StatusForbidden, CodeForbidden, fmt.Sprintf("chunk %s is not part of image %q", hash, name))
			return
		}
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

// inImage reports whether image name references chunk hash, from a short-
// lived cache of chunk sets.
func (h *Handler) inImage(ctx context.Context, name string, hash image.Hash) (bool, error) {
	h.memMu.Lock()
	set, ok := h.mem[name]
	h.memMu.Unlock()
	if !ok || time.Since(set.loaded) > memberTTL {
		m, err := h.Repo.Manifest(name)
		if err != nil {
			return false, err
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
		h.mem[name] = set
		h.memMu.Unlock()
	}
	_, in := set.hashes[hash]
	return in, nil
}

func (h *Handler) forget(name string) {
	h.memMu.Lock()
	delete(h.mem, name)
	h.memMu.Unlock()
}

func (h *Handler) list(w http.ResponseWriter, r *http.Request) {
	u, err := h.Repo.Usage(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := ImageList{Images: []ImageInfo{}, Chunks: u.Chunks, StoredBytes: u.StoredBytes, GarbageBytes: u.GarbageBytes}
	for _, iu := range u.Images {
		if h.Allow != nil && !h.Allow(r, iu.Name, false) {
			continue
		}
		m, err := h.Repo.Manifest(iu.Name)
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
	return info
}

// readManifest loads the manifest of the image the path names, if the
// request may read it; otherwise it has answered and returns false.
func (h *Handler) readManifest(w http.ResponseWriter, r *http.Request) (string, *image.Manifest, bool) {
	name, ok := pathName(w, r)
	if !ok || !h.allowed(w, r, name, false) {
		return "", nil, false
	}
	m, err := h.Repo.Manifest(name)
	if err != nil {
		h.fail(w, r, err)
		return "", nil, false
	}
	return name, m, true
}

func (h *Handler) getImage(w http.ResponseWriter, r *http.Request) {
	name, m, ok := h.readManifest(w, r)
	if !ok {
		return
	}
	if r.URL.Query().Get("only") == "manifest" {
		var buf bytes.Buffer
		if err := m.Encode(&buf); err != nil {
			h.fail(w, r, err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
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
		if iu.Name == name {
			d.Info = withUsage(d.Info, iu)
		}
	}
	writeJSON(w, http.StatusOK, d)
}

func (h *Handler) putImage(w http.ResponseWriter, r *http.Request) {
	name, ok := pathName(w, r)
	if !ok || !h.allowed(w, r, name, true) {
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
	if !replace {
		_, err := h.Repo.Manifest(name)
		if err == nil {
			writeError(w, http.StatusConflict, CodeExists, fmt.Sprintf("image %s exists (publish with ?replace=true to replace it)", name))
			return
		}
		if !errors.Is(err, image.ErrNotFound) {
			h.fail(w, r, err)
			return
		}
	}
	hashes := m.ChunkHashes()
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
	if err := h.Repo.Publish(r.Context(), m); err != nil {
		h.fail(w, r, err)
		return
	}
	h.forget(name)
	h.log().InfoContext(r.Context(), "image uploaded", "image", name, "replace", replace, "chunks", len(hashes), "remote", r.RemoteAddr)
	writeJSON(w, http.StatusCreated, infoFromManifest(m))
}

func (h *Handler) deleteImage(w http.ResponseWriter, r *http.Request) {
	name, ok := pathName(w, r)
	if !ok || !h.allowed(w, r, name, true) {
		return
	}
	unlock, ok := h.lockName(w, name)
	if !ok {
		return
	}
	defer unlock()
	if err := h.Repo.Remove(r.Context(), name); err != nil {
		h.fail(w, r, err)
		return
	}
	h.forget(name)
	w.WriteHeader(http.StatusNoContent)
}

func (h *Handler) verify(w http.ResponseWriter, r *http.Request) {
	name, m, ok := h.readManifest(w, r)
	if !ok {
		return
	}
	res := VerifyResult{Name: name, OK: true, Chunks: len(m.ChunkHashes())}
	if err := h.Repo.Verify(r.Context(), name, h.VerifyWorkers); err != nil {
		if r.Context().Err() != nil || isImageGone(h.Repo, name) {
			h.fail(w, r, err)
			return
		}
		res.OK, res.Error = false, err.Error()
		h.log().WarnContext(r.Context(), "image verify failed", "image", name, "err", err)
	}
	writeJSON(w, http.StatusOK, res)
}

// isImageGone reports whether image name disappeared (removed during a
// verify), as opposed to missing chunks.
func isImageGone(repo *image.Repo, name string) bool {
	_, err := repo.Manifest(name)
	return errors.Is(err, image.ErrNotFound)
}

func (h *Handler) export(w http.ResponseWriter, r *http.Request) {
	name, ok := pathName(w, r)
	if !ok || !h.allowed(w, r, name, false) {
		return
	}
	if _, err := h.Repo.Manifest(name); err != nil {
		h.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/x-tar")
	w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", name+".pbi"))
	w.WriteHeader(http.StatusOK)
	if err := h.Repo.Export(r.Context(), name, w); err != nil {
		// The status is sent: abort the stream so the client sees a
		// truncated body instead of a well-formed but partial tar.
		h.log().ErrorContext(r.Context(), "image export failed", "image", name, "err", err)
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
	if !h.allowed(w, r, name, true) {
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
			errors.Is(err, syscall.ENOSPC), r.Context().Err() != nil:
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
	writeJSON(w, http.StatusCreated, infoFromManifest(m))
}
