package api_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/preboot/preboot/api"
	"github.com/preboot/preboot/config"
	"github.com/preboot/preboot/jobs"
	"github.com/preboot/preboot/policy"
	"github.com/preboot/preboot/store"
	"github.com/preboot/preboot/store/pgtest"
	"github.com/preboot/preboot/store/sqlstore"
)

var pg pgtest.Shared

func TestMain(m *testing.M) { os.Exit(pg.Main(m)) }

// backends runs a test on SQLite and on PostgreSQL.
func backends(t *testing.T, fn func(t *testing.T, open func(t *testing.T) store.Store)) {
	t.Run("sqlite", func(t *testing.T) {
		fn(t, func(t *testing.T) store.Store {
			st, err := sqlstore.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "api.db"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.Close() })
			return st
		})
	})
	t.Run("postgres", func(t *testing.T) {
		fn(t, func(t *testing.T) store.Store {
			st, err := sqlstore.OpenPostgres(context.Background(), pg.Database(t))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.Close() })
			return st
		})
	})
}

type env struct {
	t     *testing.T
	srv   *httptest.Server
	st    store.Store
	js    *jobs.Service
	auth  *api.Auth
	token string // sent as a bearer token when set
	// local: requests without a token come as root on the admin socket
	// would (a Peer in their context), else as anonymous TCP clients.
	local *atomic.Bool
}

func newEnv(t *testing.T, st store.Store) *env {
	n := &api.Notifier{}
	ns := api.NotifyingStore{Store: st, N: n}
	js := &jobs.Service{Store: ns}
	pol := &policy.Engine{Store: ns, Boot: config.Default().Boot, DefaultSettings: policy.SettingsFromConfig(config.Default().Menu), Jobs: js}
	auth := &api.Auth{Store: ns}
	images := map[string]bool{"win11": true, "ubuntu": true}
	h := api.New(api.Options{Store: ns, Policy: pol, Jobs: js, Auth: auth, Events: n, Version: "test",
		ImageExists: func(name string) bool { return images[name] }})
	local := &atomic.Bool{}
	local.Store(true)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if local.Load() && r.Header.Get("Authorization") == "" {
			r = r.WithContext(api.WithPeer(r.Context(), api.Peer{UID: 0, User: "root", Allowed: true}))
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return &env{t: t, srv: srv, st: ns, js: js, auth: auth, local: local}
}

// asLocal serves requests without a token as root on the admin socket
// (a Peer in their context, as the server's socket puts it).
func asLocal(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") == "" {
			r = r.WithContext(api.WithPeer(r.Context(), api.Peer{User: "root", Allowed: true}))
		}
		h.ServeHTTP(w, r)
	})
}

// call sends a request and decodes a JSON answer into out (if not nil);
// it fails the test unless the status is want.
func (e *env) call(method, path string, body any, want int, out any) http.Header {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		buf, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(buf)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if e.token != "" {
		req.Header.Set("Authorization", "Bearer "+e.token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		e.t.Fatalf("%s %s: status %d, want %d: %s", method, path, resp.StatusCode, want, raw)
	}
	if resp.StatusCode >= 400 {
		var apiErr api.Error
		if err := json.Unmarshal(raw, &apiErr); err != nil || apiErr.Error == "" {
			e.t.Fatalf("%s %s: error body is not {\"error\": ...}: %s", method, path, raw)
		}
		if s, ok := out.(*string); ok {
			*s = apiErr.Error
		}
		return resp.Header
	}
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			e.t.Fatalf("%s %s: decode %s: %v", method, path, raw, err)
		}
	}
	return resp.Header
}

func (e *env) errorOf(method, path string, body any, want int, contains ...string) {
	e.t.Helper()
	var msg string
	e.call(method, path, body, want, &msg)
	for _, c := range contains {
		if !strings.Contains(msg, c) {
			e.t.Fatalf("%s %s: error %q lacks %q", method, path, msg, c)
		}
	}
}

const macA = "52:54:00:00:00:0a"

