package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/preboot/preboot/api"
	"github.com/preboot/preboot/store"
)

// The CLI is tested through the built binary against a real `preboot serve`
// (HTTP and TFTP on loopback, proxyDHCP off: no packets leave this host).

func build(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "preboot")
	out, err := exec.Command("go", "build", "-o", bin, "../cmd/preboot").CombinedOutput()
	if err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

type server struct {
	bin, url, dir string
	log           *bytes.Buffer
}

func start(t *testing.T, bin string, extra ...string) *server {
	t.Helper()
	dir := t.TempDir()
	addr := freePort(t)
	args := append([]string{"serve", "--data-dir", dir, "--http-listen", addr, "--tftp-listen", "127.0.0.1:0",
		"--proxydhcp=false", "--log-format", "json", "--copy-debian-files=false"}, extra...)
	cmd := exec.Command(bin, args...)
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
			t.Errorf("serve did not stop on SIGINT")
		}
	})
	s := &server{bin: bin, url: "http://" + addr, dir: dir, log: &log}
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(s.url + "/healthz")
		if err == nil {
			resp.Body.Close()
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("server did not start: %v\n%s", err, log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *server) run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.bin, append(args, "--server", s.url)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestCLIAgainstServer(t *testing.T) {
	bin := build(t)
	s := start(t, bin, "--menu-mode", "never")
	const mac = "52:54:00:ab:cd:ef"

	out, err := s.run(t, "device", "list")
	if err != nil || !strings.HasPrefix(out, "MAC") {
		t.Fatalf("empty list: %v\n%s", err, out)
	}
	// A boot registers the device (what iPXE does).
	resp, err := http.Get(s.url + "/boot.ipxe?mac=52-54-00-ab-cd-ef&manufacturer=Dell%20Inc.&product=OptiPlex&serial=ABC123&platform=pcbios&arch=i386")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	out, err = s.run(t, "device", "list")
	if err != nil || !strings.Contains(out, mac) || !strings.Contains(out, "OptiPlex") || !strings.Contains(out, "localboot") {
		t.Fatalf("list after boot: %v\n%s", err, out)
	}
	out, err = s.run(t, "device", "boot", "52-54-00-AB-CD-EF", "--kernel", "boot/kernel", "--initrd", "boot/initrd", "--cmdline", "console=ttyS0", "--once")
	if err != nil || !strings.Contains(out, "next network boot loads boot/kernel via ipxe (once)") {
		t.Fatalf("boot: %v\n%s", err, out)
	}
	out, err = s.run(t, "device", "show", mac, "-o", "json")
	if err != nil {
		t.Fatalf("show: %v\n%s", err, out)
	}
	var d api.DeviceDetail
	if err := json.Unmarshal([]byte(out), &d); err != nil {
		t.Fatalf("show -o json: %v\n%s", err, out)
	}
	if d.Work == nil || d.Work.Kernel != "boot/kernel" || !d.Work.Once || d.Serial != "ABC123" || len(d.Events) < 3 {
		t.Fatalf("show: %+v", d)
	}
	out, err = s.run(t, "device", "show", mac)
	if err != nil || !strings.Contains(out, "Work:") || !strings.Contains(out, "admin") {
		t.Fatalf("show table: %v\n%s", err, out)
	}
	out, err = s.run(t, "event", "list", "--device", mac, "--kind", "admin", "-o", "json")
	var evs []store.Event
	if err != nil || json.Unmarshal([]byte(out), &evs) != nil || len(evs) != 1 {
		t.Fatalf("event list: %v\n%s", err, out)
	}
	out, err = s.run(t, "device", "clear", mac)
	if err != nil || !strings.Contains(out, "work cleared") {
		t.Fatalf("clear: %v\n%s", err, out)
	}

	// Bad input: clear messages, non-zero exit.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"device", "boot", "nope", "--kernel", "k"}, "invalid MAC address"},
		{[]string{"device", "boot", mac}, "kernel: required"},
		{[]string{"device", "boot", mac, "--kernel", "../../etc/shadow"}, "inside the TFTP root"},
		{[]string{"device", "boot", mac, "--kernel", "k", "--loader", "grub"}, `loader "grub"`},
		{[]string{"device", "show", "00:00:00:00:00:01"}, "not found"},
		{[]string{"device", "list", "-o", "yaml"}, "--output"},
	} {
		out, err := s.run(t, tc.args...)
		if err == nil || !strings.Contains(out, tc.want) {
			t.Errorf("%v: err=%v, want %q in:\n%s", tc.args, err, tc.want, out)
		}
	}
	// The API validates too, for clients other than the CLI.
	req, _ := http.NewRequest("PUT", s.url+"/api/v1/devices/"+mac+"/work", strings.NewReader(`{"kernel":"k","bogus":1}`))
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("unknown field: %d", resp.StatusCode)
	}
}

func TestCLIServerDown(t *testing.T) {
	bin := build(t)
	out, err := exec.Command(bin, "device", "list", "--server", "http://"+freePort(t)).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "cannot reach the Preboot server") {
		t.Fatalf("err=%v\n%s", err, out)
	}
}

func TestConfigFileAndFlags(t *testing.T) {
	bin := build(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "preboot.yaml")
	// The file sets the menu mode; a flag overrides the file's hotkey.
	if err := os.WriteFile(cfg, []byte("menu:\n  mode: always\n  hotkey: m\n  timeout: 5s\nboot:\n  local_boot_bios: exit\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := start(t, bin, "--config", cfg, "--menu-timeout", "7s")
	resp, err := http.Get(s.url + "/boot.ipxe?mac=02:00:00:00:00:01")
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	resp.Body.Close()
	if !strings.Contains(b.String(), "choose --default local --timeout 7000") {
		t.Fatalf("file+flag config not applied:\n%s", b.String())
	}

	for _, tc := range []struct {
		file, want string
	}{
		{"menu:\n  mode: sometimes\n", `menu.mode "sometimes"`},
		{"tftp:\n  listn: x\n", "field listn not found"},
		{"menu:\n  hotkey: f13\n", `menu.hotkey "f13"`},
		{"server_ip: fe80::1\n", "want an IPv4 address"},
	} {
		if err := os.WriteFile(cfg, []byte(tc.file), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(bin, "serve", "--config", cfg, "--data-dir", dir, "--proxydhcp=false", "--tftp=false", "--http-listen", "127.0.0.1:0").CombinedOutput()
		if err == nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("config %q: err=%v, want %q in:\n%s", tc.file, err, tc.want, out)
		}
	}
	out, err := exec.Command(bin, "version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "preboot ") {
		t.Fatalf("version: %v %s", err, out)
	}
}
