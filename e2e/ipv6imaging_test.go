package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/preboot/preboot/agent"
	"github.com/preboot/preboot/api"
	"github.com/preboot/preboot/store"
)

// ipv6InventoryDisk is the IPv6 VM's blank disk: the inventory must
// report it.
const ipv6InventoryDisk = 24 << 20

// TestImagingIPv6: an imaging job over IPv6 only. The lab of TestPXEv6
// (no DHCPv4 on the segment, router advertisements with the M flag from
// the test, Preboot's DHCPv6 server): an inventory bundle is assigned
// once to a UEFI VM, which boots "UEFI PXEv6" → ipxe.efi over TFTP/IPv6
// → /boot.ipxe over IPv6 → the imaging environment (kernel and initrd
// from http://[…]:8080, the agent's server https://[…]:8443 and the
// address the job's token is bound to, preboot.ip=, on the kernel command
// line). The environment reads the router advertisement, asks DHCPv6 as
// iPXE's client (same DUID and IAID) and gets the address it booted with
// again, the agent reports the inventory to the server over IPv6, the job
// succeeds and the VM reboots by itself; its next network boot (over
// IPv6 again) goes to the local disk.
func TestImagingIPv6(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	art, err := sharedArtifacts()
	if err != nil {
		t.Fatal(err)
	}
	l := newLab(t, sameHost)
	l.startRouterAdvertisements(2 * time.Second)
	srv := l.startPreboot(serverOptions{Extra: []string{
		"--proxydhcp=false",
		"--tftp-listen", ":69",
		"--dhcp6-range", labULA + "100-" + labULA + "1ff",
	}}, art)
	buildImagingEnv(t, srv, art.Kernel)

	mac := randomMAC()
	uuid := newUUID()
	srv.logOnFailure(t, func() []string { return []string{mac} })
	srv.mustCLI("bundle", "create", "inv6", "--kind", store.KindInventory)
	srv.mustCLI("device", "add", mac)
	srv.mustCLI("assign", "inv6", "--device", mac, "--once")

	disk := filepath.Join(l.Dir, "blank.img")
	if err := os.WriteFile(disk, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(disk, ipv6InventoryDisk); err != nil {
		t.Fatal(err)
	}
	// -cpu max: RDRAND seeds the guest kernel's CRNG (see imagingVM).
	args := append([]string{"-cpu", "max", "-uuid", uuid}, l.addTap("virtio-net-pci,mac="+mac+",romfile=,bootindex=1")...)
	args = append(args, pxev6FirmwareArgs...)
	args = append(args, "-drive", "file="+disk+",format=raw,if=none,id=disk0", "-device", "virtio-blk-pci,drive=disk0")
	v := startVM(t, vmConfig{Name: "ipv6-inventory", Dir: l.Dir, Netns: l.NetNS, UEFI: true, Reboot: true, Args: args})

	ctx, cancel := context.WithTimeout(context.Background(), imagingDeadlineFor())
	defer cancel()
	start := time.Now()
	if err := waitJobThenLocal(ctx, v, srv, mac); err != nil {
		t.Fatalf("%v\nconsole (tail):\n%s", err, tailLines(v.serial(), 60))
	}
	t.Logf("IPv6 inventory: job succeeded and the next boot went local after %s", time.Since(start).Round(time.Second))
	v.stop()

	// One job, the inventory, succeeded; handed to an IPv6 address.
	j := checkOneJob(t, srv, mac, store.KindInventory, "inv6")
	if j == nil {
		t.FailNow()
	}
	checkJobLog(t, srv, j.ID)
	if !strings.HasPrefix(j.ClientIP, labULA) {
		t.Fatalf("job %d was handed to %q, want an address of %s/64", j.ID, j.ClientIP, labULA)
	}

	// The imaging environment took the router advertisement (M flag) and
	// got the address the machine booted with from DHCPv6.
	console := v.serial()
	if !regexp.MustCompile(`msg="IPv6 router advertisement" interface=\S+ router=fe80::\S+ managed=true`).MatchString(console) {
		t.Errorf("console: no router advertisement with the M flag read by the imaging environment")
	}
	if want := `msg="IPv6 address" interface=`; !strings.Contains(console, want) {
		t.Errorf("console lacks %q", want)
	} else if m := regexp.MustCompile(`msg="IPv6 address" interface=\S+ addr=(\S+) how=(\S+)`).FindStringSubmatch(console); m == nil ||
		m[1] != j.ClientIP+"/64" || m[2] != "dhcpv6" {
		t.Errorf("the imaging environment's IPv6 address: %q, want %s/64 by dhcpv6", m, j.ClientIP)
	}
	if strings.Contains(console, "got another IPv6 address") {
		t.Errorf("the imaging environment warned that its address is not the one it booted with")
	}

	// iPXE and the environment were one DHCPv6 client: the lease of the
	// job's address is held by iPXE's DUID-UUID (type 4, the SMBIOS UUID)
	// and IAID (crc32_le of the MAC).
	var leases []api.DHCPLease
	if out := srv.mustCLI("dhcp", "leases", "--family", "6", "-o", "json"); json.Unmarshal([]byte(out), &leases) != nil {
		t.Fatalf("dhcp leases: %s", out)
	}
	hw, _ := net.ParseMAC(mac)
	iaid := ^crc32.Update(^uint32(0), crc32.IEEETable, hw)
	wantClient := "0004" + strings.ReplaceAll(uuid, "-", "") + "/" + fmt.Sprintf("%08x", iaid)
	var held bool
	for _, le := range leases {
		t.Logf("DHCPv6 lease %s: client %s mac %s %s", le.IP, le.ClientID, le.MAC, le.State)
		if le.IP.String() == j.ClientIP {
			held = strings.EqualFold(le.ClientID, wantClient) && le.State == store.LeaseBound
		}
	}
	if !held {
		t.Errorf("no bound lease of %s for client %s (iPXE's DUID-UUID and IAID)", j.ClientIP, wantClient)
	}

	// The agent's requests reached the server over IPv6, from the job's
	// address.
	agentCalls := map[string]bool{}
	for _, rec := range srv.logRecords("http request") {
		p, _ := rec["path"].(string)
		remote, _ := rec["remote"].(string)
		if !strings.HasPrefix(p, "/api/v1/agent/") {
			continue
		}
		host, _, err := net.SplitHostPort(remote)
		if err != nil || host != j.ClientIP {
			t.Errorf("agent request %s from %q, want from %s", p, remote, j.ClientIP)
			continue
		}
		agentCalls[p] = true
	}
	for _, p := range []string{"/api/v1/agent/job", "/api/v1/agent/info", "/api/v1/agent/job/result"} {
		if !agentCalls[p] {
			t.Errorf("no %s request from %s in the server log (got %v)", p, j.ClientIP, agentCalls)
		}
	}
	// The kernel and initrd came over HTTP/IPv6.
	var files6 int
	for _, rec := range srv.logRecords("http request") {
		p, _ := rec["path"].(string)
		remote, _ := rec["remote"].(string)
		if (p == "/files/boot/kernel" || p == "/files/boot/initrd") && strings.Contains(remote, labULA) {
			files6++
		}
	}
	if files6 < 2 {
		t.Errorf("kernel and initrd: %d requests from an IPv6 address, want both", files6)
	}

	// The inventory arrived: the VM's SMBIOS UUID and its blank disk.
	d := srv.showDevice(mac)
	var info agent.Info
	if len(d.Info) == 0 || json.Unmarshal(d.Info, &info) != nil {
		t.Fatalf("device info: want the agent's hardware report, got %q", d.Info)
	}
	if !strings.EqualFold(info.Hardware.UUID, uuid) {
		t.Errorf("reported UUID %q, want the VM's %q", info.Hardware.UUID, uuid)
	}
	var sawDisk bool
	for _, dk := range info.Disks {
		sawDisk = sawDisk || dk.Size == ipv6InventoryDisk
	}
	if !sawDisk {
		t.Errorf("reported disks %+v, want one of %d bytes", info.Disks, ipv6InventoryDisk)
	}
	for _, e := range d.Events {
		if e.Kind == store.EventSecurity {
			t.Errorf("security event: %s", e.Message)
		}
	}
}

// tailLines returns the last n lines of s.
func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