func TestAuth(t *testing.T) {
	backends(t, func(t *testing.T, open func(t *testing.T) store.Store) {
		e := newEnv(t, open(t))
		// Root on the admin socket is an admin; a token can be created.
		var tok api.NewTokenResponse
		e.call("POST", "/api/v1/tokens", map[string]string{"name": "ci"}, 201, &tok)
		if !strings.HasPrefix(tok.Secret, "pba_") || tok.Name != "ci" {
			t.Fatalf("token: %+v", tok)
		}
		e.errorOf("POST", "/api/v1/tokens", map[string]string{"name": "ci"}, 409)
		e.errorOf("POST", "/api/v1/tokens", map[string]string{"name": "bad name"}, 422, "token name")
		var list []store.Token
		e.call("GET", "/api/v1/tokens", nil, 200, &list)
		if len(list) != 1 || list[0].Prefix == "" || strings.Contains(fmt.Sprint(list), tok.Secret) {
			t.Fatalf("token list: %+v", list)
		}
		// On TCP a token is required (loopback is not trusted).
		e.local.Store(false)
		e.errorOf("GET", "/api/v1/devices", nil, 401, "preboot token create")
		e.token = "pba_0000"
		e.errorOf("GET", "/api/v1/devices", nil, 401, "unknown or revoked")
		e.token = "pbj_0000"
		e.errorOf("GET", "/api/v1/devices", nil, 403, "job token")
		e.token = tok.Secret
		e.call("GET", "/api/v1/devices", nil, 200, nil)
		// Admin actions name the token.
		e.call("POST", "/api/v1/devices", map[string]string{"mac": macA}, 201, nil)
		var evs []store.Event
		e.call("GET", "/api/v1/events?device="+macA, nil, 200, &evs)
		if len(evs) != 1 || evs[0].Actor != "token:ci" || evs[0].Kind != store.EventAdmin {
			t.Fatalf("audit events: %+v", evs)
		}
		e.call("DELETE", "/api/v1/tokens/"+strconv.FormatInt(tok.ID, 10), nil, 204, nil)
		e.errorOf("GET", "/api/v1/devices", nil, 401)
		// The OpenAPI document needs no token.
		e.call("GET", "/api/v1/openapi.json", nil, 200, nil)
	})
}

