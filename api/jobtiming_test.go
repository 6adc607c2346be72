package api_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/preboot/preboot/api"
	"github.com/preboot/preboot/store"
	"github.com/preboot/preboot/store/sqlstore"
)

// TestJobTimeReport: GET /jobs/{id} explains a job's time breakdown with
// the device's inventory (disk model, link speed), as the schema says; a
// job without one has no report.
func TestJobTimeReport(t *testing.T) {
	ctx := context.Background()
	st, err := sqlstore.OpenSQLite(ctx, filepath.Join(t.TempDir(), "api.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e := newEnv(t, st)
	const mac = "52:54:00:00:0a:01"
	if _, err := st.CreateDevice(ctx, store.Device{MAC: mac, Registered: true}); err != nil {
		t.Fatal(err)
	}
	inv := json.RawMessage(`{"hostname":"pc1","hardware":{"cpus":2,"nics":[{"name":"eth0","mac":"52:54:00:00:0a:01","state":"up","speed_mbps":100,"duplex":"full"}]},
		"disks":[{"name":"vda","path":"/dev/vda","size":1000,"model":"QEMU HARDDISK","rotational":true}]}`)
	if err := st.SetDeviceInfo(ctx, mac, inv, 1<<30, 1000); err != nil {
		t.Fatal(err)
	}
	tm := json.RawMessage(`{"elapsed_us":1000000,"disk":"/dev/vda","stages":[
		{"name":"fetch","resource":"network","pool":"workers","workers":4,"busy_us":3800000,"count":9},
		{"name":"verify","resource":"cpu","pool":"workers","workers":4,"busy_us":100000,"count":9},
		{"name":"write","resource":"disk","pool":"writer","workers":1,"busy_us":100000,"count":9}]}`)
	j, err := st.CreateJob(ctx, store.Job{MAC: mac, Kind: store.KindImageRestore, Image: "win11", TokenHash: "tok-a", Timing: tm})
	if err != nil {
		t.Fatal(err)
	}
	var raw json.RawMessage
	e.call("GET", "/api/v1/jobs/"+strconv.FormatInt(j.ID, 10), nil, 200, &raw)
	var d api.JobDetail
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatal(err)
	}
	r := d.TimeReport
	if r == nil {
		t.Fatalf("no time report: %s", raw)
	}
	if !strings.Contains(r.Summary, "bottleneck: network (fetch") || !strings.Contains(r.Hint, "the link is 100 Mb/s: at most 12 MB/s") ||
		r.MachineText != "disk /dev/vda: QEMU HARDDISK (rotational) · link eth0: 100 Mb/s full duplex · 2 CPUs" {
		t.Fatalf("report %+v", r)
	}
	if errs := validateBytes(t, docModel(t), "JobDetail", raw); len(errs) > 0 {
		t.Fatalf("the answer does not match the JobDetail schema:\n%s\n%s", strings.Join(errs, "\n"), raw)
	}

	// A job without a breakdown (an older agent, another kind).
	j2, err := st.CreateJob(ctx, store.Job{MAC: mac, Kind: store.KindInventory, TokenHash: "tok-b"})
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	e.call("GET", "/api/v1/jobs/"+strconv.FormatInt(j2.ID, 10), nil, 200, &m)
	if _, ok := m["time_report"]; ok {
		t.Fatalf("a job without timing has a report: %v", m)
	}
	if _, ok := m["timing"]; ok {
		t.Fatalf("a job without timing has one: %v", m)
	}
}
