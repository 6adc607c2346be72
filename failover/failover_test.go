package failover

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// server is a real HTTP server on loopback that answers its name and the
// request body, and counts its requests.
type server struct {
	*httptest.Server
	hits atomic.Int64
}

func newServer(t *testing.T, name string) *server {
	s := &server{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		b, _ := io.ReadAll(r.Body)
		io.WriteString(w, name+" "+r.Method+" "+r.URL.Path+" "+string(b))
	}))
	t.Cleanup(s.Close)
	return s
}

// deadURL is the URL of a loopback port nothing listens on.
func deadURL(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := "http://" + ln.Addr().String()
	ln.Close()
	return u
}

func get(t *testing.T, c *http.Client, method, url, body string) string {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestFailover(t *testing.T) {
	dead := deadURL(t)
	b, c := newServer(t, "B"), newServer(t, "C")
	tr, err := New([]string{dead, b.URL, c.URL}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: tr}

	// Addressed to the dead first server: answered by B, with the body.
	if got := get(t, hc, "POST", dead+"/api/v1/agent/job/progress", `{"x":1}`); got != `B POST /api/v1/agent/job/progress {"x":1}` {
		t.Fatalf("first request: %q", got)
	}
	if tr.Current() != b.URL {
		t.Fatalf("current %s, want %s", tr.Current(), b.URL)
	}
	// Later requests go to B directly, whichever server they name.
	for _, u := range []string{dead, b.URL, c.URL} {
		if got := get(t, hc, "GET", u+"/x", ""); got != "B GET /x " {
			t.Fatalf("GET %s: %q", u, got)
		}
	}
	if b.hits.Load() != 4 || c.hits.Load() != 0 {
		t.Fatalf("hits B %d C %d, want 4 and 0", b.hits.Load(), c.hits.Load())
	}

	// B dies: C answers, then the ring comes back round to B's successor.
	b.Close()
	if got := get(t, hc, "PUT", dead+"/y", "body"); got != "C PUT /y body" {
		t.Fatalf("after B died: %q", got)
	}
	if tr.Current() != c.URL {
		t.Fatalf("current %s, want %s", tr.Current(), c.URL)
	}

	// Other hosts (a peer agent) are not redirected.
	p := newServer(t, "peer")
	if got := get(t, hc, "GET", p.URL+"/z", ""); got != "peer GET /z " {
		t.Fatalf("peer request: %q", got)
	}
}

func TestAllDown(t *testing.T) {
	d1, d2 := deadURL(t), deadURL(t)
	tr, err := New([]string{d1, d2}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = (&http.Client{Transport: tr}).Get(d1 + "/")
	if err == nil || !strings.Contains(err.Error(), "no server answered") ||
		!strings.Contains(err.Error(), d1) || !strings.Contains(err.Error(), d2) {
		t.Fatalf("err = %v", err)
	}
}

// A server that answers, even with an error status, is alive: its answer
// is the caller's to judge, not a reason to switch.
func TestStatusIsAnAnswer(t *testing.T) {
	a := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "busy", http.StatusServiceUnavailable)
	}))
	t.Cleanup(a.Close)
	b := newServer(t, "B")
	tr, err := New([]string{a.URL, b.URL}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{Transport: tr}).Get(a.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || tr.Current() != a.URL || b.hits.Load() != 0 {
		t.Fatalf("status %d current %s B hits %d", resp.StatusCode, tr.Current(), b.hits.Load())
	}
}

// A body that cannot be sent again is not: the error comes back.
func TestUnreplayableBody(t *testing.T) {
	dead := deadURL(t)
	b := newServer(t, "B")
	tr, err := New([]string{dead, b.URL}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest("POST", dead+"/", io.NopCloser(strings.NewReader("once")))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := (&http.Client{Transport: tr}).Do(req); err == nil {
		t.Fatal("an unreplayable body was sent again")
	}
	if b.hits.Load() != 0 {
		t.Fatalf("B got %d requests", b.hits.Load())
	}
}

func TestSplit(t *testing.T) {
	got := Split(" https://a:8443/, https://b:8443,,https://a:8443 ")
	if strings.Join(got, " ") != "https://a:8443 https://b:8443" {
		t.Fatalf("Split = %q", got)
	}
	if _, err := New([]string{"ftp://x"}, nil, nil); err == nil {
		t.Fatal("ftp:// accepted")
	}
	if _, err := New(nil, nil, nil); err == nil {
		t.Fatal("no server accepted")
	}
}