func TestBundles(t *testing.T) {
	backends(t, func(t *testing.T, open func(t *testing.T) store.Store) {
		e := newEnv(t, open(t))
		var b store.Bundle
		e.call("POST", "/api/v1/bundles", `{"name":"win","kind":"image-restore","params":{"image":"win11","partitions":[2]}}`, 201, &b)
		if b.Version != 1 || b.Kind != store.KindImageRestore || !strings.Contains(compact(b.Params), `"after":"reboot"`) {
			t.Fatalf("bundle: %+v %s", b, b.Params)
		}
		e.errorOf("POST", "/api/v1/bundles", `{"name":"win","kind":"inventory"}`, 409)
		e.errorOf("POST", "/api/v1/bundles", `{"name":"x","kind":"image-restore","params":{"image":"nope"}}`, 422, `"nope" does not exist`)
		e.errorOf("POST", "/api/v1/bundles", `{"name":"x","kind":"image-restore","params":{"image":"win11","colour":1}}`, 422, "colour")
		e.errorOf("POST", "/api/v1/bundles", `{"name":"x","kind":"wipe","params":{}}`, 422, "confirm")
		e.errorOf("POST", "/api/v1/bundles", `{"name":"x","kind":"os-install","params":{"kernel":"a","chain":"http://b"}}`, 422, "not both")
		e.errorOf("POST", "/api/v1/bundles", `{"name":"x","kind":"teleport"}`, 422, "kind")
		e.errorOf("POST", "/api/v1/bundles", `{"name":"x","kind":"inventory","extra":1}`, 400, "unknown field")
		e.errorOf("POST", "/api/v1/bundles", `{"name":5,"kind":"inventory"}`, 400)
		e.errorOf("POST", "/api/v1/bundles", `{"name":"x","kind":"multicast","params":{"image":"win11"}}`, 422, "min_clients")
		e.call("POST", "/api/v1/bundles", `{"name":"mc","kind":"multicast","params":{"image":"win11","min_clients":10,"max_wait":"10m"}}`, 201, nil)
		e.call("POST", "/api/v1/bundles", `{"name":"s","kind":"script","params":{"script":"echo hi\n"}}`, 201, nil)
		e.call("PATCH", "/api/v1/bundles/win", `{"params":{"image":"ubuntu"}}`, 200, &b)
		if b.Version != 2 || !strings.Contains(string(b.Params), "ubuntu") {
			t.Fatalf("patched: %+v %s", b, b.Params)
		}
		e.errorOf("PATCH", "/api/v1/bundles/win", `{"kind":"inventory"}`, 422, "cannot change")
		var bs []store.Bundle
		e.call("GET", "/api/v1/bundles?kind=script", nil, 200, &bs)
		if len(bs) != 1 || bs[0].Name != "s" {
			t.Fatalf("filtered: %+v", bs)
		}
		e.call("GET", "/api/v1/bundles?limit=1&offset=1", nil, 200, &bs)
		if len(bs) != 1 {
			t.Fatalf("paged: %+v", bs)
		}
		e.errorOf("GET", "/api/v1/bundles?limit=0", nil, 400, "limit")
		e.errorOf("GET", "/api/v1/bundles/none", nil, 404)
		// Assigned: cannot be deleted.
		e.call("POST", "/api/v1/assignments", map[string]any{"bundle": "win", "device": macA}, 201, nil)
		e.errorOf("DELETE", "/api/v1/bundles/win", nil, 409)
		e.call("DELETE", "/api/v1/bundles/s", nil, 204, nil)
	})
}

