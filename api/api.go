// Package api is Preboot's admin REST API under /api/v1: devices, groups,
// bundles, assignments, rules, jobs, multicast sessions, events, menus,
// settings and tokens.
// It is documented by the OpenAPI file it serves at /api/v1/openapi.json;
// the CLI and the web console are its clients.
package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"reflect"
	"strconv"
	"strings"

	"github.com/preboot/preboot/jobs"
	"github.com/preboot/preboot/mcast"
	"github.com/preboot/preboot/policy"
	"github.com/preboot/preboot/replica"
	"github.com/preboot/preboot/store"
	"github.com/preboot/preboot/wake"
)

// Handler serves the API.
type Handler struct {
	Options
	mux *http.ServeMux
}

// Options configure New.
type Options struct {
	Store  store.Store
	Policy *policy.Engine
	Jobs   *jobs.Service
	Logger *slog.Logger
	// Auth authenticates requests (admin socket peers, admin tokens,
	// console sessions); nil checks tokens only.
	Auth *Auth
	// ImageExists, when set, lets bundles that read an image be refused
	// while it does not exist.
	ImageExists func(name string) bool
	// Events wakes event streams when an event is stored (optional: the
	// streams poll the store anyway, which also sees other servers').
	Events *Notifier
	// EventStreams caps the open event streams (nil: no cap).
	EventStreams *StreamLimiter
	// Version is reported by GET /api/v1/version.
	Version string
	// Status fills GET /api/v1/status (the server sets it).
	Status StatusFunc
	// Leases is the DHCP lease database GET /api/v1/dhcp/leases lists
	// (nil: Store's, when it keeps leases).
	Leases store.Leases
	// Sessions is the multicast session manager (nil: multicast is not
	// configured, the session routes answer 503).
	Sessions Sessions
	// Waker sends Wake-on-LAN packets (nil: the wake routes answer 503).
	Waker *wake.Service
	// Replication is a site server's replicator (nil: no upstream, the
	// replica routes answer 503).
	Replication *replica.Replicator
}

// New returns a ready Handler.
func New(o Options) *Handler {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Auth == nil {
		o.Auth = &Auth{Store: o.Store}
	}
	if o.Sessions != nil {
		// A nil manager in the interface (multicast off) is no manager.
		if v := reflect.ValueOf(o.Sessions); v.Kind() == reflect.Pointer && v.IsNil() {
			o.Sessions = nil
		}
	}
	h := &Handler{Options: o, mux: http.NewServeMux()}
	for _, rt := range h.routes() {
		h.mux.HandleFunc(rt.pattern, rt.fn)
	}
	h.mux.HandleFunc("/api/v1/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such API endpoint: "+r.Method+" "+r.URL.Path)
	})
	return h
}

type route struct {
	pattern string
	fn      http.HandlerFunc
}

