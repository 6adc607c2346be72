// Package s3store keeps an image repository (image.Backend) in a bucket
// of an S3-compatible object store (AWS S3, SeaweedFS, MinIO, Ceph RGW,
// Garage…), through github.com/minio/minio-go/v7.
//
// A location is a URL:
//
//	s3://BUCKET[/PREFIX]?endpoint=HOST:PORT&region=R&insecure=true&credentials=FILE&profile=P&create=true
//
// endpoint defaults to s3.amazonaws.com; insecure=true talks plain HTTP;
// credentials come from the environment (AWS_ACCESS_KEY_ID,
// AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN) or, with credentials=FILE, from
// an AWS shared-credentials file (profile P, default "default"); never
// from the URL itself. create=true makes the bucket when it is missing.
//
// Open probes whether the store honours conditional PUTs (If-None-Match: *
// and If-Match: ETAG), which let several servers share the bucket safely
// (see image.Conditional), and refuses a store that ignores them unless
// single-server=true says only this server writes to the prefix.
package s3store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/preboot/preboot/image"
)

// Store is an image.Backend on a bucket. Every PUT is acknowledged only
// once the object store holds the whole object (S3 semantics: a PUT is
// atomic and durable when it returns 200), so Sync has nothing to do.
type Store struct {
	c      *minio.Client
	bucket string
	prefix string // "" or ending in "/"
	loc    string
	// single: the store ignores conditional PUTs and the location says
	// only this server writes (Create and Swap check, then PUT).
	single bool
}

// Options are what a location URL says, for callers that build one.
type Options struct {
	Endpoint        string
	Region          string
	Insecure        bool
	Bucket          string
	Prefix          string
	CredentialsFile string
	Profile         string
	Create          bool
	// SingleServer accepts a store that does not honour conditional
	// writes, on the promise that no other server writes to the prefix.
	SingleServer bool
	// Transport replaces the HTTP transport (tests).
	Transport http.RoundTripper
}

// ParseURL reads a location (see the package doc).
func ParseURL(raw string) (Options, error) {
	var o Options
	u, err := url.Parse(raw)
	if err != nil {
		return o, fmt.Errorf("image store %q: %w", raw, err)
	}
	if u.Scheme != "s3" || u.Host == "" {
		return o, fmt.Errorf("image store %q: want s3://BUCKET[/PREFIX]?endpoint=HOST:PORT", raw)
	}
	if u.User != nil {
		return o, fmt.Errorf("image store %q: credentials do not go in the URL: use AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or credentials=FILE", u.Redacted())
	}
	q := u.Query()
	for k := range q {
		switch k {
		case "endpoint", "region", "insecure", "credentials", "profile", "create", "single-server":
		default:
			return o, fmt.Errorf("image store %q: unknown parameter %q", raw, k)
		}
	}
	o.Bucket = u.Host
	o.Prefix = strings.Trim(u.Path, "/")
	o.Endpoint = q.Get("endpoint")
	if o.Endpoint == "" {
		o.Endpoint = "s3.amazonaws.com"
	}
	o.Region = q.Get("region")
	o.Insecure = q.Get("insecure") == "true" || q.Get("insecure") == "1"
	o.CredentialsFile = q.Get("credentials")
	o.Profile = q.Get("profile")
	o.Create = q.Get("create") == "true" || q.Get("create") == "1"
	o.SingleServer = q.Get("single-server") == "true" || q.Get("single-server") == "1"
	return o, nil
}

// Open connects to the bucket a location URL names and checks it exists
// (making it with create=true).
func Open(ctx context.Context, raw string) (*Store, error) {
	o, err := ParseURL(raw)
	if err != nil {
		return nil, err
	}
	return OpenOptions(ctx, o)
}

// OpenOptions is Open with the location already parsed.
func OpenOptions(ctx context.Context, o Options) (*Store, error) {
	creds := credentials.NewEnvAWS()
	if o.CredentialsFile != "" {
		creds = credentials.NewFileAWSCredentials(o.CredentialsFile, o.Profile)
	}
	c, err := minio.New(o.Endpoint, &minio.Options{
		Creds:     creds,
		Secure:    !o.Insecure,
		Region:    o.Region,
		Transport: o.Transport,
	})
	if err != nil {
		return nil, fmt.Errorf("image store s3://%s: %w", o.Bucket, err)
	}
	s := &Store{c: c, bucket: o.Bucket, loc: "s3://" + o.Bucket}
	if o.Prefix != "" {
		s.prefix = o.Prefix + "/"
		s.loc += "/" + o.Prefix
	}
	ok, err := c.BucketExists(ctx, o.Bucket)
	if err != nil {
		return nil, fmt.Errorf("image store %s (endpoint %s): %w", s.loc, o.Endpoint, err)
	}
	if !ok {
		if !o.Create {
			return nil, fmt.Errorf("image store %s (endpoint %s): bucket %q does not exist (add create=true to make it)", s.loc, o.Endpoint, o.Bucket)
		}
		if err := c.MakeBucket(ctx, o.Bucket, minio.MakeBucketOptions{Region: o.Region}); err != nil {
			return nil, fmt.Errorf("image store %s: make bucket: %w", s.loc, err)
		}
	}
	if err := s.probe(ctx); err != nil {
		if !errors.Is(err, errIgnored) {
			return nil, fmt.Errorf("image store %s (endpoint %s): %w", s.loc, o.Endpoint, err)
		}
		if !o.SingleServer {
			return nil, fmt.Errorf("image store %s (endpoint %s): %w; several servers sharing it could give two publishes the same version number: "+
				"use a store that honours them (AWS S3, MinIO, SeaweedFS, …) or, if only this server ever writes to this prefix, add single-server=true", s.loc, o.Endpoint, err)
		}
		s.single = true
	}
	return s, nil
}