func TestGroupsAssignmentsAndDecisions(t *testing.T) {
	backends(t, func(t *testing.T, open func(t *testing.T) store.Store) {
		e := newEnv(t, open(t))
		e.call("POST", "/api/v1/bundles", `{"name":"inv","kind":"inventory"}`, 201, nil)
		e.call("POST", "/api/v1/bundles", `{"name":"lab","kind":"image-restore","params":{"image":"win11"}}`, 201, nil)
		var g store.Group
		e.call("POST", "/api/v1/groups", `{"name":"lab","priority":10}`, 201, &g)
		e.errorOf("POST", "/api/v1/groups", `{"name":"lab2","priority":10}`, 409)
		e.errorOf("POST", "/api/v1/groups", `{"name":"lab"}`, 409)
		e.errorOf("POST", "/api/v1/groups", `{"name":"dyn","match":"ram > 8GiB and ram < 4GiB"}`, 422, "never")
		e.errorOf("POST", "/api/v1/groups", `{"name":"dyn","match":"ram >"}`, 422)
		e.call("POST", "/api/v1/groups", `{"name":"vms","match":"mac ^= \"52:54:00\""}`, 201, &g)
		if g.Priority <= 10 {
			t.Fatalf("default priority not after the last: %+v", g)
		}
		e.errorOf("PUT", "/api/v1/groups/lab/members/"+macA, nil, 404)
		e.call("POST", "/api/v1/devices", map[string]string{"mac": macA, "name": "pc-a"}, 201, nil)
		e.errorOf("POST", "/api/v1/devices", map[string]string{"mac": macA}, 409)
		e.call("PUT", "/api/v1/groups/lab/members/"+macA, nil, 204, nil)
		var a store.Assignment
		e.call("POST", "/api/v1/assignments", map[string]any{"bundle": "lab", "group": "lab", "once": true}, 201, &a)
		e.errorOf("POST", "/api/v1/assignments", map[string]any{"bundle": "inv", "group": "lab"}, 409, "replace")
		e.errorOf("POST", "/api/v1/assignments", map[string]any{"bundle": "inv", "group": "lab", "device": macA}, 422, "exactly one")
		e.errorOf("POST", "/api/v1/assignments", map[string]any{"bundle": "nope", "group": "lab"}, 422, "does not exist")
		e.errorOf("POST", "/api/v1/assignments", map[string]any{"bundle": "inv", "group": "nope"}, 422, "does not exist")
		var dec policy.Decision
		e.call("GET", "/api/v1/devices/"+macA+"/decision", nil, 200, &dec)
		if dec.Action != policy.ActionBundle || dec.Source != "group:lab" || dec.Bundle.Name != "lab" {
			t.Fatalf("decision: %+v", dec)
		}
		// Device level beats the group; replace swaps in one step.
		e.call("POST", "/api/v1/assignments", map[string]any{"bundle": "inv", "device": macA}, 201, nil)
		e.call("POST", "/api/v1/assignments", map[string]any{"bundle": "lab", "device": macA, "force": true, "replace": true}, 201, &a)
		var as []store.Assignment
		e.call("GET", "/api/v1/assignments?device="+macA, nil, 200, &as)
		if len(as) != 1 || as[0].ID != a.ID || !as[0].Force {
			t.Fatalf("replaced: %+v", as)
		}
		var det api.DeviceDetail
		e.call("GET", "/api/v1/devices/"+macA, nil, 200, &det)
		if det.Name != "pc-a" || len(det.Groups) != 1 || det.Assignment == nil || det.Decision.Source != "device" || len(det.Events) == 0 {
			t.Fatalf("device detail: %+v", det)
		}
		// An assignment to an unknown MAC registers it.
		e.call("POST", "/api/v1/assignments", map[string]any{"bundle": "inv", "device": "52-54-00-00-00-0b"}, 201, nil)
		var d store.Device
		e.call("GET", "/api/v1/devices/52:54:00:00:00:0b", nil, 200, &d)
		if !d.Registered {
			t.Fatalf("device from assignment: %+v", d)
		}
		// Names are unique.
		e.errorOf("PATCH", "/api/v1/devices/52:54:00:00:00:0b", `{"name":"pc-a"}`, 409)
		e.call("PATCH", "/api/v1/devices/52:54:00:00:00:0b", `{"name":"pc-b","notes":"lab 3"}`, 200, &d)
		var devs []store.Device
		h := e.call("GET", "/api/v1/devices?q=pc-&limit=1", nil, 200, &devs)
		if len(devs) != 1 || h.Get("X-Total-Count") != "2" {
			t.Fatalf("device list: %d devices, total %q", len(devs), h.Get("X-Total-Count"))
		}
		e.call("GET", "/api/v1/devices?group=lab", nil, 200, &devs)
		if len(devs) != 1 || devs[0].MAC != macA {
			t.Fatalf("group filter: %+v", devs)
		}
		e.errorOf("GET", "/api/v1/devices/zz", nil, 400)
		e.errorOf("GET", "/api/v1/devices/52:54:00:ff:ff:ff", nil, 404)
		// A rule that adds devices to the group keeps the group alive.
		e.call("POST", "/api/v1/rules", `{"name":"r","match":"true","group":"lab"}`, 201, nil)
		e.errorOf("DELETE", "/api/v1/groups/lab", nil, 409)
		e.call("DELETE", "/api/v1/rules/r", nil, 204, nil)
		e.call("DELETE", "/api/v1/groups/lab", nil, 204, nil)
		e.call("GET", "/api/v1/assignments?group=lab", nil, 200, &as)
		if len(as) != 0 {
			t.Fatalf("group assignment survived the group: %+v", as)
		}
	})
}

