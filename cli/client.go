package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/preboot/preboot/store"
)

// apiClient talks to a Preboot server's /api/v1.
type apiClient struct {
	base string
	http *http.Client
}

type adminFlags struct {
	server string
	output string
}

func (a *adminFlags) register(cmd *cobra.Command) {
	cmd.PersistentFlags().StringVar(&a.server, "server", "", "Preboot server URL (default: $PREBOOT_SERVER, the config's server_url, else http://127.0.0.1:8080)")
	cmd.PersistentFlags().StringVarP(&a.output, "output", "o", "table", "output format: table or json")
}

func (a *adminFlags) client(g *globals) (*apiClient, error) {
	if a.output != "table" && a.output != "json" {
		return nil, fmt.Errorf("--output %q: want table or json", a.output)
	}
	url := a.server
	if url == "" {
		url = os.Getenv("PREBOOT_SERVER")
	}
	if url == "" {
		cfg, err := g.load()
		if err != nil {
			return nil, err
		}
		url = cfg.ServerURL
	}
	return &apiClient{base: strings.TrimRight(url, "/"), http: &http.Client{Timeout: 30 * time.Second}}, nil
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

// do sends a request and decodes a JSON answer into out (if not nil).
func (c *apiClient) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach the Preboot server at %s (is `preboot serve` running? set --server): %w", c.base, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			return errors.New(e.Error)
		}
		return fmt.Errorf("%s %s: %s", method, path, resp.Status)
	}
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("%s %s: bad answer: %w", method, path, err)
		}
	}
	return nil
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
