package cli

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"

	"github.com/preboot/preboot/config"
	"github.com/preboot/preboot/store"
	"github.com/preboot/preboot/tlspin"
)

// defaultServer is where admin commands look for the API over TCP when
// nothing else says where (they need a token there).
const defaultServer = "https://127.0.0.1:8443"

// defaultDataDir is the server's default data directory (`make run`),
// where the CLI looks for the admin socket.
const defaultDataDir = "./var"

// socketBase is the URL of requests sent through the admin socket.
const socketBase = "http://localhost"

// apiClient talks to a Preboot server's /api/v1, over TCP (base) or the
// admin socket (sock).
type apiClient struct {
	base  string
	token string
	sock  string // the admin socket's path, when used
	http  *http.Client
}

// stream returns a client without an overall timeout, on the same
// connection settings (socket, TLS pin), for streams and long transfers.
func (c *apiClient) stream() *http.Client {
	return &http.Client{Transport: c.http.Transport}
}

// where names the server for messages.
func (c *apiClient) where() string {
	if c.sock != "" {
		return "the admin socket " + c.sock
	}
	return c.base
}

// adminFlags are the flags every admin command group shares: where the
// server is (admin socket or URL), the token, TLS, and the output format.
type adminFlags struct {
	server         string
	token          string
	tokenFile      string
	socket         string
	dataDir        string
	tlsFingerprint string
	caCert         string
	output         string
}

func (a *adminFlags) register(cmd *cobra.Command) {
	f := cmd.PersistentFlags()
	f.StringVar(&a.server, "server", "", "Preboot server URL, e.g. https://preboot.example:8443 (default: $PREBOOT_SERVER, the CLI config file's server, else the admin socket, else "+defaultServer+")")
	f.StringVar(&a.token, "token", "", "admin API token (visible in the process list: prefer --token-file or $PREBOOT_TOKEN)")
	f.StringVar(&a.tokenFile, "token-file", "", "file holding the admin API token (default: $PREBOOT_TOKEN, else the CLI config file's token)")
	f.StringVar(&a.socket, "socket", "", "admin socket of a server on this host (default: $PREBOOT_SOCKET, else DATA_DIR/admin.sock when no token is given)")
	f.StringVar(&a.dataDir, "data-dir", "", "the server's data directory, where its admin socket is (default: $PREBOOT_DATA_DIR, the --config file's data_dir, else "+defaultDataDir+")")
	f.StringVar(&a.tlsFingerprint, "tls-fingerprint", "", "accept exactly the server certificate with this fingerprint, sha256:HEX, as the server logs it (default: $PREBOOT_TLS_FINGERPRINT)")
	f.StringVar(&a.caCert, "ca-cert", "", "PEM file of the CA (or the server's own certificate) to trust for https (default: the system's)")
	f.StringVarP(&a.output, "output", "o", "table", "output format: table or json (the API's JSON)")
}

// json reports whether the output is the API's JSON.
func (a *adminFlags) json() bool { return a.output == "json" }

// cliConfig is the CLI's own configuration file (`preboot login` writes it).
type cliConfig struct {
	Server string `yaml:"server,omitempty"`
	Token  string `yaml:"token,omitempty"`
	// TLSFingerprint pins the server's certificate (sha256:HEX).
	TLSFingerprint string `yaml:"tls_fingerprint,omitempty"`
	// CACert is a PEM file of the CA to trust for the server.
	CACert string `yaml:"ca_cert,omitempty"`
}

// cliConfigPath is $PREBOOT_CLI_CONFIG, else ~/.config/preboot/cli.yaml
// (under $XDG_CONFIG_HOME when set).
func cliConfigPath() (string, error) {
	if p := os.Getenv("PREBOOT_CLI_CONFIG"); p != "" {
		return p, nil
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("find the CLI config file (set $PREBOOT_CLI_CONFIG): %w", err)
	}
	return filepath.Join(dir, "preboot", "cli.yaml"), nil
}

