package peers

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/preboot/preboot/mcast"
)

var _ mcast.PeerFactory = (*Factory)(nil)

func TestFactory(t *testing.T) {
	d := newTestDisk(t, 4)
	tr := NewTracker(TrackerConfig{})
	base := startTracker(t, tr, d)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// Receiver a serves; it learns the session after its join.
	fa := NewFactory(FactoryConfig{BaseURL: base, Token: testToken, Listen: "127.0.0.2:0"})
	defer fa.Close()
	urlA, err := fa.Serve(ctx, nil, "", d.lookup, d.f)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(urlA, "http://127.0.0.2:") {
		t.Fatalf("advertised %q", urlA)
	}
	tr.Join(testSession, "a", urlA)
	tr.Have(testSession, "a", d.all())

	fb := NewFactory(FactoryConfig{BaseURL: base, Token: testToken, Listen: "127.0.0.3:0"})
	defer fb.Close()
	fe := fb.Fetcher(testSession, "b", testSecret, d.hashes, &memStore{d: d})
	// Before a's SetSession it refuses (503): b falls back and reports a.
	got, fromPeer, err := fe.Get(ctx, 0, nil)
	if err != nil || fromPeer || !bytes.Equal(unzstd(got), d.content[0]) {
		t.Fatalf("before SetSession: from peer %v, %v", fromPeer, err)
	}
	if ss, _ := fa.Stats(); ss.Busy != 1 {
		t.Fatalf("a's stats %+v", ss)
	}
	fa.SetSession(testSession, testSecret)
	fc := NewFactory(FactoryConfig{BaseURL: base, Token: testToken})
	defer fc.Close()
	fe = fc.Fetcher(testSession, "c", testSecret, d.hashes, &memStore{d: d})
	for i := range d.hashes {
		got, fromPeer, err := fe.Get(ctx, uint32(i), nil)
		if err != nil || !fromPeer || !bytes.Equal(unzstd(got), d.content[i]) {
			t.Fatalf("chunk %d: from peer %v, %v", i, fromPeer, err)
		}
		tr.Have(testSession, "c", []uint32{uint32(i)})
	}
	if _, fs := fc.Stats(); fs.PeerChunks != 4 || fs.ServerChunks != 0 {
		t.Fatalf("c's stats %+v", fs)
	}

	// Without a server URL the fetcher still works, from the fallback only.
	fd := NewFactory(FactoryConfig{})
	fe = fd.Fetcher(testSession, "d", testSecret, d.hashes, &memStore{d: d})
	if got, fromPeer, err := fe.Get(ctx, 1, nil); err != nil || fromPeer || !bytes.Equal(unzstd(got), d.content[1]) {
		t.Fatalf("server only: %v", err)
	}
	if _, _, err := fe.Get(ctx, 99, nil); err == nil {
		t.Fatal("server only: a chunk outside the table")
	}
}

func TestClockWrap(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Date", time.Now().Add(-3*time.Hour).UTC().Format(http.TimeFormat))
	}))
	defer srv.Close()
	var c Clock
	hc := &http.Client{Transport: c.Wrap(nil)}
	resp, err := hc.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if off := c.Offset(); off > -179*time.Minute || off < -181*time.Minute {
		t.Fatalf("offset %v", off)
	}
	if d := time.Until(c.Now()); d > -179*time.Minute {
		t.Fatalf("Now is %v from local", d)
	}
}
