// Package console is Preboot's web console: server-rendered pages (Go
// html/template) for the administrator, each with one small vanilla
// JavaScript file that loads its data from the REST API under /api/v1 and
// follows the event stream. Everything is embedded in the binary and
// served under /console/; nothing is fetched from another origin.
//
// The console has no state of its own: sessions, logins and logouts are
// package session's (POST /console/login and POST /console/logout are
// served there); every page but the login page runs behind the session
// check and embeds the session's CSRF token for the scripts and forms.
package console

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/preboot/preboot/bundle"
	"github.com/preboot/preboot/store"
)

// Prefix is where the console lives on the server.
const Prefix = "/console/"

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Options configure New.
type Options struct {
	// Version is shown in the page footer.
	Version string
	// Logger receives template errors; nil discards.
	Logger *slog.Logger
	// Require wraps every page except the login page and the static
	// assets with the session check (session.Require). When nil, the
	// pages still refuse to render without a session in the request
	// context and redirect to the login page.
	Require func(http.Handler) http.Handler
}

// page is one console page: its template and what the navigation calls it.
type page struct {
	name  string // template file (templates/NAME.html) and data-page value
	title string
	nav   string // the navigation entry it belongs to
}

// NavItem is one entry of the navigation bar.
type NavItem struct {
	Key, Label, Href string
}

// nav is the navigation bar, in order.
var nav = []NavItem{
	{"dashboard", "Dashboard", "/console/"},
	{"devices", "Devices", "/console/devices"},
	{"jobs", "Jobs", "/console/jobs"},
	{"sessions", "Sessions", "/console/sessions"},
	{"schedule", "Schedule", "/console/schedule"},
	{"events", "Events", "/console/events"},
	{"bundles", "Bundles", "/console/bundles"},
	{"groups", "Groups", "/console/groups"},
	{"rules", "Rules", "/console/rules"},
	{"menu", "Menu", "/console/menu"},
	{"images", "Images", "/console/images"},
	{"leases", "Leases", "/console/leases"},
	{"settings", "Settings", "/console/settings"},
}

var pages = []page{
	{"dashboard", "Dashboard", "dashboard"},
	{"devices", "Devices", "devices"},
	{"device", "Device", "devices"},
	{"jobs", "Jobs", "jobs"},
	{"job", "Job", "jobs"},
	{"sessions", "Multicast sessions", "sessions"},
	{"schedule", "Scheduled work", "schedule"},
	{"events", "Events", "events"},
	{"bundles", "Bundles", "bundles"},
	{"groups", "Groups", "groups"},
	{"group", "Group", "groups"},
	{"rules", "Rules", "rules"},
	{"menu", "Menu", "menu"},
	{"images", "Images", "images"},
	{"image", "Image", "images"},
	{"leases", "DHCP leases", "leases"},
	{"settings", "Settings", "settings"},
	{"notfound", "Not found", ""},
}

// pageData is what every template gets.
type pageData struct {
	Page    string // data-page of <body>
	Title   string
	Nav     []NavItem
	Active  string
	User    string
	CSRF    string
	Version string
	// Attrs become data-* attributes of <body> (the MAC of a device
	// page, the id of a job page...), read by the page's script.
	Attrs map[string]string
	// Heading is a page-specific heading (a device's MAC, a job id).
	Heading string
	// Login page.
	Failed bool
	Next   string
	// Bundle kinds, for the bundle form.
	Kinds []string
}

// Handler serves the console.
type Handler struct {
	opts   Options
	log    *slog.Logger
	tmpl   map[string]*template.Template
	assets *assets
	mux    *http.ServeMux
}

// New returns the console's handler for everything under /console/: GET
// /console/login (the form posts to session.Manager.Login), the pages
// (behind o.Require) and the embedded assets under /console/static/.
// Mount it at "/console/" next to POST /console/login and POST
// /console/logout (package session). It panics if the embedded templates do not parse (a
// build error caught by the package's tests).
func New(o Options) http.Handler {
	h, err := newHandler(o)
	if err != nil {
		panic(err)
	}
	return h
}

func newHandler(o Options) (*Handler, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Require == nil {
		o.Require = func(h http.Handler) http.Handler { return h }
	}
	h := &Handler{opts: o, log: o.Logger, tmpl: map[string]*template.Template{}, mux: http.NewServeMux()}
	var err error
	if h.assets, err = loadAssets(staticFS, "static"); err != nil {
		return nil, err
	}
	funcs := template.FuncMap{"asset": h.assets.url}
	for _, p := range append(pages, page{name: "login"}) {
		base := "templates/layout.html"
		if p.name == "login" {
			base = "templates/bare.html"
		}
		t, err := template.New(p.name).Funcs(funcs).ParseFS(templateFS, base, "templates/partials.html", "templates/"+p.name+".html")
		if err != nil {
			return nil, fmt.Errorf("console: template %s: %w", p.name, err)
		}
		h.tmpl[p.name] = t
	}
	h.routes()
	return h, nil
}

