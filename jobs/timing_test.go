package jobs

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/preboot/preboot/store"
	"github.com/preboot/preboot/timing"
)

// TestProgressTiming: the agent's time breakdown is checked, its derived
// figures recomputed, and stored with the job; a progress without one
// (an older agent, another phase) keeps it; a bad one is refused whole.
func TestProgressTiming(t *testing.T) {
	ctx := context.Background()
	s := newService(t)
	j, tok, err := s.Start(ctx, setup(t, s, "res", store.KindImageRestore, `{"image":"lab-base"}`, false))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.AgentHandler())
	defer srv.Close()
	post := func(body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("POST", srv.URL+"/api/v1/agent/job/progress", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	stored := func() (store.Job, *timing.Breakdown) {
		t.Helper()
		got, err := s.Store.Job(ctx, j.ID)
		if err != nil {
			t.Fatal(err)
		}
		if len(got.Timing) == 0 {
			return got, nil
		}
		var b timing.Breakdown
		if err := json.Unmarshal(got.Timing, &b); err != nil {
			t.Fatal(err)
		}
		return got, &b
	}

	// The agent claims the CPU is the bottleneck; its stages say the network.
	if code, body := post(`{"state":"running","phase":"restore","bytes_done":5,"bytes_total":10,"rate":1,
		"timing":{"elapsed_us":1000000,"disk":"/dev/vda","stages":[
		{"name":"fetch","resource":"network","pool":"workers","workers":4,"busy_us":3800000,"count":9},
		{"name":"write","resource":"disk","pool":"writer","workers":1,"busy_us":100000,"count":9}],
		"shares":{"network":0,"cpu":100,"disk":0,"waiting":0},"bottleneck":"cpu","busy":1}}`); code != 204 {
		t.Fatalf("progress with timing: %d %s", code, body)
	}
	_, b := stored()
	if b == nil || b.Bottleneck != timing.Network || b.BottleneckStage != "fetch" || b.Busy != 95 || b.Shares.CPU != 0 || b.Disk != "/dev/vda" {
		t.Fatalf("stored timing %+v", b)
	}

	// An older agent (or a later phase) sends none: the breakdown stays.
	if code, body := post(`{"state":"running","phase":"resize partition 2 (ext4)","bytes_done":10,"bytes_total":10}`); code != 204 {
		t.Fatalf("progress without timing: %d %s", code, body)
	}
	got, b := stored()
	if b == nil || b.BottleneckStage != "fetch" || got.Phase != "resize partition 2 (ext4)" {
		t.Fatalf("after a progress without timing: %+v, %+v", got, b)
	}

	// A bad breakdown: 422 with the reason, nothing of the report stored.
	for _, bad := range []string{
		`{"elapsed_us":-5}`,
		`{"elapsed_us":5,"stages":[{"name":"fetch","resource":"gpu","pool":"workers","workers":1}]}`,
		`"fast"`,
	} {
		code, body := post(`{"state":"running","phase":"restore","bytes_done":1,"bytes_total":10,"timing":` + bad + `}`)
		if code != 422 || !strings.Contains(body, "timing") {
			t.Errorf("timing %s: %d %s, want 422 naming the timing", bad, code, body)
		}
		if got, b := stored(); got.BytesDone != 10 || b == nil || b.BottleneckStage != "fetch" {
			t.Errorf("refused progress changed the job: %+v %+v", got, b)
		}
	}
}
