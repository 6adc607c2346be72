package httpstore

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"github.com/preboot/preboot/image"
)

// Partitions lists image ref's partitions for the explorer.
func (c *Client) Partitions(ctx context.Context, ref string) (*PartitionList, error) {
	if err := image.ValidRef(ref); err != nil {
		return nil, err
	}
	var out PartitionList
	if _, err := c.do(ctx, call{method: http.MethodGet, path: "/images/" + ref + "/partitions", handle: decodeJSON(&out)}); err != nil {
		return nil, err
	}
	return &out, nil
}

// Files describes path p in partition n of image ref: a directory with its
// entries, or the file itself.
func (c *Client) Files(ctx context.Context, ref string, n int, p string) (*FileList, error) {
	if err := image.ValidRef(ref); err != nil {
		return nil, err
	}
	var out FileList
	if _, err := c.do(ctx, call{method: http.MethodGet, path: "/images/" + ref + "/partitions/" + strconv.Itoa(n) + "/files",
		query: url.Values{"path": {p}}, noTimeout: true, handle: decodeJSON(&out)}); err != nil {
		return nil, err
	}
	return &out, nil
}

// Content writes the bytes of file p in partition n of image ref to w and
// returns how many. An answer cut short (the server found a corrupt chunk
// halfway) is an error; w then holds a prefix of the file.
func (c *Client) Content(ctx context.Context, ref string, n int, p string, w io.Writer) (int64, error) {
	if err := image.ValidRef(ref); err != nil {
		return 0, err
	}
	var total int64
	_, err := c.do(ctx, call{method: http.MethodGet, path: "/images/" + ref + "/partitions/" + strconv.Itoa(n) + "/content",
		query: url.Values{"path": {p}}, noTimeout: true, noRetry: true,
		handle: func(resp *http.Response) error {
			m, err := io.Copy(w, resp.Body)
			total += m
			if err == nil && resp.ContentLength >= 0 && total != resp.ContentLength {
				err = fmt.Errorf("got %d of %d bytes", total, resp.ContentLength)
			}
			if err != nil {
				// The server ends a download short when a chunk fails
				// to verify; asking for the rest tells why.
				if why := c.contentError(ctx, ref, n, p, total); why != nil {
					err = why
				}
				return fmt.Errorf("%s: after %d bytes: %w", p, total, err)
			}
			return nil
		}})
	return total, err
}

// contentError has the server read file p from offset off without
// sending it (?check=true) and returns the error that stops the read, nil
// if there is none.
func (c *Client) contentError(ctx context.Context, ref string, n int, p string, off int64) error {
	_, err := c.do(ctx, call{method: http.MethodGet, path: "/images/" + ref + "/partitions/" + strconv.Itoa(n) + "/content",
		query: url.Values{"path": {p}, "check": {"true"}}, noRetry: true, noTimeout: true, header: http.Header{"Range": {fmt.Sprintf("bytes=%d-", off)}},
		handle: func(resp *http.Response) error { return nil }})
	return err
}

// Diff compares image refs a and b partition by partition.
func (c *Client) Diff(ctx context.Context, a, b string) (*image.DiffResult, error) {
	for _, r := range []string{a, b} {
		if err := image.ValidRef(r); err != nil {
			return nil, err
		}
	}
	var out image.DiffResult
	if _, err := c.do(ctx, call{method: http.MethodGet, path: "/images/" + a + "/diff/" + b, handle: decodeJSON(&out)}); err != nil {
		return nil, err
	}
	return &out, nil
}