func (h *Handler) routes() {
	m := h.mux
	m.HandleFunc("GET /console", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, Prefix, http.StatusMovedPermanently)
	})
	m.HandleFunc("GET /console/login", h.login)
	m.Handle("GET /console/static/{file}", h.assets)
	protect := func(pattern string, fn func(http.ResponseWriter, *http.Request)) {
		m.Handle(pattern, h.opts.Require(http.HandlerFunc(fn)))
	}
	simple := func(name string) func(http.ResponseWriter, *http.Request) {
		return func(w http.ResponseWriter, r *http.Request) { h.render(w, r, name, http.StatusOK, nil, "") }
	}
	protect("GET /console/{$}", simple("dashboard"))
	protect("GET /console/devices", simple("devices"))
	protect("GET /console/devices/{mac}", h.device)
	protect("GET /console/jobs", simple("jobs"))
	protect("GET /console/jobs/{id}", h.job)
	protect("GET /console/sessions", simple("sessions"))
	protect("GET /console/schedule", simple("schedule"))
	protect("GET /console/events", simple("events"))
	protect("GET /console/bundles", simple("bundles"))
	protect("GET /console/groups", simple("groups"))
	protect("GET /console/groups/{name}", h.group)
	protect("GET /console/rules", simple("rules"))
	protect("GET /console/menu", simple("menu"))
	protect("GET /console/images", simple("images"))
	protect("GET /console/images/{name}", h.imagePage)
	protect("GET /console/leases", simple("leases"))
	protect("GET /console/settings", simple("settings"))
	protect("/console/", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		h.notFound(w, r)
	})
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mux.ServeHTTP(w, r)
}

func (h *Handler) device(w http.ResponseWriter, r *http.Request) {
	mac, err := store.NormalizeMAC(r.PathValue("mac"))
	if err != nil {
		h.notFound(w, r)
		return
	}
	h.render(w, r, "device", http.StatusOK, map[string]string{"mac": mac}, mac)
}

func (h *Handler) job(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		h.notFound(w, r)
		return
	}
	h.render(w, r, "job", http.StatusOK, map[string]string{"job": strconv.FormatInt(id, 10)}, "Job "+strconv.FormatInt(id, 10))
}

func (h *Handler) group(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if bundle.ValidName("group", name) != nil {
		h.notFound(w, r)
		return
	}
	h.render(w, r, "group", http.StatusOK, map[string]string{"group": name}, name)
}

func (h *Handler) notFound(w http.ResponseWriter, r *http.Request) {
	h.render(w, r, "notfound", http.StatusNotFound, nil, "")
}

// render writes a page inside the layout. Pages need a session: without
// one (no session middleware in front) GET requests go to the login page.
func (h *Handler) render(w http.ResponseWriter, r *http.Request, name string, status int, attrs map[string]string, heading string) {
	user, csrf, ok := sessionInfo(r)
	if !ok {
		http.Redirect(w, r, loginURL(r.URL.RequestURI()), http.StatusSeeOther)
		return
	}
	var p page
	for _, q := range pages {
		if q.name == name {
			p = q
		}
	}
	d := pageData{Page: name, Title: p.title, Nav: nav, Active: p.nav, User: user, CSRF: csrf, Version: h.opts.Version,
		Attrs: attrs, Heading: heading, Kinds: store.BundleKinds}
	if heading != "" {
		d.Title = p.title + " " + heading
		if name == "job" {
			d.Title = heading
		}
	}
	h.write(w, r, name, status, d)
}

func (h *Handler) write(w http.ResponseWriter, r *http.Request, name string, status int, d pageData) {
	var buf bytes.Buffer
	if err := h.tmpl[name].ExecuteTemplate(&buf, "layout", d); err != nil {
		h.log.ErrorContext(r.Context(), "console template", "page", name, "err", err)
		http.Error(w, "console: page failed to render", http.StatusInternalServerError)
		return
	}
	hd := w.Header()
	hd.Set("Content-Type", "text/html; charset=utf-8")
	hd.Set("Cache-Control", "no-store")
	securityHeaders(hd)
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(buf.Bytes())
	}
}

// securityHeaders keep the pages to their own origin: no inline script,
// no framing, nothing loaded from elsewhere.
func securityHeaders(hd http.Header) {
	hd.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "+
		"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Referrer-Policy", "same-origin")
}

// login serves the login form. The form posts user, password and next to
// POST /console/login (package session).
func (h *Handler) login(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	d := pageData{Page: "login", Title: "Sign in", Version: h.opts.Version, Failed: q.Get("failed") != "", Next: safeNext(q.Get("next"))}
	h.write(w, r, "login", http.StatusOK, d)
}