func TestRules(t *testing.T) {
	backends(t, func(t *testing.T, open func(t *testing.T) store.Store) {
		e := newEnv(t, open(t))
		e.call("POST", "/api/v1/bundles", `{"name":"inv","kind":"inventory"}`, 201, nil)
		e.call("POST", "/api/v1/groups", `{"name":"vms"}`, 201, nil)
		var r store.Rule
		e.call("POST", "/api/v1/rules", `{"name":"vms","match":"mac ^= \"52:54:00\"","bundle":"inv","group":"vms"}`, 201, &r)
		if r.Position != 1 || !r.Enabled {
			t.Fatalf("rule: %+v", r)
		}
		e.call("POST", "/api/v1/rules", `{"name":"all","match":"true","bundle":"inv"}`, 201, &r)
		e.call("POST", "/api/v1/rules", `{"name":"dell","match":"maker = dell","bundle":"inv","position":1}`, 201, &r)
		var rs []store.Rule
		e.call("GET", "/api/v1/rules", nil, 200, &rs)
		if len(rs) != 3 || rs[0].Name != "dell" || rs[1].Name != "vms" || rs[2].Name != "all" || rs[2].Position != 3 {
			t.Fatalf("order: %+v", rs)
		}
		e.call("PATCH", "/api/v1/rules/all", `{"position":1,"enabled":false}`, 200, &r)
		e.call("GET", "/api/v1/rules", nil, 200, &rs)
		if rs[0].Name != "all" || rs[0].Enabled || rs[1].Name != "dell" || rs[1].Position != 2 {
			t.Fatalf("moved: %+v", rs)
		}
		e.errorOf("POST", "/api/v1/rules", `{"name":"x","match":"ram > 8GiB and ram < 4GiB","bundle":"inv"}`, 422, "never")
		e.errorOf("POST", "/api/v1/rules", `{"name":"x","match":"maker = ","bundle":"inv"}`, 422)
		e.errorOf("POST", "/api/v1/rules", `{"name":"x","match":"true","bundle":"nope"}`, 422, `"nope" does not exist`)
		e.errorOf("POST", "/api/v1/rules", `{"name":"x","match":"true"}`, 422, "needs a bundle")
		e.errorOf("POST", "/api/v1/rules", `{"name":"vms","match":"true","bundle":"inv"}`, 409)
		// Which rule matches a known device.
		e.call("POST", "/api/v1/devices", map[string]string{"mac": macA}, 201, nil)
		var res api.RuleTestResult
		e.call("POST", "/api/v1/rules/test", map[string]string{"device": macA}, 200, &res)
		if res.Rule != "vms" || !res.Matched {
			t.Fatalf("rule test: %+v", res)
		}
		e.call("POST", "/api/v1/rules/test", map[string]string{"device": macA, "match": "mac ^= 00:11"}, 200, &res)
		if res.Matched {
			t.Fatalf("expression test: %+v", res)
		}
		e.errorOf("DELETE", "/api/v1/bundles/inv", nil, 409)
	})
}

