package envbuild_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/u-root/u-root/pkg/cpio"

	"github.com/preboot/preboot/envbuild"
)

// cacheDir is $PREBOOT_ENV_CACHE or e2e/cache (gitignored), shared with the
// VM lab so the kernel is downloaded once.
func cacheDir(t *testing.T) string {
	if d := os.Getenv("PREBOOT_ENV_CACHE"); d != "" {
		return d
	}
	d, err := filepath.Abs(filepath.Join("..", "e2e", "cache"))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, nil))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// buildAgent builds the test /init (testdata/initagent) statically.
var agentOnce struct {
	sync.Once
	path string
	err  error
}

func buildAgent(t *testing.T) string {
	t.Helper()
	agentOnce.Do(func() {
		dir, err := os.MkdirTemp("", "preboot-envbuild-agent-")
		if err != nil {
			agentOnce.err = err
			return
		}
		agentOnce.path = filepath.Join(dir, "initagent")
		cmd := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", agentOnce.path, "./testdata/initagent")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			agentOnce.err = errors.New(string(out))
		}
	})
	if agentOnce.err != nil {
		t.Fatalf("build test agent: %v", agentOnce.err)
	}
	return agentOnce.path
}

// built is one environment shared by the tests of this package.
var builtOnce struct {
	sync.Once
	res envbuild.Result
	err error
}

func buildEnv(t *testing.T) envbuild.Result {
	t.Helper()
	agent := buildAgent(t)
	builtOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		out, err := os.MkdirTemp("", "preboot-envbuild-out-")
		if err != nil {
			builtOnce.err = err
			return
		}
		builtOnce.res, builtOnce.err = envbuild.Build(ctx, envbuild.Options{
			CacheDir: cacheDir(t), OutDir: out, AgentBinary: agent, Logger: testLogger(t),
		})
	})
	if builtOnce.err != nil {
		t.Fatalf("build: %v", builtOnce.err)
	}
	return builtOnce.res
}

func TestMain(m *testing.M) {
	code := m.Run()
	if agentOnce.path != "" {
		os.RemoveAll(filepath.Dir(agentOnce.path))
	}
	if builtOnce.res.Initrd != "" {
		os.RemoveAll(filepath.Dir(builtOnce.res.Initrd))
	}
	os.Exit(code)
}

