package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/preboot/preboot/agent"
	"github.com/preboot/preboot/api"
	"github.com/preboot/preboot/config"
	"github.com/preboot/preboot/image/httpstore"
	"github.com/preboot/preboot/session"
	"github.com/preboot/preboot/store"
	"github.com/preboot/preboot/tlspin"
)

// syncBuffer is a log sink the test reads while the server writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// running is `Run` on loopback: HTTP, HTTPS and the admin socket (no
// TFTP, no proxyDHCP).
type running struct {
	cfg         config.Config
	http, https string // base URLs
	sock        string
	fingerprint string // as logged
	logs        *syncBuffer
	stop        func()
}

func startRun(t *testing.T, dataDir string, mutate func(*config.Config)) *running {
	t.Helper()
	cfg := config.Default()
	cfg.DataDir = dataDir
	cfg.TFTP.Enabled = false
	cfg.ProxyDHCP.Enabled = false
	cfg.Boot.CopyDebianFiles = false
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.HTTP.TLSListen = "127.0.0.1:0"
	if mutate != nil {
		mutate(&cfg)
	}
	logs := &syncBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, nil))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, log) }()
	r := &running{cfg: cfg, logs: logs}
	r.stop = func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Run did not stop")
		}
	}
	t.Cleanup(func() {
		if ctx.Err() == nil {
			r.stop()
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		for _, line := range strings.Split(logs.String(), "\n") {
			var rec map[string]any
			if json.Unmarshal([]byte(line), &rec) != nil {
				continue
			}
			switch rec["msg"] {
			case "http listening":
				r.http = "http://" + rec["addr"].(string)
			case "https listening":
				r.https = "https://" + rec["addr"].(string)
				r.fingerprint, _ = rec["fingerprint"].(string)
			case "admin socket listening":
				r.sock = rec["path"].(string)
			}
		}
		wantTLS := cfg.HTTP.TLSListen == "" || r.https != ""
		wantSock := cfg.HTTP.AdminSocket == "" || r.sock != ""
		if r.http != "" && wantTLS && wantSock {
			return r
		}
		select {
		case err := <-done:
			t.Fatalf("Run ended: %v\n%s", err, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server did not come up:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// socketClient talks HTTP over the admin socket.
func socketClient(path string) *http.Client {
	return &http.Client{Timeout: time.Minute, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}}
}

func do(t *testing.T, c *http.Client, method, u, body string, header map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, u, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// callLocal sends a request as root on the admin socket would.
func callLocal(h http.Handler, method, path, body string) (int, string) {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req = req.WithContext(api.WithPeer(req.Context(), api.Peer{User: "root", Allowed: true}))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Code, rec.Body.String()
}

var (
	prebootOnce sync.Once
	prebootBin  string
	prebootErr  error
)

// prebootBinary builds the preboot command into a directory every user
// may read and run.
func prebootBinary(t *testing.T) string {
	t.Helper()
	prebootOnce.Do(func() {
		dir, err := os.MkdirTemp("", "preboot-server-test-bin-")
		if err != nil {
			prebootErr = err
			return
		}
		if err := os.Chmod(dir, 0o755); err != nil {
			prebootErr = err
			return
		}
		prebootBin = filepath.Join(dir, "preboot")
		if out, err := exec.Command("go", "build", "-o", prebootBin, "../cmd/preboot").CombinedOutput(); err != nil {
			prebootErr = fmt.Errorf("build: %w\n%s", err, out)
		}
	})
	if prebootErr != nil {
		t.Fatal(prebootErr)
	}
	return prebootBin
}

// asNobody runs the preboot CLI as uid/gid 65534 with only the given
// environment and supplementary groups.
func asNobody(t *testing.T, groups []uint32, env []string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(prebootBinary(t), args...)
	cmd.Dir = "/"
	cmd.Env = append([]string{"HOME=/nonexistent", "PATH=/usr/bin:/bin"}, env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: groups}}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// openDir makes dir and its parent traversable by every user (t.TempDir
// directories are 0700).
func openDir(t *testing.T, dir string) {
	t.Helper()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("needs root (to run commands as another user)")
	}
}

// TestAdminSocket: on the server host the admin API is reached through
// DATA_DIR/admin.sock; root (this test) is an admin there and acts as
// local:root; a real other user (nobody) is refused — by the socket's
// mode, and by its credentials when the mode lets it connect — and gets
// nothing on TCP without a token.
func TestAdminSocket(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	r := startRun(t, dir, nil)
	if r.sock != filepath.Join(dir, "admin.sock") {
		t.Fatalf("socket at %q", r.sock)
	}
	fi, err := os.Stat(r.sock)
	if err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm()&0o007 != 0 {
		t.Fatalf("socket mode: %v %v", fi.Mode(), err)
	}
	sc := socketClient(r.sock)
	if code, body := do(t, sc, "POST", "http://localhost/api/v1/groups", `{"name":"lab"}`, map[string]string{"Content-Type": "application/json"}); code != http.StatusCreated {
		t.Fatalf("root on the socket: %d %s", code, body)
	}
	st, err := OpenStore(context.Background(), config.Store{Driver: "sqlite", Path: filepath.Join(dir, "preboot.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	evs, err := st.Events(context.Background(), store.EventFilter{Kind: store.EventAdmin, Limit: 1})
	if err != nil || len(evs) != 1 || evs[0].Actor != "local:root" {
		t.Fatalf("audit: %+v %v", evs, err)
	}
	// The CLI uses the socket by itself when no token is given.
	out, err := exec.Command(prebootBinary(t), "group", "list", "--data-dir", dir).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "lab") {
		t.Fatalf("CLI as root through the socket: %v\n%s", err, out)
	}

	// nobody: the socket's mode keeps it out...
	openDir(t, dir)
	out2, err := asNobody(t, nil, nil, "group", "list", "--data-dir", dir)
	if err == nil || !strings.Contains(out2, "permission denied") {
		t.Fatalf("nobody through a 0600 socket: %v\n%s", err, out2)
	}
	// ...and when the mode lets it connect, its credentials do.
	if err := os.Chmod(r.sock, 0o666); err != nil {
		t.Fatal(err)
	}
	out2, err = asNobody(t, nil, nil, "group", "add", "evil", "--socket", r.sock)
	if err == nil || !strings.Contains(out2, "not allowed on the admin socket") || !strings.Contains(out2, "not in group preboot") {
		t.Fatalf("nobody on the socket: %v\n%s", err, out2)
	}
	// On TCP without a token: 401 (HTTPS) and 403 (plain HTTP).
	out2, err = asNobody(t, nil, nil, "group", "list", "--server", r.https, "--tls-fingerprint", r.fingerprint)
	if err == nil || !strings.Contains(out2, "authentication required") {
		t.Fatalf("nobody on HTTPS without a token: %v\n%s", err, out2)
	}
	out2, err = asNobody(t, nil, nil, "group", "list", "--server", r.http)
	if err == nil || !strings.Contains(out2, "plain HTTP serves only boot firmware") {
		t.Fatalf("nobody on HTTP without a token: %v\n%s", err, out2)
	}
	if _, err := st.Group(context.Background(), "evil"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("nobody created a group: %v", err)
	}
}

// TestAdminSocketGroup: a member of the admin group (here as a
// supplementary group of a real non-root process) is an admin on the
// socket; the same user without the group is not.
func TestAdminSocketGroup(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	openDir(t, dir)
	path := filepath.Join(dir, "test.sock")
	s, ln, err := listenAdminSocket(path, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	const gid = 4242
	s.groupGID = gid
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
	auth := &api.Auth{}
	hs := &http.Server{ConnContext: s.connContext, Handler: peerGate(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		actor, err := auth.Authenticate(r.Context(), r)
		fmt.Fprintf(w, `{"version":%q}`, actor+fmt.Sprint(err))
	}))}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	// `preboot` is only the client here: it prints the JSON answer, in
	// which the handler put the actor the server saw.
	out, err := asNobody(t, []uint32{gid}, nil, "settings", "show", "-o", "json", "--socket", path)
	if err != nil || !strings.Contains(out, "local:nobody") {
		t.Fatalf("member of the group: %v\n%s", err, out)
	}
	out, err = asNobody(t, nil, nil, "settings", "show", "-o", "json", "--socket", path)
	if err == nil || !strings.Contains(out, "not in group preboot") {
		t.Fatalf("without the group: %v\n%s", err, out)
	}
}

// A reverse proxy on the server host relays remote clients from
// 127.0.0.1: none of them is an admin, with the default configuration
// and even with the unsafe loopback trust (the proxy's headers say the
// client is elsewhere).
func TestReverseProxyIsNotAdmin(t *testing.T) {
	for _, trust := range []bool{false, true} {
		e := newStatusEnv(t, trust)
		target, _ := url.Parse(e.url)
		proxy := httptest.NewServer(httputil.NewSingleHostReverseProxy(target))
		t.Cleanup(proxy.Close)
		code, body := do(t, http.DefaultClient, "POST", proxy.URL+"/api/v1/tokens", `{"name":"stolen"}`, map[string]string{"Content-Type": "application/json"})
		if code != http.StatusUnauthorized {
			t.Fatalf("trust_loopback=%v: a client of the proxy got %d %s", trust, code, body)
		}
		// Loopback itself is no admin either by default.
		if !trust {
			if code, _ := do(t, http.DefaultClient, "GET", e.url+"/api/v1/tokens", "", nil); code != http.StatusUnauthorized {
				t.Fatalf("loopback without a token: %d", code)
			}
		}
	}
}

// DNS rebinding: a page of evil.example whose name now resolves to this
// server sends requests with Host and Origin evil.example. They are
// refused (421) whatever the credentials; the server's own names work.
func TestHostNames(t *testing.T) {
	e := newStatusEnv(t, true) // even with the unsafe loopback trust
	tc := tokenClient(t, e.st)
	for _, h := range []map[string]string{
		{"Host": "evil.example", "Origin": "http://evil.example"},
		{"Host": "evil.example:8080", "Origin": "http://evil.example:8080", "Sec-Fetch-Site": "same-origin"},
	} {
		for _, p := range []string{"/api/v1/tokens", "/api/v1/images", "/console/", "/api/v1/agent/job"} {
			code, body := do(t, http.DefaultClient, "GET", e.url+p, "", h)
			if code != http.StatusMisdirectedRequest || !strings.Contains(body, "http.hosts") {
				t.Fatalf("%s with %v: %d %s", p, h, code, body)
			}
		}
		if code, _ := do(t, http.DefaultClient, "POST", e.url+"/api/v1/tokens", `{"name":"x"}`, h); code != http.StatusMisdirectedRequest {
			t.Fatalf("POST tokens with %v: %d", h, code)
		}
		if code, _ := do(t, tc, "GET", e.url+"/api/v1/tokens", "", h); code != http.StatusMisdirectedRequest {
			t.Fatalf("with a token and %v: %d", h, code)
		}
	}
	// Boot firmware may use any name.
	if code, _ := do(t, http.DefaultClient, "GET", e.url+"/healthz", "", map[string]string{"Host": "pxe.example"}); code != http.StatusOK {
		t.Fatalf("healthz by name: %d", code)
	}
	// IP literals, localhost and configured names are this server.
	for _, host := range []string{"127.0.0.1:8080", "[::1]:8080", "localhost:8080", "10.1.2.3"} {
		if code, body := do(t, tc, "GET", e.url+"/api/v1/tokens", "", map[string]string{"Host": host}); code != http.StatusOK {
			t.Fatalf("Host %s: %d %s", host, code, body)
		}
	}
	// With loopback trust, a browser page of another origin on an
	// accepted Host still gets nothing.
	if code, _ := do(t, http.DefaultClient, "POST", e.url+"/api/v1/tokens", `{"name":"y"}`,
		map[string]string{"Content-Type": "application/json", "Origin": "http://10.66.66.66"}); code != http.StatusUnauthorized {
		t.Fatalf("cross-origin with loopback trust: %d", code)
	}
	e2 := newStatusEnvWith(t, func(c *config.Config) { c.HTTP.Hosts = []string{"preboot.example"} })
	tc2 := tokenClient(t, e2.st)
	if code, body := do(t, tc2, "GET", e2.url+"/api/v1/tokens", "", map[string]string{"Host": "Preboot.Example:8443"}); code != http.StatusOK {
		t.Fatalf("configured name: %d %s", code, body)
	}
}

// TLS: the server generates a self-signed certificate at its first start
// (key 0600), serves it on the HTTPS port, logs its fingerprint and keeps
// it across restarts; an agent client accepts it with the right pin only;
// plain HTTP keeps the firmware's paths and sends everything else to
// HTTPS; the console's cookie is Secure over TLS.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	r := startRun(t, dir, nil)
	if !strings.HasPrefix(r.fingerprint, "sha256:") {
		t.Fatalf("fingerprint logged: %q", r.fingerprint)
	}
	pemBytes, err := os.ReadFile(filepath.Join(dir, "tls", "cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(pemBytes)
	if blk == nil || tlspin.Fingerprint(blk.Bytes) != r.fingerprint {
		t.Fatalf("certificate file does not match the logged fingerprint %s", r.fingerprint)
	}
	if fi, err := os.Stat(filepath.Join(dir, "tls", "key.pem")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi, err)
	}
	// What the TLS port serves is that certificate.
	conn, err := tls.Dial("tcp", strings.TrimPrefix(r.https, "https://"), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	served := conn.ConnectionState().PeerCertificates[0]
	conn.Close()
	if tlspin.Fingerprint(served.Raw) != r.fingerprint {
		t.Fatalf("served %s, logged %s", tlspin.Fingerprint(served.Raw), r.fingerprint)
	}
	if err := served.VerifyHostname("127.0.0.1"); err != nil {
		t.Errorf("SAN: %v", err)
	}
	// An agent with the right pin reaches the agent API (401: a bad job
	// token, but the TLS session was accepted); with a wrong pin it does
	// not even send the token.
	wrong := "sha256:" + strings.Repeat("ab", 32)
	jc := &agent.JobClient{BaseURL: r.https, Token: "pbj_nothing", TLSFingerprint: r.fingerprint, Attempts: 1}
	var ae *agent.APIError
	if _, err := jc.Job(context.Background()); !errors.As(err, &ae) || ae.Status != http.StatusUnauthorized {
		t.Fatalf("right pin: %v", err)
	}
	jc = &agent.JobClient{BaseURL: r.https, Token: "pbj_nothing", TLSFingerprint: wrong, Attempts: 1}
	if _, err := jc.Job(context.Background()); err == nil || !strings.Contains(err.Error(), "does not match the pinned fingerprint") {
		t.Fatalf("wrong pin: %v", err)
	}
	// The image repository client too (with an admin token).
	st, err := OpenStore(context.Background(), config.Store{Driver: "sqlite", Path: filepath.Join(dir, "preboot.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	secret, hash, _ := api.NewToken()
	if _, err := st.CreateToken(context.Background(), store.Token{Name: "t", Hash: hash, Prefix: secret[:10]}); err != nil {
		t.Fatal(err)
	}
	hsc := &httpstore.Client{BaseURL: r.https, Token: secret, TLSFingerprint: r.fingerprint, Attempts: 1}
	if _, err := hsc.List(context.Background()); err != nil {
		t.Fatalf("image list with the right pin: %v", err)
	}
	hsc = &httpstore.Client{BaseURL: r.https, Token: secret, TLSFingerprint: wrong, Attempts: 1}
	if _, err := hsc.List(context.Background()); err == nil || !strings.Contains(err.Error(), "pinned fingerprint") {
		t.Fatalf("image list with a wrong pin: %v", err)
	}
	// Without a pin, the self-signed certificate is not trusted.
	if _, err := http.Get(r.https + "/healthz"); err == nil {
		t.Fatal("an unpinned client accepted the self-signed certificate")
	}

	// Plain HTTP: firmware's paths only.
	if code, body := do(t, http.DefaultClient, "GET", r.http+"/healthz", "", nil); code != http.StatusOK {
		t.Fatalf("healthz on HTTP: %d %s", code, body)
	}
	if code, _ := do(t, http.DefaultClient, "GET", r.http+"/boot.ipxe?mac=52:54:00:00:00:01", "", nil); code != http.StatusOK {
		t.Fatalf("boot.ipxe on HTTP: %d", code)
	}
	for _, p := range []string{"/api/v1/status", "/api/v1/images", "/api/v1/agent/job", "/console/login"} {
		code, body := do(t, http.DefaultClient, "GET", r.http+p, "", map[string]string{"Authorization": "Bearer " + secret})
		if code != http.StatusForbidden || !strings.Contains(body, "https://127.0.0.1:") {
			t.Fatalf("%s on HTTP: %d %s", p, code, body)
		}
	}
	if code, _ := do(t, http.DefaultClient, "POST", r.http+"/console/login", "user=a&password=b", map[string]string{"Content-Type": "application/x-www-form-urlencoded"}); code != http.StatusForbidden {
		t.Fatalf("login on HTTP: %d", code)
	}
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, _ := http.NewRequest("GET", r.http+"/console/devices", nil)
	req.Header.Set("Accept", "text/html")
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusFound || !strings.HasPrefix(loc, r.https+"/console/devices") {
		t.Fatalf("browser on HTTP: %d %q", resp.StatusCode, loc)
	}

	// The console over TLS: the session cookie is Secure.
	pw, err := bcrypt.GenerateFromPassword([]byte("correct horse battery"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateUser(context.Background(), store.User{Name: "ann", PasswordHash: string(pw)}); err != nil {
		t.Fatal(err)
	}
	pinned, err := tlspin.Client(r.fingerprint)
	if err != nil {
		t.Fatal(err)
	}
	jar, _ := cookiejar.New(nil)
	pinned.Jar = jar
	pinned.CheckRedirect = noRedirect.CheckRedirect
	resp, err = pinned.PostForm(r.https+session.LoginPath, url.Values{"user": {"ann"}, "password": {"correct horse battery"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var sc *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == session.CookieName {
			sc = c
		}
	}
	if resp.StatusCode != http.StatusSeeOther || sc == nil || !sc.Secure || !sc.HttpOnly {
		t.Fatalf("login over TLS: %d cookie %+v", resp.StatusCode, sc)
	}

	// A restart keeps the certificate (agents and CLIs keep their pin).
	r.stop()
	r2 := startRun(t, dir, nil)
	if r2.fingerprint != r.fingerprint {
		t.Fatalf("restart: fingerprint %s, was %s", r2.fingerprint, r.fingerprint)
	}
	// With TLS off, plain HTTP serves everything as before.
	r2.stop()
	r3 := startRun(t, dir, func(c *config.Config) { c.HTTP.TLSListen = "" })
	if code, body := do(t, http.DefaultClient, "GET", r3.http+"/api/v1/status", "", map[string]string{"Authorization": "Bearer " + secret}); code != http.StatusOK {
		t.Fatalf("status on HTTP without TLS: %d %s", code, body)
	}
}
