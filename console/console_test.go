package console

import (
	"io/fs"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/preboot/preboot/session"
)

const (
	testUser = "alice"
	testCSRF = "csrf-tok-3f9a"
)

// pagePaths are every page behind the session, with the page name its
// <body data-page> carries and the navigation entry it highlights.
var pagePaths = []struct{ path, page, nav string }{
	{"/console/", "dashboard", "dashboard"},
	{"/console/devices", "devices", "devices"},
	{"/console/devices/52:54:00:12:34:56", "device", "devices"},
	{"/console/devices/52-54-00-AB-CD-EF", "device", "devices"},
	{"/console/jobs", "jobs", "jobs"},
	{"/console/jobs/42", "job", "jobs"},
	{"/console/sessions", "sessions", "sessions"},
	{"/console/schedule", "schedule", "schedule"},
	{"/console/events", "events", "events"},
	{"/console/bundles", "bundles", "bundles"},
	{"/console/groups", "groups", "groups"},
	{"/console/groups/lab-a", "group", "groups"},
	{"/console/rules", "rules", "rules"},
	{"/console/menu", "menu", "menu"},
	{"/console/images", "images", "images"},
	{"/console/leases", "leases", "leases"},
	{"/console/settings", "settings", "settings"},
}

func newTest(t *testing.T, o Options) *Handler {
	t.Helper()
	h, err := newHandler(o)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// do serves one request, with a session in its context when signedIn.
func do(t *testing.T, h http.Handler, method, target string, signedIn bool, hdr map[string]string) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest(method, target, nil)
	if signedIn {
		r = r.WithContext(session.NewContext(r.Context(), session.Info{User: testUser, CSRF: testCSRF}))
	}
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

var (
	assetRE  = regexp.MustCompile(`(?:src|href)="(/console/static/[^"?]+)\?v=([0-9a-f]+)"`)
	idRE     = regexp.MustCompile(`\sid="([^"]+)"`)
	scriptRE = regexp.MustCompile(`<script\b[^>]*>`)
)

func TestPagesRender(t *testing.T) {
	h := newTest(t, Options{Version: "v9.9-test"})
	for _, p := range pagePaths {
		t.Run(p.path, func(t *testing.T) {
			w := do(t, h, "GET", p.path, true, nil)
			if w.Code != http.StatusOK {
				t.Fatalf("status %d, body %s", w.Code, w.Body)
			}
			if ct := w.Header().Get("Content-Type"); ct != "text/html; charset=utf-8" {
				t.Errorf("Content-Type %q", ct)
			}
			if cc := w.Header().Get("Cache-Control"); cc != "no-store" {
				t.Errorf("Cache-Control %q: pages carry the CSRF token and must not be cached", cc)
			}
			if csp := w.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
				t.Errorf("Content-Security-Policy %q", csp)
			}
			body := w.Body.String()
			for _, want := range []string{
				`<meta name="csrf-token" content="` + testCSRF + `">`,
				`data-page="` + p.page + `"`,
				`<form method="post" action="/console/logout" id="logout-form">`,
				`<input type="hidden" name="csrf" value="` + testCSRF + `">`,
				`id="session-user" data-user="alice">alice<`,
				`data-nav="` + p.nav + `" aria-current="page"`,
				`id="stream-status"`,
				"Preboot v9.9-test",
			} {
				if !strings.Contains(body, want) {
					t.Errorf("page lacks %s", want)
				}
			}
			if n := strings.Count(body, `aria-current="page"`); n != 1 {
				t.Errorf("%d navigation entries marked current, want 1", n)
			}
			// Every navigation entry is there, in order.
			last := -1
			for _, n := range nav {
				i := strings.Index(body, `href="`+n.Href+`" data-nav="`+n.Key+`"`)
				if i < 0 || i < last {
					t.Errorf("navigation entry %s missing or out of order", n.Label)
				}
				last = i
			}
			// No inline script: every <script> has a src (the CSP forbids inline code).
			scripts := scriptRE.FindAllString(body, -1)
			if len(scripts) < 2 {
				t.Errorf("%d scripts, want console.js and the page's own", len(scripts))
			}
			for _, s := range scripts {
				if !strings.Contains(s, `src="/console/static/`) {
					t.Errorf("inline or foreign script %s", s)
				}
			}
			// Ids are unique: browser tests and scripts look elements up by them.
			seen := map[string]bool{}
			for _, m := range idRE.FindAllStringSubmatch(body, -1) {
				if seen[m[1]] {
					t.Errorf("id %q used twice", m[1])
				}
				seen[m[1]] = true
			}
			// Every linked asset is served, at the version the page names.
			links := assetRE.FindAllStringSubmatch(body, -1)
			if len(links) < 4 {
				t.Errorf("only %d versioned assets linked", len(links))
			}
			for _, m := range links {
				aw := do(t, h, "GET", m[1]+"?v="+m[2], false, nil)
				if aw.Code != http.StatusOK {
					t.Errorf("asset %s: status %d", m[1], aw.Code)
				}
				if !strings.Contains(aw.Header().Get("Cache-Control"), "immutable") {
					t.Errorf("asset %s at its version is not cached for good: %q", m[1], aw.Header().Get("Cache-Control"))
				}
			}
			// HEAD answers like GET, without a body.
			hw := do(t, h, "HEAD", p.path, true, nil)
			if hw.Code != http.StatusOK || hw.Body.Len() != 0 {
				t.Errorf("HEAD: status %d, %d body bytes", hw.Code, hw.Body.Len())
			}
		})
	}
}