// readInitrd decompresses the initrd and reads every cpio record.
func readInitrd(t *testing.T, file string) (map[string]cpio.Record, []string, []byte) {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(raw, []byte{0x28, 0xb5, 0x2f, 0xfd}) {
		t.Fatalf("initrd is not zstd (magic % x)", raw[:4])
	}
	d, err := zstd.NewReader(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	archive, err := d.DecodeAll(raw, nil)
	if err != nil {
		t.Fatalf("zstd: %v", err)
	}
	recs, err := cpio.ReadAllRecords(cpio.Newc.Reader(bytes.NewReader(archive)))
	if err != nil {
		t.Fatalf("cpio: %v", err)
	}
	byName := map[string]cpio.Record{}
	var order []string
	for _, r := range recs {
		if r.Name == cpio.Trailer {
			continue
		}
		byName[r.Name] = r
		order = append(order, r.Name)
	}
	return byName, order, archive
}

func content(t *testing.T, r cpio.Record) []byte {
	t.Helper()
	b, err := io.ReadAll(io.NewSectionReader(r.ReaderAt, 0, int64(r.FileSize)))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestBuildContent(t *testing.T) {
	res := buildEnv(t)
	recs, order, archive := readInitrd(t, res.Initrd)

	// Sorted, fixed metadata, parents before children.
	if !sort.StringsAreSorted(order) {
		t.Error("cpio entries not sorted")
	}
	seen := map[string]bool{}
	for _, n := range order {
		if r := recs[n]; r.MTime != 0 || r.UID != 0 || r.GID != 0 {
			t.Errorf("%s: mtime %d uid %d gid %d, want 0", n, r.MTime, r.UID, r.GID)
		}
		if dir := filepath.Dir(n); dir != "." && !seen[dir] {
			t.Errorf("%s comes before its directory %s", n, dir)
		}
		seen[n] = true
	}

	agent, _ := os.ReadFile(buildAgent(t))
	init, ok := recs["init"]
	if !ok || init.Mode != cpio.S_IFREG|0o755 || !bytes.Equal(content(t, init), agent) {
		t.Errorf("/init is not the agent binary (present %v, mode %o)", ok, init.Mode)
	}
	if r, ok := recs["dev/console"]; !ok || r.Mode&cpio.S_IFMT != cpio.S_IFCHR || r.Rmajor != 5 || r.Rminor != 1 {
		t.Errorf("dev/console: %+v", r.Info)
	}
	bb, _ := os.ReadFile("/bin/busybox")
	if r, ok := recs["bin/busybox"]; !ok || !bytes.Equal(content(t, r), bb) {
		t.Error("bin/busybox missing or different")
	}
	for link, target := range map[string]string{"bin/sh": "busybox", "sbin/modprobe": "../bin/busybox"} {
		r, ok := recs[link]
		if !ok || r.Mode&cpio.S_IFMT != cpio.S_IFLNK || string(content(t, r)) != target {
			t.Errorf("%s: want symlink to %s", link, target)
		}
	}
	// Script bundles run with /bin/sh and expect the basic tools.
	for _, a := range []string{"bin/sh", "bin/cat", "bin/dd", "bin/grep", "bin/sed", "usr/bin/awk", "bin/mount", "usr/bin/wget",
		"bin/sleep", "usr/bin/timeout", "usr/bin/blkdiscard", "sbin/fdisk", "usr/bin/wc"} {
		r, ok := recs[a]
		if !ok || r.Mode&cpio.S_IFMT != cpio.S_IFLNK || path.Base(string(content(t, r))) != "busybox" {
			t.Errorf("%s: want a busybox applet link", a)
		}
	}
	for _, f := range []string{"etc/passwd", "etc/group", "etc/hosts", "etc/nsswitch.conf", "usr/share/udhcpc/default.script"} {
		if _, ok := recs[f]; !ok {
			t.Errorf("%s missing", f)
		}
	}
	for n := range recs {
		if strings.HasPrefix(n, "etc/ssl") || strings.HasSuffix(n, ".crt") || strings.HasSuffix(n, ".pem") {
			t.Errorf("unexpected certificate material %s", n)
		}
	}

	// Modules: every one the design lists, with dependencies, uncompressed,
	// and a modules.dep/modules.alias that cover exactly them.
	modRoot := "lib/modules/" + res.KernelVersion + "/"
	dep := string(content(t, recs[modRoot+"modules.dep"]))
	alias := string(content(t, recs[modRoot+"modules.alias"]))
	files := map[string]bool{}
	for _, l := range strings.Split(strings.TrimSpace(dep), "\n") {
		mod, deps, ok := strings.Cut(l, ":")
		if !ok {
			t.Fatalf("modules.dep line %q", l)
		}
		files[mod] = true
		for _, d := range append(strings.Fields(deps), mod) {
			r, ok := recs[modRoot+d]
			if !ok {
				t.Errorf("modules.dep names %s, not in the initrd", d)
				continue
			}
			if !bytes.HasPrefix(content(t, r), []byte("\x7fELF")) {
				t.Errorf("%s is not an uncompressed ELF module", d)
			}
		}
	}
	names := map[string]bool{}
	for f := range files {
		names[strings.ReplaceAll(strings.TrimSuffix(filepath.Base(f), ".ko"), "-", "_")] = true
	}
	for _, m := range []string{"e1000", "virtio_net", "net_failover", "failover", "virtio_pci", "virtio_pci_modern_dev",
		"virtio_pci_legacy_dev", "virtio_blk", "ahci", "libahci", "libata", "ata_piix", "sd_mod", "scsi_mod", "nvme", "nvme_core", "ext4", "vfat"} {
		if !names[m] {
			t.Errorf("module %s not in the initrd", m)
		}
	}
	for _, want := range []string{" e1000\n", " virtio_net\n", " ahci\n", " nvme\n", "alias virtio:d00000001v* virtio_net"} {
		if !strings.Contains(alias, want) && !strings.Contains(alias, strings.TrimSpace(want)) {
			t.Errorf("modules.alias lacks %q", want)
		}
	}
	for _, l := range strings.Split(strings.TrimSpace(alias), "\n") {
		f := strings.Fields(l)
		if len(f) != 3 || !names[f[2]] {
			t.Errorf("modules.alias line %q names a module not in the initrd", l)
			break
		}
	}
	if len(res.Modules) != len(names) {
		t.Errorf("Result.Modules has %d names, modules.dep %d", len(res.Modules), len(names))
	}

	// The kernel is Debian's vmlinuz, unchanged.
	k, _ := os.ReadFile(res.Kernel)
	if len(k) < 1<<20 || !bytes.Equal(k[0x202:0x206], []byte("HdrS")) {
		t.Errorf("kernel %s is not a bzImage", res.Kernel)
	}

	// GNU cpio, an independent reader, agrees on the entry count.
	cmd := exec.Command("cpio", "-it", "--quiet")
	cmd.Stdin = bytes.NewReader(archive)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("cpio -it: %v (apt-get install cpio)", err)
	}
	if n := len(strings.Split(strings.TrimSpace(string(out)), "\n")); n != len(order) {
		t.Errorf("GNU cpio lists %d entries, u-root %d", n, len(order))
	}
	st, _ := os.Stat(res.Initrd)
	t.Logf("initrd %d bytes, %d entries, %d modules, kernel %s", st.Size(), len(order), len(names), res.KernelVersion)
}

func TestBuildDeterministic(t *testing.T) {
	res := buildEnv(t)
	out := t.TempDir()
	res2, err := envbuild.Build(context.Background(), envbuild.Options{
		CacheDir: cacheDir(t), OutDir: out, AgentBinary: buildAgent(t), KernelVersion: res.KernelVersion,
	})
	if err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(res.Initrd)
	b, _ := os.ReadFile(res2.Initrd)
	if sha256.Sum256(a) != sha256.Sum256(b) {
		t.Errorf("two builds from the same inputs differ (%d vs %d bytes)", len(a), len(b))
	}
}

func TestBuildRejects(t *testing.T) {
	ctx := context.Background()
	if _, err := envbuild.Build(ctx, envbuild.Options{CacheDir: t.TempDir(), OutDir: t.TempDir(), AgentBinary: "/nonexistent"}); err == nil {
		t.Error("missing agent: no error")
	}
	if _, err := envbuild.Build(ctx, envbuild.Options{CacheDir: cacheDir(t), OutDir: t.TempDir(), AgentBinary: buildAgent(t),
		KernelVersion: "../../etc"}); err == nil {
		t.Error("bad kernel version: no error")
	}
	if _, err := envbuild.Build(ctx, envbuild.Options{CacheDir: cacheDir(t), OutDir: t.TempDir(), AgentBinary: buildAgent(t),
		KernelVersion: buildEnv(t).KernelVersion, ExtraModules: []string{"no_such_module_xyz"}}); err == nil ||
		!strings.Contains(err.Error(), "no_such_module_xyz") {
		t.Errorf("unknown extra module: err %v", err)
	}
	// A dynamically linked binary is flagged.
	if static, err := envbuild.IsStatic("/usr/bin/cpio"); err != nil || static {
		t.Errorf("IsStatic(/usr/bin/cpio) = %v, %v; want false", static, err)
	}
	if static, err := envbuild.IsStatic(buildAgent(t)); err != nil || !static {
		t.Errorf("IsStatic(agent) = %v, %v; want true", static, err)
	}
}

// TestBoot boots the environment under QEMU (TCG) with the test agent as
// /init: two NICs (e1000, virtio-net) on restricted slirp networks, a
// virtio disk and an AHCI disk. The agent must get slirp's lease, the
// drivers must come from modalias matching, and the missing
// updateDrivers.tgz (the server answers 404 through slirp's guestfwd) must
// be tolerated.
func TestBoot(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a VM")
	}
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Fatal("qemu-system-x86_64 not installed: apt-get install qemu-system-x86")
	}
	res := buildEnv(t)
	dir := t.TempDir()

	// The "server": a loopback HTTP server with no updateDrivers.tgz,
	// reached by the guest at 10.0.2.100:8080 through guestfwd.
	var mu sync.Mutex
	var requests []string
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		requests = append(requests, r.Method+" "+r.URL.Path)
		mu.Unlock()
		http.NotFound(w, r)
	}), ReadHeaderTimeout: 3 * time.Minute} // guestfwd connects at QEMU start; the request comes ~20 s later
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	for _, d := range []string{"vdisk.img", "sdisk.img"} {
		if err := os.WriteFile(filepath.Join(dir, d), make([]byte, 8<<20), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	serial := filepath.Join(dir, "serial.log")
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	args := []string{
		"-accel", "tcg", "-m", "512", "-nodefaults", "-display", "none", "-no-reboot",
		"-kernel", res.Kernel, "-initrd", res.Initrd,
		"-append", "console=ttyS0 panic=-1 preboot.server=http://10.0.2.100:8080 preboot.token=tok123 preboot.job=7",
		"-serial", "file:" + serial, "-monitor", "none",
		"-netdev", "user,id=n0,restrict=on,guestfwd=tcp:10.0.2.100:8080-tcp:" + ln.Addr().String(),
		"-device", "e1000,netdev=n0,romfile=",
		"-netdev", "user,id=n1,restrict=on",
		"-device", "virtio-net-pci,netdev=n1,romfile=",
		"-drive", "if=none,id=d0,format=raw,file=" + filepath.Join(dir, "vdisk.img"),
		"-device", "virtio-blk-pci,drive=d0",
		"-device", "ahci,id=ahci0",
		"-drive", "if=none,id=d1,format=raw,file=" + filepath.Join(dir, "sdisk.img"),
		"-device", "ide-hd,drive=d1,bus=ahci0.0",
		// Entropy: TCG's default CPU has no RDRAND; without a hardware RNG
		// getrandom(2) (DHCP transaction ids) blocks for minutes.
		"-device", "virtio-rng-pci",
	}
	cmd := exec.CommandContext(ctx, qemu, args...)
	cmd.WaitDelay = 5 * time.Second
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The VM powers itself off when the agent is done; the context kills
	// QEMU (by PID) at the deadline.
	waitErr := cmd.Wait()
	log, _ := os.ReadFile(serial)
	t.Logf("QEMU ran %s (exit: %v)", time.Since(start).Round(time.Second), waitErr)
	if os.Getenv("PREBOOT_ENV_VERBOSE") != "" || !bytes.Contains(log, []byte("PREBOOT-ENV-OK")) {
		t.Logf("serial console:\n%s\nqemu stderr:\n%s", log, stderr.String())
	}
	s := string(log)
	m := regexp.MustCompile(`PREBOOT-ENV-OK (\S+)`).FindStringSubmatch(s)
	if m == nil {
		t.Fatal("no PREBOOT-ENV-OK marker on the serial console")
	}
	if m[1] != "10.0.2.15" {
		t.Errorf("leased address %s, want slirp's 10.0.2.15", m[1])
	}
	mods := regexp.MustCompile(`PREBOOT-ENV-MODULES (\S*)`).FindStringSubmatch(s)
	if mods == nil {
		t.Fatal("no module list")
	}
	loaded := map[string]bool{}
	for _, n := range strings.Split(mods[1], ",") {
		loaded[n] = true
	}
	for _, want := range []string{"e1000", "virtio_net", "virtio_pci", "virtio_blk", "ahci", "ata_piix", "sd_mod", "virtio_rng",
		"loop", "dm_mod", "xfs", "btrfs"} {
		if !loaded[want] {
			t.Errorf("module %s not loaded (loaded: %s)", want, mods[1])
		}
	}
	if blk := regexp.MustCompile(`PREBOOT-ENV-BLOCK (\S*)`).FindStringSubmatch(s); blk == nil ||
		!strings.Contains(blk[1], "vda") || !strings.Contains(blk[1], "sda") {
		t.Errorf("block devices: %v, want vda and sda", blk)
	}
	if !strings.Contains(s, "server=http://10.0.2.100:8080 token=tok123 job=7") {
		t.Error("kernel command line parameters did not reach the agent")
	}
	if !strings.Contains(s, "no updateDrivers.tgz") {
		t.Error(`missing updateDrivers.tgz not reported ("no updateDrivers.tgz")`)
	}
	mu.Lock()
	got := strings.Join(requests, "|")
	mu.Unlock()
	if !strings.Contains(got, "GET /files/boot/updateDrivers.tgz") {
		t.Errorf("server saw %q, want the updateDrivers.tgz fetch", got)
	}
	// The agent's script runner works in the environment: busybox sh,
	// the PATH it sets for pid 1's children, the basic tools.
	for _, want := range []string{"PREBOOT-ENV-SCRIPT shell=/tmp/preboot-script-", "path=/sbin:/bin:/usr/sbin:/usr/bin",
		"PREBOOT-ENV-SCRIPT sed-works", "PREBOOT-ENV-SCRIPT dd-bytes=3072", "PREBOOT-ENV-SCRIPT-RESULT <nil>"} {
		if !strings.Contains(s, want) {
			t.Errorf("serial console lacks %q", want)
		}
	}
	// Imaging: device-mapper, /tmp at 75 % of RAM, Debian's tools run.
	for _, want := range []string{"PREBOOT-ENV-DM control", "PREBOOT-ENV-TOOL resize2fs: resize2fs 1.",
		"PREBOOT-ENV-TOOL ntfsresize: ntfsresize v", "PREBOOT-ENV-TOOL fatresize: fatresize 1."} {
		if !strings.Contains(s, want) {
			t.Errorf("serial console lacks %q", want)
		}
	}
	if m := regexp.MustCompile(`PREBOOT-ENV-TMP permille=(\d+)`).FindStringSubmatch(s); m == nil || m[1] < "740" || m[1] > "760" || len(m[1]) != 3 {
		t.Errorf("/tmp size: %v, want 750 permille of RAM", m)
	}
	if strings.Contains(s, "PREBOOT-ENV-SCRIPT missing=") {
		t.Error("a basic tool is missing from the environment")
	}
	if strings.Contains(s, "PREBOOT-ENV-FATAL") || strings.Contains(s, "Kernel panic") {
		t.Error("fatal error on the console")
	}
	if !strings.Contains(s, "poweroff") {
		t.Error("the environment did not power off after the handoff")
	}
	if ctx.Err() != nil {
		t.Error("QEMU hit the deadline and was killed")
	}
}
