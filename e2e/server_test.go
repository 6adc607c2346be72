package e2e

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/preboot/preboot/api"
	"github.com/preboot/preboot/store"
)

// prebootBinary builds cmd/preboot once per test binary into the cache
// directory (or uses $PREBOOT_BIN).
var prebootBinary = sync.OnceValues(func() (string, error) {
	if bin := os.Getenv("PREBOOT_BIN"); bin != "" {
		return filepath.Abs(bin)
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		gobin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	gomod, err := run(ctx, gobin, "env", "GOMOD")
	if err != nil {
		return "", err
	}
	root := filepath.Dir(strings.TrimSpace(gomod))
	dir := filepath.Join(cacheDir(), "bin")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("build preboot: %w", err)
	}
	// Build under a unique name, then rename: concurrent runs never see a
	// half-written binary.
	tmp := filepath.Join(dir, "preboot-"+randomHex(4))
	cmd := exec.CommandContext(ctx, gobin, "build", "-o", tmp, "./cmd/preboot")
	cmd.Dir = root
	// Static: the same binary is the imaging environment's /init.
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/preboot: %w\n%s", err, out)
	}
	bin := filepath.Join(dir, "preboot")
	if err := os.Rename(tmp, bin); err != nil {
		return "", fmt.Errorf("build preboot: %w", err)
	}
	return bin, nil
})

// serverOptions are the knobs the scenarios turn on `preboot serve`.
type serverOptions struct {
	UEFIBootFile string   // ipxe.efi (default) or snponly.efi
	MenuMode     string   // never (default), always, hotkey
	MenuTimeout  string   // --menu-timeout, e.g. "2s" ("" = the server's default)
	Extra        []string // more flags of preboot serve
}

// prebootServer is `preboot serve` running in the lab's server namespace.
type prebootServer struct {
	lab     *lab
	bin     string
	DataDir string
	TFTPDir string
	proc    *process
	socket  string // the admin socket: the CLI's way in, as root on the server host
}

// startPreboot stages the guest kernel and initrd under the TFTP root
// (boot/kernel, boot/initrd: the seed's names) and starts the server with
// the CLI contract's flags. It returns when the API answers.
func (l *lab) startPreboot(opts serverOptions, art *artifacts) *prebootServer {
	l.t.Helper()
	bin, err := prebootBinary()
	if err != nil {
		l.t.Fatal(err)
	}
	if opts.UEFIBootFile == "" {
		opts.UEFIBootFile = "ipxe.efi"
	}
	if opts.MenuMode == "" {
		opts.MenuMode = "never"
	}
	s := &prebootServer{
		lab:     l,
		bin:     bin,
		DataDir: filepath.Join(l.Dir, "preboot"),
	}
	s.socket = filepath.Join(s.DataDir, "admin.sock")
	s.TFTPDir = filepath.Join(s.DataDir, "tftp")
	if err := copyFile(art.Kernel.Vmlinuz, filepath.Join(s.TFTPDir, "boot", "kernel"), 0o644); err != nil {
		l.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(s.TFTPDir, "boot", "initrd"), art.Initrd, 0o644); err != nil {
		l.t.Fatal(err)
	}
	dhcpListen := ":67"
	if l.Topo == sameHost {
		dhcpListen = "" // the site DHCP server owns port 67 on this host
	}
	var extra []string
	if opts.MenuTimeout != "" {
		extra = append(extra, "--menu-timeout", opts.MenuTimeout)
	}
	// Debian's signed shim and GRUB, downloaded once (here: the lab has no
	// route out) for every lab; without them only TestSecureBoot fails.
	if _, err := signedPrograms(); err != nil {
		l.t.Logf("Debian's signed shim and GRUB: %v", err)
	}
	extra = append(extra, "--signed-cache", filepath.Join(cacheDir(), "signed"))
	extra = append(extra, opts.Extra...)
	s.proc = l.startProcess(l.SrvNS, "preboot", append([]string{bin, "serve",
		"--data-dir", s.DataDir,
		"--interface", "eth0",
		"--server-ip", labServerIP,
		// All addresses: clients use 10.123.0.2 (iPXE on HTTP, the imaging
		// agent on HTTPS with the pinned certificate); admin commands use
		// the admin socket.
		"--http-listen", ":8080",
		"--tls-listen", ":8443",
		"--tftp-listen", labServerIP + ":69",
		"--proxydhcp=true",
		"--proxydhcp-dhcp-listen", dhcpListen,
		"--proxydhcp-pxe-listen", ":4011",
		"--menu-mode", opts.MenuMode,
		"--uefi-boot-file", opts.UEFIBootFile,
		"--multicast-interface", "eth0",
		"--multicast-rate", "30M",
		"--log-format", "json",
	}, extra...)...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		_, err := s.cli(ctx, "device", "list", "-o", "json")
		if err == nil {
			break
		}
		if s.proc.exited() || ctx.Err() != nil {
			l.t.Fatalf("preboot serve did not come up: %v\nlog:\n%s", err, tailFile(s.proc.Log, 30))
		}
		time.Sleep(200 * time.Millisecond)
	}
	return s
}