func TestPageAttributes(t *testing.T) {
	h := newTest(t, Options{})
	for _, c := range []struct{ path, want string }{
		{"/console/devices/52-54-00-AB-CD-EF", `data-mac="52:54:00:ab:cd:ef"`},
		{"/console/devices/525400abcdef", `data-mac="52:54:00:ab:cd:ef"`},
		{"/console/jobs/42", `data-job="42"`},
		{"/console/jobs/42", `<div id="job-42" class="job-detail">`},
		{"/console/groups/lab-a", `data-group="lab-a"`},
		{"/console/bundles", `<option value="image-restore">image-restore</option>`},
		{"/console/bundles", `<fieldset data-kind="local-boot" disabled>`},
	} {
		body := do(t, h, "GET", c.path, true, nil).Body.String()
		if !strings.Contains(body, c.want) {
			t.Errorf("%s lacks %s", c.path, c.want)
		}
	}
}

func TestNotFound(t *testing.T) {
	h := newTest(t, Options{})
	for _, p := range []string{
		"/console/devices/not-a-mac",
		"/console/jobs/abc",
		"/console/jobs/0",
		"/console/jobs/-3",
		"/console/groups/-bad",
		"/console/nope",
		"/console/devices/52:54:00:12:34:56/extra",
		"/console/static/missing.js",
	} {
		w := do(t, h, "GET", p, true, nil)
		if w.Code != http.StatusNotFound {
			t.Errorf("%s: status %d, want 404", p, w.Code)
		}
	}
	// The console's own 404 page keeps the layout (and the session).
	body := do(t, h, "GET", "/console/nope", true, nil).Body.String()
	if !strings.Contains(body, `id="not-found"`) || !strings.Contains(body, `name="csrf-token"`) {
		t.Errorf("404 page: %s", body)
	}
	if w := do(t, h, "POST", "/console/devices", true, nil); w.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST a page: status %d, want 405", w.Code)
	}
	if w := do(t, h, "GET", "/console", true, nil); w.Code != http.StatusMovedPermanently || w.Header().Get("Location") != "/console/" {
		t.Errorf("GET /console: %d %q", w.Code, w.Header().Get("Location"))
	}
}

func TestNoSessionGoesToLogin(t *testing.T) {
	h := newTest(t, Options{})
	for _, p := range pagePaths {
		w := do(t, h, "GET", p.path, false, nil)
		if w.Code != http.StatusSeeOther {
			t.Errorf("%s without a session: status %d, want 303", p.path, w.Code)
			continue
		}
		loc, err := url.Parse(w.Header().Get("Location"))
		if err != nil || loc.Path != "/console/login" {
			t.Errorf("%s: redirected to %q", p.path, w.Header().Get("Location"))
			continue
		}
		want := (&url.URL{Path: p.path}).RequestURI()
		if got := loc.Query().Get("next"); got != want && got != p.path {
			t.Errorf("%s: next=%q", p.path, got)
		}
		if strings.Contains(w.Body.String(), "csrf-token") {
			t.Errorf("%s: the page was rendered without a session", p.path)
		}
	}
	// The login page and the assets need no session.
	if w := do(t, h, "GET", "/console/login", false, nil); w.Code != http.StatusOK {
		t.Errorf("login page: %d", w.Code)
	}
	if w := do(t, h, "GET", "/console/static/console.css", false, nil); w.Code != http.StatusOK {
		t.Errorf("stylesheet: %d", w.Code)
	}
}

