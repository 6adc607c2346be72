package api_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	vconfig "github.com/pb33f/libopenapi-validator/config"
	liberrors "github.com/pb33f/libopenapi-validator/errors"
	"github.com/pb33f/libopenapi-validator/schema_validation"
	"github.com/pb33f/libopenapi/datamodel"
	v3 "github.com/pb33f/libopenapi/datamodel/high/v3"

	"github.com/preboot/preboot/api"
	"github.com/preboot/preboot/api/sessionstest"
	"github.com/preboot/preboot/bundle"
	"github.com/preboot/preboot/config"
	"github.com/preboot/preboot/disk"
	"github.com/preboot/preboot/image"
	"github.com/preboot/preboot/image/httpstore"
	"github.com/preboot/preboot/jobs"
	"github.com/preboot/preboot/mcast"
	"github.com/preboot/preboot/policy"
	"github.com/preboot/preboot/rules"
	"github.com/preboot/preboot/store"
	"github.com/preboot/preboot/store/sqlstore"
	"github.com/preboot/preboot/timing"
	"github.com/preboot/preboot/wake"
)

// contractRoutes is every route of the admin API contract (and of the
// image repository's administrative side) that the document must
// describe, relative to /api/v1. The document must describe nothing else.
var contractRoutes = []string{
	"GET /devices", "POST /devices",
	"GET /devices/{mac}", "PATCH /devices/{mac}", "DELETE /devices/{mac}",
	"GET /devices/{mac}/decision", "POST /devices/{mac}/wake", "POST /wake", "POST /wake/relay",
	"GET /devices/{mac}/menu", "PUT /devices/{mac}/menu", "DELETE /devices/{mac}/menu",

	"GET /groups", "POST /groups",
	"GET /groups/{name}", "PATCH /groups/{name}", "DELETE /groups/{name}",
	"GET /groups/{name}/members",
	"PUT /groups/{name}/members/{mac}", "DELETE /groups/{name}/members/{mac}",
	"GET /groups/{name}/menu", "PUT /groups/{name}/menu", "DELETE /groups/{name}/menu",
	"POST /groups/{name}/wake",

	"GET /bundles", "POST /bundles",
	"GET /bundles/{name}", "PATCH /bundles/{name}", "DELETE /bundles/{name}",

	"GET /assignments", "POST /assignments",
	"GET /assignments/{id}", "DELETE /assignments/{id}",

	"GET /rules", "POST /rules", "POST /rules/test",
	"GET /rules/{name}", "PATCH /rules/{name}", "DELETE /rules/{name}",

	"GET /jobs", "GET /jobs/{id}", "GET /jobs/{id}/log", "POST /jobs/{id}/cancel",

	"GET /sessions", "GET /sessions/{id}", "POST /sessions/{id}/cancel",

	"GET /events", "GET /events/stream",

	"GET /images", "GET /images/{name}", "PUT /images/{name}", "DELETE /images/{name}",
	"POST /images/{name}/verify", "GET /images/{name}/export", "POST /images/import",
	"GET /images/{name}/versions", "POST /images/{name}/rollback", "POST /images/gc",
	"GET /images/{name}/partitions", "GET /images/{name}/partitions/{n}/files",
	"GET /images/{name}/partitions/{n}/content", "GET /images/{name}/diff/{other}",

	"GET /settings", "PATCH /settings", "GET /menu", "PUT /menu",

	"GET /tokens", "POST /tokens", "DELETE /tokens/{id}", "POST /tokens/introspect",
	"GET /sites", "POST /sites", "DELETE /sites/{name}",

	"GET /replicas", "POST /replicas/sync", "POST /replicas/verify",

	"GET /dhcp/leases",

	"GET /openapi.json", "GET /version", "GET /status",
}

var httpMethods = []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}

// readDoc reads the document the package embeds.
func readDoc(t *testing.T) ([]byte, map[string]any) {
	t.Helper()
	raw, err := os.ReadFile("openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	var tree map[string]any
	if err := json.Unmarshal(raw, &tree); err != nil {
		t.Fatalf("openapi.json is not JSON: %v", err)
	}
	return raw, tree
}

// docProblems validates a document with libopenapi and libopenapi-validator
// (the OpenAPI 3.1 meta-schema, every reference) plus our own reference
// check, and lists what is wrong.
func docProblems(raw []byte) []string {
	var out []string
	var tree map[string]any
	if err := json.Unmarshal(raw, &tree); err != nil {
		return []string{"not JSON: " + err.Error()}
	}
	if v, _ := tree["openapi"].(string); !strings.HasPrefix(v, "3.1.") {
		out = append(out, fmt.Sprintf("openapi version %q, want 3.1.x", v))
	}
	out = append(out, danglingRefs(tree)...)
	doc, err := newDocument(raw)
	if err != nil {
		return append(out, "libopenapi: "+err.Error())
	}
	v, errs := validator.NewValidator(doc)
	for _, err := range errs {
		out = append(out, "build model: "+err.Error())
	}
	if v == nil {
		return out
	}
	if ok, verrs := v.ValidateDocument(); !ok || len(verrs) > 0 {
		if len(verrs) == 0 {
			out = append(out, "document does not validate (no details)")
		}
		for _, e := range verrs {
			out = append(out, e.Message+": "+e.Reason)
			for _, se := range e.SchemaValidationErrors {
				out = append(out, fmt.Sprintf("  at %s (%s): %s", se.FieldPath, se.KeywordLocation, se.Reason))
			}
		}
	}
	return out
}

// newDocument parses a document with libopenapi, quietly: what it would
// log is reported as errors anyway.
func newDocument(raw []byte) (libopenapi.Document, error) {
	cfg := datamodel.NewDocumentConfiguration()
	cfg.Logger = slog.New(slog.DiscardHandler)
	return libopenapi.NewDocumentWithConfiguration(raw, cfg)
}

// danglingRefs lists every "$ref" that is not a local JSON pointer into
// the document, or points at nothing.
func danglingRefs(tree map[string]any) []string {
	var out []string
	walkJSON(tree, "#", func(at string, m map[string]any) {
		r, ok := m["$ref"]
		if !ok {
			return
		}
		s, ok := r.(string)
		if !ok {
			out = append(out, fmt.Sprintf("%s: $ref is not a string", at))
			return
		}
		if _, err := resolvePointer(tree, s); err != nil {
			out = append(out, fmt.Sprintf("%s: $ref %s: %v", at, s, err))
		}
	})
	return out
}

// walkJSON calls fn for every JSON object in v, depth first, with its
// location.
func walkJSON(v any, at string, fn func(at string, m map[string]any)) {
	switch x := v.(type) {
	case map[string]any:
		fn(at, x)
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			walkJSON(x[k], at+"/"+escapePointer(k), fn)
		}
	case []any:
		for i, e := range x {
			walkJSON(e, fmt.Sprintf("%s/%d", at, i), fn)
		}
	}
}

func escapePointer(s string) string {
	return strings.NewReplacer("~", "~0", "/", "~1").Replace(s)
}

// resolvePointer follows a local reference ("#/a/b~1c").
func resolvePointer(tree map[string]any, ref string) (any, error) {
	p, ok := strings.CutPrefix(ref, "#")
	if !ok {
		return nil, fmt.Errorf("not a local reference (the document must be self-contained)")
	}
	var cur any = tree
	if p == "" {
		return cur, nil
	}
	if !strings.HasPrefix(p, "/") {
		return nil, fmt.Errorf("not a JSON pointer")
	}
	for _, tok := range strings.Split(p[1:], "/") {
		tok = strings.NewReplacer("~1", "/", "~0", "~").Replace(tok)
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%q: parent is not an object", tok)
		}
		if cur, ok = m[tok]; !ok {
			return nil, fmt.Errorf("%q does not exist", tok)
		}
	}
	return cur, nil
}

func TestOpenAPIDocumentValid(t *testing.T) {
	raw, _ := readDoc(t)
	for _, p := range docProblems(raw) {
		t.Error(p)
	}
}