// readCLIConfig reads the CLI config file; a missing file is an empty
// configuration.
func readCLIConfig() (cliConfig, string, error) {
	var c cliConfig
	path, err := cliConfigPath()
	if err != nil {
		return c, "", err
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return c, path, nil
	}
	if err != nil {
		return c, path, fmt.Errorf("CLI config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return c, path, fmt.Errorf("CLI config %s: %w", path, err)
	}
	return c, path, nil
}

// writeCLIConfig writes the CLI config file with mode 0600 (it holds a
// token), atomically.
func writeCLIConfig(path string, c cliConfig) error {
	b, err := yaml.Marshal(c)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("create %s: %w", filepath.Dir(path), err)
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// endpoint is where and how admin commands reach the server.
type endpoint struct {
	server   string // URL (TCP)
	explicit bool   // server given by --server or $PREBOOT_SERVER
	token    string
	socket   string // admin socket path ("" = TCP)
	tls      *tls.Config
}

// readSecretFile reads a token from a file: its first line, trimmed.
func readSecretFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	tok := strings.TrimSpace(line)
	if tok == "" {
		return "", fmt.Errorf("token file %s is empty", path)
	}
	return tok, nil
}

// warnArgvSecret says on stderr that a secret given as a flag value shows
// in the process list.
func warnArgvSecret(g *globals, flag, instead string) {
	fmt.Fprintf(g.stderr, "preboot: warning: --%s puts the secret on the command line, where every local user sees it in the process list "+
		"(ps, /proc/PID/cmdline) and shell history keeps it: use %s\n", flag, instead)
}

// resolve finds the server and the token: flags, else $PREBOOT_SERVER and
// $PREBOOT_TOKEN, else the CLI config file, else the server
// configuration's server_url (when --config names one). With no token and
// no server named by flag or environment, the admin socket of a server on
// this host is used when it exists (--socket or $PREBOOT_SOCKET always).
func (a *adminFlags) resolve(g *globals) (endpoint, error) {
	var t endpoint
	// Flags beat the environment: --socket, --server, then $PREBOOT_SOCKET,
	// $PREBOOT_SERVER.
	socket, explicitSocket := a.socket, a.socket != ""
	t.server = a.server
	if t.server == "" && !explicitSocket {
		if socket = os.Getenv("PREBOOT_SOCKET"); socket != "" {
			explicitSocket = true
		} else {
			t.server = os.Getenv("PREBOOT_SERVER")
		}
	}
	t.explicit = t.server != ""
	switch {
	case a.tokenFile != "":
		tok, err := readSecretFile(a.tokenFile)
		if err != nil {
			return t, err
		}
		t.token = tok
	case a.token != "":
		warnArgvSecret(g, "token", "--token-file FILE or $PREBOOT_TOKEN")
		t.token = a.token
	default:
		t.token = os.Getenv("PREBOOT_TOKEN")
	}
	fp, ca := a.tlsFingerprint, a.caCert
	if fp == "" {
		fp = os.Getenv("PREBOOT_TLS_FINGERPRINT")
	}
	c, _, err := readCLIConfig()
	if err != nil {
		return t, err
	}
	if t.server == "" {
		t.server = c.Server
	}
	if t.token == "" {
		t.token = c.Token
	}
	if fp == "" && ca == "" {
		fp, ca = c.TLSFingerprint, c.CACert
	}
	if !explicitSocket && t.token == "" && !t.explicit {
		sp, err := a.socketPath(g)
		if err != nil {
			return t, err
		}
		if fi, err := os.Stat(sp); err == nil && fi.Mode()&os.ModeSocket != 0 {
			socket, explicitSocket = sp, true
		}
	}
	if explicitSocket {
		t.socket = socket
		return t, nil
	}
	if t.server == "" && g.configFile != "" {
		cfg, err := g.load()
		if err != nil {
			return t, err
		}
		t.server = cfg.ServerURL
	}
	if t.server == "" {
		t.server = defaultServer
	}
	u, err := url.Parse(t.server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return t, fmt.Errorf("server %q: want a URL like https://host:8443", t.server)
	}
	t.server = strings.TrimRight(t.server, "/")
	switch {
	case fp != "":
		if t.tls, err = tlspin.Config(fp); err != nil {
			return t, err
		}
	case ca != "":
		if t.tls, err = tlspin.CAConfig(ca); err != nil {
			return t, err
		}
	}
	return t, nil
}

// socketPath is the admin socket of the server whose data directory is
// --data-dir, else $PREBOOT_DATA_DIR, else the --config file's (with its
// http.admin_socket), else ./var.
func (a *adminFlags) socketPath(g *globals) (string, error) {
	dir := a.dataDir
	if dir == "" {
		dir = os.Getenv("PREBOOT_DATA_DIR")
	}
	name := config.Default().HTTP.AdminSocket
	if g.configFile != "" {
		cfg, err := g.load()
		if err != nil {
			return "", err
		}
		if dir == "" {
			dir = cfg.DataDir
		}
		name = cfg.HTTP.AdminSocket
	}
	if dir == "" {
		dir = defaultDataDir
	}
	if name == "" || filepath.IsAbs(name) {
		return name, nil
	}
	return filepath.Join(dir, name), nil
}

func (a *adminFlags) client(g *globals) (*apiClient, error) {
	if a.output != "table" && a.output != "json" {
		return nil, fmt.Errorf("--output %q: want table or json", a.output)
	}
	t, err := a.resolve(g)
	if err != nil {
		return nil, err
	}
	if t.socket != "" {
		sock := t.socket
		tr := &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", sock)
			},
		}
		return &apiClient{base: socketBase, token: t.token, sock: sock, http: &http.Client{Transport: tr, Timeout: 30 * time.Second}}, nil
	}
	return &apiClient{base: t.server, token: t.token, http: &http.Client{Transport: tlspin.Transport(t.tls), Timeout: 30 * time.Second}}, nil
}

