package timing

import (
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestRecorderSnapshot(t *testing.T) {
	r := NewRecorder()
	fetch := r.Stage("fetch", Network, "workers", 4)
	verify := r.Stage("verify", CPU, "workers", 4)
	write := r.Stage("write", Disk, "writer", 1)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 100 {
				fetch.Add(3 * time.Millisecond)
				verify.Add(time.Millisecond)
			}
		})
	}
	wg.Wait()
	write.Add(50 * time.Millisecond)
	r.Stop()
	b := r.Snapshot()
	if len(b.Stages) != 3 || b.Stages[0].Count != 400 || b.Stages[0].BusyUS != 1200_000 || b.Stages[1].BusyUS != 400_000 ||
		b.Stages[2].Count != 1 || b.Stages[2].Workers != 1 {
		t.Fatalf("stages = %+v", b.Stages)
	}
	if b2 := r.Snapshot(); b2.ElapsedUS != b.ElapsedUS {
		t.Fatalf("elapsed moved after Stop: %d then %d", b.ElapsedUS, b2.ElapsedUS)
	}
	var nilRec *Recorder
	nilRec.Stage("x", CPU, "p", 1).Add(time.Second) // records nothing, does not panic
	nilRec.Stop()
	if nilRec.Snapshot() != nil {
		t.Fatal("nil recorder gave a snapshot")
	}
}

// TestCompute checks the derived figures on hand-made breakdowns.
func TestCompute(t *testing.T) {
	for _, tc := range []struct {
		name   string
		b      Breakdown
		want   Shares
		bottle string
		stage  string
		busy   int
	}{
		{
			// 8 workers fetching 5 s each over a 625 ms restore: the
			// network is saturated; the writer works 100 ms.
			name: "network",
			b: Breakdown{ElapsedUS: 625_000, Stages: []Stage{
				{Name: "fetch", Resource: Network, Pool: "workers", Workers: 8, BusyUS: 5_000_000},
				{Name: "verify", Resource: CPU, Pool: "workers", Workers: 8, BusyUS: 100_000},
				{Name: "write", Resource: Disk, Pool: "writer", Workers: 1, BusyUS: 100_000},
			}},
			want: Shares{Network: 85, CPU: 2, Disk: 13}, bottle: Network, stage: "fetch", busy: 100,
		},
		{
			name: "disk",
			b: Breakdown{ElapsedUS: 5_000_000, Stages: []Stage{
				{Name: "fetch", Resource: Network, Pool: "workers", Workers: 8, BusyUS: 400_000},
				{Name: "verify", Resource: CPU, Pool: "workers", Workers: 8, BusyUS: 400_000},
				{Name: "write", Resource: Disk, Pool: "writer", Workers: 1, BusyUS: 4_900_000},
			}},
			want: Shares{Network: 1, CPU: 1, Disk: 96, Waiting: 2}, bottle: Disk, stage: "write", busy: 98,
		},
		{
			// Nobody busy half of the time: no bottleneck, mostly waiting.
			name: "idle",
			b: Breakdown{ElapsedUS: 1_000_000, Stages: []Stage{
				{Name: "fetch", Resource: Network, Pool: "workers", Workers: 4, BusyUS: 400_000},
				{Name: "write", Resource: Disk, Pool: "writer", Workers: 1, BusyUS: 200_000},
			}},
			want: Shares{Network: 9, Disk: 18, Waiting: 73}, busy: 20,
		},
		{name: "nothing", b: Breakdown{ElapsedUS: 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.b
			b.Compute()
			if b.Shares != tc.want || b.Bottleneck != tc.bottle || b.BottleneckStage != tc.stage || b.Busy != tc.busy {
				t.Fatalf("got shares %+v bottleneck %q (%q) busy %d; want %+v %q (%q) %d",
					b.Shares, b.Bottleneck, b.BottleneckStage, b.Busy, tc.want, tc.bottle, tc.stage, tc.busy)
			}
			if s := b.Shares; s != (Shares{}) && s.Network+s.CPU+s.Disk+s.Waiting != 100 {
				t.Fatalf("shares add up to %d", s.Network+s.CPU+s.Disk+s.Waiting)
			}
		})
	}
}