// TestOpenAPIValidationCatchesBrokenDocuments makes sure the checks above
// can fail: each mutation of the real document must be reported.
func TestOpenAPIValidationCatchesBrokenDocuments(t *testing.T) {
	raw, _ := readDoc(t)
	cases := []struct {
		name   string
		mutate func(doc map[string]any)
	}{
		{"info without version", func(doc map[string]any) {
			delete(doc["info"].(map[string]any), "version")
		}},
		{"dangling schema reference", func(doc map[string]any) {
			s := doc["components"].(map[string]any)["schemas"].(map[string]any)
			s["Device"].(map[string]any)["properties"].(map[string]any)["applied"] = map[string]any{"$ref": "#/components/schemas/NoSuchSchema"}
		}},
		{"response without description", func(doc map[string]any) {
			get := doc["paths"].(map[string]any)["/devices"].(map[string]any)["get"].(map[string]any)
			delete(get["responses"].(map[string]any)["200"].(map[string]any), "description")
		}},
		{"parameter without schema", func(doc map[string]any) {
			p := doc["components"].(map[string]any)["parameters"].(map[string]any)["Limit"].(map[string]any)
			delete(p, "schema")
		}},
		{"unknown field in an operation", func(doc map[string]any) {
			get := doc["paths"].(map[string]any)["/version"].(map[string]any)["get"].(map[string]any)
			get["responzes"] = map[string]any{}
		}},
		{"OpenAPI 3.0", func(doc map[string]any) { doc["openapi"] = "3.0.3" }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var doc map[string]any
			if err := json.Unmarshal(raw, &doc); err != nil {
				t.Fatal(err)
			}
			c.mutate(doc)
			b, err := json.Marshal(doc)
			if err != nil {
				t.Fatal(err)
			}
			if ps := docProblems(b); len(ps) == 0 {
				t.Errorf("a document with %s passed validation", c.name)
			} else {
				t.Logf("reported: %s", ps[0])
			}
		})
	}
}

// docOperations returns "METHOD /path" → operation object.
func docOperations(tree map[string]any) map[string]map[string]any {
	out := map[string]map[string]any{}
	for path, item := range tree["paths"].(map[string]any) {
		for _, m := range httpMethods {
			if o, ok := item.(map[string]any)[m].(map[string]any); ok {
				out[strings.ToUpper(m)+" "+path] = o
			}
		}
	}
	return out
}

func TestOpenAPIDescribesTheContract(t *testing.T) {
	_, tree := readDoc(t)
	ops := docOperations(tree)
	for _, r := range contractRoutes {
		if _, ok := ops[r]; !ok {
			t.Errorf("%s: in the API contract, missing from openapi.json", r)
		}
	}
	for r := range ops {
		if !slices.Contains(contractRoutes, r) {
			t.Errorf("%s: in openapi.json, not in the API contract", r)
		}
	}
	servers, _ := tree["servers"].([]any)
	if len(servers) != 1 || servers[0].(map[string]any)["url"] != "/api/v1" {
		t.Errorf("servers = %v, want the one relative URL /api/v1", servers)
	}
}

// TestOpenAPIOperations checks what every operation must have: a unique
// operationId, path parameters that match the template, a success
// answer, error answers with the error body, and 401/403 unless public.
func TestOpenAPIOperations(t *testing.T) {
	_, tree := readDoc(t)
	paths := tree["paths"].(map[string]any)
	ids := map[string]string{}
	tmpl := regexp.MustCompile(`\{([^}]+)\}`)
	for path, it := range paths {
		item := it.(map[string]any)
		var want []string
		for _, m := range tmpl.FindAllStringSubmatch(path, -1) {
			want = append(want, m[1])
		}
		for _, method := range httpMethods {
			o, ok := item[method].(map[string]any)
			if !ok {
				continue
			}
			route := strings.ToUpper(method) + " " + path
			id, _ := o["operationId"].(string)
			if id == "" {
				t.Errorf("%s: no operationId", route)
			} else if prev, dup := ids[id]; dup {
				t.Errorf("%s: operationId %s already used by %s", route, id, prev)
			}
			ids[id] = route

			// Path parameters: path-level and operation-level, by name.
			got := map[string]bool{}
			for _, list := range []any{item["parameters"], o["parameters"]} {
				ps, _ := list.([]any)
				for _, p := range ps {
					pm := p.(map[string]any)
					if r, ok := pm["$ref"].(string); ok {
						v, err := resolvePointer(tree, r)
						if err != nil {
							t.Errorf("%s: parameter %s: %v", route, r, err)
							continue
						}
						pm = v.(map[string]any)
					}
					if pm["in"] == "path" {
						if pm["required"] != true {
							t.Errorf("%s: path parameter %v is not required", route, pm["name"])
						}
						got[pm["name"].(string)] = true
					}
				}
			}
			for _, w := range want {
				if !got[w] {
					t.Errorf("%s: path parameter {%s} is not declared", route, w)
				}
				delete(got, w)
			}
			for n := range got {
				t.Errorf("%s: path parameter %s is not in the path", route, n)
			}

			resps := o["responses"].(map[string]any)
			success := false
			for code, r := range resps {
				if strings.HasPrefix(code, "2") {
					success = true
					continue
				}
				rm := r.(map[string]any)
				if ref, ok := rm["$ref"].(string); ok {
					v, err := resolvePointer(tree, ref)
					if err != nil {
						t.Errorf("%s %s: %v", route, code, err)
						continue
					}
					rm = v.(map[string]any)
				}
				content, _ := rm["content"].(map[string]any)
				js, _ := content["application/json"].(map[string]any)
				schema, _ := js["schema"].(map[string]any)
				if ref := schema["$ref"]; ref != "#/components/schemas/Error" && ref != "#/components/schemas/ImageError" {
					t.Errorf("%s %s: error answer's body is %v, want the Error (or ImageError) schema", route, code, ref)
				}
			}
			if !success {
				t.Errorf("%s: no 2xx answer", route)
			}
			if sec, ok := o["security"].([]any); ok && len(sec) == 0 {
				continue // public
			}
			for _, code := range []string{"401", "403"} {
				if _, ok := resps[code]; !ok {
					t.Errorf("%s: no %s answer (the route needs an admin token)", route, code)
				}
			}
		}
	}
}

// TestOpenAPINoUnusedComponents keeps the document free of dead schemas,
// parameters and responses.
func TestOpenAPINoUnusedComponents(t *testing.T) {
	_, tree := readDoc(t)
	used := map[string]bool{}
	walkJSON(tree, "#", func(_ string, m map[string]any) {
		if r, ok := m["$ref"].(string); ok {
			used[r] = true
		}
	})
	for kind, comps := range tree["components"].(map[string]any) {
		if kind == "securitySchemes" {
			continue
		}
		for name := range comps.(map[string]any) {
			if ref := "#/components/" + kind + "/" + name; !used[ref] {
				t.Errorf("%s is never referenced", ref)
			}
		}
	}
}

// goSchemas names the component schema each Go type of the wire is
// described by. Response types are checked for property names, types and
// required (= not omitempty/omitzero) properties.
var goSchemas = map[string]reflect.Type{
	"Error":          reflect.TypeFor[api.Error](),
	"Device":         reflect.TypeFor[store.Device](),
	"DeviceDetail":   reflect.TypeFor[api.DeviceDetail](),
	"Decision":       reflect.TypeFor[policy.Decision](),
	"BootPath":       reflect.TypeFor[policy.BootPath](),
	"Applied":        reflect.TypeFor[store.Applied](),
	"Group":          reflect.TypeFor[store.Group](),
	"GroupDetail":    reflect.TypeFor[api.GroupDetail](),
	"Bundle":         reflect.TypeFor[store.Bundle](),
	"Assignment":     reflect.TypeFor[store.Assignment](),
	"Rule":           reflect.TypeFor[store.Rule](),
	"RuleTestResult": reflect.TypeFor[api.RuleTestResult](),
	"Menu":           reflect.TypeFor[store.Menu](),
	"Settings":       reflect.TypeFor[store.Settings](),
	"Unregistered":   reflect.TypeFor[store.Unregistered](),
	"Naming":         reflect.TypeFor[store.Naming](),
	"SecureBoot":     reflect.TypeFor[store.SecureBoot](),
	"Token":          reflect.TypeFor[store.Token](),
	"TokenCreated":   reflect.TypeFor[api.NewTokenResponse](),
	"Event":          reflect.TypeFor[store.Event](),
	"Job":            reflect.TypeFor[store.Job](),
	"JobLine":        reflect.TypeFor[store.JobLine](),
	"JobDetail":      reflect.TypeFor[api.JobDetail](),
	"TimeBreakdown":  reflect.TypeFor[timing.Breakdown](),
	"TimeStage":      reflect.TypeFor[timing.Stage](),
	"TimeShares":     reflect.TypeFor[timing.Shares](),
	"TimeReport":     reflect.TypeFor[timing.Report](),
	"TimeMachine":    reflect.TypeFor[timing.Machine](),
	"SessionInfo":    reflect.TypeFor[mcast.SessionInfo](),
	"ReceiverInfo":   reflect.TypeFor[mcast.ReceiverInfo](),
	"ReceiverBytes":  reflect.TypeFor[mcast.Bytes](),

	"StatusInfo":      reflect.TypeFor[api.StatusInfo](),
	"ServiceStatus":   reflect.TypeFor[api.ServiceStatus](),
	"RepoStatus":      reflect.TypeFor[api.RepoStatus](),
	"ConfigSummary":   reflect.TypeFor[api.ConfigSummary](),
	"ProxyDHCPConfig": reflect.TypeFor[api.ProxyDHCPConfig](),
	"TFTPConfig":      reflect.TypeFor[api.TFTPConfig](),
	"HTTPConfig":      reflect.TypeFor[api.HTTPConfig](),
	"StoreConfig":     reflect.TypeFor[api.StoreConfig](),
	"StatusCounts":    reflect.TypeFor[api.StatusCounts](),

	"RestoreParams":   reflect.TypeFor[bundle.Restore](),
	"CaptureParams":   reflect.TypeFor[bundle.Capture](),
	"ScriptParams":    reflect.TypeFor[bundle.Script](),
	"MulticastParams": reflect.TypeFor[bundle.Multicast](),
	"OSInstallParams": reflect.TypeFor[bundle.OSInstall](),
	"WipeParams":      reflect.TypeFor[bundle.Wipe](),
	"InventoryParams": reflect.TypeFor[bundle.Inventory](),
	"LocalBootParams": reflect.TypeFor[bundle.LocalBoot](),

	"ImageError":    reflect.TypeFor[httpstore.ErrorBody](),
	"ImageList":     reflect.TypeFor[httpstore.ImageList](),
	"ImageInfo":     reflect.TypeFor[httpstore.ImageInfo](),
	"PartitionInfo": reflect.TypeFor[httpstore.PartitionInfo](),
	"ImageDetail":   reflect.TypeFor[httpstore.ImageDetail](),
	"VerifyResult":  reflect.TypeFor[httpstore.VerifyResult](),
	"ImageVersions": reflect.TypeFor[httpstore.ImageVersions](),
	"ImageVersion":  reflect.TypeFor[image.Version](),
	"GCStats":       reflect.TypeFor[image.GCStats](),
	"Manifest":      reflect.TypeFor[image.Manifest](),
	"ManifestDisk":  reflect.TypeFor[image.Disk](),
	"ManifestArea":  reflect.TypeFor[image.Area](),
	"ManifestChunk": reflect.TypeFor[image.Chunk](),
	"ManifestSizes": reflect.TypeFor[image.Sizes](),
	"Extent":        reflect.TypeFor[disk.Extent](),

	"ExplorerPartitions": reflect.TypeFor[httpstore.PartitionList](),
	"ExplorerPartition":  reflect.TypeFor[httpstore.ExplorePartition](),
	"ExplorerFiles":      reflect.TypeFor[httpstore.FileList](),
	"ExplorerFile":       reflect.TypeFor[httpstore.FileEntry](),
	"ImageDiff":          reflect.TypeFor[image.DiffResult](),
	"ImageAreaDiff":      reflect.TypeFor[image.AreaDiff](),
}

