package tftp

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// These tests download with the TFTP clients Debian ships (curl, atftp, tftp-hpa) from a server
// on a random loopback port. The clients must be installed: apt-get install curl atftp tftp-hpa.

func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is needed for this test (apt-get install curl atftp tftp-hpa): %v", name, err)
	}
	return p
}

// runClient runs a client command, bounded in time, and returns its combined output and error.
func runClient(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, requireTool(t, name), args...)
	cmd.Dir = t.TempDir()
	cmd.Stdin = nil
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%s %v did not finish in time; output:\n%s", name, args, out.String())
	}
	return out.String(), err
}

type clientFixture struct {
	root  string
	files map[string][]byte
	addr  netip.AddrPort
	port  string
}

func newClientFixture(t *testing.T) *clientFixture {
	t.Helper()
	f := &clientFixture{root: t.TempDir(), files: map[string][]byte{}}
	add := func(name string, data []byte) {
		f.files[name] = data
		writeFile(t, filepath.Join(f.root, name), data)
	}
	add("small.bin", randomBytes(20, 1<<20+123))
	add("exact.bin", randomBytes(21, 1468*64))
	add("empty", nil)
	add("boot/pxelinux.0", randomBytes(22, 40000))
	add("text.txt", []byte("line one\nline two\r\nbare\rcr\n\nend"))
	// More than 65535 blocks of 512 bytes: the block number wraps.
	add("rollover.bin", randomBytes(23, 512*65536+512*3+17))
	mustDo(t, os.Mkdir(filepath.Join(f.root, "dir"), 0o755))
	mustDo(t, os.Symlink("/etc/passwd", filepath.Join(f.root, "escape")))
	mustDo(t, os.Symlink("../../../../../../etc/passwd", filepath.Join(f.root, "escape-rel")))
	mustDo(t, os.Symlink("/dev/zero", filepath.Join(f.root, "zero")))
	mustDo(t, os.Symlink("boot/pxelinux.0", filepath.Join(f.root, "inside-link")))
	mustDo(t, syscall.Mkfifo(filepath.Join(f.root, "fifo"), 0o644))
	f.files["inside-link"] = f.files["boot/pxelinux.0"]

	gen := GeneratorFunc(func(ctx context.Context, req Request) (io.ReadSeeker, int64, error) {
		if name, ok := strings.CutPrefix(req.Filename, "generated/"); ok {
			s := fmt.Sprintf("# config for %s, asked from %s\nlabel linux\n", name, req.Peer.Addr())
			return strings.NewReader(s), int64(len(s)), nil
		}
		return nil, 0, fs.ErrNotExist
	})
	f.addr = startServer(t, &Server{Root: f.root, Generator: gen})
	f.port = fmt.Sprint(f.addr.Port())
	return f
}

func mustDo(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func (f *clientFixture) check(t *testing.T, out, name string) {
	t.Helper()
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatalf("no output file: %v", err)
	}
	want := f.files[name]
	if sha(got) != sha(want) {
		t.Fatalf("%s: got %d bytes (sha256 %x), want %d bytes (sha256 %x)", name, len(got), sha(got), len(want), sha(want))
	}
}