func TestSettingsAndMenus(t *testing.T) {
	backends(t, func(t *testing.T, open func(t *testing.T) store.Store) {
		e := newEnv(t, open(t))
		var s store.Settings
		e.call("GET", "/api/v1/settings", nil, 200, &s)
		if s.Menu.Mode != "hotkey" || s.Unregistered.Action != store.UnregisteredLocal {
			t.Fatalf("default settings: %+v", s)
		}
		e.errorOf("PATCH", "/api/v1/settings", `{"unregistered":{"action":"bundle","bundle":"inv"}}`, 422, `"inv" does not exist`)
		e.call("POST", "/api/v1/bundles", `{"name":"inv","kind":"inventory"}`, 201, nil)
		e.call("POST", "/api/v1/bundles", `{"name":"nuke","kind":"wipe","params":{"confirm":true}}`, 201, nil)
		e.errorOf("PATCH", "/api/v1/settings", `{"unregistered":{"action":"bundle","bundle":"nuke"}}`, 422, "wipe")
		e.errorOf("PATCH", "/api/v1/settings", `{"naming":{"from":"horoscope"}}`, 422, "naming.from")
		e.call("PATCH", "/api/v1/settings", `{"unregistered":{"action":"bundle","bundle":"inv"},"naming":{"prefix":"lab-","from":"serial"}}`, 200, &s)
		if s.Unregistered.Bundle != "inv" || s.Naming.Prefix != "lab-" || s.Menu.Mode != "hotkey" {
			t.Fatalf("patched settings: %+v", s)
		}
		e.errorOf("DELETE", "/api/v1/bundles/inv", nil, 409, "unregistered default")
		var m store.Menu
		e.errorOf("PUT", "/api/v1/menu", `{"mode":"sometimes"}`, 422, "mode")
		e.errorOf("PUT", "/api/v1/menu", `{"mode":"hotkey","hotkey":"f13"}`, 422, "hotkey")
		e.call("PUT", "/api/v1/menu", `{"mode":"always","timeout":"5s","bundles":["inv"],"shell":true}`, 200, &m)
		e.call("GET", "/api/v1/menu", nil, 200, &m)
		if m.Mode != "always" || time.Duration(m.Timeout) != 5*time.Second || len(m.Bundles) != 1 {
			t.Fatalf("menu: %+v", m)
		}
		e.errorOf("PUT", "/api/v1/devices/"+macA+"/menu", `{"mode":"never"}`, 404)
		e.call("POST", "/api/v1/devices", map[string]string{"mac": macA}, 201, nil)
		e.errorOf("GET", "/api/v1/devices/"+macA+"/menu", nil, 404, "no menu override")
		e.call("PUT", "/api/v1/devices/"+macA+"/menu", `{"mode":"never"}`, 200, nil)
		var dec policy.Decision
		e.call("GET", "/api/v1/devices/"+macA+"/decision", nil, 200, &dec)
		if dec.Menu.Mode != "never" {
			t.Fatalf("device menu override not effective: %+v", dec.Menu)
		}
		e.call("DELETE", "/api/v1/devices/"+macA+"/menu", nil, 204, nil)
		e.call("POST", "/api/v1/groups", `{"name":"g"}`, 201, nil)
		e.call("PUT", "/api/v1/groups/g/menu", `{"mode":"hotkey","hotkey":"esc","timeout":2}`, 200, &m)
		if time.Duration(m.Timeout) != 2*time.Second {
			t.Fatalf("numeric timeout: %+v", m)
		}
	})
}

func TestJobsAndEvents(t *testing.T) {
	backends(t, func(t *testing.T, open func(t *testing.T) store.Store) {
		e := newEnv(t, open(t))
		ctx := context.Background()
		e.call("POST", "/api/v1/bundles", `{"name":"inv","kind":"inventory"}`, 201, nil)
		var a store.Assignment
		e.call("POST", "/api/v1/assignments", map[string]any{"bundle": "inv", "device": macA, "once": true}, 201, &a)
		b, err := e.st.Bundle(ctx, "inv")
		if err != nil {
			t.Fatal(err)
		}
		j, _, err := e.js.Start(ctx, jobs.StartRequest{MAC: macA, Bundle: b, Assignment: &a})
		if err != nil {
			t.Fatal(err)
		}
		var js []store.Job
		e.call("GET", "/api/v1/jobs?device="+macA+"&open=true", nil, 200, &js)
		if len(js) != 1 || js[0].ID != j.ID || js[0].Bundle != "inv" {
			t.Fatalf("jobs: %+v", js)
		}
		e.errorOf("GET", "/api/v1/jobs?state=weird", nil, 400)
		var got store.Job
		e.call("POST", fmt.Sprintf("/api/v1/jobs/%d/cancel", j.ID), nil, 200, &got)
		if got.State != store.JobCancelled {
			t.Fatalf("cancelled: %+v", got)
		}
		e.errorOf("POST", fmt.Sprintf("/api/v1/jobs/%d/cancel", j.ID), nil, 409)
		// Cancelling removed the device's apply-once assignment.
		var as []store.Assignment
		e.call("GET", "/api/v1/assignments?device="+macA, nil, 200, &as)
		if len(as) != 0 {
			t.Fatalf("once assignment kept after cancel: %+v", as)
		}
		var evs []store.Event
		e.call("GET", fmt.Sprintf("/api/v1/events?job=%d", j.ID), nil, 200, &evs)
		if len(evs) != 2 || evs[0].Job != j.ID {
			t.Fatalf("job events: %+v", evs)
		}
		var older []store.Event
		e.call("GET", fmt.Sprintf("/api/v1/events?before=%d&limit=1", evs[0].ID), nil, 200, &older)
		if len(older) != 1 || older[0].ID >= evs[0].ID {
			t.Fatalf("paging: %+v", older)
		}
		e.errorOf("GET", "/api/v1/events?since=yesterday", nil, 400, "RFC 3339")

		// The stream: resume after a known id, then see a new event live.
		req, _ := http.NewRequest("GET", e.srv.URL+"/api/v1/events/stream?device="+macA, nil)
		req.Header.Set("Last-Event-ID", strconv.FormatInt(evs[0].ID, 10))
		sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		resp, err := http.DefaultClient.Do(req.WithContext(sctx))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
			t.Fatalf("content type %q", ct)
		}
		go func() {
			time.Sleep(200 * time.Millisecond)
			e.call("PATCH", "/api/v1/devices/"+macA, `{"name":"streamed"}`, 200, nil)
		}()
		sc := bufio.NewScanner(resp.Body)
		var ids []string
		for sc.Scan() {
			line := sc.Text()
			if id, ok := strings.CutPrefix(line, "id: "); ok {
				ids = append(ids, id)
			}
			if d, ok := strings.CutPrefix(line, "data: "); ok && strings.Contains(d, "streamed") {
				break
			}
		}
		if len(ids) == 0 {
			t.Fatalf("no events streamed (scan error %v)", sc.Err())
		}
		if first, _ := strconv.ParseInt(ids[0], 10, 64); first <= evs[0].ID {
			t.Fatalf("stream resumed at %d, after %d", first, evs[0].ID)
		}
	})
}