// goRequests are request bodies: only their property names are checked
// (what is required is the handler's business), minus fields the schema
// leaves out on purpose.
var goRequests = map[string]struct {
	t      reflect.Type
	except []string
}{
	"DeviceCreate":     {reflect.TypeFor[api.DeviceRequest](), nil},
	"DevicePatch":      {reflect.TypeFor[api.DeviceRequest](), []string{"mac"}}, // a MAC cannot change: 422
	"GroupCreate":      {reflect.TypeFor[api.GroupRequest](), nil},
	"GroupPatch":       {reflect.TypeFor[api.GroupRequest](), nil},
	"BundleCreate":     {reflect.TypeFor[api.BundleRequest](), nil},
	"BundlePatch":      {reflect.TypeFor[api.BundleRequest](), nil},
	"AssignmentCreate": {reflect.TypeFor[api.AssignmentRequest](), nil},
	"RuleCreate":       {reflect.TypeFor[api.RuleRequest](), nil},
	"RulePatch":        {reflect.TypeFor[api.RuleRequest](), nil},
	"RollbackRequest":  {reflect.TypeFor[httpstore.RollbackRequest](), nil},
	"RuleTest":         {reflect.TypeFor[api.RuleTestRequest](), nil},
	"SettingsPatch":    {reflect.TypeFor[api.SettingsPatch](), nil},
}

type goField struct {
	name     string
	t        reflect.Type
	optional bool // omitempty or omitzero
}

// jsonFields lists the JSON properties of a struct the way encoding/json
// writes them (embedded structs flattened).
func jsonFields(t reflect.Type) []goField {
	var out []goField
	for f := range t.Fields() {
		tag := f.Tag.Get("json")
		if tag == "-" || !f.IsExported() && !f.Anonymous {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				out = append(out, jsonFields(ft)...)
				continue
			}
		}
		if name == "" {
			name = f.Name
		}
		optional := false
		for _, o := range strings.Split(opts, ",") {
			if o == "omitempty" || o == "omitzero" {
				optional = true
			}
		}
		out = append(out, goField{name: name, t: f.Type, optional: optional})
	}
	return out
}

// flatSchema merges the properties and required lists of a schema and its
// allOf parts (following references).
func flatSchema(t *testing.T, tree map[string]any, s map[string]any) (props map[string]any, required []string) {
	t.Helper()
	props = map[string]any{}
	var add func(s map[string]any)
	add = func(s map[string]any) {
		if r, ok := s["$ref"].(string); ok {
			v, err := resolvePointer(tree, r)
			if err != nil {
				t.Fatal(err)
			}
			add(v.(map[string]any))
		}
		if ps, ok := s["properties"].(map[string]any); ok {
			for k, v := range ps {
				props[k] = v
			}
		}
		if rs, ok := s["required"].([]any); ok {
			for _, r := range rs {
				required = append(required, r.(string))
			}
		}
		if all, ok := s["allOf"].([]any); ok {
			for _, part := range all {
				pm := part.(map[string]any)
				if _, cond := pm["if"]; cond {
					continue // kind-dependent params: checked by value
				}
				add(pm)
			}
		}
	}
	add(s)
	return props, required
}

var (
	timeType   = reflect.TypeFor[time.Time]()
	rawType    = reflect.TypeFor[json.RawMessage]()
	durType    = reflect.TypeFor[store.Duration]()
	hashType   = reflect.TypeFor[image.Hash]()
	addrType   = reflect.TypeFor[netip.Addr]()
	factsType  = reflect.TypeFor[rules.Facts]()
	schemaRefs = func() map[reflect.Type]string {
		m := map[reflect.Type]string{}
		for name, t := range goSchemas {
			m[t] = name
		}
		return m
	}()
)

// schemaTypes returns the JSON types a schema allows and the component
// it refers to, if it is (or is a nullable) reference.
func schemaTypes(t *testing.T, tree map[string]any, s map[string]any) (types map[string]bool, ref string) {
	t.Helper()
	types = map[string]bool{}
	if r, ok := s["$ref"].(string); ok {
		v, err := resolvePointer(tree, r)
		if err != nil {
			t.Fatal(err)
		}
		inner, _ := schemaTypes(t, tree, v.(map[string]any))
		return inner, strings.TrimPrefix(r, "#/components/schemas/")
	}
	switch ty := s["type"].(type) {
	case string:
		types[ty] = true
	case []any:
		for _, x := range ty {
			types[x.(string)] = true
		}
	}
	for _, k := range []string{"oneOf", "anyOf"} {
		alts, _ := s[k].([]any)
		for _, a := range alts {
			inner, r := schemaTypes(t, tree, a.(map[string]any))
			for x := range inner {
				types[x] = true
			}
			if r != "" {
				ref = r
			}
		}
	}
	if _, ok := s["allOf"]; ok {
		types["object"] = true
	}
	return types, ref
}

// checkType compares a Go type with the schema of the property it is
// written to.
func checkType(t *testing.T, tree map[string]any, at string, gt reflect.Type, s map[string]any) {
	t.Helper()
	types, ref := schemaTypes(t, tree, s)
	nullable := types["null"]
	delete(types, "null")
	if nullable && gt.Kind() != reflect.Pointer && gt.Kind() != reflect.Slice && gt.Kind() != reflect.Map {
		t.Errorf("%s: the schema allows null, the Go type %s is never null", at, gt)
	}
	for gt.Kind() == reflect.Pointer {
		gt = gt.Elem()
	}
	want := ""
	switch {
	case gt == rawType, gt == factsType:
		want = "object"
	case gt == timeType:
		want = "string"
		if s["format"] != "date-time" {
			t.Errorf("%s: a time, want format date-time", at)
		}
	case gt == durType:
		want = "string"
		if ref != "Duration" {
			t.Errorf("%s: a store.Duration, want a reference to Duration, got %q", at, ref)
		}
	case gt == hashType, gt == addrType:
		want = "string"
	case schemaRefs[gt] != "":
		want = "object"
		if ref != schemaRefs[gt] {
			t.Errorf("%s: a %s, want a reference to %s, got %q", at, gt, schemaRefs[gt], ref)
		}
	default:
		switch gt.Kind() {
		case reflect.String:
			want = "string"
		case reflect.Bool:
			want = "boolean"
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
			want = "integer"
		case reflect.Float32, reflect.Float64:
			want = "number"
		case reflect.Slice, reflect.Array:
			want = "array"
			items, ok := s["items"].(map[string]any)
			if !ok {
				t.Errorf("%s: an array without items", at)
				break
			}
			checkType(t, tree, at+"[]", gt.Elem(), items)
		case reflect.Map, reflect.Struct:
			want = "object"
		}
	}
	if want == "" {
		t.Errorf("%s: no JSON type known for Go type %s", at, gt)
		return
	}
	if len(types) != 1 || !types[want] {
		t.Errorf("%s: the Go type %s is written as %s, the schema says %v", at, gt, want, types)
	}
}

