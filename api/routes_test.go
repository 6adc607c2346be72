package api

import (
	"encoding/json"
	"sort"
	"strings"
	"testing"
)

// TestOpenAPIMatchesRoutes keeps the served OpenAPI document and the
// routes the API really has in step, both ways (the image repository's
// routes, served by package httpstore, are documented too and skipped in
// the reverse direction).
func TestOpenAPIMatchesRoutes(t *testing.T) {
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(OpenAPI(), &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	documented := map[string]bool{}
	for p, ops := range doc.Paths {
		for m := range ops {
			switch m {
			case "get", "put", "post", "patch", "delete":
				documented[strings.ToUpper(m)+" "+p] = true
			}
		}
	}
	h := New(Options{})
	served := map[string]bool{}
	for _, pat := range h.Patterns() {
		method, path, _ := strings.Cut(pat, " ")
		key := method + " " + strings.TrimPrefix(path, "/api/v1")
		served[key] = true
		if !documented[key] {
			t.Errorf("route %s is not in openapi.json", pat)
		}
	}
	var extra []string
	for k := range documented {
		_, p, _ := strings.Cut(k, " ")
		if !served[k] && !strings.HasPrefix(p, "/images") && !strings.HasPrefix(p, "/chunks") {
			extra = append(extra, k)
		}
	}
	sort.Strings(extra)
	for _, k := range extra {
		t.Errorf("openapi.json documents %s, which the API does not serve", k)
	}
}
