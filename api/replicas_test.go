package api_test

import (
	"bytes"
	"context"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/preboot/preboot/api"
	"github.com/preboot/preboot/image"
	"github.com/preboot/preboot/image/httpstore"
	"github.com/preboot/preboot/replica"
	"github.com/preboot/preboot/store/sqlstore"
)

func init() {
	goSchemas["ReplicationStatus"] = reflect.TypeFor[replica.Status]()
	goSchemas["ReplicaImage"] = reflect.TypeFor[replica.ImageStatus]()
	goSchemas["ScrubResult"] = reflect.TypeFor[replica.ScrubResult]()
}

// TestReplicasLive walks the replica routes on a site server's API (a
// real replicator pulling from a real upstream over HTTPS) and checks the
// answers against the document.
func TestReplicasLive(t *testing.T) {
	ctx := context.Background()
	up, err := image.OpenRepo(t.TempDir(), image.RepoOptions{})
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("preboot site "), 40_000)
	l := image.Layout{DiskSize: int64(len(data)), Partitions: []image.Area{{Index: 1, Start: 0, Size: int64(len(data)), FSType: "raw"}}}
	m, err := image.Capture(ctx, bytes.NewReader(data), l, up, image.CaptureOptions{Name: "lab", ChunkSize: image.MinChunkSize})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := up.PublishVersion(ctx, m); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewTLSServer(&httpstore.Handler{Repo: up})
	t.Cleanup(srv.Close)
	local, err := image.OpenRepo(t.TempDir(), image.RepoOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sel, _ := replica.ParseSelector("all")
	rep, err := replica.New(replica.Options{Upstream: &httpstore.Client{BaseURL: srv.URL, HTTP: srv.Client()}, UpstreamURL: srv.URL,
		Local: local, Select: sel, StateFile: filepath.Join(t.TempDir(), "replicas.json")})
	if err != nil {
		t.Fatal(err)
	}
	st, err := sqlstore.OpenSQLite(ctx, filepath.Join(t.TempDir(), "site.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	h := api.New(api.Options{Store: st, Auth: &api.Auth{Store: st}, Replication: rep})
	live := newLive(t, asLocal(h))
	var tok api.NewTokenResponse
	live.anonymous("POST", "/tokens", map[string]any{"name": "site"}, 201, &tok)
	live.token = tok.Secret

	var s replica.Status
	live.do("GET", "/replicas", nil, 200, &s)
	if len(s.Images) != 0 || s.Upstream != srv.URL {
		t.Fatalf("before a round: %+v", s)
	}
	live.do("POST", "/replicas/sync", nil, 200, &s)
	if len(s.Images) != 1 || s.Images[0].State != replica.StateInSync || s.Images[0].Version != 1 {
		t.Fatalf("after a round: %+v", s)
	}
	// Corrupt a chunk at rest: a scrub finds it, a repair fixes it.
	h0 := m.ChunkHashes()[0].String()
	p := filepath.Join(local.Root(), "chunks", h0[:2], h0)
	if err := os.WriteFile(p, []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	var res replica.ScrubResult
	live.do("POST", "/replicas/verify", nil, 200, &res)
	if res.Corrupt != 1 || res.Repaired != 0 {
		t.Fatalf("scrub: %+v", res)
	}
	live.do("POST", "/replicas/verify", map[string]any{"image": "lab", "repair": true}, 200, &res)
	if res.Corrupt != 1 || res.Repaired != 1 {
		t.Fatalf("scrub with repair: %+v", res)
	}
	if err := local.Verify(ctx, "lab", 1); err != nil {
		t.Fatal(err)
	}
	live.bad("POST", "/replicas/verify", map[string]any{"image": "nope"}, 404)
	live.bad("POST", "/replicas/verify", `{"repair":"yes"}`, 400)
	live.do("GET", "/replicas", nil, 200, &s)
	if s.LastScrub == nil || s.LastScrub.Repaired != 1 {
		t.Fatalf("status after scrub: %+v", s.LastScrub)
	}
}