func TestOpenAPISchemasMatchGoTypes(t *testing.T) {
	_, tree := readDoc(t)
	schemas := tree["components"].(map[string]any)["schemas"].(map[string]any)
	check := func(name string, gt reflect.Type, except []string, request bool) {
		s, ok := schemas[name].(map[string]any)
		if !ok {
			t.Errorf("schema %s (Go %s) is missing", name, gt)
			return
		}
		props, required := flatSchema(t, tree, s)
		seen := map[string]bool{}
		for _, f := range jsonFields(gt) {
			if slices.Contains(except, f.name) {
				continue
			}
			seen[f.name] = true
			at := name + "." + f.name
			p, ok := props[f.name].(map[string]any)
			if !ok {
				t.Errorf("%s: in Go %s, not in the schema", at, gt)
				continue
			}
			if request {
				continue
			}
			checkType(t, tree, at, f.t, p)
			if req := slices.Contains(required, f.name); req == f.optional {
				t.Errorf("%s: required %t, but Go's omitempty/omitzero is %t", at, req, f.optional)
			}
		}
		for p := range props {
			if !seen[p] {
				t.Errorf("%s.%s: in the schema, not in Go %s", name, p, gt)
			}
		}
	}
	for name, gt := range goSchemas {
		check(name, gt, nil, false)
	}
	for name, r := range goRequests {
		check(name, r.t, r.except, true)
	}
}

// docModel builds the document's model for payload validation.
func docModel(t *testing.T) *v3.Document {
	t.Helper()
	raw, _ := readDoc(t)
	doc, err := newDocument(raw)
	if err != nil {
		t.Fatal(err)
	}
	m, err := doc.BuildV3Model()
	if err != nil {
		t.Fatal(err)
	}
	return &m.Model
}

// validateValue validates a Go value, as encoding/json writes it, against a
// component schema.
func validateValue(t *testing.T, m *v3.Document, schema string, v any) []string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return validateBytes(t, m, schema, b)
}

func validateBytes(t *testing.T, m *v3.Document, schema string, b []byte) []string {
	t.Helper()
	sp := m.Components.Schemas.GetOrZero(schema)
	if sp == nil {
		t.Fatalf("no schema %s", schema)
	}
	s := sp.Schema()
	if s == nil {
		t.Fatalf("schema %s: %v", schema, sp.GetBuildError())
	}
	ok, errs := schema_validation.NewSchemaValidator().ValidateSchemaBytes(s, b)
	var out []string
	for _, e := range errs {
		out = append(out, e.Message+": "+e.Reason)
		for _, se := range e.SchemaValidationErrors {
			out = append(out, fmt.Sprintf("  at %s: %s", se.FieldPath, se.Reason))
		}
	}
	if !ok && len(out) == 0 {
		out = append(out, "invalid (no details)")
	}
	return out
}

// bundleExamples returns the request examples of POST /bundles.
func bundleExamples(t *testing.T, tree map[string]any) map[string]api.BundleRequest {
	t.Helper()
	ex, err := resolvePointer(tree, "#/paths/~1bundles/post/requestBody/content/application~1json/examples")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]api.BundleRequest{}
	for name, e := range ex.(map[string]any) {
		b, _ := json.Marshal(e.(map[string]any)["value"])
		var req api.BundleRequest
		if err := json.Unmarshal(b, &req); err != nil {
			t.Fatalf("example %s: %v", name, err)
		}
		out[name] = req
	}
	return out
}

// TestOpenAPIExamplesAreValid validates every request example against its
// schema, and the bundle examples with package bundle too.
func TestOpenAPIExamplesAreValid(t *testing.T) {
	_, tree := readDoc(t)
	m := docModel(t)
	n := 0
	for route, o := range docOperations(tree) {
		body, ok := o["requestBody"].(map[string]any)
		if !ok {
			continue
		}
		js, ok := body["content"].(map[string]any)["application/json"].(map[string]any)
		if !ok {
			continue
		}
		ref, _ := js["schema"].(map[string]any)["$ref"].(string)
		schema := strings.TrimPrefix(ref, "#/components/schemas/")
		exs, _ := js["examples"].(map[string]any)
		for name, e := range exs {
			b, _ := json.Marshal(e.(map[string]any)["value"])
			for _, p := range validateBytes(t, m, schema, b) {
				t.Errorf("%s example %s: %s", route, name, p)
			}
			n++
		}
	}
	if n < 10 {
		t.Errorf("only %d request examples found", n)
	}
	kinds := map[string]bool{}
	for name, req := range bundleExamples(t, tree) {
		if _, err := bundle.Normalize(req.Kind, req.Params); err != nil {
			t.Errorf("bundle example %s: package bundle refuses it: %v", name, err)
		}
		kinds[req.Kind] = true
	}
	for _, k := range store.BundleKinds {
		if !kinds[k] {
			t.Errorf("no POST /bundles example of kind %s", k)
		}
	}
}

