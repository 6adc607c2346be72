package jobs

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/preboot/preboot/store"
)

// TestSpecHostname: the job spec carries the device record's name as a
// host label, for bundles that personalize the restored system.
func TestSpecHostname(t *testing.T) {
	ctx := context.Background()
	s := newService(t)
	w := setup(t, s, "rst", store.KindImageRestore, `{"image":"lab-base","personalize":true,"disk":{"size":"largest"}}`, false)
	get := func() Spec {
		t.Helper()
		_, tok, err := s.Start(ctx, w)
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(s.AgentHandler())
		defer srv.Close()
		req, _ := http.NewRequest("GET", srv.URL+"/api/v1/agent/job", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var sp Spec
		if resp.StatusCode != 200 {
			t.Fatalf("job: %d", resp.StatusCode)
		}
		if err := json.NewDecoder(resp.Body).Decode(&sp); err != nil {
			t.Fatal(err)
		}
		return sp
	}
	sp := get()
	if sp.Hostname != "" {
		t.Fatalf("an unnamed device got hostname %q", sp.Hostname)
	}
	if _, err := s.Store.UpdateDevice(ctx, mac, func(d *store.Device) error { d.Name = "Lab PC #12 (Room_3)"; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Finish(ctx, sp.ID, true, ""); err != nil {
		t.Fatal(err)
	}
	sp = get()
	if sp.Hostname != "lab-pc-12-room-3" {
		t.Fatalf("hostname %q, want lab-pc-12-room-3", sp.Hostname)
	}
	if string(sp.Params) == "" || !json.Valid(sp.Params) {
		t.Fatalf("params %s", sp.Params)
	}
}