func TestRealClients(t *testing.T) {
	f := newClientFixture(t)
	url := func(name string) string { return "tftp://127.0.0.1:" + f.port + "/" + name }

	t.Run("curl", func(t *testing.T) {
		for _, c := range []struct {
			file string
			blk  int
		}{{"small.bin", 512}, {"small.bin", 1468}, {"small.bin", 8192}, {"small.bin", 65464}, {"exact.bin", 1468},
			{"empty", 512}, {"boot/pxelinux.0", 1468}, {"inside-link", 512}, {"rollover.bin", 512}} {
			t.Run(fmt.Sprintf("%s/%d", c.file, c.blk), func(t *testing.T) {
				out := filepath.Join(t.TempDir(), "out")
				if o, err := runClient(t, "curl", "-sS", "-o", out, "--tftp-blksize", fmt.Sprint(c.blk), url(c.file)); err != nil {
					t.Fatalf("curl: %v\n%s", err, o)
				}
				f.check(t, out, c.file)
			})
		}
	})

	t.Run("atftp", func(t *testing.T) {
		for _, w := range []int{1, 16, 64} {
			for _, blk := range []int{512, 1468, 8192} {
				t.Run(fmt.Sprintf("window%d/blksize%d", w, blk), func(t *testing.T) {
					out := filepath.Join(t.TempDir(), "out")
					o, err := runClient(t, "atftp", "--get", "-r", "small.bin", "-l", out,
						"--option", fmt.Sprintf("blksize %d", blk), "--option", fmt.Sprintf("windowsize %d", w),
						"--option", "tsize 0", "127.0.0.1", f.port)
					if err != nil {
						t.Fatalf("atftp: %v\n%s", err, o)
					}
					f.check(t, out, "small.bin")
				})
			}
		}
	})

	t.Run("tftp-hpa", func(t *testing.T) {
		for _, file := range []string{"small.bin", "empty", "boot/pxelinux.0", "/boot/pxelinux.0", `boot\pxelinux.0`} {
			t.Run(file, func(t *testing.T) {
				out := filepath.Join(t.TempDir(), "out")
				o, err := runClient(t, "tftp", "-m", "binary", "127.0.0.1", f.port, "-c", "get", file, out)
				if err != nil || strings.Contains(o, "Error") {
					t.Fatalf("tftp: %v\n%s", err, o)
				}
				f.check(t, out, strings.TrimPrefix(strings.ReplaceAll(file, `\`, "/"), "/"))
			})
		}
		t.Run("netascii", func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out")
			o, err := runClient(t, "tftp", "-m", "ascii", "127.0.0.1", f.port, "-c", "get", "text.txt", out)
			if err != nil || strings.Contains(o, "Error") {
				t.Fatalf("tftp: %v\n%s", err, o)
			}
			f.check(t, out, "text.txt")
		})
	})

	t.Run("generated", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "out")
		if o, err := runClient(t, "curl", "-sS", "-o", out, url("generated/01-52-54-00-aa-bb-cc")); err != nil {
			t.Fatalf("curl: %v\n%s", err, o)
		}
		got, _ := os.ReadFile(out)
		if want := "# config for 01-52-54-00-aa-bb-cc, asked from 127.0.0.1\nlabel linux\n"; string(got) != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	})

	t.Run("errors", func(t *testing.T) {
		// tftp-hpa prints the server's error code and message (and exits 0).
		for _, c := range []struct{ file, want string }{
			{"missing", "Error code 1: File not found"},
			{"/etc/passwd", "Error code 1: File not found"}, // leading "/" is stripped: <root>/etc/passwd
			{"../etc/passwd", "Error code 2: Access violation"},
			{"boot/../../etc/passwd", "Error code 2: Access violation"},
			{`..\etc\passwd`, "Error code 2: Access violation"},
			{"escape", "Error code 2: Access violation"},
			{"escape-rel", "Error code 2: Access violation"},
			{"zero", "Error code 2: Access violation"},
			{"fifo", "Error code 1: File not found"}, // regular files only, opened without blocking
			{"dir", "Error code 1: File not found"},
		} {
			t.Run(c.file, func(t *testing.T) {
				out := filepath.Join(t.TempDir(), "out")
				o, _ := runClient(t, "tftp", "-m", "binary", "127.0.0.1", f.port, "-c", "get", c.file, out)
				if !strings.Contains(o, c.want) {
					t.Fatalf("output %q, want %q", o, c.want)
				}
				if b, _ := os.ReadFile(out); len(b) > 0 {
					t.Fatalf("client received %d bytes", len(b))
				}
			})
		}
		t.Run("curl missing", func(t *testing.T) {
			o, err := runClient(t, "curl", "-sS", "-o", filepath.Join(t.TempDir(), "out"), url("missing"))
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 68 { // CURLE_TFTP_NOTFOUND
				t.Fatalf("curl: %v, want exit 68\n%s", err, o)
			}
		})
		t.Run("curl symlink escape", func(t *testing.T) {
			o, err := runClient(t, "curl", "-sS", "-o", filepath.Join(t.TempDir(), "out"), url("escape"))
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 69 { // CURLE_TFTP_PERM
				t.Fatalf("curl: %v, want exit 69\n%s", err, o)
			}
		})
		t.Run("atftp missing", func(t *testing.T) {
			o, err := runClient(t, "atftp", "--get", "-r", "missing", "-l", filepath.Join(t.TempDir(), "out"), "127.0.0.1", f.port)
			if err == nil || !strings.Contains(o, "File not found") {
				t.Fatalf("atftp: %v\n%s", err, o)
			}
		})
		t.Run("put refused", func(t *testing.T) {
			src := filepath.Join(t.TempDir(), "upload")
			writeFile(t, src, []byte("data"))
			o, _ := runClient(t, "tftp", "-m", "binary", "127.0.0.1", f.port, "-c", "put", src, "upload")
			if !strings.Contains(o, "Error code 2: Access violation") {
				t.Fatalf("output %q", o)
			}
			if _, err := os.Stat(filepath.Join(f.root, "upload")); err == nil {
				t.Fatal("file was written")
			}
		})
	})
}
