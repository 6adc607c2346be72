package cli

import (
	"bytes"
	"context"
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
	"time"

	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"

	"github.com/preboot/preboot/store"
)

// defaultServer is where admin commands look for the API when nothing
// else says where: the server trusts loopback clients by default.
const defaultServer = "http://127.0.0.1:8080"

// apiClient talks to a Preboot server's /api/v1.
type apiClient struct {
	base  string
	token string
	http  *http.Client
}

// adminFlags are the flags every admin command group shares: where the
// server is, the token, and the output format.
type adminFlags struct {
	server string
	token  string
	output string
}

func (a *adminFlags) register(cmd *cobra.Command) {
	cmd.PersistentFlags().StringVar(&a.server, "server", "", "Preboot server URL (default: $PREBOOT_SERVER, the CLI config file's server, else "+defaultServer+")")
	cmd.PersistentFlags().StringVar(&a.token, "token", "", "admin API token (default: $PREBOOT_TOKEN, else the CLI config file's token)")
	cmd.PersistentFlags().StringVarP(&a.output, "output", "o", "table", "output format: table or json (the API's JSON)")
}

// json reports whether the output is the API's JSON.
func (a *adminFlags) json() bool { return a.output == "json" }

// cliConfig is the CLI's own configuration file (`preboot login` writes it).
type cliConfig struct {
	Server string `yaml:"server,omitempty"`
	Token  string `yaml:"token,omitempty"`
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

// resolve finds the server URL and token: flags, else $PREBOOT_SERVER and
// $PREBOOT_TOKEN, else the CLI config file, else the server
// configuration's server_url (when --config names one), else the
// loopback default without a token.
func (a *adminFlags) resolve(g *globals) (server, token string, err error) {
	server, token = a.server, a.token
	if server == "" {
		server = os.Getenv("PREBOOT_SERVER")
	}
	if token == "" {
		token = os.Getenv("PREBOOT_TOKEN")
	}
	if server == "" || token == "" {
		c, _, err := readCLIConfig()
		if err != nil {
			return "", "", err
		}
		if server == "" {
			server = c.Server
		}
		if token == "" {
			token = c.Token
		}
	}
	if server == "" && g.configFile != "" {
		cfg, err := g.load()
		if err != nil {
			return "", "", err
		}
		server = cfg.ServerURL
	}
	if server == "" {
		server = defaultServer
	}
	u, err := url.Parse(server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", "", fmt.Errorf("server %q: want a URL like http://host:8080", server)
	}
	return strings.TrimRight(server, "/"), token, nil
}

func (a *adminFlags) client(g *globals) (*apiClient, error) {
	if a.output != "table" && a.output != "json" {
		return nil, fmt.Errorf("--output %q: want table or json", a.output)
	}
	server, token, err := a.resolve(g)
	if err != nil {
		return nil, err
	}
	return &apiClient{base: server, token: token, http: &http.Client{Timeout: 30 * time.Second}}, nil
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
			return nil, nil, fmt.Errorf("%s %s: the Preboot server at %s did not answer in %s", method, path, c.base, c.http.Timeout)
		}
		return nil, nil, fmt.Errorf("cannot reach the Preboot server at %s (is `preboot serve` running? set --server): %w", c.base, err)
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
		msg += "\n(give an admin token: --token, $PREBOOT_TOKEN or `preboot login`)"
	case http.StatusForbidden:
		msg += "\n(this token is not an admin token: create one with `preboot token create NAME` on the server host)"
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
