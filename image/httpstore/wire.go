// Package httpstore carries Preboot's image repository over HTTP: Client
// implements image.ChunkStore and image.Publisher (plus the admin calls
// list/show/remove/verify/export/import) against a Preboot server, and
// Handler serves an *image.Repo under /api/v1/.
//
// Routes (all errors are JSON {"error": "...", "code": "..."}):
//
//	POST   /api/v1/chunks/missing        {"hashes":["hex",..]} → {"missing":["hex",..]}
//	PUT    /api/v1/chunks/{hash}         zstd frame → 201 stored, 204 already there, 422 corrupt
//	GET    /api/v1/chunks/{hash}         → the zstd frame, 404 if absent
//	GET    /api/v1/images                → ImageList
//	PUT    /api/v1/images/{name}         manifest JSON → 201; 409 code "missing_chunks" (+ "missing"),
//	                                     409 code "exists" (unless ?replace=true), 422 invalid
//	GET    /api/v1/images/{name}         → ImageDetail (?only=manifest: the bare manifest JSON)
//	DELETE /api/v1/images/{name}         → 204 (NAME: every version; NAME@N: that version)
//	GET    /api/v1/images/{name}/versions → ImageVersions
//	POST   /api/v1/images/{name}/rollback {"to":N} (optional) → ImageVersions; 409 code "no_version"
//	POST   /api/v1/images/{name}/verify  → VerifyResult
//	GET    /api/v1/images/{name}/export  → the portable tar stream (image.Repo.Export)
//	POST   /api/v1/images/import?name=NEW  tar body → 201 ImageInfo; 409 code "exists"
//	POST   /api/v1/images/gc             → image.GCStats
//
// {name} is NAME (the current version) or NAME@N where a version is read
// (show, verify, export, remove). Every publish adds a version. A write to
// a name another request is writing is 409 code "busy"; a write past the
// repository's quota is 507 code "quota".
//
// Chunk requests carry ?image=NAME or NAME@N (Client.Image); a job token
// must (see Handler and Access).
package httpstore

import (
	"time"

	"github.com/preboot/preboot/image"
)

// APIPrefix is where the routes live on the server.
const APIPrefix = "/api/v1"

// Error codes in the JSON error body, for answers a client acts on.
const (
	CodeMissingChunks = "missing_chunks"
	CodeExists        = "exists"
	CodeBusy          = "busy" // another request is writing the image
	CodeCorrupt       = "corrupt"
	CodeInvalid       = "invalid"
	CodeNotFound      = "not_found"
	CodeForbidden     = "forbidden"
	CodeTooLarge      = "too_large"
	CodeNoSpace       = "no_space"
	CodeQuota         = "quota"      // 507: imaging.max_repo_size reached
	CodeNoVersion     = "no_version" // 409: no older version to roll back to
)

// VersionHeader carries the version of a bare manifest answer
// (GET /images/{name}?only=manifest).
const VersionHeader = "Preboot-Image-Version"

// ImageVersions answers GET /images/{name}/versions and a rollback.
type ImageVersions struct {
	Name     string          `json:"name"`
	Current  int             `json:"current"`
	Versions []image.Version `json:"versions"`
}

// RollbackRequest is the body of POST /images/{name}/rollback: the version
// to make current, 0 (or no body) for the one before the current.
type RollbackRequest struct {
	To int `json:"to,omitempty"`
}

// ErrorBody is the JSON body of every non-2xx answer.
type ErrorBody struct {
	Error string `json:"error"`
	Code  string `json:"code,omitempty"`
	// Missing lists (up to MaxMissingListed) chunk hashes a manifest
	// references that the repository lacks; MissingCount counts them all.
	Missing      []string `json:"missing,omitempty"`
	MissingCount int      `json:"missing_count,omitempty"`
}

// MaxMissingListed bounds the hashes listed in a 409 missing-chunks answer.
const MaxMissingListed = 1000

// MissingRequest is the body of POST /api/v1/chunks/missing.
type MissingRequest struct {
	Hashes []string `json:"hashes"`
}

// MissingResponse answers it: the subset of hashes the repository lacks.
type MissingResponse struct {
	Missing []string `json:"missing"`
}

// PartitionInfo summarises one partition of an image.
type PartitionInfo struct {
	Index  int    `json:"index"`
	Start  int64  `json:"start"`
	Size   int64  `json:"size"`
	FSType string `json:"fstype"`
	Used   int64  `json:"used"`
}

// ImageInfo is one image in a listing: manifest summary plus its share of
// the repository (Stored = compressed size of its distinct chunks, Unique
// = what removing it frees, Shared = the rest).
type ImageInfo struct {
	Name       string            `json:"name"`
	Created    time.Time         `json:"created"`
	Source     map[string]string `json:"source,omitempty"`
	ChunkSize  int64             `json:"chunk_size"`
	Logical    int64             `json:"logical"`
	Used       int64             `json:"used"`
	Stored     int64             `json:"stored"`
	Unique     int64             `json:"unique"`
	Shared     int64             `json:"shared"`
	Chunks     int               `json:"chunks"`
	Partitions []PartitionInfo   `json:"partitions"`
	// Version is the version described (the current one in a listing);
	// Versions how many versions the image keeps.
	Version  int `json:"version"`
	Versions int `json:"versions,omitempty"`
	// Warnings are the capture's (encrypted or unknown data copied raw…).
	Warnings []string `json:"warnings,omitempty"`
}

// ImageList is the answer of GET /api/v1/images.
type ImageList struct {
	Images []ImageInfo `json:"images"`
	// Repository totals: every chunk file, and what GC would free.
	Chunks       int   `json:"chunks"`
	StoredBytes  int64 `json:"stored_bytes"`
	GarbageBytes int64 `json:"garbage_bytes"`
	// MaxBytes is the repository's size limit (imaging.max_repo_size; 0:
	// none).
	MaxBytes int64 `json:"max_bytes,omitempty"`
}

// ImageDetail is the answer of GET /api/v1/images/{name}.
type ImageDetail struct {
	Info     ImageInfo       `json:"info"`
	Manifest *image.Manifest `json:"manifest"`
}

// VerifyResult is the answer of POST /api/v1/images/{name}/verify.
type VerifyResult struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Chunks int    `json:"chunks"`
	Error  string `json:"error,omitempty"`
}

// infoFromManifest fills the manifest part of an ImageInfo.
func infoFromManifest(m *image.Manifest) ImageInfo {
	info := ImageInfo{
		Name: m.Name, Created: m.Created, Source: m.Source, ChunkSize: m.ChunkSize,
		Logical: m.Sizes.Logical, Used: m.Sizes.Used, Partitions: []PartitionInfo{}, Warnings: m.Warnings,
	}
	for _, p := range m.Partitions {
		var used int64
		for _, e := range p.Used {
			used += e.Length
		}
		info.Partitions = append(info.Partitions, PartitionInfo{Index: p.Index, Start: p.Start, Size: p.Size, FSType: p.FSType, Used: used})
	}
	return info
}
