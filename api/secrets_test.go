package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/preboot/preboot/jobs"
	"github.com/preboot/preboot/store"
)

// An os-install bundle's secrets never leave the API: not in the bundle
// (create, get, list, patch answers), a device's decision, nor a job;
// a GET → edit → PATCH round trip (the marker sent back, or secrets left
// out as the console's form does) keeps the stored values.
func TestBundleSecretsRedacted(t *testing.T) {
	backends(t, func(t *testing.T, open func(t *testing.T) store.Store) {
		e := newEnv(t, open(t))
		ctx := context.Background()
		const value = "s3cr3t-Value"
		noValue := func(what string, raw []byte) {
			t.Helper()
			if strings.Contains(string(raw), value) {
				t.Fatalf("%s shows the secret: %s", what, raw)
			}
		}
		body := `{"name":"ks","kind":"os-install","params":{"kernel":"boot/k","cmdline":"ks=https://ks/x pw={{secret:pw}}","secrets":{"pw":"` + value + `"},"secrets_in_boot_script":true}}`
		var b store.Bundle
		e.call("POST", "/api/v1/bundles", body, 201, &b)
		noValue("create", b.Params)
		if !strings.Contains(compact(b.Params), `"secrets":{"pw":"(secret)"}`) {
			t.Fatalf("created: %s", b.Params)
		}
		var raw json.RawMessage
		e.call("GET", "/api/v1/bundles/ks", nil, 200, &raw)
		noValue("get", raw)
		e.call("GET", "/api/v1/bundles", nil, 200, &raw)
		noValue("list", raw)

		// Without the opt-in: refused, saying why.
		e.errorOf("POST", "/api/v1/bundles", strings.Replace(body, `,"secrets_in_boot_script":true`, "", 1), 422,
			"secrets_in_boot_script", "any client on the LAN")

		// Round trip: GET, edit the cmdline, PATCH back with the marker.
		var got store.Bundle
		e.call("GET", "/api/v1/bundles/ks", nil, 200, &got)
		edited := strings.Replace(string(got.Params), "ks=https://ks/x", "ks=https://ks/y", 1)
		e.call("PATCH", "/api/v1/bundles/ks", `{"params":`+edited+`}`, 200, &b)
		noValue("patch", b.Params)
		stored, err := e.st.Bundle(ctx, "ks")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(stored.Params), `"pw":"`+value+`"`) || !strings.Contains(string(stored.Params), "ks/y") {
			t.Fatalf("stored after the round trip: %s", stored.Params)
		}
		// The console's form sends the fields it knows: secrets kept.
		e.call("PATCH", "/api/v1/bundles/ks", `{"params":{"kernel":"boot/k2","cmdline":"pw={{secret:pw}}","loader":"ipxe"}}`, 200, &b)
		if stored, _ = e.st.Bundle(ctx, "ks"); !strings.Contains(string(stored.Params), `"pw":"`+value+`"`) || !strings.Contains(string(stored.Params), "boot/k2") {
			t.Fatalf("stored after a partial edit: %s", stored.Params)
		}
		// The marker of a secret the bundle does not have is refused.
		e.errorOf("PATCH", "/api/v1/bundles/ks", `{"params":{"kernel":"k","cmdline":"a={{secret:pw}} b={{secret:other}}","secrets":{"pw":"(secret)","other":"(secret)"}}}`, 422, "no secret other")
		// A new value replaces the stored one.
		e.call("PATCH", "/api/v1/bundles/ks", `{"params":{"kernel":"boot/k2","cmdline":"pw={{secret:pw}}","secrets":{"pw":"n3w-value"}}}`, 200, &b)
		if stored, _ = e.st.Bundle(ctx, "ks"); !strings.Contains(string(stored.Params), `"pw":"n3w-value"`) {
			t.Fatalf("stored after a new value: %s", stored.Params)
		}
		e.call("PATCH", "/api/v1/bundles/ks", `{"params":{"kernel":"boot/k2","cmdline":"pw={{secret:pw}}","secrets":{"pw":"`+value+`"}}}`, 200, &b)

		// A device assigned the bundle: its decision and detail, then its job.
		e.call("POST", "/api/v1/assignments", map[string]any{"bundle": "ks", "device": macA}, 201, nil)
		e.call("GET", "/api/v1/devices/"+macA+"/decision", nil, 200, &raw)
		if !strings.Contains(string(raw), `"(secret)"`) {
			t.Fatalf("decision without the bundle: %s", raw)
		}
		noValue("decision", raw)
		e.call("GET", "/api/v1/devices/"+macA, nil, 200, &raw)
		noValue("device", raw)
		if stored, err = e.st.Bundle(ctx, "ks"); err != nil {
			t.Fatal(err)
		}
		j, err := e.js.HandOut(ctx, jobs.StartRequest{MAC: macA, Bundle: stored, ClientIP: "10.0.0.9"})
		if err != nil {
			t.Fatal(err)
		}
		e.call("GET", fmt.Sprintf("/api/v1/jobs/%d", j.ID), nil, 200, &raw)
		noValue("job", raw)
		if !strings.Contains(string(raw), "(secret)") {
			t.Fatalf("job without params: %s", raw)
		}
		e.call("GET", "/api/v1/jobs?device="+macA, nil, 200, &raw)
		noValue("jobs", raw)
		e.call("GET", "/api/v1/devices/"+macA, nil, 200, &raw)
		noValue("device with its job", raw)
		e.call("GET", "/api/v1/events?device="+macA, nil, 200, &raw)
		noValue("events", raw)
	})
}