// TestOpenAPIValuesValidate writes real values of the wire types and
// validates them against their schemas: what the server answers must be
// what the document promises.
func TestOpenAPIValuesValidate(t *testing.T) {
	_, tree := readDoc(t)
	m := docModel(t)
	now := time.Date(2026, 11, 25, 8, 0, 0, 0, time.UTC)
	ev := store.Event{ID: 7, MAC: "52:54:00:12:34:56", Job: 3, Time: now, Kind: store.EventJob, Actor: "token:ci", Message: "job 3: running"}
	dev := store.Device{ID: 1, MAC: "52:54:00:12:34:56", Name: "pc-1", UUID: "0b7c1a52-3f3c-4c39-a2f4-8a5d0a9a3b11", Serial: "S1",
		Manufacturer: "QEMU", Product: "Standard PC", Arch: "bios", Platform: "pcbios", IP: "10.0.0.9", FirstSeen: now, LastSeen: now,
		LastEvent: &ev, AssetTag: "A-1", Notes: "n", Registered: true, RAMBytes: 2 << 30, DiskBytes: 20 << 30,
		Applied: &store.Applied{BundleID: 2, Bundle: "inv", BundleVersion: 1, Job: 3, Time: now}, Info: json.RawMessage(`{"disks":[]}`)}
	minDev := store.Device{ID: 2, MAC: "52:54:00:00:00:01", FirstSeen: now, LastSeen: now}

	var bundles []store.Bundle
	for name, req := range bundleExamples(t, tree) {
		params, err := bundle.Normalize(req.Kind, req.Params)
		if err != nil {
			t.Fatalf("bundle example %s: %v", name, err)
		}
		bundles = append(bundles, store.Bundle{ID: 2, Name: *req.Name, Kind: req.Kind, Params: params, Version: 1, CreatedAt: now, UpdatedAt: now})
	}
	asg := store.Assignment{ID: 4, BundleID: 2, Bundle: "inv", BundleKind: store.KindInventory, MAC: dev.MAC, Once: true, CreatedAt: now}
	gasg := store.Assignment{ID: 5, BundleID: 2, Bundle: "inv", BundleKind: store.KindInventory, Group: "lab-a", CreatedAt: now}
	grp := store.Group{ID: 1, Name: "lab-a", Priority: 10, Match: "mac ^= 52:54:00", Members: 3, CreatedAt: now, UpdatedAt: now}
	menu := store.Menu{Mode: "hotkey", Hotkey: "ctrl-p", Timeout: store.Duration(5 * time.Second), Title: "Preboot", Bundles: []string{"inv"}, Shell: true}
	dec := policy.Decision{Action: policy.ActionBundle, Bundle: &bundles[0], Assignment: &asg, Source: "device", Reason: "the device's own assignment", Menu: menu, Groups: []string{"lab-a"}}
	job := store.Job{ID: 3, MAC: dev.MAC, Kind: store.KindImageRestore, BundleID: 2, Bundle: "restore", BundleVersion: 1, AssignmentID: 4,
		Params: json.RawMessage(`{"image":"win11","after":"reboot"}`), Image: "win11", After: "reboot", State: store.JobRunning, Phase: "restore",
		BytesDone: 1 << 20, BytesTotal: 1 << 30, Rate: 1 << 20, CreatedAt: now, StartedAt: now, UpdatedAt: now}
	openJob := store.Job{ID: 4, MAC: dev.MAC, Kind: store.KindInventory, State: store.JobPending, CreatedAt: now, UpdatedAt: now}
	var hash image.Hash
	hash[0] = 0xab
	man := image.Manifest{Version: image.FormatVersion, Name: "win11", Created: now, Source: map[string]string{"mac": dev.MAC}, ChunkSize: 4 << 20,
		Disk:       image.Disk{Size: 1 << 30, SectorSize: 512, Table: json.RawMessage(`{"type":"gpt"}`)},
		Partitions: []image.Area{{Index: 1, Start: 1 << 20, Size: 1 << 29, FSType: "ext4", Used: []disk.Extent{{Offset: 0, Length: 4096}}, Chunks: []image.Chunk{{Offset: 0, Length: 4 << 20, Hash: hash}, {Offset: 4 << 20, Length: 4 << 20, Zero: true}}}},
		Regions:    []image.Area{{Name: "head", Size: 1 << 20, Used: []disk.Extent{{Offset: 0, Length: 1 << 20}}, Chunks: []image.Chunk{{Offset: 0, Length: 1 << 20, Hash: hash}}}},
		Sizes:      image.Sizes{Logical: 1 << 30, Used: 1 << 20, Uploaded: 1 << 19}}
	info := httpstore.ImageInfo{Name: "win11", Created: now, ChunkSize: 4 << 20, Logical: 1 << 30, Used: 1 << 20, Stored: 1 << 19, Chunks: 1,
		Partitions: []httpstore.PartitionInfo{{Index: 1, Start: 1 << 20, Size: 1 << 29, FSType: "ext4", Used: 4096}}}

	values := []struct {
		schema string
		v      any
	}{
		{"Device", dev}, {"Device", minDev},
		{"DeviceDetail", api.DeviceDetail{Device: dev, Groups: []store.Group{grp}, Assignment: &asg, Decision: &dec, Events: []store.Event{ev}, Jobs: []store.Job{job}}},
		{"DeviceDetail", api.DeviceDetail{Device: minDev, Groups: []store.Group{}, Events: []store.Event{}, Jobs: []store.Job{}}},
		{"Decision", dec},
		{"Decision", policy.Decision{Action: policy.ActionLocal, Source: "none", Reason: "nothing assigned", Menu: menu, Groups: []string{}}},
		{"Group", grp}, {"GroupDetail", api.GroupDetail{Group: grp, Assignment: &gasg}}, {"GroupDetail", api.GroupDetail{Group: grp}},
		{"Assignment", asg}, {"Assignment", gasg},
		{"Rule", store.Rule{ID: 1, Name: "new-vms", Position: 1, Enabled: true, Match: "mac ^= 52:54:00", Bundle: "inv", Group: "lab-a", CreatedAt: now, UpdatedAt: now}},
		{"RuleTestResult", api.RuleTestResult{Rule: "new-vms", Matched: true, Facts: rules.FactsOf(dev)}},
		{"Menu", menu}, {"Menu", store.Menu{Mode: "never"}},
		{"Settings", store.Settings{Menu: menu, Unregistered: store.Unregistered{Action: store.UnregisteredBundle, Bundle: "inv"}, Naming: store.Naming{Prefix: "pc-", From: store.NameFromSerial}}},
		{"Settings", store.Settings{Menu: store.Menu{Mode: "never"}, Unregistered: store.Unregistered{Action: store.UnregisteredLocal}}},
		{"Token", store.Token{ID: 1, Name: "ci", Prefix: "pba_0123ab", CreatedAt: now}},
		{"TokenCreated", api.NewTokenResponse{Secret: "pba_0123abcdef", Token: store.Token{ID: 1, Name: "ci", Prefix: "pba_0123ab", CreatedAt: now, LastUsed: now}}},
		{"Event", ev}, {"Event", store.Event{ID: 1, Time: now, Kind: store.EventAdmin, Message: "settings changed"}},
		{"Job", job}, {"Job", openJob},
		{"JobDetail", api.JobDetail{Job: job, Log: []store.JobLine{{Time: now, Line: "restoring partition 1"}}}},
		{"JobLine", store.JobLine{Time: now, Line: "x"}},
		{"SessionInfo", sessionstest.Running("s1", now)}, {"SessionInfo", sessionstest.Done("s0", now)},
		{"SessionInfo", mcast.SessionInfo{ID: "s2", Image: "lab@1", State: mcast.StateWaiting, Created: now, Receivers: []mcast.ReceiverInfo{}}},
		{"ReceiverInfo", sessionstest.Running("s1", now).Receivers[1]},
		{"Error", api.Error{Error: "name: required"}},
		{"StatusInfo", exampleStatus(now)},
		{"ImageError", httpstore.ErrorBody{Error: "missing", Code: httpstore.CodeMissingChunks, Missing: []string{hash.String()}, MissingCount: 1}},
		{"ImageList", httpstore.ImageList{Images: []httpstore.ImageInfo{info}, Chunks: 1, StoredBytes: 1 << 19}},
		{"ImageDetail", httpstore.ImageDetail{Info: info, Manifest: &man}},
		{"Manifest", man},
		{"VerifyResult", httpstore.VerifyResult{Name: "win11", OK: false, Chunks: 1, Error: "chunk ab..: hash mismatch"}},
	}
	for _, b := range bundles {
		values = append(values, struct {
			schema string
			v      any
		}{"Bundle", b})
	}
	for _, v := range values {
		for _, p := range validateValue(t, m, v.schema, v.v) {
			t.Errorf("%s %+v: %s", v.schema, v.v, p)
		}
	}

	// The schemas must also refuse what the server never sends or accepts.
	bad := []struct {
		schema, json, why string
	}{
		{"Bundle", `{"id":1,"name":"b","kind":"image-restore","params":{"script":"true"},"version":1,"created_at":"2026-11-25T08:00:00Z","updated_at":"2026-11-25T08:00:00Z"}`, "script params on an image-restore bundle"},
		{"Bundle", `{"id":1,"name":"b","kind":"local-boot","params":{"after":"reboot"},"version":1,"created_at":"2026-11-25T08:00:00Z","updated_at":"2026-11-25T08:00:00Z"}`, "parameters on a local-boot bundle"},
		{"BundleCreate", `{"name":"b","kind":"wipe","params":{"confirm":false}}`, "a wipe without confirmation"},
		{"BundleCreate", `{"name":"b","kind":"inventory","colour":"red"}`, "an unknown field"},
		{"AssignmentCreate", `{"bundle":"b","device":"52:54:00:12:34:56","group":"g"}`, "both targets"},
		{"AssignmentCreate", `{"bundle":"b"}`, "no target"},
		{"RuleCreate", `{"name":"r","match":"true"}`, "neither bundle nor group"},
		{"Menu", `{"mode":"sometimes","timeout":"3s","shell":false}`, "an unknown mode"},
		{"Device", `{"id":1,"mac":"52:54:00:12:34:56","first_seen":"2026-11-25T08:00:00Z","last_seen":"2026-11-25T08:00:00Z"}`, "no registered flag"},
		{"ReceiverBytes", `{"multicast":1,"repair":0,"peers":0}`, "no unicast count"},
		{"SessionInfo", `{"id":"s","image":"i@1","state":"paused","group":"","interface":"","min_clients":0,"max_wait":"0s","created":"2026-11-25T08:00:00Z","rate":0,"chunks":0,"image_bytes":0,"sent_packets":0,"sent_data":0,"sent_repair":0,"served":0,"peer_redirects":0,"receivers":[]}`, "an unknown state"},
	}
	for _, b := range bad {
		if ps := validateBytes(t, m, b.schema, []byte(b.json)); len(ps) == 0 {
			t.Errorf("%s accepts %s: %s", b.schema, b.why, b.json)
		}
	}
}

// liveAPI is the real API over HTTP on SQLite, wired as the server wires
// it, with every request and answer checked against the document.
type liveAPI struct {
	t       *testing.T
	srv     *httptest.Server
	st      store.Store
	js      *jobs.Service
	v       validator.Validator
	token   string
	tmpls   []*regexp.Regexp
	names   []string
	covered map[string]bool
}

func newLiveAPI(t *testing.T, images map[string]bool) *liveAPI {
	t.Helper()
	st, err := sqlstore.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "openapi.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	n := &api.Notifier{}
	ns := api.NotifyingStore{Store: st, N: n}
	js := &jobs.Service{Store: ns}
	pol := &policy.Engine{Store: ns, Boot: config.Default().Boot, DefaultSettings: policy.SettingsFromConfig(config.Default().Menu), Jobs: js}
	h := api.New(api.Options{Store: ns, Policy: pol, Jobs: js, Auth: &api.Auth{Store: ns}, Events: n, Version: "test",
		ImageExists: func(name string) bool { return images[name] },
		Status:      func(context.Context) (api.StatusInfo, error) { return exampleStatus(time.Now()), nil },
		Sessions:    sessionstest.New(sessionstest.Running("s2", time.Now()), sessionstest.Done("s1", time.Now())),
		// Devices nobody knows where to find are woken on loopback only.
		Waker: &wake.Service{Store: ns, Sender: &wake.Sender{Interfaces: []string{"lo"}}}})
	l := newLive(t, asLocal(h))
	l.st, l.js = ns, js
	return l
}

