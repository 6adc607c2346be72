// Package s3test starts a real S3 server for tests: SeaweedFS (`weed
// server -s3`) on loopback, on free ports, over a temporary directory,
// stopped by its PID when the test ends.
//
// The binary is not a dependency of Preboot's module: `make s3server`
// builds it once from SeaweedFS's own module into DefaultBinary (or
// PREBOOT_WEED names one). Without it the tests that need it skip, saying
// so (PREBOOT_REQUIRE_S3=1 makes that a failure).
package s3test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// Access key and secret of the server's one identity (test only).
const (
	AccessKey = "preboot-test"
	SecretKey = "preboot-test-secret-key"
)

// WeedVersion is the SeaweedFS module version the Makefile builds (its
// s3server target; keep the two equal).
const WeedVersion = "v0.0.0-20261109003541-7506e5f91cd6"

// DefaultBinary is where `make s3server` puts it: a machine-wide cache
// outside the work tree, so fresh clones (CI) reuse it.
const DefaultBinary = "/var/cache/preboot/s3server/weed-" + WeedVersion

// Binary returns the SeaweedFS binary: $PREBOOT_WEED, else DefaultBinary.
func Binary() (string, error) {
	p := os.Getenv("PREBOOT_WEED")
	if p == "" {
		p = DefaultBinary
	}
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("no SeaweedFS binary (run `make s3server`, or set PREBOOT_WEED): %w", err)
	}
	return p, nil
}

// Server is a running SeaweedFS.
type Server struct {
	bin, dir, creds string
	ports           []int
	cmd             *exec.Cmd
	exited          chan struct{}
	// Endpoint is HOST:PORT of the S3 API.
	Endpoint string
}

// Start starts a server for t (skipping t when there is no binary) and
// stops it when t ends.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		if os.Getenv("PREBOOT_REQUIRE_S3") != "" {
			t.Fatalf("S3 server required: %v", err)
		}
		t.Skipf("S3 tests skipped: %v", err)
	}
	s := &Server{bin: bin, dir: t.TempDir()}
	s.creds = filepath.Join(s.dir, "credentials")
	if err := os.WriteFile(s.creds, []byte("[default]\naws_access_key_id = "+AccessKey+"\naws_secret_access_key = "+SecretKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	conf := `{"identities":[{"name":"preboot","credentials":[{"accessKey":"` + AccessKey + `","secretKey":"` + SecretKey + `"}],"actions":["Admin","Read","List","Tagging","Write"]}]}`
	if err := os.WriteFile(filepath.Join(s.dir, "s3.json"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(s.dir, "data"), 0o755); err != nil {
		t.Fatal(err)
	}
	s.ports = freePorts(t, 7)
	s.Endpoint = "127.0.0.1:" + strconv.Itoa(s.ports[6])
	t.Cleanup(s.Stop)
	if err := s.start(t.Context()); err != nil {
		t.Fatal(err)
	}
	return s
}

// freePorts finds n TCP ports free on loopback now.
func freePorts(t testing.TB, n int) []int {
	var ls []net.Listener
	var ps []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ps = append(ps, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ps
}

func (s *Server) start(ctx context.Context) error {
	p := func(i int) string { return strconv.Itoa(s.ports[i]) }
	s.cmd = exec.Command(s.bin, "server",
		"-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-dir="+filepath.Join(s.dir, "data"),
		"-master.port="+p(0), "-master.port.grpc="+p(1), "-master.telemetry=false", "-master.volumeSizeLimitMB=64",
		"-volume.port="+p(2), "-volume.port.grpc="+p(3), "-volume.max=0",
		"-filer", "-filer.port="+p(4), "-filer.port.grpc="+p(5),
		"-s3", "-s3.port="+p(6), "-s3.port.grpc=0", "-s3.port.iceberg=0", "-s3.port.lance=0",
		"-s3.config="+filepath.Join(s.dir, "s3.json"), "-s3.iam=false")
	log, err := os.OpenFile(filepath.Join(s.dir, "weed.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer log.Close()
	s.cmd.Stdout, s.cmd.Stderr = log, log
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", s.bin, err)
	}
	s.exited = make(chan struct{})
	go func(c *exec.Cmd, done chan struct{}) { _ = c.Wait(); close(done) }(s.cmd, s.exited)
	return s.waitReady(ctx)
}

// waitReady waits (at most 90 s) until a bucket can be made and listed.
func (s *Server) waitReady(ctx context.Context) error {
	c, err := s.Client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	var last error
	for {
		select {
		case <-s.exited:
			return fmt.Errorf("SeaweedFS exited at start: %s", s.logTail())
		case <-ctx.Done():
			return fmt.Errorf("SeaweedFS not ready after 90 s (last: %v): %s", last, s.logTail())
		case <-time.After(300 * time.Millisecond):
		}
		if err := c.MakeBucket(ctx, "preboot-ready", minio.MakeBucketOptions{}); err != nil {
			if r := minio.ToErrorResponse(err); r.Code != "BucketAlreadyOwnedByYou" && r.Code != "BucketAlreadyExists" {
				last = err
				continue
			}
		}
		if _, err := c.PutObject(ctx, "preboot-ready", "probe", nil, 0, minio.PutObjectOptions{}); err != nil {
			last = err
			continue
		}
		return nil
	}
}

func (s *Server) logTail() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "weed.log"))
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// Client is a client of the server with the test identity.
func (s *Server) Client() (*minio.Client, error) {
	return minio.New(s.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(AccessKey, SecretKey, "")})
}

// URL is the image store location of bucket/prefix on this server
// (credentials from a file; the bucket made when missing).
func (s *Server) URL(bucket, prefix string) string {
	u := "s3://" + bucket
	if prefix != "" {
		u += "/" + prefix
	}
	return u + "?endpoint=" + s.Endpoint + "&insecure=true&create=true&credentials=" + s.creds
}

// CredentialsFile is the AWS shared-credentials file of the test identity.
func (s *Server) CredentialsFile() string { return s.creds }

// Stop stops the server by its PID (SIGTERM, then SIGKILL after 10 s).
func (s *Server) Stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	select {
	case <-s.exited:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
}

// Kill stops the server at once (SIGKILL by PID), as a crash would.
func (s *Server) Kill() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.exited
}

// Restart starts the server again on the same directory and ports.
func (s *Server) Restart(ctx context.Context) error {
	s.Stop()
	return s.start(ctx)
}