func TestUnknownRoutesAndBodies(t *testing.T) {
	backends(t, func(t *testing.T, open func(t *testing.T) store.Store) {
		e := newEnv(t, open(t))
		e.errorOf("GET", "/api/v1/nothing", nil, 404, "no such API endpoint")
		e.errorOf("POST", "/api/v1/groups", `{"name":"a"} {"name":"b"}`, 400, "after the JSON")
		e.errorOf("POST", "/api/v1/groups", `{"name":"a","priority":"high"}`, 400)
		e.errorOf("POST", "/api/v1/devices", `{"mac":"zz"}`, 422, "mac")
		e.errorOf("DELETE", "/api/v1/assignments/x", nil, 400)
		e.errorOf("DELETE", "/api/v1/assignments/99", nil, 404)
		var v map[string]string
		e.call("GET", "/api/v1/version", nil, 200, &v)
		if v["version"] != "test" {
			t.Fatalf("version: %v", v)
		}
	})
}

func compact(raw json.RawMessage) string {
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return string(raw)
	}
	return b.String()
}

// With the unsafe http.trust_loopback, a web page open in a browser on the
// server host must still not borrow the loopback trust to change things,
// nor may a reverse proxy's clients.
func TestLoopbackTrustRefusesOtherSites(t *testing.T) {
	e := newEnv(t, func() store.Store {
		st, err := sqlstore.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "api.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}())
	e.local.Store(false)
	e.auth.TrustLoopback = true
	for _, h := range []map[string]string{{"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"},
		{"Origin": "http://10.66.66.66"}, {"X-Forwarded-For": "192.0.2.9"}, {"Forwarded": "for=192.0.2.9"}} {
		req, _ := http.NewRequest("POST", e.srv.URL+"/api/v1/groups", strings.NewReader(`{"name":"x"}`))
		for k, v := range h {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("%v: %d, want 401", h, resp.StatusCode)
		}
	}
	// Same origin (the console's own page) and plain clients keep it.
	req, _ := http.NewRequest("GET", e.srv.URL+"/api/v1/groups", nil)
	req.Header.Set("Origin", e.srv.URL)
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("same origin: %d", resp.StatusCode)
	}
}
