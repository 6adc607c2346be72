package s3store_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/minio/minio-go/v7/pkg/signer"

	"github.com/preboot/preboot/image"
	"github.com/preboot/preboot/image/repotest"
	"github.com/preboot/preboot/image/s3store"
	"github.com/preboot/preboot/image/s3store/s3test"
)

// ignoring is the transport to a store that ignores conditional writes:
// it drops If-None-Match and If-Match from every request and signs it
// again, so the real server sees a plain PUT.
type ignoring struct {
	mu      sync.Mutex
	dropped int
}

var region = regexp.MustCompile(`Credential=[^/]+/[0-9]+/([^/]+)/`)

func (ig *ignoring) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Header.Get("If-None-Match") == "" && req.Header.Get("If-Match") == "" {
		return http.DefaultTransport.RoundTrip(req)
	}
	ig.mu.Lock()
	ig.dropped++
	ig.mu.Unlock()
	r := req.Clone(req.Context())
	r.Header.Del("If-None-Match")
	r.Header.Del("If-Match")
	loc := "us-east-1"
	if m := region.FindStringSubmatch(r.Header.Get("Authorization")); m != nil {
		loc = m[1]
	}
	r.Header.Del("Authorization")
	if r.Body != nil && r.Header.Get("Content-Encoding") == "aws-chunked" {
		// minio-go signs a PUT over plain HTTP chunk by chunk, each
		// chunk's signature chained to the header's: decode the body
		// and send it whole, signed by its SHA-256.
		payload, err := decodeChunked(r.Body)
		if err != nil {
			return nil, err
		}
		r.Header.Del("Content-Encoding")
		r.Header.Del("X-Amz-Decoded-Content-Length")
		sum := sha256.Sum256(payload)
		r.Header.Set("X-Amz-Content-Sha256", hex.EncodeToString(sum[:]))
		r.Body = io.NopCloser(bytes.NewReader(payload))
		r.ContentLength = int64(len(payload))
	}
	r = signer.SignV4(*r, s3test.AccessKey, s3test.SecretKey, "", loc)
	return http.DefaultTransport.RoundTrip(r)
}

// decodeChunked reads an aws-chunked body: "HEXSIZE;chunk-signature=…\r\n"
// DATA "\r\n", …, ending with a chunk of size 0.
func decodeChunked(body io.ReadCloser) ([]byte, error) {
	defer body.Close()
	br := bufio.NewReader(body)
	var out []byte
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return nil, fmt.Errorf("aws-chunked body: %w", err)
		}
		size, _, _ := strings.Cut(strings.TrimSpace(line), ";")
		n, err := strconv.ParseInt(size, 16, 64)
		if err != nil {
			return nil, fmt.Errorf("aws-chunked body: chunk size %q: %w", size, err)
		}
		if n == 0 {
			return out, nil
		}
		chunk := make([]byte, n+2)
		if _, err := io.ReadFull(br, chunk); err != nil {
			return nil, fmt.Errorf("aws-chunked body: %w", err)
		}
		out = append(out, chunk[:n]...)
	}
}

// TestConditionalWrites: the SeaweedFS the tests run honours conditional
// PUTs (the probe passes; a create over an object and a swap with a stale
// ETag are refused, racing creates have one winner); a store that ignores
// them is refused at open unless single-server=true, which the repository
// then warns about.
func TestConditionalWrites(t *testing.T) {
	srv := s3test.Start(t)
	ctx := t.Context()
	b, err := s3store.Open(ctx, srv.URL("preboot", "cond"))
	if err != nil {
		t.Fatalf("Open (the probe) on SeaweedFS: %v", err)
	}
	if b.SingleWriter() {
		t.Fatal("SeaweedFS taken for a store without conditional writes")
	}
	if err := b.Create(ctx, "k", []byte("a")); err != nil {
		t.Fatal(err)
	}
	if err := b.Create(ctx, "k", []byte("b")); !errors.Is(err, image.ErrConflict) {
		t.Fatalf("create over an object: %v, want ErrConflict", err)
	}
	data, tag, err := b.ReadTag(ctx, "k")
	if err != nil || string(data) != "a" {
		t.Fatalf("ReadTag = %q, %v", data, err)
	}
	if err := b.Swap(ctx, "k", []byte("c"), tag); err != nil {
		t.Fatal(err)
	}
	if err := b.Swap(ctx, "k", []byte("d"), tag); !errors.Is(err, image.ErrConflict) {
		t.Fatalf("swap with a stale tag: %v, want ErrConflict", err)
	}
	if err := b.Swap(ctx, "absent", []byte("e"), tag); !errors.Is(err, image.ErrConflict) {
		t.Fatalf("swap of a missing object: %v, want ErrConflict", err)
	}
	// Creates racing on one key: exactly one wins.
	const racers = 16
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins, conflicts := 0, 0
	for i := range racers {
		wg.Go(func() {
			err := b.Create(ctx, "race", []byte{byte(i)})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins++
			case errors.Is(err, image.ErrConflict):
				conflicts++
			default:
				t.Errorf("racer %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	if wins != 1 || conflicts != racers-1 {
		t.Fatalf("%d racing creates: %d won, %d conflicts; want exactly one winner", racers, wins, conflicts)
	}
	var left int
	if err := b.List(ctx, ".preboot-probe/", func(image.ObjectInfo) error { left++; return nil }); err != nil || left != 0 {
		t.Fatalf("the probe left %d objects (%v)", left, err)
	}

	// A store that ignores the conditions.
	o, err := s3store.ParseURL(srv.URL("preboot", "ignoring"))
	if err != nil {
		t.Fatal(err)
	}
	ig := &ignoring{}
	o.Transport = ig
	if _, err := s3store.OpenOptions(ctx, o); err == nil || !strings.Contains(err.Error(), "single-server=true") {
		t.Fatalf("Open of a store that ignores conditional writes: %v, want a refusal naming single-server=true", err)
	}
	if ig.dropped == 0 {
		t.Fatal("the transport dropped no condition: the probe sent none")
	}
	o.SingleServer = true
	single, err := s3store.OpenOptions(ctx, o)
	if err != nil {
		t.Fatalf("Open with single-server=true: %v", err)
	}
	if !single.SingleWriter() {
		t.Fatal("single-server store does not say so")
	}
	logs := &strings.Builder{}
	repo := image.OpenRepoBackend(single, image.RepoOptions{GCGrace: -1, Logger: textLogger(logs)})
	if !strings.Contains(logs.String(), "does not honour conditional writes") {
		t.Fatalf("no warning at open; log: %s", logs.String())
	}
	// One server alone still publishes and numbers versions.
	d := repotest.NewDisk(50)
	for want := 1; want <= 2; want++ {
		m, err := repotest.Capture(ctx, d, repo, "solo")
		if err != nil {
			t.Fatal(err)
		}
		m.Source = map[string]string{"n": string(rune('0' + want))}
		if v, err := repo.PublishVersion(ctx, m); err != nil || v != want {
			t.Fatalf("publish %d on a single-server store: @%d, %v", want, v, err)
		}
	}
	if _, err := repo.Rollback(ctx, "solo", 0); err != nil {
		t.Fatal(err)
	}
	if _, v, err := repo.Resolve("solo"); err != nil || v != 1 {
		t.Fatalf("after rollback solo is @%d, %v", v, err)
	}
}

func textLogger(w io.Writer) *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }
