package cli_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/preboot/preboot/api"
	"github.com/preboot/preboot/store"
	"github.com/preboot/preboot/tlspin"
)

// console is a browser of the web console's login, against a server URL.
type console struct {
	t      *testing.T
	url    string
	client *http.Client
}

func newConsole(t *testing.T, u string) *console {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &console{t: t, url: u, client: &http.Client{Jar: jar, Timeout: time.Minute,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

// login posts the login form and returns where it was sent.
func (c *console) login(user, pw string) string {
	c.t.Helper()
	resp, err := c.client.PostForm(c.url+"/console/login", url.Values{"user": {user}, "password": {pw}, "next": {"/console/devices"}})
	if err != nil {
		c.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		c.t.Fatalf("login %s: %s", user, resp.Status)
	}
	return resp.Header.Get("Location")
}

// get returns the status of a GET with the session cookie.
func (c *console) get(path string) int {
	c.t.Helper()
	resp, err := c.client.Get(c.url + path)
	if err != nil {
		c.t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

const (
	loggedIn = "/console/devices"
	refused  = "/console/login?failed=1&next=%2Fconsole%2Fdevices"
)

func TestAdminUsers(t *testing.T) {
	s := newServer(t)
	locked := s.serve(t, s.st, false) // loopback not trusted: the session is the only way in
	c := newCLI(t)
	dir := s.cfg.DataDir

	c.fails(t, "no database", "admin", "list", "--data-dir", t.TempDir())
	c.fails(t, "no database", "admin", "create", "bob", "--data-dir", filepath.Join(t.TempDir(), "nowhere"))

	// A password from stdin; what is refused.
	c.stdin = "correct horse battery\n"
	contains(t, c.ok(t, "admin", "create", "bob", "--password-stdin", "--data-dir", dir), "console user bob created")
	c.fails(t, "taken", "admin", "create", "bob", "--password-stdin", "--data-dir", dir)
	c.stdin = "too short\n"
	c.fails(t, "too short", "admin", "create", "dave", "--password-stdin", "--data-dir", dir)
	c.stdin = ""
	c.fails(t, "user name", "admin", "create", "bad/name", "--data-dir", dir)

	// No terminal and no --password-stdin: a generated password, once.
	r := c.run(t, "admin", "create", "carol", "--data-dir", dir)
	carolPW := strings.TrimSpace(r.stdout)
	if r.code != 0 || len(carolPW) < 20 || strings.Contains(carolPW, "\n") || !strings.Contains(r.stderr, "not shown again") {
		t.Fatalf("generated password: %s", r)
	}

	bob := newConsole(t, locked)
	if got := bob.login("bob", "correct horse battery"); got != loggedIn {
		t.Fatalf("bob's login went to %s", got)
	}
	if code := bob.get("/api/v1/devices"); code != http.StatusOK {
		t.Fatalf("bob's session on the API: %d", code)
	}
	if got := newConsole(t, locked).login("carol", carolPW); got != loggedIn {
		t.Fatalf("carol's login went to %s", got)
	}
	if got := newConsole(t, locked).login("bob", "correct horse batterY"); got != refused {
		t.Fatalf("wrong password went to %s", got)
	}

	// list
	out := c.ok(t, "admin", "list", "--data-dir", dir)
	contains(t, out, "NAME", "LAST LOGIN", "bob", "carol")
	var users []store.User
	c.json(t, &users, "admin", "list", "--data-dir", dir)
	if len(users) != 2 || users[0].Name != "bob" || users[1].Name != "carol" || users[0].LastLogin.IsZero() {
		t.Fatalf("users: %+v", users)
	}

	// passwd: the new password works, the old one and bob's session do not.
	c.stdin = "another long password\n"
	contains(t, c.ok(t, "admin", "passwd", "bob", "--password-stdin", "--data-dir", dir), "password of bob changed")
	if code := bob.get("/api/v1/devices"); code != http.StatusUnauthorized {
		t.Fatalf("bob's old session after passwd: %d", code)
	}
	if got := newConsole(t, locked).login("bob", "correct horse battery"); got != refused {
		t.Fatalf("old password went to %s", got)
	}
	if got := newConsole(t, locked).login("bob", "another long password"); got != loggedIn {
		t.Fatalf("new password went to %s", got)
	}
	c.stdin = "short\n"
	c.fails(t, "too short", "admin", "passwd", "bob", "--password-stdin", "--data-dir", dir)
	c.fails(t, "no console user ghost", "admin", "passwd", "ghost", "--password-stdin", "--data-dir", dir)
	c.stdin = ""

	// rm
	contains(t, c.ok(t, "admin", "rm", "carol", "--data-dir", dir), "console user carol removed")
	c.fails(t, "no console user carol", "admin", "rm", "carol", "--data-dir", dir)
	if got := newConsole(t, locked).login("carol", carolPW); got != refused {
		t.Fatalf("removed user's login went to %s", got)
	}
	if out := c.ok(t, "admin", "list", "--data-dir", dir); strings.Contains(out, "carol") {
		t.Fatalf("carol still listed:\n%s", out)
	}

	// Everything is in the event log.
	evs := c.ok(t, "event", "list", "--socket", s.sock, "--kind", "admin", "--limit", "50")
	contains(t, evs, "console user bob created on the server host", "password of console user bob changed",
		"console user carol removed", "user:bob")
}

// serveProc is a `preboot serve` process on loopback.
type serveProc struct {
	cmd    *exec.Cmd
	mu     sync.Mutex
	stderr strings.Builder
	done   chan struct{}
}

func startServe(t *testing.T, c *cli, dataDir string, extra ...string) *serveProc {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"serve", "--data-dir", dataDir, "--copy-debian-files=false", "--log-format", "json",
		"--http-listen", "127.0.0.1:0", "--tls-listen", "127.0.0.1:0", "--tftp-listen", "127.0.0.1:0",
		"--proxydhcp-dhcp-listen", "", "--proxydhcp-pxe-listen", "127.0.0.1:0"}, extra...)...)
	cmd.Env = c.env
	pipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &serveProc{cmd: cmd, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(pipe)
		for sc.Scan() {
			p.mu.Lock()
			p.stderr.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
		}
		io.Copy(io.Discard, pipe)
	}()
	t.Cleanup(func() { p.stop(t) })
	return p
}

func (p *serveProc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

// httpURL waits (at most a minute) for the "http listening" log line and
// returns the server's URL.
func (p *serveProc) httpURL(t *testing.T) string {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		for _, line := range strings.Split(p.output(), "\n") {
			var rec struct{ Msg, Addr string }
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "http listening" {
				return "http://" + rec.Addr
			}
		}
		select {
		case <-p.done:
			t.Fatalf("preboot serve exited:\n%s", p.output())
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatalf("preboot serve did not listen within a minute:\n%s", p.output())
	return ""
}

// httpsURL waits for the "https listening" log line and returns the
// server's HTTPS URL and its certificate's fingerprint.
func (p *serveProc) httpsURL(t *testing.T) (string, string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		for _, line := range strings.Split(p.output(), "\n") {
			var rec struct{ Msg, Addr, Fingerprint string }
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "https listening" {
				return "https://" + rec.Addr, rec.Fingerprint
			}
		}
		select {
		case <-p.done:
			t.Fatalf("preboot serve exited:\n%s", p.output())
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatalf("preboot serve did not listen within a minute:\n%s", p.output())
	return "", ""
}

// stop sends SIGTERM to the process (by its PID) and waits for it.
func (p *serveProc) stop(t *testing.T) {
	if p.cmd.ProcessState != nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
	p.cmd.Wait()
}

func TestServeFirstAdmin(t *testing.T) {
	c := newCLI(t)
	dir := t.TempDir()
	p := startServe(t, c, dir)
	u := p.httpURL(t)
	tu, fp := p.httpsURL(t)

	// The password is in DATA_DIR/initial-admin-password (0600), never on
	// stderr; stderr and the log say where it is.
	out := p.output()
	file := filepath.Join(dir, "initial-admin-password")
	fi, err := os.Stat(file)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("password file: %v %v\n%s", fi, err, out)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	pw := strings.TrimSpace(string(b))
	if len(pw) < 20 || !strings.Contains(out, "preboot admin passwd admin") || !strings.Contains(out, file) {
		t.Fatalf("first admin not announced:\n%s", out)
	}
	if strings.Contains(out, pw) {
		t.Fatalf("the password appears on stderr:\n%s", out)
	}
	// The console is on HTTPS, with the logged certificate.
	con := newConsole(t, tu)
	tc, err := tlspin.Config(fp)
	if err != nil {
		t.Fatal(err)
	}
	con.client.Transport = tlspin.Transport(tc)
	if got := con.login("admin", pw); got != loggedIn {
		t.Fatalf("first admin's login went to %s", got)
	}

	// The real server's status through the admin socket: every daemon up
	// on its real address.
	sock := filepath.Join(dir, "admin.sock")
	sc := &http.Client{Timeout: time.Minute, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}
	resp, err := sc.Get("http://localhost/api/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	var st api.StatusInfo
	err = json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Services) != 3 {
		t.Fatalf("services: %+v", st.Services)
	}
	if st.Config.HTTP.TLSFingerprint != fp || st.Config.HTTP.TLSListen != strings.TrimPrefix(tu, "https://") || st.Config.HTTP.AdminSocket != sock {
		t.Errorf("status http: %+v, want the logged fingerprint %s, %s and %s", st.Config.HTTP, fp, tu, sock)
	}
	for _, sv := range st.Services {
		if !sv.Enabled || !sv.Up || len(sv.Listen) != 1 || !strings.HasPrefix(sv.Listen[0], "127.0.0.1:") || strings.HasSuffix(sv.Listen[0], ":0") {
			t.Errorf("service %+v", sv)
		}
	}
	if st.Services[0].Name != "http" || "http://"+st.Services[0].Listen[0] != u {
		t.Errorf("http service %+v, server at %s", st.Services[0], u)
	}
	if st.ImageRepo.Path != filepath.Join(dir, "images") || st.ImageRepo.TotalBytes <= 0 || st.Config.Store.Driver != "sqlite" {
		t.Errorf("status: %+v", st)
	}
	p.stop(t)

	// The next start creates nobody and prints nothing.
	p = startServe(t, c, dir)
	p.httpURL(t)
	if out := p.output(); strings.Contains(out, "first user") || strings.Contains(out, pw) {
		t.Fatalf("second start:\n%s", out)
	}
	p.stop(t)
	var users []store.User
	c.json(t, &users, "admin", "list", "--data-dir", dir)
	if len(users) != 1 || users[0].Name != "admin" || users[0].LastLogin.IsZero() {
		t.Fatalf("users after two starts: %+v", users)
	}
}
