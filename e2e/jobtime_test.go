package e2e

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"
)

// checkTimeReport asserts that a finished imaging job carries where its
// time went, as `preboot job show` prints and -o json returns it: the
// agent's breakdown (the pipeline's stages, busy time counted) explained
// with the VM's disk from its inventory.
func checkTimeReport(t *testing.T, srv *prebootServer, id int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	d, err := srv.jobDetail(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	r := d.TimeReport
	if r == nil || len(d.Timing) == 0 {
		t.Errorf("job %d has no time breakdown (timing %s)", id, d.Timing)
		return
	}
	t.Logf("job %d time: %s | machine: %s | hint: %s", id, r.Summary, r.MachineText, r.Hint)
	if !strings.Contains(r.Summary, "network ") || !strings.Contains(r.Summary, "bottleneck") {
		t.Errorf("job %d: time summary %q", id, r.Summary)
	}
	if r.Machine == nil || r.Machine.Disk == "" {
		t.Errorf("job %d: the report names no disk from the inventory: %+v", id, r.Machine)
	}
	out, err := srv.cli(ctx, "job", "show", strconv.FormatInt(id, 10))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "Time:") || !strings.Contains(out, r.Summary) {
		t.Errorf("job show %d lacks the time line:\n%s", id, out)
	}
}