// TestRequire checks which routes go through the session middleware.
func TestRequire(t *testing.T) {
	var wrapped []string
	require := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			wrapped = append(wrapped, r.URL.Path)
			if r.Header.Get("X-Test-Session") == "" {
				http.Redirect(w, r, "/console/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
				return
			}
			next.ServeHTTP(w, r.WithContext(session.NewContext(r.Context(), session.Info{User: "bob", CSRF: "tok-b"})))
		})
	}
	h := newTest(t, Options{Require: require})
	for _, p := range pagePaths {
		wrapped = nil
		w := do(t, h, "GET", p.path, false, map[string]string{"X-Test-Session": "1"})
		if w.Code != http.StatusOK || len(wrapped) != 1 || !strings.Contains(w.Body.String(), `content="tok-b"`) {
			t.Errorf("%s: status %d, middleware calls %v", p.path, w.Code, wrapped)
		}
	}
	wrapped = nil
	if w := do(t, h, "GET", "/console/nope", false, nil); w.Code != http.StatusSeeOther || len(wrapped) != 1 {
		t.Errorf("unknown page without a session: status %d (the 404 page is behind the session too)", w.Code)
	}
	for _, p := range []string{"/console/login", "/console/static/console.js"} {
		wrapped = nil
		if w := do(t, h, "GET", p, false, nil); w.Code != http.StatusOK || len(wrapped) != 0 {
			t.Errorf("%s: status %d, middleware calls %v (must be reachable without a session)", p, w.Code, wrapped)
		}
	}
}

func TestLoginPage(t *testing.T) {
	h := newTest(t, Options{Version: "v1"})
	w := do(t, h, "GET", "/console/login?next=%2Fconsole%2Fdevices%3Fq%3Dlab", false, nil)
	body := w.Body.String()
	if w.Code != http.StatusOK {
		t.Fatalf("status %d", w.Code)
	}
	for _, want := range []string{
		`<form method="post" action="/console/login" id="login-form"`,
		`name="user"`, `name="password"`, `type="password"`,
		`<input type="hidden" name="next" value="/console/devices?q=lab">`,
		`data-page="login"`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("login page lacks %s", want)
		}
	}
	for _, not := range []string{`id="login-error"`, `csrf-token`, `logout`} {
		if strings.Contains(body, not) {
			t.Errorf("login page has %s", not)
		}
	}
	failed := do(t, h, "GET", "/console/login?failed=1", false, nil).Body.String()
	if !strings.Contains(failed, `id="login-error"`) || !strings.Contains(failed, "Wrong user name or password.") {
		t.Errorf("failed login page lacks the error")
	}
	if !strings.Contains(failed, `name="next" value="/console/"`) {
		t.Errorf("default next is not /console/")
	}
	// A next that leaves the server is replaced.
	evil := do(t, h, "GET", "/console/login?next="+url.QueryEscape("//evil.example/x"), false, nil).Body.String()
	if !strings.Contains(evil, `name="next" value="/console/"`) {
		t.Errorf("foreign next kept")
	}
}