// routes are every endpoint of the API (the OpenAPI test compares them
// with the document).
func (h *Handler) routes() []route {
	return []route{
		{"GET /api/v1/openapi.json", serveOpenAPI},
		{"GET /api/v1/version", h.version},
		{"GET /api/v1/status", h.status},

		{"GET /api/v1/devices", h.listDevices},
		{"POST /api/v1/devices", h.createDevice},
		{"GET /api/v1/devices/{mac}", h.getDevice},
		{"PATCH /api/v1/devices/{mac}", h.patchDevice},
		{"DELETE /api/v1/devices/{mac}", h.deleteDevice},
		{"GET /api/v1/devices/{mac}/decision", h.deviceDecision},
		{"POST /api/v1/devices/{mac}/wake", h.wakeDevice},
		{"POST /api/v1/wake", h.wakeDevices},
		{"POST /api/v1/wake/relay", h.wakeRelay},
		{"GET /api/v1/devices/{mac}/menu", h.getMenu(store.ScopeDevice)},
		{"PUT /api/v1/devices/{mac}/menu", h.putMenu(store.ScopeDevice)},
		{"DELETE /api/v1/devices/{mac}/menu", h.deleteMenu(store.ScopeDevice)},

		{"GET /api/v1/groups", h.listGroups},
		{"POST /api/v1/groups", h.createGroup},
		{"GET /api/v1/groups/{name}", h.getGroup},
		{"PATCH /api/v1/groups/{name}", h.patchGroup},
		{"DELETE /api/v1/groups/{name}", h.deleteGroup},
		{"GET /api/v1/groups/{name}/members", h.listMembers},
		{"PUT /api/v1/groups/{name}/members/{mac}", h.addMember},
		{"DELETE /api/v1/groups/{name}/members/{mac}", h.removeMember},
		{"GET /api/v1/groups/{name}/menu", h.getMenu(store.ScopeGroup)},
		{"PUT /api/v1/groups/{name}/menu", h.putMenu(store.ScopeGroup)},
		{"DELETE /api/v1/groups/{name}/menu", h.deleteMenu(store.ScopeGroup)},
		{"POST /api/v1/groups/{name}/wake", h.wakeGroup},

		{"GET /api/v1/bundles", h.listBundles},
		{"POST /api/v1/bundles", h.createBundle},
		{"GET /api/v1/bundles/{name}", h.getBundle},
		{"PATCH /api/v1/bundles/{name}", h.patchBundle},
		{"DELETE /api/v1/bundles/{name}", h.deleteBundle},

		{"GET /api/v1/assignments", h.listAssignments},
		{"POST /api/v1/assignments", h.createAssignment},
		{"GET /api/v1/assignments/{id}", h.getAssignment},
		{"DELETE /api/v1/assignments/{id}", h.deleteAssignment},

		{"GET /api/v1/rules", h.listRules},
		{"POST /api/v1/rules", h.createRule},
		{"POST /api/v1/rules/test", h.testRule},
		{"GET /api/v1/rules/{name}", h.getRule},
		{"PATCH /api/v1/rules/{name}", h.patchRule},
		{"DELETE /api/v1/rules/{name}", h.deleteRule},

		{"GET /api/v1/jobs", h.listJobs},
		{"GET /api/v1/jobs/{id}", h.getJob},
		{"GET /api/v1/jobs/{id}/log", h.getJobLog},
		{"POST /api/v1/jobs/{id}/cancel", h.cancelJob},

		{"GET /api/v1/sessions", h.listSessions},
		{"GET /api/v1/sessions/{id}", h.getSession},
		{"POST /api/v1/sessions/{id}/cancel", h.cancelSession},

		{"GET /api/v1/events", h.listEvents},
		{"GET /api/v1/events/stream", h.streamEvents},

		{"GET /api/v1/settings", h.getSettings},
		{"PATCH /api/v1/settings", h.patchSettings},
		{"GET /api/v1/menu", h.getDefaultMenu},
		{"PUT /api/v1/menu", h.putDefaultMenu},

		{"GET /api/v1/dhcp/leases", h.listLeases},

		{"GET /api/v1/tokens", h.listTokens},
		{"POST /api/v1/tokens", h.createToken},
		{"DELETE /api/v1/tokens/{id}", h.deleteToken},
		{"POST " + IntrospectPath, h.introspectToken},

		{"GET /api/v1/sites", h.listSites},
		{"POST /api/v1/sites", h.createSite},
		{"DELETE /api/v1/sites/{name}", h.deleteSite},

		{"GET /api/v1/replicas", h.replicas},
		{"POST /api/v1/replicas/sync", h.syncReplicas},
		{"POST /api/v1/replicas/verify", h.verifyReplicas},
	}
}

// Patterns lists the method and path of every route (for tests and docs).
func (h *Handler) Patterns() []string {
	var out []string
	for _, rt := range h.routes() {
		out = append(out, rt.pattern)
	}
	return out
}

// ServeHTTP implements http.Handler: every route but the OpenAPI document
// needs an administrator.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/api/v1/openapi.json" {
		h.mux.ServeHTTP(w, r)
		return
	}
	ctx, ok := h.Auth.Admin(w, r)
	if !ok {
		return
	}
	h.mux.ServeHTTP(w, r.WithContext(ctx))
}

func (h *Handler) version(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"version": h.Version})
}