// clientFor is client plus the canonical form of a MAC argument.
func (a *adminFlags) clientFor(g *globals, macArg string) (*apiClient, string, error) {
	mac, err := store.NormalizeMAC(macArg)
	if err != nil {
		return nil, "", err
	}
	c, err := a.client(g)
	return c, mac, err
}

// apiError is a non-2xx answer of the API.
type apiError struct {
	Status  int
	Message string
}

func (e *apiError) Error() string { return e.Message }

// isStatus reports whether err is an API answer with this status.
func isStatus(err error, code int) bool {
	var ae *apiError
	return errors.As(err, &ae) && ae.Status == code
}

func (c *apiClient) newRequest(ctx context.Context, method, path string, body any) (*http.Request, error) {
	var rd io.Reader
	if body != nil {
		if raw, ok := body.(json.RawMessage); ok {
			rd = bytes.NewReader(raw)
		} else {
			b, err := json.Marshal(body)
			if err != nil {
				return nil, err
			}
			rd = bytes.NewReader(b)
		}
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	return req, nil
}

// call sends a request (body marshalled to JSON unless nil; a
// json.RawMessage is sent as is), decodes a JSON answer into out (if not
// nil) and returns the answer's raw body and headers.
func (c *apiClient) call(ctx context.Context, method, path string, body, out any) ([]byte, http.Header, error) {
	req, err := c.newRequest(ctx, method, path, body)
	if err != nil {
		return nil, nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil, nil, fmt.Errorf("%s %s: the Preboot server at %s did not answer in %s", method, path, c.where(), c.http.Timeout)
		}
		if c.sock != "" {
			if errors.Is(err, syscall.EACCES) {
				return nil, nil, fmt.Errorf("cannot use the admin socket %s: permission denied (run as root or as a member of group preboot, "+
					"or use --server https://HOST:8443 with --token-file): %w", c.sock, err)
			}
			return nil, nil, fmt.Errorf("cannot reach the Preboot server through its admin socket %s (is `preboot serve` running?): %w", c.sock, err)
		}
		return nil, nil, fmt.Errorf("cannot reach the Preboot server at %s (is `preboot serve` running? set --server, or run on the server host, where the admin socket is used): %w", c.base, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		return nil, resp.Header, responseError(resp, data, method, path)
	}
	if out != nil && len(bytes.TrimSpace(data)) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			return data, resp.Header, fmt.Errorf("%s %s: bad answer: %w", method, path, err)
		}
	}
	return data, resp.Header, nil
}

// do is call without the raw answer.
func (c *apiClient) do(ctx context.Context, method, path string, body, out any) error {
	_, _, err := c.call(ctx, method, path, body, out)
	return err
}

// responseError turns a non-2xx answer into an error carrying the API's
// message (which says what to fix), with a hint on authentication.
func responseError(resp *http.Response, data []byte, method, path string) error {
	var e struct {
		Error string `json:"error"`
	}
	msg := ""
	if json.Unmarshal(data, &e) == nil && e.Error != "" {
		msg = e.Error
	} else {
		msg = fmt.Sprintf("%s %s: %s", method, path, resp.Status)
	}
	switch resp.StatusCode {
	case http.StatusUnauthorized:
		msg += "\n(give an admin token: --token-file, $PREBOOT_TOKEN or `preboot login`; on the server host, the admin socket needs none)"
	case http.StatusForbidden:
		if !strings.Contains(msg, "admin socket") && !strings.Contains(msg, "HTTPS") && !strings.Contains(msg, "https://") {
			msg += "\n(this token is not an admin token: create one with `preboot token create NAME` on the server host)"
		}
	}
	return &apiError{Status: resp.StatusCode, Message: msg}
}

// emit prints the API's JSON answer as is (indented) in -o json mode, or
// calls table otherwise.
func (a *adminFlags) emit(g *globals, raw []byte, table func() error) error {
	if a.json() {
		return printRaw(g.stdout, raw)
	}
	return table()
}

// printRaw writes a JSON document indented by two spaces; the content is
// the API's, unchanged.
func printRaw(w io.Writer, raw []byte) error {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return nil
	}
	var compact, out bytes.Buffer
	if err := json.Compact(&compact, raw); err != nil {
		_, err := w.Write(append(raw, '\n'))
		return err
	}
	if err := json.Indent(&out, compact.Bytes(), "", "  "); err != nil {
		return err
	}
	out.WriteByte('\n')
	_, err := w.Write(out.Bytes())
	return err
}

// printJSON writes v as indented JSON (for documents the CLI composes).
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// pathEsc escapes one path segment.
func pathEsc(s string) string { return url.PathEscape(s) }
