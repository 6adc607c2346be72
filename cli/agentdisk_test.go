package cli

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/preboot/preboot/bundle"
)

func TestAgentResolveDevice(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	for _, c := range []struct {
		a    agentFlags
		want string
	}{
		{agentFlags{}, "--device, or --disk-serial/--disk-wwn/--disk-model/--disk-size to choose the disk, is required"},
		{agentFlags{device: "/dev/sda", disk: bundle.DiskRule{Serial: "X"}}, "--device and --disk-*: give one, not both"},
		{agentFlags{disk: bundle.DiskRule{Size: "200G"}}, "disk.size: \"200G\": a bare size"},
		{agentFlags{disk: bundle.DiskRule{Serial: "no-such-serial-anywhere-4711"}}, `disk rule serial="no-such-serial-anywhere-4711": no disk matches; no disk was touched. Disks:`},
	} {
		err := c.a.resolveDevice(context.Background(), log)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: got %v, want %q", c.a.disk, err, c.want)
		}
	}
	a := agentFlags{device: "/dev/vdz"}
	if err := a.resolveDevice(context.Background(), log); err != nil || a.device != "/dev/vdz" {
		t.Fatalf("--device: %v %s", err, a.device)
	}
}
