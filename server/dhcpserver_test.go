package server

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/preboot/preboot/config"
	"github.com/preboot/preboot/store"
	"github.com/preboot/preboot/store/sqlite"
)

const dhcpHelperEnv = "PREBOOT_SERVER_DHCP_HELPER"

// TestHelperServeDHCP is not a test: it is `preboot serve --dhcp-range`
// (server.Run) inside the namespace of TestServeDHCPRange.
func TestHelperServeDHCP(t *testing.T) {
	if os.Getenv(dhcpHelperEnv) != "1" {
		t.Skip("helper process for TestServeDHCPRange")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	log := slog.New(slog.NewJSONHandler(os.Stdout, &slog.HandlerOptions{Level: slog.LevelInfo}))
	cfg := config.Default()
	cfg.DataDir = os.Getenv("PREBOOT_SERVER_DHCP_DATA")
	cfg.Boot.CopyDebianFiles = false
	cfg.HTTP.TLSListen = ""
	cfg.DHCP.Ranges = []string{os.Getenv("PREBOOT_SERVER_DHCP_RANGE")}
	cfg.DHCP.Routers = []string{os.Getenv("PREBOOT_SERVER_DHCP_ROUTER")}
	if err := Run(ctx, cfg, log); err != nil {
		log.Error("helper server failed", "err", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// TestServeDHCPRange runs the whole server with --dhcp-range in a network
// namespace ("preboot-srvdhcp-<rand>-srv", a veth pair to a client
// namespace, no route out, removed afterwards): a PXE client (busybox
// udhcpc claiming to be PXE firmware) gets an address and the boot file
// the policy decides in one OFFER/ACK; proxyDHCP kept to port 4011, so
// the two never both answer on 67; the lease and the device are in the
// database.
func TestServeDHCPRange(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	for _, b := range []string{"ip", "udhcpc"} {
		if _, err := exec.LookPath(b); err != nil {
			t.Skip("needs " + b)
		}
	}
	var rb [3]byte
	if _, err := rand.Read(rb[:]); err != nil {
		t.Fatal(err)
	}
	id := hex.EncodeToString(rb[:])
	srvNS, cliNS := "preboot-srvdhcp-"+id+"-srv", "preboot-srvdhcp-"+id+"-cli"
	srvIf, cliIf := "pbvs"+id, "pbvc"+id
	prefix := fmt.Sprintf("10.217.%d.", rb[0])
	sh := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	sh("ip", "netns", "add", srvNS)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", srvNS).Run() })
	sh("ip", "netns", "add", cliNS)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", cliNS).Run() })
	sh("ip", "link", "add", srvIf, "netns", srvNS, "type", "veth", "peer", "name", cliIf, "netns", cliNS)
	sh("ip", "-n", srvNS, "addr", "add", prefix+"1/24", "dev", srvIf)
	for _, c := range [][]string{{srvNS, srvIf}, {srvNS, "lo"}, {cliNS, cliIf}, {cliNS, "lo"}} {
		sh("ip", "-n", c[0], "link", "set", c[1], "up")
	}

	data := t.TempDir()
	cmd := exec.Command("ip", "netns", "exec", srvNS, os.Args[0], "-test.run=^TestHelperServeDHCP$", "-test.count=1")
	cmd.Env = append(os.Environ(), dhcpHelperEnv+"=1", "PREBOOT_SERVER_DHCP_DATA="+data,
		"PREBOOT_SERVER_DHCP_RANGE="+prefix+"100-"+prefix+"109", "PREBOOT_SERVER_DHCP_ROUTER="+prefix+"1")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var (
		mu   sync.Mutex
		logs []map[string]any
	)
	up := make(chan struct{}, 4)
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) != nil {
				continue
			}
			mu.Lock()
			logs = append(logs, m)
			mu.Unlock()
			if m["msg"] == "dhcpserver listening" || m["msg"] == "http listening" {
				up <- struct{}{}
			}
		}
	}()
	stopped := false
	stopServer := func() {
		if stopped {
			return
		}
		stopped = true
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Error("server did not stop on SIGTERM")
		}
		if err := cmd.Wait(); err != nil {
			t.Errorf("server: %v\n%s", err, stderr.String())
		}
	}
	t.Cleanup(func() {
		stopServer()
		if t.Failed() {
			mu.Lock()
			for _, m := range logs {
				t.Logf("server log: %v", m)
			}
			mu.Unlock()
		}
	})
	for range 2 {
		select {
		case <-up:
		case <-done:
			t.Fatalf("server exited: %s", stderr.String())
		case <-time.After(60 * time.Second):
			t.Fatalf("server did not come up: %s", stderr.String())
		}
	}

	events := filepath.Join(t.TempDir(), "udhcpc.events")
	script := filepath.Join(t.TempDir(), "udhcpc.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho \"$1 $ip $siaddr $boot_file $router\" >> "+events+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", cliNS, "udhcpc", "-f", "-n", "-q", "-t", "5", "-T", "1",
		"-V", "PXEClient:Arch:00000:UNDI:002001", "-x", "0x5d:0000", "-i", cliIf, "-s", script).CombinedOutput()
	if err != nil {
		t.Fatalf("udhcpc: %v\n%s", err, out)
	}
	got, _ := os.ReadFile(events)
	want := "bound " + prefix + "100 " + prefix + "1 undionly.kpxe " + prefix + "1"
	if !strings.Contains(string(got), want) {
		t.Fatalf("udhcpc reported %q, want a line %q\n%s", got, want, out)
	}
	mac := ""
	mu.Lock()
	for _, m := range logs {
		if m["msg"] == "proxydhcp answer" {
			t.Errorf("proxyDHCP answered too: %v", m)
		}
		if m["msg"] == "dhcpserver answer" && m["type"] == "ACK" {
			mac, _ = m["mac"].(string)
		}
	}
	mu.Unlock()
	if mac == "" {
		t.Fatal("no ACK logged")
	}

	stopServer()
	st, err := sqlite.Open(context.Background(), filepath.Join(data, "preboot.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var leases store.Leases = st
	l, err := leases.LeaseByClient(context.Background(), "id:01"+strings.ReplaceAll(mac, ":", ""))
	if err != nil || l.State != store.LeaseBound || l.IP.String() != prefix+"100" || l.MAC != mac {
		t.Fatalf("stored lease %+v, %v", l, err)
	}
	if _, err := st.Device(context.Background(), mac); err != nil {
		t.Fatalf("the policy did not see the device: %v", err)
	}
}
