package s3store

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/minio/minio-go/v7"

	"github.com/preboot/preboot/image"
)

// errIgnored: the store accepted a write its condition should have
// refused.
var errIgnored = errors.New("the store does not honour conditional writes (If-None-Match: * and If-Match on PUT)")

// maxTagged bounds what ReadTag reads (a head.json is a few bytes).
const maxTagged = 1 << 20

// conflict tells whether a conditional PUT was refused because of its
// condition: 412 Precondition Failed, 409 ConditionalRequestConflict (AWS
// S3, when another conditional write to the key is in flight), or 404 (an
// If-Match on an object removed meanwhile).
func conflict(err error) bool {
	r := minio.ToErrorResponse(err)
	return r.StatusCode == http.StatusPreconditionFailed || r.StatusCode == http.StatusConflict ||
		r.Code == minio.PreconditionFailed || r.Code == "ConditionalRequestConflict" || notFound(err)
}

func (s *Store) putOpts() minio.PutObjectOptions {
	return minio.PutObjectOptions{ContentType: "application/octet-stream", SendContentMd5: true, DisableMultipart: true}
}

func (s *Store) putCond(ctx context.Context, key string, data []byte, opts minio.PutObjectOptions) error {
	_, err := s.c.PutObject(ctx, s.bucket, s.prefix+key, bytes.NewReader(data), int64(len(data)), opts)
	if err != nil && conflict(err) {
		return fmt.Errorf("%s/%s: %w", s.loc, key, image.ErrConflict)
	}
	if err != nil {
		return s.wrap(key, err)
	}
	return nil
}

// Create is a PUT with If-None-Match: *: the store refuses it (412) when
// the key exists, and of two such PUTs racing one wins.
func (s *Store) Create(ctx context.Context, key string, data []byte) error {
	if s.single {
		if _, err := s.Stat(ctx, key); err == nil {
			return fmt.Errorf("%s/%s: %w", s.loc, key, image.ErrConflict)
		} else if !errors.Is(err, image.ErrNotFound) {
			return err
		}
		return s.Put(ctx, key, data)
	}
	opts := s.putOpts()
	opts.SetMatchETagExcept("*")
	return s.putCond(ctx, key, data, opts)
}

// ReadTag is one GET; the tag is the object's ETag.
func (s *Store) ReadTag(ctx context.Context, key string) ([]byte, string, error) {
	body, info, _, err := minio.Core{Client: s.c}.GetObject(ctx, s.bucket, s.prefix+key, minio.GetObjectOptions{})
	if err != nil {
		return nil, "", s.wrap(key, err)
	}
	defer body.Close()
	data, err := io.ReadAll(io.LimitReader(body, maxTagged))
	if err != nil {
		return nil, "", s.wrap(key, err)
	}
	if info.ETag == "" {
		return nil, "", fmt.Errorf("%s/%s: the store sent no ETag", s.loc, key)
	}
	return data, info.ETag, nil
}

// Swap is a PUT with If-Match: TAG (If-None-Match: * for tag "").
func (s *Store) Swap(ctx context.Context, key string, data []byte, tag string) error {
	if tag == "" {
		return s.Create(ctx, key, data)
	}
	if s.single {
		_, now, err := s.ReadTag(ctx, key)
		if errors.Is(err, image.ErrNotFound) || (err == nil && now != tag) {
			return fmt.Errorf("%s/%s: %w", s.loc, key, image.ErrConflict)
		}
		if err != nil {
			return err
		}
		return s.Put(ctx, key, data)
	}
	opts := s.putOpts()
	opts.SetMatchETag(tag)
	return s.putCond(ctx, key, data, opts)
}

// SingleWriter tells whether the store ignores conditional writes and the
// location accepted that (single-server=true): the repository warns.
func (s *Store) SingleWriter() bool { return s.single }

// probe checks, on an object of its own under the prefix
// (.preboot-probe/RANDOM, removed afterwards), that the store refuses a
// create over an existing object and a replace with a stale ETag, and
// accepts a replace with the current one. It fails wrapping errIgnored
// when the store ignores a condition, with the store's error otherwise.
func (s *Store) probe(ctx context.Context) (err error) {
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	key := ".preboot-probe/" + hex.EncodeToString(rnd[:])
	defer func() {
		if derr := s.Delete(ctx, key); derr != nil && err == nil {
			err = fmt.Errorf("remove the probe object: %w", derr)
		}
	}()
	if err := s.Create(ctx, key, []byte("1")); err != nil {
		return fmt.Errorf("probe: create %s: %w", key, err)
	}
	if err := s.Create(ctx, key, []byte("2")); err == nil {
		return fmt.Errorf("probe: a PUT with If-None-Match: * replaced an existing object: %w", errIgnored)
	} else if !errors.Is(err, image.ErrConflict) {
		return fmt.Errorf("probe: %w", err)
	}
	data, tag, err := s.ReadTag(ctx, key)
	if err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	if string(data) != "1" {
		return fmt.Errorf("probe: object holds %q after a refused create: %w", data, errIgnored)
	}
	if err := s.Swap(ctx, key, []byte("3"), tag); err != nil {
		return fmt.Errorf("probe: a PUT with If-Match of the current ETag: %w", err)
	}
	if err := s.Swap(ctx, key, []byte("4"), tag); err == nil {
		return fmt.Errorf("probe: a PUT with If-Match of a stale ETag replaced the object: %w", errIgnored)
	} else if !errors.Is(err, image.ErrConflict) {
		return fmt.Errorf("probe: %w", err)
	}
	return nil
}

var _ image.Conditional = (*Store)(nil)