// newLive serves h and checks requests and answers with the document.
func newLive(t *testing.T, h http.Handler) *liveAPI {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)

	raw, tree := readDoc(t)
	doc, err := newDocument(raw)
	if err != nil {
		t.Fatal(err)
	}
	v, errs := validator.NewValidator(doc, vconfig.WithFormatAssertions())
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	l := &liveAPI{t: t, srv: srv, v: v, covered: map[string]bool{}}
	// Literal paths first, so that /rules/test is not taken for /rules/{name}.
	var paths []string
	for p := range tree["paths"].(map[string]any) {
		paths = append(paths, p)
	}
	sort.Slice(paths, func(i, j int) bool {
		ti, tj := strings.Count(paths[i], "{"), strings.Count(paths[j], "{")
		if ti != tj {
			return ti < tj
		}
		return paths[i] < paths[j]
	})
	for _, p := range paths {
		re := "^" + regexp.MustCompile(`\\\{[^}]+\\\}`).ReplaceAllString(regexp.QuoteMeta(p), `[^/]+`) + "$"
		l.tmpls = append(l.tmpls, regexp.MustCompile(re))
		l.names = append(l.names, p)
	}
	return l
}

// route names the documented operation a request is for.
func (l *liveAPI) route(method, path string) string {
	for i, re := range l.tmpls {
		if re.MatchString(path) {
			return method + " " + l.names[i]
		}
	}
	return method + " " + path + " (not documented)"
}

// tarBody is a request body sent as application/x-tar.
type tarBody []byte

func (l *liveAPI) newRequest(method, path string, body []byte, ctype string) *http.Request {
	l.t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, l.srv.URL+"/api/v1"+path, rd)
	if err != nil {
		l.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", ctype)
	}
	if l.token != "" {
		req.Header.Set("Authorization", "Bearer "+l.token)
	}
	return req
}

func reportErrs(what string, errs []*liberrors.ValidationError) []string {
	var out []string
	for _, e := range errs {
		out = append(out, fmt.Sprintf("%s: %s: %s", what, e.Message, e.Reason))
		for _, se := range e.SchemaValidationErrors {
			out = append(out, fmt.Sprintf("  at %s: %s", se.FieldPath, se.Reason))
		}
	}
	return out
}

// do sends a request and checks its status, that the request (unless
// badInput) and the answer conform to the document, and decodes the answer
// into out (if not nil).
func (l *liveAPI) do(method, path string, body any, want int, out any) []byte {
	l.t.Helper()
	return l.send(method, path, body, want, out, false)
}

// anonymous sends a request without a token, as root on the admin socket
// may (which the document's security requirement does not express).
func (l *liveAPI) anonymous(method, path string, body any, want int, out any) {
	l.t.Helper()
	tok := l.token
	l.token = ""
	l.send(method, path, body, want, out, true)
	l.token = tok
}

// bad sends a request the document itself calls invalid (or that the
// validator cannot judge), and checks the answer conforms.
func (l *liveAPI) bad(method, path string, body any, want int) {
	l.t.Helper()
	l.send(method, path, body, want, nil, true)
}

func (l *liveAPI) send(method, path string, body any, want int, out any, badInput bool) []byte {
	l.t.Helper()
	var b []byte
	ctype := "application/json"
	switch x := body.(type) {
	case nil:
	case tarBody:
		b, ctype = x, "application/x-tar"
	case string:
		b = []byte(x)
	default:
		var err error
		if b, err = json.Marshal(x); err != nil {
			l.t.Fatal(err)
		}
	}
	route := l.route(method, strings.SplitN(path, "?", 2)[0])
	l.covered[route] = true
	if !badInput {
		if ok, errs := l.v.ValidateHttpRequest(l.newRequest(method, path, b, ctype)); !ok {
			for _, p := range reportErrs(route+" request", errs) {
				l.t.Error(p)
			}
		}
	}
	req := l.newRequest(method, path, b, ctype)
	client := &http.Client{Timeout: time.Minute} // a hung handler fails the test, not the run
	resp, err := client.Do(req)
	if err != nil {
		l.t.Fatalf("%s %s: %v", method, path, err)
	}
	raw, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		l.t.Fatal(err)
	}
	if resp.StatusCode != want {
		l.t.Fatalf("%s %s: status %d, want %d: %s", method, path, resp.StatusCode, want, raw)
	}
	resp.Body = io.NopCloser(bytes.NewReader(raw))
	if ok, errs := l.v.ValidateHttpResponse(l.newRequest(method, path, b, ctype), resp); !ok {
		for _, p := range reportErrs(fmt.Sprintf("%s answer %d %s", route, resp.StatusCode, raw), errs) {
			l.t.Error(p)
		}
	}
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(raw, out); err != nil {
			l.t.Fatalf("%s %s: %v: %s", method, path, err, raw)
		}
	}
	return raw
}