func TestSafeNext(t *testing.T) {
	for in, want := range map[string]string{
		"":                        "/console/",
		"/console/devices":        "/console/devices",
		"/console/jobs?state=x":   "/console/jobs?state=x",
		"//evil.example":          "/console/",
		"/\\evil.example":         "/console/",
		"https://evil.example/":   "/console/",
		"javascript:alert(1)":     "/console/",
		"console/devices":         "/console/",
		"/console/\r\nSet-Cookie": "/console/",
	} {
		if got := safeNext(in); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestStaticAssets(t *testing.T) {
	h := newTest(t, Options{})
	want := map[string]string{
		".css": "text/css; charset=utf-8",
		".js":  "text/javascript; charset=utf-8",
		".svg": "image/svg+xml",
	}
	names, err := fs.ReadDir(staticFS, "static")
	if err != nil {
		t.Fatal(err)
	}
	if len(names) < 10 {
		t.Fatalf("only %d static files embedded", len(names))
	}
	for _, e := range names {
		name := e.Name()
		a := h.assets.files[name]
		ext := name[strings.LastIndex(name, "."):]
		w := do(t, h, "GET", "/console/static/"+name+"?v="+a.hash, false, nil)
		if w.Code != http.StatusOK {
			t.Errorf("%s: status %d", name, w.Code)
			continue
		}
		if ct := w.Header().Get("Content-Type"); ct != want[ext] {
			t.Errorf("%s: Content-Type %q, want %q", name, ct, want[ext])
		}
		if w.Header().Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: no nosniff", name)
		}
		if cc := w.Header().Get("Cache-Control"); cc != "public, max-age=31536000, immutable" {
			t.Errorf("%s: Cache-Control %q", name, cc)
		}
		etag := w.Header().Get("ETag")
		if etag != `"`+a.hash+`"` {
			t.Errorf("%s: ETag %q", name, etag)
		}
		if w.Body.Len() == 0 || w.Body.String() != string(a.data) {
			t.Errorf("%s: body differs from the embedded file", name)
		}
		// Unversioned: served, revalidated.
		u := do(t, h, "GET", "/console/static/"+name, false, nil)
		if u.Code != http.StatusOK || u.Header().Get("Cache-Control") != "no-cache" {
			t.Errorf("%s unversioned: %d %q", name, u.Code, u.Header().Get("Cache-Control"))
		}
		if nm := do(t, h, "GET", "/console/static/"+name, false, map[string]string{"If-None-Match": etag}); nm.Code != http.StatusNotModified {
			t.Errorf("%s If-None-Match: status %d, want 304", name, nm.Code)
		}
	}
	if w := do(t, h, "GET", "/console/static/../console.go", false, nil); w.Code == http.StatusOK {
		t.Errorf("path escape served")
	}
	if w := do(t, h, "POST", "/console/static/console.js", false, nil); w.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST an asset: %d", w.Code)
	}
}

// TestNoExternalReferences: the console loads nothing from another origin
// (no CDN, no web fonts) and has no inline code or style the CSP would block.
func TestNoExternalReferences(t *testing.T) {
	external := regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}|@import|url\(\s*['"]?(https?:|//)`)
	inline := regexp.MustCompile(`(?i)\s(on[a-z]+|style)\s*=\s*["']|javascript:`)
	check := func(fsys fs.FS, dir string) {
		err := fs.WalkDir(fsys, dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			b, err := fs.ReadFile(fsys, path)
			if err != nil {
				return err
			}
			// The SVG namespace is a name, not a fetch.
			text := strings.ReplaceAll(string(b), `xmlns="http://www.w3.org/2000/svg"`, "")
			if m := external.FindString(text); m != "" {
				t.Errorf("%s references %q", path, m)
			}
			if strings.HasSuffix(path, ".html") {
				if m := inline.FindString(text); m != "" {
					t.Errorf("%s has inline code or style %q (blocked by the CSP)", path, m)
				}
				if strings.Contains(text, "<script>") || strings.Contains(text, "<style") {
					t.Errorf("%s has an inline script or style block", path)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	check(templateFS, "templates")
	check(staticFS, "static")
}

// TestScriptsFindTheirElements: every element a page's script looks up by
// a literal id ($('#x')) is in the page's HTML, so a renamed id fails here
// rather than in a browser.
func TestScriptsFindTheirElements(t *testing.T) {
	h := newTest(t, Options{})
	lookup := regexp.MustCompile(`\$\('#([A-Za-z0-9_-]+)'[,)]`)
	scriptsOf := regexp.MustCompile(`src="/console/static/([a-z]+\.js)\?`)
	for _, p := range pagePaths {
		body := do(t, h, "GET", p.path, true, nil).Body.String()
		for _, s := range scriptsOf.FindAllStringSubmatch(body, -1) {
			if s[1] == "console.js" {
				continue
			}
			src := string(h.assets.files[s[1]].data)
			if src == "" {
				t.Errorf("%s: script %s is empty or missing", p.path, s[1])
			}
			for _, m := range lookup.FindAllStringSubmatch(src, -1) {
				id := m[1]
				if !strings.Contains(body, `id="`+id+`"`) && !strings.Contains(src, `id: '`+id+`'`) {
					t.Errorf("%s: %s looks up #%s, which the page does not have", p.path, s[1], id)
				}
			}
		}
	}
}

// TestScriptsParse checks the JavaScript syntax with node when it is
// installed (the browser tests run the scripts for real).
func TestScriptsParse(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node not installed: syntax checked by the browser tests only")
	}
	h := newTest(t, Options{})
	for name, a := range h.assets.files {
		if !strings.HasSuffix(name, ".js") {
			continue
		}
		cmd := exec.Command(node, "--check", "-")
		cmd.Stdin = strings.NewReader(string(a.data))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("%s: %v\n%s", name, err, out)
		}
	}
}