// Error is the JSON body of every non-2xx answer.
type Error struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, Error{Error: msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// errInvalid marks request input the API refuses with 422.
var errInvalid = errors.New("invalid")

func invalid(format string, a ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errInvalid}, a...)...)
}

// fail maps errors to HTTP answers: not found 404, conflict 409, invalid
// 422, anything else 500 (logged).
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, store.ErrNotFound), errors.Is(err, mcast.ErrNotFound):
		writeError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, store.ErrConflict), errors.Is(err, jobs.ErrJobOver), errors.Is(err, mcast.ErrEnded):
		writeError(w, http.StatusConflict, err.Error())
	case errors.Is(err, errInvalid):
		writeError(w, http.StatusUnprocessableEntity, strings.TrimPrefix(err.Error(), errInvalid.Error()+": "))
	case errors.Is(err, store.ErrInvalid):
		writeError(w, http.StatusUnprocessableEntity, err.Error())
	default:
		h.Logger.ErrorContext(r.Context(), "api request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		writeError(w, http.StatusInternalServerError, "internal error: "+err.Error())
	}
}

// decode reads a JSON body strictly: unknown fields and trailing data are
// 400 errors that name the problem.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	body := http.MaxBytesReader(w, r.Body, 1<<20)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "bad JSON body: "+err.Error())
		return false
	}
	if dec.More() {
		writeError(w, http.StatusBadRequest, "bad JSON body: data after the JSON value")
		return false
	}
	return true
}

func pathMAC(w http.ResponseWriter, r *http.Request) (string, bool) {
	mac, err := store.NormalizeMAC(r.PathValue("mac"))
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return "", false
	}
	return mac, true
}

func pathID(w http.ResponseWriter, r *http.Request) (int64, bool) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id < 1 {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("id %q: want a positive number", r.PathValue("id")))
		return 0, false
	}
	return id, true
}

// page reads ?limit= (1..1000, default 100) and ?offset=.
func page(w http.ResponseWriter, r *http.Request) (store.Page, bool) {
	var p store.Page
	q := r.URL.Query()
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 1000 {
			writeError(w, http.StatusBadRequest, "limit: want 1..1000")
			return p, false
		}
		p.Limit = n
	} else {
		p.Limit = 100
	}
	if s := q.Get("offset"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			writeError(w, http.StatusBadRequest, "offset: want a number >= 0")
			return p, false
		}
		p.Offset = n
	}
	return p, true
}

// queryInt64 reads an optional positive integer parameter.
func queryInt64(w http.ResponseWriter, r *http.Request, name string) (int64, bool) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return 0, true
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 1 {
		writeError(w, http.StatusBadRequest, name+": want a positive number")
		return 0, false
	}
	return n, true
}

// queryMAC reads an optional MAC parameter.
func queryMAC(w http.ResponseWriter, r *http.Request, name string) (string, bool) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return "", true
	}
	mac, err := store.NormalizeMAC(s)
	if err != nil {
		writeError(w, http.StatusBadRequest, name+": "+err.Error())
		return "", false
	}
	return mac, true
}

// audit records an administrator's change as an event.
func (h *Handler) audit(r *http.Request, mac, msg string) {
	actor := ActorFrom(r.Context())
	if _, err := h.Store.AddEvent(r.Context(), store.Event{MAC: mac, Kind: store.EventAdmin, Actor: actor, Message: msg}); err != nil {
		h.Logger.ErrorContext(r.Context(), "record admin event", "mac", mac, "err", err)
	}
	h.Logger.InfoContext(r.Context(), "admin action", "mac", mac, "action", msg, "actor", actor, "remote", r.RemoteAddr)
}

// nonNil turns a nil slice into an empty one so lists encode as [].
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// isNull reports whether a raw JSON value is absent or null.
func isNull(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) == 0 || bytes.Equal(t, []byte("null"))
}

type ctxKey int

const actorKey ctxKey = 1

// ActorFrom names who makes a request: "token:<name>", "user:<name>" (a
// console session), "local:<name>" (an OS user on the admin socket) or
// "loopback" (only with the unsafe loopback trust).
func ActorFrom(ctx context.Context) string {
	if a, ok := ctx.Value(actorKey).(string); ok {
		return a
	}
	return "system"
}
