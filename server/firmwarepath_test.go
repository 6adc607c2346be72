package server

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestBootFileForUEFIHTTPBoot serves a boot program the way UEFI HTTP boot
// fetches it (EDK2: HEAD for the size, then GET), over real TCP, on the
// plain HTTP port as Run builds it (HTTPS on) and on the full handler:
// HEAD and GET answer 200 with Content-Length, and paths with "//" are
// served directly — never a redirect, which EDK2 does not follow.
func TestBootFileForUEFIHTTPBoot(t *testing.T) {
	h, _, cfg := newHandler(t)
	body := strings.Repeat("MZ-ipxe.efi-", 1000)
	if err := os.WriteFile(filepath.Join(cfg.TFTP.Root, "ipxe.efi"), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(cfg.TFTP.Root, "boot"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cfg.TFTP.Root, "boot", "x.efi"), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	noRedirect := &http.Client{
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       30 * time.Second,
	}
	for name, handler := range map[string]http.Handler{
		"plain": firmwareSlashes(plainHTTPOnly(h, "8443")),
		"full":  h,
	} {
		t.Run(name, func(t *testing.T) {
			srv := httptest.NewServer(handler)
			defer srv.Close()
			for _, p := range []string{"/files/ipxe.efi", "/files//ipxe.efi", "//files/ipxe.efi", "/files///boot//x.efi", "/files/boot/x.efi"} {
				for _, method := range []string{http.MethodHead, http.MethodGet} {
					req, err := http.NewRequest(method, srv.URL+p, nil)
					if err != nil {
						t.Fatal(err)
					}
					resp, err := noRedirect.Do(req)
					if err != nil {
						t.Fatalf("%s %s: %v", method, p, err)
					}
					got, err := io.ReadAll(resp.Body)
					resp.Body.Close()
					if err != nil {
						t.Fatal(err)
					}
					if resp.StatusCode != http.StatusOK {
						t.Fatalf("%s %s: %d (Location %q)", method, p, resp.StatusCode, resp.Header.Get("Location"))
					}
					if cl := resp.Header.Get("Content-Length"); cl != strconv.Itoa(len(body)) {
						t.Errorf("%s %s: Content-Length %q, want %d", method, p, cl, len(body))
					}
					want := body
					if method == http.MethodHead {
						want = ""
					}
					if string(got) != want {
						t.Errorf("%s %s: body of %d bytes, want %d", method, p, len(got), len(want))
					}
				}
			}
			// Collapsing slashes never leaves the TFTP root nor reaches
			// another handler.
			for _, p := range []string{"/files//../../etc/passwd", "//api/v1/tokens", "/files//nothing.efi"} {
				resp, err := noRedirect.Get(srv.URL + p)
				if err != nil {
					t.Fatal(err)
				}
				got, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK || strings.Contains(string(got), "root:") {
					t.Errorf("GET %s: %d", p, resp.StatusCode)
				}
			}
			checkCurlHead(t, srv.URL+"/files//ipxe.efi", len(body))
		})
	}
}

// checkCurlHead asks with curl, which keeps "//" as written with
// --path-as-is, like firmware that joins URLs without cleaning them.
func checkCurlHead(t *testing.T, url string, size int) {
	t.Helper()
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Fatal("curl not installed (it is in the Makefile's RUN_DEBS)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, curl, "--silent", "--show-error", "--path-as-is", "--head", url).CombinedOutput()
	if err != nil {
		t.Fatalf("curl --head %s: %v\n%s", url, err, out)
	}
	s := strings.ReplaceAll(string(out), "\r", "")
	if !strings.HasPrefix(s, "HTTP/1.1 200") || !strings.Contains(s, "\nContent-Length: "+strconv.Itoa(size)+"\n") {
		t.Errorf("curl --head %s:\n%s", url, s)
	}
}