// TestOpenAPIMatchesLiveAnswers runs the walk-through of docs/api.md (and
// the error cases) against the real API and validates every request and
// answer with the document; every documented admin route must be used.
func TestOpenAPIMatchesLiveAnswers(t *testing.T) {
	l := newLiveAPI(t, map[string]bool{"win11-base": true, "golden-2026-11": true})
	ctx := context.Background()
	const mac = "52:54:00:aa:00:01"

	// Tokens: the first one from the admin socket, the rest with it.
	var tok api.NewTokenResponse
	l.anonymous("POST", "/tokens", map[string]any{"name": "walkthrough"}, 201, &tok)
	l.token = tok.Secret
	l.do("GET", "/version", nil, 200, nil)
	l.do("GET", "/status", nil, 200, nil)
	l.do("GET", "/tokens", nil, 200, nil)
	l.bad("POST", "/tokens", map[string]any{"name": "walkthrough"}, 409)
	l.do("GET", "/dhcp/leases?family=4&active=true&limit=10", nil, 200, nil)
	l.bad("GET", "/dhcp/leases?family=7", nil, 400)
	// Not a site server: the replica routes answer 503 (replicas_test.go
	// walks them on one).
	l.bad("GET", "/replicas", nil, 503)
	l.bad("POST", "/replicas/sync", nil, 503)
	l.bad("POST", "/replicas/verify", map[string]any{"repair": true}, 503)
	// Sites, a replication token, and job token introspection (a job
	// token this server does not know is inactive).
	l.do("POST", "/sites", map[string]any{"name": "branch-a", "subnets": []string{"10.20.0.0/16", "2001:db8:20::/48"}, "server_url": "https://site-a.example:8443"}, 201, nil)
	l.bad("POST", "/sites", map[string]any{"name": "branch-a", "subnets": []string{"10.30.0.0/16"}, "server_url": "https://site-b.example:8443"}, 409)
	l.bad("POST", "/sites", map[string]any{"name": "bad", "subnets": []string{"10.30.0.0"}, "server_url": "https://site-b.example:8443"}, 422)
	l.bad("POST", "/sites", map[string]any{"name": "bad", "subnets": []string{"10.30.0.0/16"}, "server_url": "ftp://site-b"}, 422)
	l.do("GET", "/sites", nil, 200, nil)
	l.do("DELETE", "/sites/branch-a", nil, 204, nil)
	l.bad("DELETE", "/sites/branch-a", nil, 404)
	l.do("POST", "/tokens", map[string]any{"name": "site-a", "scope": "replication"}, 201, nil)
	l.bad("POST", "/tokens", map[string]any{"name": "site-b", "scope": "root"}, 422)
	var scope map[string]any
	l.do("POST", "/tokens/introspect", map[string]any{"token": "pbj_0123456789abcdef"}, 200, &scope)
	if scope["active"] != false || len(scope) != 1 {
		t.Errorf("introspection of an unknown job token: %v", scope)
	}
	l.bad("POST", "/tokens/introspect", map[string]any{"token": "pba_0123"}, 422)

	// Bundles: one of every example, and what is refused.
	_, tree := readDoc(t)
	for _, req := range bundleExamples(t, tree) {
		l.do("POST", "/bundles", req, 201, nil)
	}
	l.do("GET", "/bundles?kind=image-restore&limit=10&offset=0", nil, 200, nil)
	l.do("GET", "/bundles/win11-restore", nil, 200, nil)
	l.do("PATCH", "/bundles/win11-restore", map[string]any{"description": "Windows 11, whole disk", "params": map[string]any{"image": "win11-base", "partitions": []int{2, 3}}}, 200, nil)
	l.bad("POST", "/bundles", map[string]any{"name": "wipe-all", "kind": "wipe", "params": map[string]any{"mode": "shred"}}, 422)
	l.bad("POST", "/bundles", `{"name":"x","kind":"inventory","colour":"red"}`, 400)
	l.bad("POST", "/bundles", map[string]any{"name": "win11-restore", "kind": "local-boot"}, 409)
	l.bad("POST", "/bundles", map[string]any{"name": "r2", "kind": "image-restore", "params": map[string]any{"image": "nope"}}, 422)
	l.bad("GET", "/bundles/nope", nil, 404)

	// Groups, devices, members.
	l.do("POST", "/groups", map[string]any{"name": "lab-a", "description": "Classroom A", "priority": 10}, 201, nil)
	l.do("POST", "/groups", map[string]any{"name": "by-ip", "match": "ip in 10.20.0.0/16"}, 201, nil)
	l.do("GET", "/groups?limit=10", nil, 200, nil)
	l.do("PATCH", "/groups/by-ip", map[string]any{"description": "the lab subnet"}, 200, nil)
	l.do("POST", "/devices", map[string]any{"mac": mac, "name": "lab-a-01", "asset_tag": "A-1001"}, 201, nil)
	l.bad("POST", "/devices", map[string]any{"mac": "52-54-00-AA-00-01"}, 409)
	l.bad("GET", "/devices/not-a-mac", nil, 400)
	l.do("PATCH", "/devices/"+mac, map[string]any{"notes": "front row"}, 200, nil)
	l.do("PUT", "/groups/lab-a/members/"+mac, nil, 204, nil)
	l.do("GET", "/groups/lab-a/members?limit=10&offset=0", nil, 200, nil)
	l.bad("PUT", "/groups/lab-a/members/52:54:00:ff:ff:ff", nil, 404)
	l.do("GET", "/devices?q=lab&registered=true&limit=10&offset=0", nil, 200, nil)

	// Assignments and decisions.
	var ga store.Assignment
	l.do("POST", "/assignments", map[string]any{"bundle": "win11-restore", "group": "lab-a", "once": true}, 201, &ga)
	l.do("GET", "/groups/lab-a", nil, 200, nil)
	l.bad("POST", "/assignments", map[string]any{"bundle": "inventory", "group": "lab-a"}, 409)
	l.bad("POST", "/assignments", map[string]any{"bundle": "nope", "group": "lab-a"}, 422)
	l.bad("DELETE", "/bundles/win11-restore", nil, 409)
	l.do("GET", "/devices/"+mac+"/decision", nil, 200, nil)
	var da store.Assignment
	l.do("POST", "/assignments", map[string]any{"bundle": "inventory", "device": "52:54:00:12:34:56", "replace": true}, 201, &da)
	l.do("GET", "/assignments?group=lab-a&limit=10", nil, 200, nil)
	l.do("GET", fmt.Sprintf("/assignments/%d", da.ID), nil, 200, nil)
	l.do("GET", "/devices/52:54:00:12:34:56", nil, 200, nil) // registered by the assignment, no groups
	l.do("DELETE", fmt.Sprintf("/assignments/%d", da.ID), nil, 204, nil)
	l.bad("GET", fmt.Sprintf("/assignments/%d", da.ID), nil, 404)

	// Wake-on-LAN (the live API's fallback is loopback) and schedules.
	l.do("POST", "/devices/"+mac+"/wake", nil, 200, nil)
	l.do("POST", "/wake", map[string]any{"devices": []string{mac, "52:54:00:12:34:56"}}, 200, nil)
	l.bad("POST", "/wake", map[string]any{"devices": []string{mac, "52:54:00:ff:ff:fe"}}, 404)
	l.bad("POST", "/wake", map[string]any{"devices": []string{}}, 422)
	l.bad("POST", "/devices/52:54:00:ff:ff:fe/wake", nil, 404)
	l.do("POST", "/groups/lab-a/wake", nil, 200, nil)
	l.bad("POST", "/groups/nope/wake", nil, 404)
	l.do("POST", "/wake/relay", map[string]any{"mac": "52:54:00:ff:ff:fd"}, 200, nil) // another server's device
	l.bad("POST", "/wake/relay", map[string]any{"mac": "not-a-mac"}, 422)
	var sa store.Assignment
	l.do("POST", "/assignments", map[string]any{"bundle": "inventory", "device": "52:54:00:12:34:56", "at": time.Now().Add(time.Hour).UTC().Format(time.RFC3339), "wake": true}, 201, &sa)
	l.do("GET", "/assignments?scheduled=true", nil, 200, nil)
	l.bad("POST", "/assignments", map[string]any{"bundle": "inventory", "device": "52:54:00:12:34:57", "at": "2001-01-01T00:00:00Z"}, 422)
	l.bad("POST", "/assignments", map[string]any{"bundle": "inventory", "device": "52:54:00:12:34:57", "wake": true}, 422)
	l.bad("GET", "/devices/52:54:00:12:34:57", nil, 404) // nothing half-done
	l.do("DELETE", fmt.Sprintf("/assignments/%d", sa.ID), nil, 204, nil)

	// Rules for unregistered devices.
	l.do("POST", "/rules", map[string]any{"name": "new-vms", "match": "mac ^= 52:54:00", "bundle": "inventory", "group": "lab-a"}, 201, nil)
	l.bad("POST", "/rules", map[string]any{"name": "x", "match": "ram > 8GiB and ram < 4GiB", "bundle": "inventory"}, 422)
	l.do("GET", "/rules", nil, 200, nil)
	l.do("GET", "/rules/new-vms", nil, 200, nil)
	l.do("PATCH", "/rules/new-vms", map[string]any{"enabled": false, "position": 1}, 200, nil)
	l.do("POST", "/rules/test", map[string]any{"device": mac}, 200, nil)
	l.do("POST", "/rules/test", map[string]any{"device": mac, "match": "firmware = efi"}, 200, nil)
	l.bad("DELETE", "/groups/lab-a", nil, 409)

	// Settings and menus.
	l.do("PATCH", "/settings", map[string]any{"naming": map[string]any{"prefix": "vm-", "from": "serial"}}, 200, nil)
	l.do("PATCH", "/settings", map[string]any{"unregistered": map[string]any{"action": "bundle", "bundle": "inventory"}}, 200, nil)
	l.bad("PATCH", "/settings", map[string]any{"unregistered": map[string]any{"action": "bundle"}}, 422)
	l.do("GET", "/settings", nil, 200, nil)
	menu := map[string]any{"mode": "hotkey", "hotkey": "ctrl-p", "timeout": "5s", "title": "Preboot", "bundles": []string{"inventory"}, "shell": true}
	l.do("PUT", "/menu", menu, 200, nil)
	l.do("GET", "/menu", nil, 200, nil)
	l.bad("PUT", "/menu", map[string]any{"mode": "sometimes", "timeout": "3s", "shell": false}, 422)
	l.bad("GET", "/groups/lab-a/menu", nil, 404)
	l.do("PUT", "/groups/lab-a/menu", map[string]any{"mode": "always", "timeout": "30s", "bundles": []string{"win11-restore", "inventory"}, "shell": false}, 200, nil)
	l.do("GET", "/groups/lab-a/menu", nil, 200, nil)
	l.do("PUT", "/devices/"+mac+"/menu", map[string]any{"mode": "never", "timeout": "0s", "shell": false}, 200, nil)
	l.do("GET", "/devices/"+mac+"/menu", nil, 200, nil)
	l.do("DELETE", "/devices/"+mac+"/menu", nil, 204, nil)
	l.do("DELETE", "/groups/lab-a/menu", nil, 204, nil)

	// A job, as the policy starts one at a boot; its progress and log.
	b, err := l.st.Bundle(ctx, "win11-restore")
	if err != nil {
		t.Fatal(err)
	}
	j, jobToken, err := l.js.Start(ctx, jobs.StartRequest{MAC: mac, Bundle: b, Assignment: &ga})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.js.Report(ctx, j.ID, jobs.Progress{Phase: "restore", BytesDone: 1 << 20, BytesTotal: 1 << 30, Rate: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	if err := l.js.Log(ctx, j.ID, []string{"restoring partition 2", "restoring partition 3"}); err != nil {
		t.Fatal(err)
	}
	l.do("GET", "/devices/"+mac+"?events=5", nil, 200, nil)
	l.do("GET", "/jobs?device="+mac+"&open=true&limit=10", nil, 200, nil)
	l.do("GET", fmt.Sprintf("/jobs/%d", j.ID), nil, 200, nil)
	l.do("GET", fmt.Sprintf("/jobs/%d/log?limit=50", j.ID), nil, 200, nil)
	l.do("POST", fmt.Sprintf("/jobs/%d/cancel", j.ID), nil, 200, nil)
	l.bad("POST", fmt.Sprintf("/jobs/%d/cancel", j.ID), nil, 409)
	l.do("GET", fmt.Sprintf("/jobs?state=cancelled&before=%d&limit=10", j.ID+1), nil, 200, nil)

	// Multicast sessions (a stand-in manager: one running, one done).
	l.do("GET", "/sessions", nil, 200, nil)
	l.do("GET", "/sessions/s2", nil, 200, nil)
	l.bad("GET", "/sessions/nope", nil, 404)
	l.do("POST", "/sessions/s2/cancel", nil, 200, nil)
	l.bad("POST", "/sessions/s2/cancel", nil, 409)
	l.bad("POST", "/sessions/nope/cancel", nil, 404)

	// Events: the list, and the first frame of the stream.
	var evs []store.Event
	l.do("GET", "/events?kind=admin&since=2000-01-01T00:00:00Z&limit=100", nil, 200, &evs)
	if len(evs) == 0 {
		t.Fatal("no admin events after the walk-through")
	}
	l.do("GET", fmt.Sprintf("/events?before=%d&limit=2", evs[0].ID), nil, 200, nil)
	l.streamFirst(t, "/events/stream?kind=admin&after=0")

	// Auth: job tokens and revoked tokens are refused.
	admin := l.token
	l.token = jobToken
	l.bad("GET", "/devices", nil, 403)
	l.token = admin
	l.do("DELETE", "/groups/lab-a/members/"+mac, nil, 204, nil)
	l.do("DELETE", "/devices/"+mac, nil, 204, nil)
	l.do("DELETE", "/rules/new-vms", nil, 204, nil)
	l.do("DELETE", "/groups/by-ip", nil, 204, nil)
	l.do("PATCH", "/settings", map[string]any{"unregistered": map[string]any{"action": "local"}}, 200, nil)
	l.do("DELETE", "/bundles/local", nil, 204, nil)
	l.do("DELETE", fmt.Sprintf("/tokens/%d", tok.ID), nil, 204, nil)
	l.bad("GET", "/devices", nil, 401)
	l.anonymous("GET", "/devices?limit=1", nil, 200, nil)
	l.do("GET", "/openapi.json", nil, 200, nil)

	for _, r := range contractRoutes {
		if strings.Contains(r, " /images") {
			continue // served by image/httpstore, checked by the value tests
		}
		if !l.covered[r] {
			t.Errorf("%s: not exercised against the real API", r)
		}
	}
	for r := range l.covered {
		if strings.Contains(r, "not documented") {
			t.Errorf("%s", r)
		}
	}
}

// streamFirst reads the first event of an SSE stream and validates it.
func (l *liveAPI) streamFirst(t *testing.T, path string) {
	t.Helper()
	l.covered[l.route("GET", strings.SplitN(path, "?", 2)[0])] = true
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req := l.newRequest("GET", path, nil, "").WithContext(ctx)
	if ok, errs := l.v.ValidateHttpRequest(req); !ok {
		for _, p := range reportErrs("GET /events/stream request", errs) {
			t.Error(p)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("stream: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	sc := bufio.NewScanner(resp.Body)
	var id, kind, data string
	for i := 0; i < 100 && sc.Scan(); i++ {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "id: "):
			id = strings.TrimPrefix(line, "id: ")
		case strings.HasPrefix(line, "event: "):
			kind = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data = strings.TrimPrefix(line, "data: ")
		}
		if line == "" && data != "" {
			break
		}
	}
	if data == "" {
		t.Fatalf("stream: no event frame (%v)", sc.Err())
	}
	var e store.Event
	if err := json.Unmarshal([]byte(data), &e); err != nil {
		t.Fatal(err)
	}
	if strconv.FormatInt(e.ID, 10) != id || e.Kind != kind {
		t.Errorf("stream frame id %q event %q, data says id %d kind %s", id, kind, e.ID, e.Kind)
	}
	for _, p := range validateBytes(t, docModel(t), "Event", []byte(data)) {
		t.Errorf("stream event %s: %s", data, p)
	}
}

// TestOpenAPIMatchesLiveImageAnswers does the same for the image routes
// (package image/httpstore) over a real repository.
func TestOpenAPIMatchesLiveImageAnswers(t *testing.T) {
	repo, err := image.OpenRepo(t.TempDir(), image.RepoOptions{GCGrace: -1})
	if err != nil {
		t.Fatal(err)
	}
	h := &httpstore.Handler{Repo: repo, Logger: slog.New(slog.DiscardHandler)}
	mux := http.NewServeMux()
	for _, p := range h.Prefixes() {
		mux.Handle(p, h)
	}
	l := newLive(t, mux)
	l.token = "pba_unchecked" // the handler leaves authentication to the server

	// A small disk: a partition with two used extents and the gaps around it.
	const size = 4 << 20
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i*7 + i>>9)
	}
	part := image.Area{Index: 1, Start: 1 << 20, Size: 2 << 20, FSType: "ext4",
		Used: []disk.Extent{{Offset: 0, Length: 256 << 10}, {Offset: 1 << 20, Length: 64 << 10}}}
	layout := image.Layout{DiskSize: size, Partitions: []image.Area{part}, Regions: image.Gaps(size, []image.Area{part})}
	m, err := image.Capture(t.Context(), bytes.NewReader(data), layout, repo,
		image.CaptureOptions{Name: "lab", ChunkSize: 1 << 20, Workers: 2, Source: map[string]string{"hostname": "lab1"}})
	if err != nil {
		t.Fatal(err)
	}

	l.do("PUT", "/images/lab", m, 201, nil)
	l.bad("PUT", "/images/lab", m, 409)
	l.do("PUT", "/images/lab?replace=true", m, 201, nil)
	l.do("GET", "/images", nil, 200, nil)
	l.do("GET", "/images/lab", nil, 200, nil)
	l.do("GET", "/images/lab?only=manifest", nil, 200, nil)
	var vr httpstore.VerifyResult
	l.do("POST", "/images/lab/verify", nil, 200, &vr)
	if !vr.OK {
		t.Fatalf("verify: %+v", vr)
	}
	tar := l.do("GET", "/images/lab/export", nil, 200, nil)
	l.do("POST", "/images/import?name=lab-copy", tarBody(tar), 201, nil)
	l.bad("POST", "/images/import?name=lab-copy", tarBody(tar), 409)
	l.do("DELETE", "/images/lab-copy", nil, 204, nil)
	l.bad("GET", "/images/lab-copy", nil, 404)
	l.bad("GET", "/images/.hidden", nil, 400)
	// Versions: a publish of other content adds version 2 (the replace
	// above sent the same manifest: no new version).
	m2 := *m
	m2.Created = m.Created.Add(time.Second)
	l.do("PUT", "/images/lab?replace=true", &m2, 201, nil)
	l.do("GET", "/images/lab/versions", nil, 200, nil)
	l.do("GET", "/images/lab@1", nil, 200, nil)
	l.do("POST", "/images/lab@1/verify", nil, 200, nil)
	l.do("GET", "/images/lab@1/export", nil, 200, nil)
	l.do("POST", "/images/lab/rollback", map[string]any{"to": 1}, 200, nil)
	l.bad("POST", "/images/lab/rollback", nil, 409)
	l.do("DELETE", "/images/lab@2", nil, 204, nil)
	l.bad("GET", "/images/lab@2", nil, 404)
	l.do("POST", "/images/gc", nil, 200, nil)

	for _, r := range contractRoutes {
		if strings.Contains(r, " /images") && !explorerRoutes[r] && !l.covered[r] {
			t.Errorf("%s: not exercised against the real handler", r)
		}
	}
}

// exampleStatus is a status as package server fills it in (the server's
// own test checks the real one).
func exampleStatus(now time.Time) api.StatusInfo {
	return api.StatusInfo{Version: "test", StartedAt: now.Add(-time.Hour), UptimeSeconds: 3600,
		Services: []api.ServiceStatus{
			{Name: "http", Enabled: true, Listen: []string{"[::]:8080"}, Up: true},
			{Name: "tftp", Enabled: true, Listen: []string{"0.0.0.0:69"}, Up: true},
			{Name: "proxydhcp", Enabled: false, Listen: []string{}, Up: false},
		},
		ImageRepo: api.RepoStatus{Path: "/var/lib/preboot/images", TotalBytes: 100 << 30, FreeBytes: 60 << 30, UsedByImagesBytes: 12 << 30},
		Config: api.ConfigSummary{
			ProxyDHCP: api.ProxyDHCPConfig{Enabled: false, DHCPListen: ":67", PXEListen: ":4011"},
			TFTP:      api.TFTPConfig{Enabled: true, Listen: ":69", Root: "/var/lib/preboot/tftp", MaxBlksize: 65464, MaxWindowsize: 64},
			HTTP:      api.HTTPConfig{Listen: ":8080", TrustLoopback: true},
			Store:     api.StoreConfig{Driver: "sqlite"},
		},
		Counts: api.StatusCounts{Devices: 12, DevicesSeenLastHour: 3, JobsRunning: 1, JobsFailedLastDay: 0},
	}
}