// String is the location, s3://BUCKET[/PREFIX].
func (s *Store) String() string { return s.loc }

func notFound(err error) bool {
	r := minio.ToErrorResponse(err)
	return r.StatusCode == http.StatusNotFound || r.Code == "NoSuchKey"
}

func (s *Store) wrap(key string, err error) error {
	if notFound(err) {
		return fmt.Errorf("%s/%s: %w", s.loc, key, image.ErrNotFound)
	}
	return fmt.Errorf("%s/%s: %w", s.loc, key, err)
}

// Put uploads data in one PUT with its MD5 (the store refuses a body
// damaged on the way).
func (s *Store) Put(ctx context.Context, key string, data []byte) error {
	_, err := s.c.PutObject(ctx, s.bucket, s.prefix+key, bytes.NewReader(data), int64(len(data)), s.putOpts())
	if err != nil {
		return s.wrap(key, err)
	}
	return nil
}

// Open sends one GET and returns its body: the whole object as it was
// when the GET was answered, even while another server replaces it (a
// head.json a publish rewrites). minio.Object would send a second request
// conditional on the first ETag, which fails (412) after such a change.
func (s *Store) Open(ctx context.Context, key string) (io.ReadCloser, int64, error) {
	body, info, _, err := minio.Core{Client: s.c}.GetObject(ctx, s.bucket, s.prefix+key, minio.GetObjectOptions{})
	if err != nil {
		return nil, 0, s.wrap(key, err)
	}
	return body, info.Size, nil
}

// Stat is a HEAD of the object.
func (s *Store) Stat(ctx context.Context, key string) (image.ObjectInfo, error) {
	st, err := s.c.StatObject(ctx, s.bucket, s.prefix+key, minio.StatObjectOptions{})
	if err != nil {
		return image.ObjectInfo{}, s.wrap(key, err)
	}
	return image.ObjectInfo{Key: key, Size: st.Size, ModTime: st.LastModified}, nil
}

// List pages through the keys under prefix.
func (s *Store) List(ctx context.Context, prefix string, fn func(image.ObjectInfo) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // stops the listing goroutine when fn fails
	for o := range s.c.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: s.prefix + prefix, Recursive: true}) {
		if o.Err != nil {
			return fmt.Errorf("%s: list %s: %w", s.loc, prefix, o.Err)
		}
		key, ok := strings.CutPrefix(o.Key, s.prefix)
		if !ok || strings.HasSuffix(key, "/") {
			continue
		}
		if err := fn(image.ObjectInfo{Key: key, Size: o.Size, ModTime: o.LastModified}); err != nil {
			return err
		}
	}
	return ctx.Err()
}

// Delete removes the object (S3 answers 204 for a missing one too).
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := s.c.RemoveObject(ctx, s.bucket, s.prefix+key, minio.RemoveObjectOptions{}); err != nil && !notFound(err) {
		return s.wrap(key, err)
	}
	return nil
}

// Touch copies the object onto itself with new metadata: a server-side
// copy that gives it a new LastModified (what GC's grace period reads).
func (s *Store) Touch(ctx context.Context, key string) error {
	_, err := s.c.CopyObject(ctx,
		minio.CopyDestOptions{Bucket: s.bucket, Object: s.prefix + key, ReplaceMetadata: true,
			UserMetadata: map[string]string{"Preboot-Touched": time.Now().UTC().Format(time.RFC3339)}},
		minio.CopySrcOptions{Bucket: s.bucket, Object: s.prefix + key})
	if err != nil {
		return s.wrap(key, err)
	}
	return nil
}

// Sync does nothing: an acknowledged PUT or DELETE is durable.
func (s *Store) Sync(context.Context) error { return nil }

// Client is the underlying client (tests damage objects through it).
func (s *Store) Client() *minio.Client { return s.c }

// Bucket and Prefix locate the objects (Prefix is "" or ends in "/").
func (s *Store) Bucket() string { return s.bucket }

// Prefix is prepended to every key ("" or ending in "/").
func (s *Store) Prefix() string { return s.prefix }

var _ image.Backend = (*Store)(nil)