// cli runs the preboot admin CLI in the server namespace, as root through
// the server's admin socket (no token: the socket checks who connects).
func (s *prebootServer) cli(ctx context.Context, args ...string) (string, error) {
	argv := append([]string{"netns", "exec", s.lab.SrvNS, s.bin}, args...)
	argv = append(argv, "--socket", s.socket)
	cmd := exec.CommandContext(ctx, "ip", argv...)
	var stdout, stderr strings.Builder
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("preboot %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// mustCLI is cli that fails the test on error.
func (s *prebootServer) mustCLI(args ...string) string {
	s.lab.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := s.cli(ctx, args...)
	if err != nil {
		s.lab.t.Fatal(err)
	}
	return out
}

// deviceInfo is `preboot device show -o json` (api.DeviceDetail: the
// device, its groups, its own assignment, the policy's decision for its
// next boot, recent events and jobs); `device list -o json` fills only the
// store.Device part.
type deviceInfo struct {
	api.DeviceDetail
}

// hasEvent reports whether the device has an event of that kind.
func (d *deviceInfo) hasEvent(kind string) bool {
	for _, e := range d.Events {
		if e.Kind == kind {
			return true
		}
	}
	return false
}

// eventMatching reports whether the device has an event of that kind whose
// message contains substr.
func (d *deviceInfo) eventMatching(kind, substr string) bool {
	for _, e := range d.Events {
		if e.Kind == kind && strings.Contains(e.Message, substr) {
			return true
		}
	}
	return false
}

// eventsMatching returns the device's events of that kind whose message
// contains substr.
func (d *deviceInfo) eventsMatching(kind, substr string) []store.Event {
	var out []store.Event
	for _, e := range d.Events {
		if e.Kind == kind && strings.Contains(e.Message, substr) {
			out = append(out, e)
		}
	}
	return out
}

// inGroup reports whether the device is a member of the named group.
func (d *deviceInfo) inGroup(name string) bool {
	for _, g := range d.Groups {
		if g.Name == name {
			return true
		}
	}
	return false
}

// eventSummary lists the device's events, oldest first.
func (d *deviceInfo) eventSummary() string {
	es := slices.Clone(d.Events)
	slices.SortStableFunc(es, func(a, b store.Event) int { return cmp.Compare(a.ID, b.ID) })
	var b strings.Builder
	for _, e := range es {
		fmt.Fprintf(&b, "\n  %s %-9s %s", e.Time.Format(time.TimeOnly), e.Kind, e.Message)
	}
	return b.String()
}

// showDevice returns `preboot device show MAC -o json` with all of the
// device's events (a lab device has a few dozen at most).
func (s *prebootServer) showDevice(mac string) *deviceInfo {
	s.lab.t.Helper()
	out := s.mustCLI("device", "show", mac, "--events", "1000", "-o", "json")
	var d deviceInfo
	if err := json.Unmarshal([]byte(out), &d); err != nil {
		s.lab.t.Fatalf("device show %s: %v\n%s", mac, err, out)
	}
	return &d
}

func (s *prebootServer) listDevices() []deviceInfo {
	s.lab.t.Helper()
	out := s.mustCLI("device", "list", "-o", "json")
	var ds []deviceInfo
	if err := json.Unmarshal([]byte(out), &ds); err != nil {
		s.lab.t.Fatalf("device list: %v\n%s", err, out)
	}
	return ds
}

// logRecords returns the server's JSON log records whose msg is msg.
func (s *prebootServer) logRecords(msg string) []map[string]any {
	f, err := os.Open(s.proc.Log)
	if err != nil {
		s.lab.t.Fatal(err)
	}
	defer f.Close()
	var recs []map[string]any
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var r map[string]any
		if json.Unmarshal(sc.Bytes(), &r) != nil {
			continue
		}
		if r["msg"] == msg {
			recs = append(recs, r)
		}
	}
	return recs
}

// metrics fetches /metrics from inside the server namespace.
func (s *prebootServer) metrics() string {
	s.lab.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	body, err := nsHTTPGet(ctx, s.lab.SrvNS, "http://"+labServerIP+":8080/metrics")
	if err != nil {
		s.lab.t.Fatal(err)
	}
	return body
}

// nsHTTPGet does an HTTP GET from inside network namespace ns: the socket
// is created on an OS thread that has joined the namespace (the thread is
// never unlocked, so it exits with its goroutine instead of going back to
// the scheduler in the wrong namespace).
func nsHTTPGet(ctx context.Context, ns, url string) (string, error) {
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		type result struct {
			c   net.Conn
			err error
		}
		ch := make(chan result, 1)
		go func() {
			runtime.LockOSThread()
			fd, err := unix.Open(filepath.Join("/run/netns", ns), unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				ch <- result{err: fmt.Errorf("open namespace %s: %w", ns, err)}
				return
			}
			err = unix.Setns(fd, unix.CLONE_NEWNET)
			unix.Close(fd)
			if err != nil {
				ch <- result{err: fmt.Errorf("enter namespace %s: %w", ns, err)}
				return
			}
			var d net.Dialer
			c, err := d.DialContext(ctx, network, addr)
			ch <- result{c, err}
		}()
		r := <-ch
		return r.c, r.err
	}
	client := &http.Client{Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", fmt.Errorf("GET %s: %w", url, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", fmt.Errorf("GET %s in %s: %w", url, ns, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", fmt.Errorf("GET %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return string(b), fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return string(b), nil
}