func TestSummary(t *testing.T) {
	b := Breakdown{ElapsedUS: 625_000, Stages: []Stage{
		{Name: "fetch", Resource: Network, Pool: "workers", Workers: 8, BusyUS: 5_000_000},
		{Name: "verify", Resource: CPU, Pool: "workers", Workers: 8, BusyUS: 100_000},
		{Name: "write", Resource: Disk, Pool: "writer", Workers: 1, BusyUS: 100_000},
	}}
	b.Compute()
	want := "network 85 % · CPU 2 % · disk 13 % · waiting 0 % — bottleneck: network (fetch, busy 100 %)"
	if got := b.Summary(); got != want {
		t.Fatalf("summary %q, want %q", got, want)
	}
	if (*Breakdown)(nil).Summary() != "" || (&Breakdown{}).Summary() != "" {
		t.Fatal("empty breakdown has a summary")
	}
}

func TestParse(t *testing.T) {
	good := `{"elapsed_us":1000000,"stages":[{"name":"fetch","resource":"network","pool":"workers","workers":4,"busy_us":3900000,"count":10}],
		"disk":"/dev/vda","shares":{"network":1,"cpu":99,"disk":0,"waiting":0},"bottleneck":"cpu","busy":3}`
	b, err := Parse([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	// The sender's derived figures are replaced by the computed ones.
	if b.Bottleneck != Network || b.Shares.Network != 98 || b.Busy != 98 || b.Disk != "/dev/vda" {
		t.Fatalf("parsed %+v", b)
	}
	if b, err := Parse([]byte(" null ")); b != nil || err != nil {
		t.Fatalf("null: %v %v", b, err)
	}
	stage := func(s string) string {
		return `{"elapsed_us":10,"stages":[` + s + `]}`
	}
	for _, bad := range []string{
		`{"elapsed_us":-1}`,
		`{"elapsed_us":"x"}`,
		`{"elapsed_us":1} {}`,
		`[1,2]`,
		stage(`{"name":"Fetch","resource":"network","pool":"w","workers":1}`),
		stage(`{"name":"fetch","resource":"gpu","pool":"w","workers":1}`),
		stage(`{"name":"fetch","resource":"network","pool":"","workers":1}`),
		stage(`{"name":"fetch","resource":"network","pool":"w","workers":0}`),
		stage(`{"name":"fetch","resource":"network","pool":"w","workers":1,"busy_us":-5}`),
		stage(`{"name":"fetch","resource":"network","pool":"w","workers":1,"count":-1}`),
		stage(`{"name":"fetch","resource":"network","pool":"w","workers":1},{"name":"verify","resource":"cpu","pool":"w","workers":2}`),
		stage(strings.Repeat(`{"name":"a","resource":"cpu","pool":"w","workers":1},`, MaxStages) + `{"name":"a","resource":"cpu","pool":"w","workers":1}`),
		`{"elapsed_us":1,"disk":"/dev/sda\n"}`,
		`{"elapsed_us":1,"disk":"` + strings.Repeat("x", maxJSON) + `"}`,
	} {
		if _, err := Parse([]byte(bad)); !errors.Is(err, ErrInvalid) {
			t.Errorf("Parse(%.80s) = %v, want ErrInvalid", bad, err)
		}
	}
}

func TestFromInventoryAndHint(t *testing.T) {
	inv := json.RawMessage(`{"hostname":"pc1","hardware":{"cpus":4,"cpu_model":"Intel Core i5",
		"nics":[{"name":"eth1","mac":"52:54:00:00:00:02","state":"down"},
		        {"name":"eth0","mac":"52:54:00:00:00:01","state":"up","speed_mbps":100,"duplex":"half"}]},
		"disks":[{"name":"sda","path":"/dev/sda","model":"ST1000DM003","rotational":true,"transport":"ata"},
		         {"name":"sdb","path":"/dev/sdb","model":"USB stick","removable":true}]}`)
	m := FromInventory(inv, "52:54:00:00:00:01", "")
	if m == nil || m.Disk != "/dev/sda" || m.DiskModel != "ST1000DM003" || m.Rotational == nil || !*m.Rotational ||
		m.NIC != "eth0" || m.LinkMbps != 100 || m.Duplex != "half" || m.CPUs != 4 {
		t.Fatalf("machine = %+v", m)
	}
	if got, want := m.Text(), "disk /dev/sda: ST1000DM003 (rotational, ata) · link eth0: 100 Mb/s half duplex · 4 CPUs"; got != want {
		t.Fatalf("text %q, want %q", got, want)
	}
	if m := FromInventory(inv, "", "/dev/sdb"); m.DiskModel != "USB stick" || m.NIC != "eth0" {
		t.Fatalf("by path, NIC up: %+v", m)
	}
	one := FromInventory(json.RawMessage(`{"hardware":{"cpus":1}}`), "", "")
	cpu := &Breakdown{ElapsedUS: 1_000_000, Stages: []Stage{{Name: "verify", Resource: CPU, Pool: "workers", Workers: 4, BusyUS: 3_600_000}}}
	cpu.Compute()
	if got, want := Hint(cpu, one), "verifying and decompressing chunks is the limit: 1 CPU"; got != want || one.Text() != "1 CPU" {
		t.Fatalf("one CPU: hint %q (want %q), text %q", got, want, one.Text())
	}
	if FromInventory(json.RawMessage(`{"hardware":`), "", "") != nil || FromInventory(nil, "", "") != nil {
		t.Fatal("a broken inventory gave a machine")
	}

	b := &Breakdown{ElapsedUS: 1_000_000, Stages: []Stage{{Name: "fetch", Resource: Network, Pool: "workers", Workers: 4, BusyUS: 3_900_000}}}
	b.Compute()
	want := "fetching chunks from the server is the limit; the link is 100 Mb/s: at most 12 MB/s; it runs at half duplex: check the switch port and the cable"
	if got := Hint(b, m); got != want {
		t.Fatalf("hint %q, want %q", got, want)
	}
	if got := Hint(b, nil); !strings.Contains(got, "no link speed") {
		t.Fatalf("hint without inventory %q", got)
	}
	b = &Breakdown{ElapsedUS: 1_000_000, Stages: []Stage{{Name: "write", Resource: Disk, Pool: "writer", Workers: 1, BusyUS: 900_000}}}
	b.Compute()
	if got, want := Hint(b, m), "writing to the disk is the limit: ST1000DM003 is a rotational disk"; got != want {
		t.Fatalf("disk hint %q, want %q", got, want)
	}
	r := Explain(b, m)
	if r == nil || r.Summary != b.Summary() || r.MachineText != m.Text() || r.Hint == "" {
		t.Fatalf("report %+v", r)
	}
	if Explain(&Breakdown{}, m) != nil {
		t.Fatal("a report for nothing measured")
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"elapsed_us":1000000,"stages":[{"name":"fetch","resource":"network","pool":"workers","workers":4,"busy_us":3900000,"count":10}]}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		b, err := Parse(raw)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v is not ErrInvalid", err)
			}
			return
		}
		if b == nil {
			return
		}
		if s := b.Shares; s != (Shares{}) && s.Network+s.CPU+s.Disk+s.Waiting != 100 {
			t.Fatalf("shares %+v", s)
		}
		if b.Busy < 0 || b.Busy > 100 {
			t.Fatalf("busy %d", b.Busy)
		}
		out, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Parse(out); err != nil {
			t.Fatalf("re-parse of %s: %v", out, err)
		}
	})
}
