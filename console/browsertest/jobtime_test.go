package browsertest

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/preboot/preboot/api"
	"github.com/preboot/preboot/jobs"
	"github.com/preboot/preboot/store"
)

// TestJobTimePage is the job page of a restore whose agent reports where
// its time goes, against the console and the API wired as the server
// wires them, in this process, with the real job service taking the
// agent's reports: the page shows the shares as a bar with the
// bottleneck marked, the one-line summary, the machine's disk and link
// from its inventory and the hint, and follows a new report by itself.
func TestJobTimePage(t *testing.T) {
	exe, err := chromium()
	if err != nil {
		t.Fatal(err)
	}
	site := newConsoleSite(t)
	st, ctx := site.st, context.Background()
	js := &jobs.Service{Store: site.ns}

	const mac = "52:54:00:00:0b:01"
	if _, err := st.CreateDevice(ctx, store.Device{MAC: mac, Name: "pc-slow", Registered: true}); err != nil {
		t.Fatal(err)
	}
	inv := json.RawMessage(`{"hardware":{"cpus":2,"nics":[{"name":"eth0","mac":"` + mac + `","state":"up","speed_mbps":100,"duplex":"full"}]},
		"disks":[{"name":"vda","path":"/dev/vda","size":1000,"model":"QEMU HARDDISK","rotational":true}]}`)
	if err := st.SetDeviceInfo(ctx, mac, inv, 1<<30, 1000); err != nil {
		t.Fatal(err)
	}
	j, err := st.CreateJob(ctx, store.Job{MAC: mac, Kind: store.KindImageRestore, Image: "lab-base", After: store.AfterReboot, TokenHash: "tok-time"})
	if err != nil {
		t.Fatal(err)
	}
	report := func(net, write int64) {
		t.Helper()
		tm := fmt.Sprintf(`{"elapsed_us":10000000,"disk":"/dev/vda","stages":[
			{"name":"fetch","resource":"network","pool":"workers","workers":4,"busy_us":%d,"count":90},
			{"name":"verify","resource":"cpu","pool":"workers","workers":4,"busy_us":2000000,"count":90},
			{"name":"write","resource":"disk","pool":"writer","workers":1,"busy_us":%d,"count":90}]}`, net, write)
		if _, err := js.Report(ctx, j.ID, jobs.Progress{State: store.JobRunning, Phase: "restore", BytesDone: 1 << 30, BytesTotal: 4 << 30,
			Rate: 11 << 20, Timing: json.RawMessage(tm)}); err != nil {
			t.Fatal(err)
		}
	}
	report(36_000_000, 1_500_000) // the network is the bottleneck

	b := site.open(t, exe, api.Options{Jobs: js})
	ui := b.first
	shots := screenshotDir(t)
	page := fmt.Sprintf("/console/jobs/%d", j.ID)
	ui.login(page)
	ui.waitFor("the job page", fmt.Sprintf(`location.pathname === %q && document.body.dataset.page === "job"`, page))

	const box = `document.querySelector("#job-time")`
	ui.waitFor("where the time goes", box+` && !`+box+`.hidden && `+box+`.dataset.bottleneck === "network"`)
	for _, c := range []struct{ sel, want string }{
		{"#job-time-summary", "network 78 % · CPU 5 % · disk 13 % · waiting 4 % — bottleneck: network (fetch, busy 95 %)"},
		{"#job-time-machine", "disk /dev/vda: QEMU HARDDISK (rotational) · link eth0: 100 Mb/s full duplex · 2 CPUs"},
		{"#job-time-hint", "fetching chunks from the server is the limit; the link is 100 Mb/s: at most 12 MB/s"},
	} {
		if got := ui.str(`document.querySelector("` + c.sel + `").textContent`); got != c.want {
			ui.fatalf("%s shows %q, want %q", c.sel, got, c.want)
		}
	}
	seg := func(part string) string {
		return `document.querySelector('#job-time-bar .time-seg[data-part="` + part + `"]')`
	}
	for part, share := range map[string]float64{"network": 78, "cpu": 5, "disk": 13, "waiting": 4} {
		if w := ui.num(`parseFloat(` + seg(part) + `.style.width)`); w != share {
			ui.fatalf("the bar gives %s %.0f%%, want %.0f%%", part, w, share)
		}
		if px := ui.num(seg(part) + `.getBoundingClientRect().width`); px <= 0 {
			ui.fatalf("the %s part of the bar is %.1f px wide", part, px)
		}
	}
	if !ui.truth(seg("network")+`.dataset.bottleneck === "true"`) || ui.truth(seg("disk")+`.dataset.bottleneck === "true"`) {
		ui.fatalf("the bar marks the wrong bottleneck")
	}
	if got := ui.str(seg("network") + `.textContent`); !strings.Contains(got, "Network 78 %") {
		ui.fatalf("the network part says %q", got)
	}
	ui.shot(shots, "job-time")

	// The agent reports again: now the disk writes are the bottleneck; the
	// open page follows by itself.
	ui.markPage()
	report(2_000_000, 9_800_000)
	ui.waitFor("the disk as the bottleneck", box+`.dataset.bottleneck === "disk" && `+seg("disk")+`.dataset.bottleneck === "true" && `+
		`document.querySelector("#job-time-hint").textContent === "writing to the disk is the limit: QEMU HARDDISK is a rotational disk"`)
	ui.samePage("the job page followed the new report")
}
