package image

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Upload records: what a capture job uploaded, or was told the repository
// already holds, before it publishes. One file per job,
//
//	ROOT/uploads/JOBID   one hex hash per line, appended and fsynced
//
// It survives a server restart. It serves two purposes: a job may publish
// a manifest only with chunks it uploaded (or may read), and GC keeps
// every chunk a record of a still-open job names. The record is removed
// when the job publishes, and by GC once the job is no longer open.

func (r *Repo) uploadPath(job int64) string {
	return filepath.Join(r.root, "uploads", strconv.FormatInt(job, 10))
}

// RecordUploads appends hashes to job's upload record, durably.
func (r *Repo) RecordUploads(job int64, hashes []Hash) error {
	if len(hashes) == 0 {
		return nil
	}
	if job <= 0 {
		return fmt.Errorf("upload record: bad job id %d", job)
	}
	var b bytes.Buffer
	for _, h := range hashes {
		b.WriteString(h.String())
		b.WriteByte('\n')
	}
	f, err := os.OpenFile(r.uploadPath(job), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("upload record of job %d: %w", job, err)
	}
	if _, err := f.Write(b.Bytes()); err != nil {
		f.Close()
		return fmt.Errorf("upload record of job %d: %w", job, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("upload record of job %d: %w", job, err)
	}
	return f.Close()
}

// Uploads returns the hashes in job's upload record (empty when none).
func (r *Repo) Uploads(job int64) (map[Hash]struct{}, error) {
	out := make(map[Hash]struct{})
	f, err := os.Open(r.uploadPath(job))
	if errors.Is(err, fs.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return nil, fmt.Errorf("upload record of job %d: %w", job, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		h, err := ParseHash(strings.TrimSpace(sc.Text()))
		if err != nil {
			continue // a line cut by a crash
		}
		out[h] = struct{}{}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("upload record of job %d: %w", job, err)
	}
	return out, nil
}

// DropUploads removes job's upload record.
func (r *Repo) DropUploads(job int64) error {
	if err := os.Remove(r.uploadPath(job)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("upload record of job %d: %w", job, err)
	}
	return nil
}

// uploadJobs lists the jobs that have an upload record.
func (r *Repo) uploadJobs() ([]int64, error) {
	ents, err := os.ReadDir(filepath.Join(r.root, "uploads"))
	if err != nil {
		return nil, err
	}
	var ids []int64
	for _, e := range ents {
		id, err := strconv.ParseInt(e.Name(), 10, 64)
		if err != nil || id <= 0 || !e.Type().IsRegular() {
			continue
		}
		ids = append(ids, id)
	}
	return ids, nil
}
