package cli_test

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"github.com/preboot/preboot/bundle"
	"github.com/preboot/preboot/jobs"
	"github.com/preboot/preboot/store"
	"github.com/preboot/preboot/timing"
)

// TestJobShowTime: `preboot job show` of a restore whose agent reported a
// time breakdown shows the shares and bottleneck, the machine's disk and
// link from its inventory, and a hint; -o json carries the report.
func TestJobShowTime(t *testing.T) {
	s := newServer(t)
	c := newCLI(t, "PREBOOT_SOCKET="+s.sock)
	c.ok(t, "device", "add", mac1)
	ctx := t.Context()
	// The bundle as `bundle create` makes it (the CLI checks the image
	// exists; this test has none).
	p, err := bundle.Normalize(store.KindImageRestore, json.RawMessage(`{"image":"win11"}`))
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.st.CreateBundle(ctx, store.Bundle{Name: "res", Kind: store.KindImageRestore, Params: p})
	if err != nil {
		t.Fatal(err)
	}
	inv := json.RawMessage(`{"hardware":{"cpus":4,"nics":[{"name":"enp1s0","mac":"` + mac1 + `","state":"up","speed_mbps":100,"duplex":"full"}]},
		"disks":[{"name":"sda","path":"/dev/sda","model":"ST1000DM003","rotational":true,"transport":"ata"}]}`)
	if err := s.st.SetDeviceInfo(ctx, mac1, inv, 8<<30, 1<<40); err != nil {
		t.Fatal(err)
	}
	j, _, err := s.js.Start(ctx, jobs.StartRequest{MAC: mac1, Bundle: b, Why: "test"})
	if err != nil {
		t.Fatal(err)
	}
	id := strconv.FormatInt(j.ID, 10)
	// Before any breakdown: no time lines.
	if out := c.ok(t, "job", "show", id); strings.Contains(out, "Time:") || strings.Contains(out, "Hint:") {
		t.Fatalf("job show before a breakdown:\n%s", out)
	}
	// As the agent reports it: the network is the bottleneck.
	tm := json.RawMessage(`{"elapsed_us":10000000,"disk":"/dev/sda","stages":[
		{"name":"fetch","resource":"network","pool":"workers","workers":4,"busy_us":36000000,"count":90},
		{"name":"verify","resource":"cpu","pool":"workers","workers":4,"busy_us":2000000,"count":90},
		{"name":"write","resource":"disk","pool":"writer","workers":1,"busy_us":1500000,"count":90}]}`)
	if _, err := s.js.Report(ctx, j.ID, jobs.Progress{State: store.JobRunning, Phase: "restore", BytesDone: 1 << 30, BytesTotal: 4 << 30,
		Rate: 11 << 20, Timing: tm}); err != nil {
		t.Fatal(err)
	}
	out := c.ok(t, "job", "show", id)
	contains(t, out,
		"Time:", "network 78 % · CPU 5 % · disk 13 % · waiting 4 % — bottleneck: network (fetch, busy 95 %)",
		"Machine:", "disk /dev/sda: ST1000DM003 (rotational, ata) · link enp1s0: 100 Mb/s full duplex · 4 CPUs",
		"Hint:", "fetching chunks from the server is the limit; the link is 100 Mb/s: at most 12 MB/s")
	var jd struct {
		store.Job
		Log        []store.JobLine `json:"log"`
		TimeReport *timing.Report  `json:"time_report"`
	}
	c.json(t, &jd, "job", "show", id)
	if jd.TimeReport == nil || jd.TimeReport.Machine == nil || jd.TimeReport.Machine.LinkMbps != 100 || len(jd.Timing) == 0 {
		t.Fatalf("job show -o json: %+v", jd)
	}
}
