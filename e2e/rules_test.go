package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/preboot/preboot/agent"
	"github.com/preboot/preboot/store"
)

// The rule scenario's names and the VM's fixed MAC prefix (the rule
// matches it; the other rule names a neighbouring prefix).
const (
	ruleMACPrefix   = "52:54:00:4e"
	otherMACPrefix  = "52:54:00:4f"
	inventoryBundle = "lab-inventory"
	inventoryGroup  = "lab-inventoried"
	otherGroup      = "lab-other"
	inventoryRule   = "lab-vms"
	otherRule       = "other-vms"
	namingPrefix    = "lab-"
	// inventoryDiskSize is the VM's local disk: the marker boot sector,
	// grown to a size the inventory must report exactly.
	inventoryDiskSize = 48 << 20
)

// TestRuleInventory is the rule scenario: an unregistered VM whose
// MAC starts with ruleMACPrefix PXE-boots; the first rule (another
// prefix) does not match it, the second does: the VM is registered, named
// by the naming settings (prefix + SMBIOS serial), joins the rule's group
// and runs the rule's inventory bundle once in the imaging environment.
// The agent reports the hardware, the job succeeds, the VM reboots by
// itself and, with nothing left to do, its next network boot goes to the
// local disk (the marker boot sector).
func TestRuleInventory(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	art, err := sharedArtifacts()
	if err != nil {
		t.Fatal(err)
	}
	l := newLab(t, separateDHCP)
	srv := l.startPreboot(serverOptions{}, art)
	l.siteDHCP = l.startSiteDHCP()
	buildImagingEnv(t, srv, art.Kernel)

	mac := ruleMACPrefix + ":" + randomHex(1) + ":" + randomHex(1)
	serial := "E2E-" + strings.ToUpper(randomHex(4))
	uuid := newUUID()
	srv.logOnFailure(t, func() []string { return []string{mac} })

	// The administrator's side, all through the CLI.
	srv.mustCLI("bundle", "create", inventoryBundle, "--kind", store.KindInventory, "--description", "collect the hardware of new lab VMs")
	srv.mustCLI("group", "add", otherGroup, "--description", "devices of the other prefix")
	srv.mustCLI("group", "add", inventoryGroup, "--description", "lab VMs, inventoried")
	srv.mustCLI("rule", "add", otherRule, "--match", `mac ^= "`+otherMACPrefix+`"`, "--bundle", inventoryBundle, "--group", otherGroup)
	srv.mustCLI("rule", "add", inventoryRule, "--match", `mac ^= "`+ruleMACPrefix+`"`, "--bundle", inventoryBundle, "--group", inventoryGroup)
	srv.mustCLI("settings", "set", "--naming-prefix", namingPrefix, "--naming-from", store.NameFromSerial)
	var rules []store.Rule
	if out := srv.mustCLI("rule", "list", "-o", "json"); json.Unmarshal([]byte(out), &rules) != nil ||
		len(rules) != 2 || rules[0].Name != otherRule || rules[1].Name != inventoryRule || !rules[0].Enabled || !rules[1].Enabled {
		t.Fatalf("rule list: want %s then %s, both enabled:\n%s", otherRule, inventoryRule, out)
	}

	disk := filepath.Join(l.Dir, "local-disk.img")
	if err := writeLocalDisk(disk); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(disk, inventoryDiskSize); err != nil {
		t.Fatal(err)
	}
	v := imagingVM(t, l, "inventory", l.addTap("e1000,mac="+mac+",bootindex=0"),
		"-drive", "file="+disk+",format=raw,if=none,id=disk0",
		"-device", "ide-hd,drive=disk0,bootindex=1",
		"-uuid", uuid,
		"-smbios", "type=1,manufacturer="+smbiosManufacturer+",product="+smbiosProduct+",serial="+serial)
	ctx, cancel := context.WithTimeout(context.Background(), imagingDeadlineFor())
	defer cancel()
	start := time.Now()
	if err := waitImaging(ctx, v, srv, mac, localDiskMarker); err != nil {
		t.Fatal(err)
	}
	t.Logf("inventory VM: job done, rebooted and booted its local disk after %s", time.Since(start).Round(time.Second))
	v.stop() // the marker boot sector halts: QEMU does not exit by itself
	checkConsoleOrder(t, v.serial(), localDiskMarker)

	// One job: the rule's inventory bundle, succeeded, with the agent's log.
	if j := checkOneJob(t, srv, mac, store.KindInventory, inventoryBundle); j != nil {
		checkJobLog(t, srv, j.ID)
	}
	// One work boot, then a localboot; no assignment left.
	d := checkBootsAfterJob(t, srv, mac)

	// Registered by the rule, named by the settings, in the rule's group.
	if !d.Registered {
		t.Errorf("device %s is not registered", mac)
	}
	if want := namingPrefix + serial; d.Name != want {
		t.Errorf("device name %q, want %q (naming: prefix %q + serial)", d.Name, want, namingPrefix)
	}
	if !d.inGroup(inventoryGroup) || d.inGroup(otherGroup) {
		t.Errorf("device groups %+v, want %s (the matching rule's) and not %s", d.Groups, inventoryGroup, otherGroup)
	}
	if reg := d.eventsMatching(store.EventPolicy, "registered by rule:"+inventoryRule); len(reg) != 1 {
		t.Errorf("want one policy event \"registered by rule:%s\", got %d", inventoryRule, len(reg))
	} else if !strings.Contains(reg[0].Message, d.Name) || !strings.Contains(reg[0].Message, inventoryGroup) {
		t.Errorf("registration event %q does not name the device's name %q and group %s", reg[0].Message, d.Name, inventoryGroup)
	}
	if len(d.eventsMatching(store.EventPolicy, otherRule)) != 0 {
		t.Errorf("an event names the rule %s, which does not match the VM", otherRule)
	}
	if d.Applied == nil || d.Applied.Bundle != inventoryBundle {
		t.Errorf("last applied bundle %+v, want %s", d.Applied, inventoryBundle)
	}
	if !strings.EqualFold(d.UUID, uuid) || d.Serial != serial {
		t.Errorf("device uuid %q serial %q, want the VM's %q %q", d.UUID, d.Serial, uuid, serial)
	}

	// The hardware the agent reported.
	var info agent.Info
	if len(d.Info) == 0 || json.Unmarshal(d.Info, &info) != nil {
		t.Fatalf("device info: want the agent's hardware report, got %q", d.Info)
	}
	hw := info.Hardware
	t.Logf("inventory: %s %s serial %q, %d CPUs %q, %d bytes of memory, %d NICs, disks %+v; device ram_bytes %d disk_bytes %d",
		hw.Vendor, hw.Product, hw.Serial, hw.CPUs, hw.CPUModel, hw.MemoryBytes, len(hw.NICs), info.Disks, d.RAMBytes, d.DiskBytes)
	// QEMU -m 512: the kernel reports a little less (firmware, kernel image).
	if hw.MemoryBytes < 256<<20 || hw.MemoryBytes > 512<<20 {
		t.Errorf("reported memory %d bytes, want up to the VM's 512 MiB (more than 256 MiB)", hw.MemoryBytes)
	}
	if hw.Vendor != smbiosManufacturer || hw.Product != smbiosProduct || hw.Serial != serial {
		t.Errorf("reported SMBIOS %q %q serial %q, want %q %q %q", hw.Vendor, hw.Product, hw.Serial, smbiosManufacturer, smbiosProduct, serial)
	}
	if hw.CPUs < 1 {
		t.Errorf("reported %d CPUs", hw.CPUs)
	}
	nicSeen := false
	for _, n := range hw.NICs {
		nicSeen = nicSeen || strings.EqualFold(n.MAC, mac)
	}
	if !nicSeen {
		t.Errorf("reported NICs %+v do not include the VM's %s", hw.NICs, mac)
	}
	if len(info.Disks) != 1 || info.Disks[0].Size != inventoryDiskSize {
		t.Errorf("reported disks %+v, want one of %d bytes", info.Disks, inventoryDiskSize)
	}
	if d.RAMBytes != hw.MemoryBytes || d.DiskBytes != inventoryDiskSize {
		t.Errorf("device ram_bytes %d disk_bytes %d, want the report's %d and %d", d.RAMBytes, d.DiskBytes, hw.MemoryBytes, inventoryDiskSize)
	}

	// The rules, asked about the device now: the second one matches it.
	var rt struct {
		Rule    string `json:"rule"`
		Matched bool   `json:"matched"`
	}
	if out := srv.mustCLI("rule", "test", "--device", mac, "-o", "json"); json.Unmarshal([]byte(out), &rt) != nil || rt.Rule != inventoryRule || !rt.Matched {
		t.Errorf("rule test --device %s: want rule %s matched, got:\n%s", mac, inventoryRule, out)
	}
}
