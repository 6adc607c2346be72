package image

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// Upload records: what a capture job uploaded, or was told the repository
// already holds, before it publishes. On the directory, one file per job,
//
//	ROOT/uploads/JOBID   one hex hash per line, appended and fsynced
//
// on an object store (no append), one object per append:
//
//	uploads/JOBID/TIME-N
//
// It survives a server restart (and, in a bucket, is seen by every server
// sharing it). It serves two purposes: a job may publish a manifest only
// with chunks it uploaded (or may read), and GC keeps every chunk a record
// of a still-open job names. The record is removed when the job publishes,
// and by GC once the job is no longer open.

func uploadKey(job int64) string { return "uploads/" + strconv.FormatInt(job, 10) }

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
	ctx := context.Background()
	var err error
	if a, ok := r.obj.(appender); ok {
		err = a.Append(ctx, uploadKey(job), b.Bytes())
	} else {
		key := fmt.Sprintf("%s/%020d-%d", uploadKey(job), time.Now().UnixNano(), r.recordSeq.Add(1))
		err = r.obj.Put(ctx, key, b.Bytes())
	}
	if err != nil {
		return fmt.Errorf("upload record of job %d: %w", job, err)
	}
	return nil
}

// Uploads returns the hashes in job's upload record (empty when none).
func (r *Repo) Uploads(job int64) (map[Hash]struct{}, error) {
	hs, _, err := r.uploads(context.Background(), job)
	return hs, err
}

// uploads returns the hashes of job's record and the time it was last
// appended to.
func (r *Repo) uploads(ctx context.Context, job int64) (map[Hash]struct{}, time.Time, error) {
	out := make(map[Hash]struct{})
	var mod time.Time
	var keys []string
	key := uploadKey(job)
	err := r.obj.List(ctx, key, func(oi ObjectInfo) error {
		if oi.Key == key || strings.HasPrefix(oi.Key, key+"/") {
			keys = append(keys, oi.Key)
			if oi.ModTime.After(mod) {
				mod = oi.ModTime
			}
		}
		return nil
	})
	if err != nil {
		return nil, mod, fmt.Errorf("upload record of job %d: %w", job, err)
	}
	for _, k := range keys {
		f, _, err := r.obj.Open(ctx, k)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, mod, fmt.Errorf("upload record of job %d: %w", job, err)
		}
		err = scanHashes(f, out)
		f.Close()
		if err != nil {
			return nil, mod, fmt.Errorf("upload record of job %d: %w", job, err)
		}
	}
	return out, mod, nil
}

func scanHashes(rd io.Reader, out map[Hash]struct{}) error {
	sc := bufio.NewScanner(rd)
	for sc.Scan() {
		h, err := ParseHash(strings.TrimSpace(sc.Text()))
		if err != nil {
			continue // a line cut by a crash
		}
		out[h] = struct{}{}
	}
	return sc.Err()
}

// DropUploads removes job's upload record.
func (r *Repo) DropUploads(job int64) error {
	ctx := context.Background()
	key := uploadKey(job)
	var keys []string
	err := r.obj.List(ctx, key, func(oi ObjectInfo) error {
		if oi.Key == key || strings.HasPrefix(oi.Key, key+"/") {
			keys = append(keys, oi.Key)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("upload record of job %d: %w", job, err)
	}
	for _, k := range keys {
		if err := r.obj.Delete(ctx, k); err != nil {
			return fmt.Errorf("upload record of job %d: %w", job, err)
		}
	}
	return nil
}

// uploadJobs lists the jobs that have an upload record.
func (r *Repo) uploadJobs(ctx context.Context) ([]int64, error) {
	seen := make(map[int64]bool)
	var ids []int64
	err := r.obj.List(ctx, "uploads/", func(oi ObjectInfo) error {
		first, _, _ := strings.Cut(strings.TrimPrefix(oi.Key, "uploads/"), "/")
		id, err := strconv.ParseInt(first, 10, 64)
		if err != nil || id <= 0 || strconv.FormatInt(id, 10) != first || seen[id] {
			return nil
		}
		seen[id] = true
		ids = append(ids, id)
		return nil
	})
	return ids, err
}
