package cli_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/preboot/preboot/api"
	"github.com/preboot/preboot/config"
	"github.com/preboot/preboot/disk"
	"github.com/preboot/preboot/image"
	"github.com/preboot/preboot/jobs"
	"github.com/preboot/preboot/policy"
	"github.com/preboot/preboot/server"
	"github.com/preboot/preboot/store"
)

// The admin CLI is tested through the built binary against the real HTTP
// side of Preboot (server.Handler: API, boot policy, images) on loopback
// and on an admin socket (server.NewAdminSocket, as `preboot serve` runs
// it: the CLI's way in on the server host), over a real SQLite store.

var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "preboot-cli-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = filepath.Join(dir, "preboot")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/preboot").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// testServer is Preboot's HTTP side over one store.
type testServer struct {
	url  string
	sock string // the admin socket (the test runs as root or as the server's user: an admin there)
	st   store.Store
	repo *image.Repo
	js   *jobs.Service
	cfg  config.Config
}

func newServer(t *testing.T) *testServer {
	t.Helper()
	dir := t.TempDir()
	cfg := config.Default()
	cfg.DataDir = dir
	cfg.Boot.CopyDebianFiles = false
	// Wake-on-LAN packets of devices nobody knows where to find stay on
	// loopback: tests never send onto the machine's own networks.
	cfg.Wake.Interfaces = []string{"lo"}
	if err := cfg.Finish(); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(cfg.TFTP.Root, 0o755); err != nil {
		t.Fatal(err)
	}
	db, err := server.OpenStore(t.Context(), config.Store{Driver: "sqlite", Path: filepath.Join(dir, "preboot.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	repo, err := image.OpenRepo(cfg.Imaging.Repo, image.RepoOptions{GCGrace: -1})
	if err != nil {
		t.Fatal(err)
	}
	s := &testServer{repo: repo, cfg: cfg}
	s.url = s.serve(t, db, false)
	return s
}

// serve starts one more HTTP front end over the store (trustLoopback:
// the unsafe http.trust_loopback) and returns its URL. The first call
// sets s.st and s.js and starts the admin socket.
func (s *testServer) serve(t *testing.T, db store.Store, trustLoopback bool) string {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	events := &api.Notifier{}
	st := api.NotifyingStore{Store: db, N: events}
	js := &jobs.Service{Store: st, Logger: log}
	if s.st == nil {
		s.st, s.js = st, js
	}
	pol := &policy.Engine{Store: st, Boot: s.cfg.Boot, DefaultSettings: policy.SettingsFromConfig(s.cfg.Menu), Logger: log,
		TFTPRoot: s.cfg.TFTP.Root, HTTPPort: "8080", Jobs: js, Imaging: s.cfg.Imaging}
	cfg := s.cfg
	cfg.HTTP.TrustLoopback = trustLoopback
	h := server.Handler(st, pol, js, s.repo, cfg, prometheus.NewRegistry(), events, log)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	if s.sock == "" {
		s.sock = filepath.Join(s.cfg.DataDir, "admin.sock")
		hs, ln, err := server.NewAdminSocket(s.sock, h, log)
		if err != nil {
			t.Fatal(err)
		}
		go hs.Serve(ln)
		t.Cleanup(func() { hs.Close() })
	}
	return srv.URL
}

// adminToken creates an admin token in the store (for clients on TCP).
func (s *testServer) adminToken(t *testing.T, name string) string {
	t.Helper()
	secret, hash, err := api.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.st.CreateToken(t.Context(), store.Token{Name: name, Hash: hash, Prefix: secret[:10]}); err != nil {
		t.Fatal(err)
	}
	return secret
}

// addImage publishes a small image NAME in the repository.
func (s *testServer) addImage(t *testing.T, name string) {
	t.Helper()
	const size = 4 << 20
	b := make([]byte, size)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 1 << 20; i < 2<<20; i++ {
		b[i] = byte(rng.Uint32())
	}
	parts := []image.Area{{Index: 1, Start: 1 << 20, Size: 3 << 20, FSType: "ext4", Used: []disk.Extent{{Offset: 0, Length: 1 << 20}}}}
	m, err := image.Capture(t.Context(), bytes.NewReader(b), image.Layout{DiskSize: size, Partitions: parts, Regions: image.Gaps(size, parts)},
		s.repo, image.CaptureOptions{Name: name, ChunkSize: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.repo.Publish(t.Context(), m); err != nil {
		t.Fatal(err)
	}
}

// boot is what iPXE asks at a network boot; it returns the script.
func (s *testServer) boot(t *testing.T, query string) string {
	t.Helper()
	resp, err := http.Get(s.url + "/boot.ipxe?" + query)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("boot %s: %s\n%s", query, resp.Status, b)
	}
	return string(b)
}

// cli runs the binary with a clean environment: no PREBOOT_* variables
// but those given, HOME and the CLI config file in a temporary directory.
type cli struct {
	env   []string
	stdin string
}

func newCLI(t *testing.T, env ...string) *cli {
	home := t.TempDir()
	base := []string{"HOME=" + home, "XDG_CONFIG_HOME=" + filepath.Join(home, ".config"), "PATH=" + os.Getenv("PATH")}
	return &cli{env: append(base, env...)}
}

type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

func (c *cli) run(t *testing.T, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = c.env
	cmd.Stdin = strings.NewReader(c.stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("%v: %v", args, err)
	}
	return result{out.String(), errb.String(), code}
}

// ok runs a command that must succeed and returns its stdout.
func (c *cli) ok(t *testing.T, args ...string) string {
	t.Helper()
	r := c.run(t, args...)
	if r.code != 0 {
		t.Fatalf("preboot %s: %s", strings.Join(args, " "), r)
	}
	return r.stdout
}

// fails runs a command that must fail with want in its error output.
func (c *cli) fails(t *testing.T, want string, args ...string) {
	t.Helper()
	r := c.run(t, args...)
	if r.code == 0 || !strings.Contains(r.stderr, want) {
		t.Fatalf("preboot %s: want a failure saying %q, got %s", strings.Join(args, " "), want, r)
	}
}

// json runs a command with -o json and decodes its output strictly.
func (c *cli) json(t *testing.T, v any, args ...string) {
	t.Helper()
	out := c.ok(t, append(args, "-o", "json")...)
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("preboot %s -o json: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func contains(t *testing.T, out string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Fatalf("want %q in:\n%s", w, out)
		}
	}
}

// Local mirrors of the API's composite answers, decoded strictly: a field
// the contract does not have fails the test.
type decisionJSON struct {
	Action     string            `json:"action"`
	Bundle     *store.Bundle     `json:"bundle"`
	Assignment *store.Assignment `json:"assignment"`
	Source     string            `json:"source"`
	Reason     string            `json:"reason"`
	Menu       store.Menu        `json:"menu"`
	Register   bool              `json:"register"`
	JoinGroup  string            `json:"join_group"`
	Groups     []string          `json:"groups"`
}

type deviceDetailJSON struct {
	store.Device
	Groups     []store.Group     `json:"groups"`
	Assignment *store.Assignment `json:"assignment"`
	Decision   *decisionJSON     `json:"decision"`
	Events     []store.Event     `json:"events"`
	Jobs       []store.Job       `json:"jobs"`
}

const (
	mac1 = "52:54:00:00:00:01"
	mac2 = "52:54:00:00:00:02"
	mac3 = "52:54:00:00:00:03"
)

func TestDevices(t *testing.T) {
	s := newServer(t)
	c := newCLI(t, "PREBOOT_SOCKET="+s.sock)

	contains(t, c.ok(t, "device", "list"), "MAC", "NAME", "LAST SEEN")
	var devs []store.Device
	c.json(t, &devs, "device", "list")
	if devs == nil || len(devs) != 0 {
		t.Fatalf("empty list -o json: %#v", devs)
	}

	contains(t, c.ok(t, "device", "add", "52-54-00-00-00-01", "--name", "pc1", "--asset-tag", "A1", "--notes", "lab"),
		"device "+mac1+" registered as pc1")
	c.fails(t, mac1, "device", "add", mac1) // 409: the MAC is known
	r := c.run(t, "device", "add", mac1)
	if r.code == 0 || strings.Contains(r.stderr, "Usage") {
		t.Fatalf("duplicate add: %s", r)
	}
	c.fails(t, "invalid MAC address", "device", "add", "nope")

	// A network boot makes an unregistered device.
	s.boot(t, "mac=52-54-00-00-00-02&manufacturer=Dell%20Inc.&product=OptiPlex&serial=SN2&platform=pcbios&arch=i386")

	c.json(t, &devs, "device", "list")
	if len(devs) != 2 {
		t.Fatalf("list: %+v", devs)
	}
	out := c.ok(t, "device", "list")
	contains(t, out, mac1, "pc1", mac2, "Dell Inc. OptiPlex", "SN2")
	c.json(t, &devs, "device", "list", "--registered=false")
	if len(devs) != 1 || devs[0].MAC != mac2 || devs[0].Registered {
		t.Fatalf("--registered=false: %+v", devs)
	}
	c.json(t, &devs, "device", "list", "--search", "optiplex")
	if len(devs) != 1 || devs[0].MAC != mac2 {
		t.Fatalf("--search: %+v", devs)
	}
	c.json(t, &devs, "device", "list", "--limit", "1")
	if len(devs) != 1 {
		t.Fatalf("--limit 1: %+v", devs)
	}
	contains(t, c.ok(t, "device", "list", "--limit", "1"), "of 2 devices")

	contains(t, c.ok(t, "device", "edit", mac2, "--name", "pc2", "--registered=true"), "device "+mac2+" updated as pc2 (registered: yes)")
	c.fails(t, "nothing to change", "device", "edit", mac2)

	var d deviceDetailJSON
	c.json(t, &d, "device", "show", mac2)
	if d.Name != "pc2" || d.Serial != "SN2" || !d.Registered || d.Decision == nil || d.Decision.Reason == "" || len(d.Events) == 0 {
		t.Fatalf("show -o json: %+v", d)
	}
	contains(t, c.ok(t, "device", "show", mac2), "Serial:", "SN2", "Next boot:", "Reason:", "Events:")

	var dec decisionJSON
	c.json(t, &dec, "device", "decision", mac1)
	if dec.Action == "" || dec.Source == "" || dec.Reason == "" {
		t.Fatalf("decision: %+v", dec)
	}
	contains(t, c.ok(t, "device", "decision", mac1), "Next boot:", dec.Reason)

	// The device's menu override.
	c.fails(t, "", "device", "menu", mac1) // none yet: 404
	contains(t, c.ok(t, "device", "menu", mac1, "set", "--mode", "always", "--timeout", "7s", "--shell=false"), "device "+mac1+" menu: always, timeout 7s")
	var m store.Menu
	c.json(t, &m, "device", "menu", mac1, "show")
	if m.Mode != "always" || time.Duration(m.Timeout) != 7*time.Second || m.Shell {
		t.Fatalf("device menu: %+v", m)
	}
	c.fails(t, "set action", "device", "menu", mac1, "--mode", "never")
	c.ok(t, "device", "menu", mac1, "clear")
	c.fails(t, "", "device", "menu", mac1)

	contains(t, c.ok(t, "device", "rm", mac1), "removed")
	c.fails(t, "not found", "device", "show", mac1)
}

func TestGroups(t *testing.T) {
	s := newServer(t)
	c := newCLI(t, "PREBOOT_SOCKET="+s.sock)
	c.ok(t, "device", "add", mac1)
	c.ok(t, "device", "add", mac2)

	contains(t, c.ok(t, "group", "add", "lab", "--description", "the lab"), "group lab created")
	var gr store.Group
	c.json(t, &gr, "group", "add", "dell", "--match", `maker = "Dell"`, "--priority", "5")
	if gr.Name != "dell" || gr.Priority != 5 || gr.Match == "" {
		t.Fatalf("group add -o json: %+v", gr)
	}
	c.fails(t, "lab", "group", "add", "lab") // 409
	c.fails(t, "", "group", "add", "bad", "--match", "maker = ")

	out := c.ok(t, "group", "list")
	contains(t, out, "PRIORITY", "lab", "dell", "Dell")
	var gs []store.Group
	c.json(t, &gs, "group", "list")
	if len(gs) != 2 {
		t.Fatalf("group list: %+v", gs)
	}

	contains(t, c.ok(t, "group", "add-member", "lab", mac1, "52:54:00:00:00:02"), mac1+" added to group lab", mac2+" added to group lab")
	c.fails(t, "", "group", "add-member", "lab", mac3) // unknown device: 404
	var members []store.Device
	c.json(t, &members, "group", "members", "lab")
	if len(members) != 2 {
		t.Fatalf("members: %+v", members)
	}
	contains(t, c.ok(t, "group", "member", "rm", "lab", mac2), mac2+" removed from group lab")
	contains(t, c.ok(t, "group", "rm-member", "lab", mac1), "removed")
	c.json(t, &members, "group", "members", "lab")
	if len(members) != 0 {
		t.Fatalf("members after rm: %+v", members)
	}
	c.ok(t, "group", "member", "add", "lab", mac1)

	contains(t, c.ok(t, "group", "edit", "lab", "--name", "lab2", "--priority", "9"), "group lab2 updated (priority 9)")
	contains(t, c.ok(t, "group", "show", "lab2"), "Name:", "lab2", "Static members:", "1")
	var gd struct {
		store.Group
		Assignment *store.Assignment `json:"assignment"`
	}
	c.json(t, &gd, "group", "show", "lab2")
	if gd.Name != "lab2" || gd.Members != 1 || gd.Assignment != nil {
		t.Fatalf("group show -o json: %+v", gd)
	}

	contains(t, c.ok(t, "group", "menu", "lab2", "set", "--mode", "hotkey", "--hotkey", "ctrl-b", "--timeout", "3s"), "group lab2 menu: hotkey ctrl-b")
	var m store.Menu
	c.json(t, &m, "group", "menu", "lab2")
	if m.Mode != "hotkey" || m.Hotkey != "ctrl-b" {
		t.Fatalf("group menu: %+v", m)
	}
	c.fails(t, "", "group", "menu", "lab2", "set", "--mode", "sometimes") // 422
	c.ok(t, "group", "menu", "lab2", "clear")

	contains(t, c.ok(t, "group", "rm", "dell"), "group dell removed")
	c.fails(t, "not found", "group", "show", "dell")
}

func TestBundles(t *testing.T) {
	s := newServer(t)
	s.addImage(t, "base")
	c := newCLI(t, "PREBOOT_SOCKET="+s.sock)

	// A script from stdin.
	c.stdin = "#!/bin/sh\necho hello\nlsblk\n"
	contains(t, c.ok(t, "bundle", "create", "hello", "--kind", "script", "--script-file", "-", "--timeout", "10m", "--description", "says hello"),
		"bundle hello created: script 3-line script, timeout 10m0s")
	c.stdin = ""
	var b store.Bundle
	c.json(t, &b, "bundle", "show", "hello")
	var sp struct {
		Script  string `json:"script"`
		Timeout string `json:"timeout"`
		After   string `json:"after"`
	}
	if err := json.Unmarshal(b.Params, &sp); err != nil || b.Kind != store.KindScript || sp.Script != "#!/bin/sh\necho hello\nlsblk\n" || sp.Timeout != "10m0s" {
		t.Fatalf("script bundle: %+v %s (%v)", b, b.Params, err)
	}

	// Restore: the image must exist (422), partitions, edit keeps the rest.
	c.fails(t, "image", "bundle", "create", "r-missing", "--kind", "image-restore", "--image", "nope")
	c.json(t, &b, "bundle", "create", "r1", "--kind", "image-restore", "--image", "base", "--partitions", "1,2", "--device", "/dev/sda")
	if b.Name != "r1" || b.Version < 1 {
		t.Fatalf("create -o json: %+v", b)
	}
	v1 := b.Version
	contains(t, c.ok(t, "bundle", "edit", "r1", "--after", "poweroff"), "bundle r1 updated", "partitions 1,2 on /dev/sda, then poweroff")
	c.json(t, &b, "bundle", "show", "r1")
	var rp struct {
		Image      string `json:"image"`
		Partitions []int  `json:"partitions"`
		Device     string `json:"device"`
		After      string `json:"after"`
	}
	if err := json.Unmarshal(b.Params, &rp); err != nil || rp.Image != "base" || !slices.Equal(rp.Partitions, []int{1, 2}) ||
		rp.Device != "/dev/sda" || rp.After != "poweroff" || b.Version != v1+1 {
		t.Fatalf("after edit: %+v %s", b, b.Params)
	}
	// --params-file, then a flag over it.
	pf := filepath.Join(t.TempDir(), "p.json")
	if err := os.WriteFile(pf, []byte(`{"kernel":"boot/vmlinuz","initrd":["boot/initrd"],"cmdline":"ks=x"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	contains(t, c.ok(t, "bundle", "create", "inst", "--kind", "os-install", "--params-file", pf, "--cmdline", "inst.ks=http://x/ks.cfg"),
		`kernel boot/vmlinuz initrd boot/initrd "inst.ks=http://x/ks.cfg"`)
	c.ok(t, "bundle", "create", "wipe-all", "--kind", "wipe", "--confirm", "--mode", "discard")
	c.ok(t, "bundle", "create", "inv", "--kind", "inventory")
	c.ok(t, "bundle", "create", "mc", "--kind", "multicast", "--image", "base", "--min-clients", "4", "--max-wait", "10m")

	// Errors: the server's messages, non-zero exit.
	c.fails(t, "hello", "bundle", "create", "hello", "--kind", "inventory") // 409 name taken
	c.fails(t, "confirm", "bundle", "create", "w2", "--kind", "wipe")       // 422
	c.fails(t, "kind", "bundle", "create", "x", "--kind", "teleport")       // unknown kind
	c.fails(t, "--image: a script bundle has no such parameter", "bundle", "create", "x", "--kind", "script", "--image", "base")
	c.fails(t, "--kind: required", "bundle", "create", "x")
	c.fails(t, "not found", "bundle", "show", "nope")

	var bs []store.Bundle
	c.json(t, &bs, "bundle", "list")
	if len(bs) != 6 {
		t.Fatalf("bundle list: %d bundles", len(bs))
	}
	c.json(t, &bs, "bundle", "list", "--kind", "image-restore")
	if len(bs) != 1 || bs[0].Name != "r1" {
		t.Fatalf("--kind: %+v", bs)
	}
	contains(t, c.ok(t, "bundle", "list"), "NAME", "KIND", "hello", "3-line script", "r1", "image base", "mc", "start at 4 clients")
	contains(t, c.ok(t, "bundle", "show", "hello"), "Kind:", "script", "3 lines")

	// Assigned bundles cannot go; others can.
	c.ok(t, "device", "add", mac1)
	c.ok(t, "assign", "inv", "--device", mac1)
	c.fails(t, "", "bundle", "rm", "inv") // 409
	contains(t, c.ok(t, "bundle", "rm", "hello"), "bundle hello removed")
	contains(t, c.ok(t, "bundle", "edit", "inst", "--name", "install"), "bundle install updated")
}

func TestAssignments(t *testing.T) {
	s := newServer(t)
	c := newCLI(t, "PREBOOT_SOCKET="+s.sock)
	c.ok(t, "device", "add", mac1)
	c.ok(t, "group", "add", "lab")
	c.ok(t, "bundle", "create", "inv", "--kind", "inventory")
	c.ok(t, "bundle", "create", "local", "--kind", "local-boot")

	contains(t, c.ok(t, "assign", "inv", "--device", mac1, "--once"), "bundle inv to device "+mac1+" (once)")
	c.fails(t, "", "assign", "local", "--device", mac1) // 409: it has one
	var a store.Assignment
	c.json(t, &a, "assign", "local", "--device", mac1, "--replace", "--force")
	if a.Bundle != "local" || a.MAC != mac1 || !a.Force || a.Once {
		t.Fatalf("assign -o json: %+v", a)
	}
	c.ok(t, "assign", "add", "inv", "--group", "lab")
	// An unknown device is registered by its assignment.
	c.ok(t, "assign", "inv", "--device", mac2)
	c.fails(t, "exactly one of --device", "assign", "inv")
	c.fails(t, "exactly one of --device", "assign", "inv", "--device", mac1, "--group", "lab")
	c.fails(t, "", "assign", "nope", "--device", mac1) // unknown bundle

	var as []store.Assignment
	c.json(t, &as, "assign", "list")
	if len(as) != 3 {
		t.Fatalf("assign list: %+v", as)
	}
	c.json(t, &as, "assign", "list", "--group", "lab")
	if len(as) != 1 || as[0].Group != "lab" {
		t.Fatalf("--group: %+v", as)
	}
	c.json(t, &as, "assign", "list", "--bundle", "inv")
	if len(as) != 2 {
		t.Fatalf("--bundle: %+v", as)
	}
	contains(t, c.ok(t, "assign", "list", "--device", mac1), "ID", "local", "device "+mac1, "always")
	contains(t, c.ok(t, "assign", "rm", strconv.FormatInt(a.ID, 10)), fmt.Sprintf("assignment %d removed", a.ID))
	c.fails(t, "not found", "assign", "rm", strconv.FormatInt(a.ID, 10))
	c.fails(t, "positive number", "assign", "rm", "x")
}

func TestRules(t *testing.T) {
	s := newServer(t)
	c := newCLI(t, "PREBOOT_SOCKET="+s.sock)
	c.ok(t, "bundle", "create", "inv", "--kind", "inventory")
	c.ok(t, "group", "add", "vms")
	s.boot(t, "mac=52:54:00:00:00:02&manufacturer=QEMU&product=Standard%20PC&platform=pcbios")

	contains(t, c.ok(t, "rule", "add", "qemu", "--match", `mac ^= "52:54:00"`, "--bundle", "inv", "--group", "vms"), "rule qemu added at position 1")
	var r store.Rule
	c.json(t, &r, "rule", "add", "dell", "--match", `maker = "Dell"`, "--group", "vms", "--disabled")
	if r.Name != "dell" || r.Enabled || r.Position != 2 {
		t.Fatalf("rule add -o json: %+v", r)
	}
	c.ok(t, "rule", "add", "first", "--match", `model = "x"`, "--bundle", "inv", "--position", "1")
	c.fails(t, "", "rule", "add", "nothing", "--match", `model = "y"`) // 422: neither bundle nor group

	// 422: a syntax error, an expression that never matches, a missing bundle.
	c.fails(t, "", "rule", "add", "bad", "--match", `mac ^=`, "--bundle", "inv")
	c.fails(t, "", "rule", "add", "never", "--match", `ram >= 8GiB and ram < 4GiB`, "--bundle", "inv")
	c.fails(t, "", "rule", "add", "nob", "--match", `maker = "x"`, "--bundle", "nope")
	c.fails(t, "qemu", "rule", "add", "qemu", "--match", `maker = "x"`, "--bundle", "inv") // 409

	var rs []store.Rule
	c.json(t, &rs, "rule", "list")
	if len(rs) != 3 || rs[0].Name != "first" || rs[1].Name != "qemu" || rs[2].Name != "dell" {
		t.Fatalf("rule list order: %+v", rs)
	}
	out := c.ok(t, "rule", "list")
	contains(t, out, "POS", "ENABLED", "first", "qemu", "dell")

	contains(t, c.ok(t, "rule", "edit", "dell", "--position", "1", "--enable"), "rule dell updated, at position 1")
	contains(t, c.ok(t, "rule", "edit", "first", "--disable"), "(disabled)")
	c.json(t, &rs, "rule", "list")
	if rs[0].Name != "dell" || !rs[0].Enabled || rs[1].Name != "first" || rs[1].Enabled || rs[2].Name != "qemu" {
		t.Fatalf("after edit: %+v", rs)
	}
	c.fails(t, "", "rule", "edit", "dell", "--match", "(((")
	c.fails(t, "--enable and --disable", "rule", "edit", "dell", "--enable", "--disable")
	contains(t, c.ok(t, "rule", "show", "qemu"), "Match:", `mac ^= "52:54:00"`, "Bundle:", "inv")

	contains(t, c.ok(t, "rule", "test", "--device", mac2), "rule qemu matches", "Facts:")
	var rt struct {
		Rule    string         `json:"rule"`
		Matched bool           `json:"matched"`
		Facts   map[string]any `json:"facts"`
	}
	c.json(t, &rt, "rule", "test", "--device", mac2)
	if rt.Rule != "qemu" || !rt.Matched || len(rt.Facts) == 0 {
		t.Fatalf("rule test -o json: %+v", rt)
	}
	contains(t, c.ok(t, "rule", "test", "--device", mac2, "--match", `maker = "Dell"`), "does not match")
	contains(t, c.ok(t, "rule", "test", "--device", mac2, "--match", `maker = "qemu"`), "the expression matches")

	// The decision follows the rule.
	var dec decisionJSON
	c.json(t, &dec, "device", "decision", mac2)
	if dec.Source != "rule:qemu" || dec.Bundle == nil || dec.Bundle.Name != "inv" {
		t.Fatalf("decision by rule: %+v", dec)
	}
	c.fails(t, "", "group", "rm", "vms") // 409: a rule adds devices to it
	contains(t, c.ok(t, "rule", "rm", "qemu"), "rule qemu removed")
	c.fails(t, "not found", "rule", "show", "qemu")
}

func TestQuickTasks(t *testing.T) {
	s := newServer(t)
	s.addImage(t, "lab-base")
	c := newCLI(t, "PREBOOT_SOCKET="+s.sock)
	c.ok(t, "menu", "set", "--mode", "never")

	// Capture: makes capture-<image>, assigns it once and forced.
	contains(t, c.ok(t, "device", "capture", mac1, "--image", "lab-base", "--compression", "5"),
		mac1+": next network boot runs image-capture of image lab-base, then reboot (bundle capture-lab-base created, assignment")
	var d deviceDetailJSON
	c.json(t, &d, "device", "show", mac1)
	if d.Assignment == nil || d.Assignment.Bundle != "capture-lab-base" || !d.Assignment.Once || !d.Assignment.Force {
		t.Fatalf("after capture: %+v", d.Assignment)
	}
	if d.Decision == nil || d.Decision.Action != "bundle" || d.Decision.Source != "device" {
		t.Fatalf("decision after capture: %+v", d.Decision)
	}
	// Same parameters: the bundle stays; others: it is updated.
	contains(t, c.ok(t, "device", "capture", mac1, "--image", "lab-base", "--compression", "5"), "bundle capture-lab-base unchanged")
	contains(t, c.ok(t, "device", "capture", mac1, "--image", "lab-base", "--compression", "9", "--after", "poweroff"),
		"then poweroff (bundle capture-lab-base updated")
	var b store.Bundle
	c.json(t, &b, "bundle", "show", "capture-lab-base")
	if !strings.Contains(string(b.Params), `"compression":9`) && !strings.Contains(string(b.Params), `"compression": 9`) {
		t.Fatalf("capture bundle params: %s", b.Params)
	}

	// Restore replaces the capture assignment; -o json is the assignment.
	var a store.Assignment
	c.json(t, &a, "device", "restore", mac1, "--image", "lab-base", "--disk", "/dev/vda")
	if a.Bundle != "restore-lab-base" || a.MAC != mac1 || !a.Once || !a.Force {
		t.Fatalf("restore -o json: %+v", a)
	}
	c.fails(t, "image", "device", "restore", mac1, "--image", "missing") // 422: no such image
	c.fails(t, `required flag(s) "image"`, "device", "capture", mac1)

	// Boot: os-install bundle boot-<mac>.
	contains(t, c.ok(t, "device", "boot", "52-54-00-00-00-01", "--kernel", "boot/kernel", "--initrd", "boot/initrd", "--cmdline", "console=ttyS0", "--once"),
		mac1+": next network boot loads boot/kernel via ipxe (once) (bundle boot-525400000001 created")
	c.fails(t, "inside the TFTP root", "device", "boot", mac1, "--kernel", "../../etc/shadow")
	c.fails(t, `loader "grub"`, "device", "boot", mac1, "--kernel", "k", "--loader", "grub")
	var as []store.Assignment
	c.json(t, &as, "assign", "list", "--device", mac1)
	if len(as) != 1 || as[0].Bundle != "boot-525400000001" {
		t.Fatalf("assignments after boot: %+v", as)
	}
	// The policy hands it out at the next boot.
	if script := s.boot(t, "mac="+mac1+"&platform=pcbios"); !strings.Contains(script, "boot/kernel") {
		t.Fatalf("boot script after device boot:\n%s", script)
	}

	c.ok(t, "device", "boot", mac1, "--kernel", "boot/kernel")
	contains(t, c.ok(t, "device", "clear", mac1), "cleared", "next boot:")
	c.json(t, &as, "assign", "list", "--device", mac1)
	if len(as) != 0 {
		t.Fatalf("after clear: %+v", as)
	}
	contains(t, c.ok(t, "device", "clear", mac1), "no assignment")
}

func TestJobsAndEvents(t *testing.T) {
	s := newServer(t)
	c := newCLI(t, "PREBOOT_SOCKET="+s.sock)
	c.ok(t, "device", "add", mac1)
	c.ok(t, "bundle", "create", "inv", "--kind", "inventory")
	ctx := t.Context()
	b, err := s.st.Bundle(ctx, "inv")
	if err != nil {
		t.Fatal(err)
	}
	// A job as the policy starts it, reporting as the agent does.
	j, _, err := s.js.Start(ctx, jobs.StartRequest{MAC: mac1, Bundle: b, Why: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.js.Report(ctx, j.ID, jobs.Progress{State: store.JobRunning, Phase: "scan", BytesDone: 1 << 30, BytesTotal: 4 << 30, Rate: 50 << 20}); err != nil {
		t.Fatal(err)
	}
	if err := s.js.Log(ctx, j.ID, []string{"found /dev/vda", "reading SMBIOS"}); err != nil {
		t.Fatal(err)
	}
	id := strconv.FormatInt(j.ID, 10)

	out := c.ok(t, "job", "list")
	contains(t, out, "ID", "STATE", id, mac1, "inv", "running", "25% of 4.0 GiB", "50.0 MiB/s")
	var js []store.Job
	c.json(t, &js, "job", "list", "--device", mac1, "--open")
	if len(js) != 1 || js[0].ID != j.ID {
		t.Fatalf("job list --open: %+v", js)
	}
	c.json(t, &js, "job", "list", "--state", "succeeded")
	if len(js) != 0 {
		t.Fatalf("--state succeeded: %+v", js)
	}
	contains(t, c.ok(t, "job", "show", id), "State:", "running (scan)", "[#######", "25%", "1.0 GiB of 4.0 GiB", "Log:", "found /dev/vda", "reading SMBIOS")
	var jd struct {
		store.Job
		Log []store.JobLine `json:"log"`
	}
	c.json(t, &jd, "job", "show", id)
	if jd.ID != j.ID || len(jd.Log) != 2 {
		t.Fatalf("job show -o json: %+v", jd)
	}
	contains(t, c.ok(t, "job", "log", id), "found /dev/vda\n", "reading SMBIOS\n")
	var lines []store.JobLine
	c.json(t, &lines, "job", "log", id, "--limit", "1")
	if len(lines) != 1 || lines[0].Line != "reading SMBIOS" {
		t.Fatalf("job log --limit 1: %+v", lines)
	}

	// log --follow prints new lines until the job ends; a cancelled job
	// exits non-zero.
	follow := startCLI(t, c, "job", "log", id, "--follow", "--interval", "100ms")
	follow.waitFor(t, "reading SMBIOS")
	if err := s.js.Log(ctx, j.ID, []string{"posting the report"}); err != nil {
		t.Fatal(err)
	}
	follow.waitFor(t, "posting the report")
	contains(t, c.ok(t, "job", "cancel", id), "job "+id+" cancelled")
	r := follow.wait(t)
	if r.code == 0 || !strings.Contains(r.stderr, "cancelled") || strings.Count(r.stdout, "found /dev/vda") != 1 {
		t.Fatalf("job log --follow: %s", r)
	}
	c.fails(t, "", "job", "cancel", id) // 409: already finished
	c.fails(t, "not found", "job", "show", "999")

	// Events: admin actions and the job's transitions.
	var evs []store.Event
	c.json(t, &evs, "event", "list", "--device", mac1, "--kind", "admin")
	if len(evs) == 0 {
		t.Fatal("no admin events")
	}
	for _, e := range evs {
		if e.MAC != mac1 || e.Kind != "admin" {
			t.Fatalf("filtered events: %+v", e)
		}
	}
	c.json(t, &evs, "event", "list", "--job", id)
	if len(evs) == 0 {
		t.Fatal("no job events")
	}
	contains(t, c.ok(t, "event", "list", "--job", id), "TIME", "KIND", "job")
	c.json(t, &evs, "event", "list", "--since", "1h", "--limit", "2")
	if len(evs) != 2 {
		t.Fatalf("--since 1h --limit 2: %+v", evs)
	}
	c.json(t, &evs, "event", "list", "--until", "2000-01-01 00:00")
	if len(evs) != 0 {
		t.Fatalf("--until 2000: %+v", evs)
	}
	c.fails(t, "--since", "event", "list", "--since", "yesterday-ish")
}

// running is a CLI process in the background.
type running struct {
	cmd      *exec.Cmd
	mu       sync.Mutex
	out, err bytes.Buffer
	done     chan struct{}
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func startCLI(t *testing.T, c *cli, args ...string) *running {
	t.Helper()
	r := &running{done: make(chan struct{})}
	r.cmd = exec.Command(bin, args...)
	r.cmd.Env = c.env
	r.cmd.Stdout = lockedWriter{&r.mu, &r.out}
	r.cmd.Stderr = lockedWriter{&r.mu, &r.err}
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = r.cmd.Wait(); close(r.done) }()
	t.Cleanup(func() {
		select {
		case <-r.done:
		default:
			_ = r.cmd.Process.Kill()
			<-r.done
		}
	})
	return r
}

func (r *running) stdout() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.out.String()
}

// waitFor waits (at most 30 s) until the output has s.
func (r *running) waitFor(t *testing.T, s string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(r.stdout(), s) {
		select {
		case <-r.done:
			if strings.Contains(r.stdout(), s) {
				return
			}
			t.Fatalf("exited before printing %q: %s", s, r.result())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q after 30s: %s", s, r.result())
		}
	}
}

// wait waits (at most 30 s) for the process to exit.
func (r *running) wait(t *testing.T) result {
	t.Helper()
	select {
	case <-r.done:
	case <-time.After(30 * time.Second):
		_ = r.cmd.Process.Kill()
		<-r.done
		t.Fatalf("did not exit: %s", r.result())
	}
	return r.result()
}

func (r *running) result() result {
	r.mu.Lock()
	defer r.mu.Unlock()
	code := -1
	if r.cmd.ProcessState != nil {
		code = r.cmd.ProcessState.ExitCode()
	}
	return result{r.out.String(), r.err.String(), code}
}

// dropProxy forwards to the server; it ends the first event-stream
// connection right after its first event, and records each stream
// request's Last-Event-ID.
type dropProxy struct {
	target      string
	token       string // sent to the target (the CLI talks to the proxy without one)
	mu          sync.Mutex
	streams     int
	lastEventID []string
}

func (p *dropProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	req, err := http.NewRequestWithContext(r.Context(), r.Method, p.target+r.URL.RequestURI(), r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	req.Header = r.Header.Clone()
	req.Header.Set("Authorization", "Bearer "+p.token)
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	if r.URL.Path != "/api/v1/events/stream" {
		_, _ = io.Copy(w, resp.Body)
		return
	}
	p.mu.Lock()
	p.streams++
	first := p.streams == 1
	p.lastEventID = append(p.lastEventID, r.Header.Get("Last-Event-ID"))
	p.mu.Unlock()
	f := w.(http.Flusher)
	sc := bufio.NewScanner(resp.Body)
	sawData := false
	for sc.Scan() {
		line := sc.Text()
		if _, err := io.WriteString(w, line+"\n"); err != nil {
			return
		}
		f.Flush()
		if strings.HasPrefix(line, "data:") {
			sawData = true
		}
		if line == "" && sawData && first {
			return // drop the connection after the first event
		}
	}
}

func TestEventStream(t *testing.T) { testEventStream(t, newServer(t)) }

func testEventStream(t *testing.T, s *testServer) {
	p := &dropProxy{target: s.url, token: s.adminToken(t, "stream")}
	proxy := httptest.NewServer(p)
	t.Cleanup(proxy.Close)
	c := newCLI(t, "PREBOOT_SOCKET="+s.sock)
	c.ok(t, "device", "add", mac3)
	var evs []store.Event
	c.json(t, &evs, "event", "list", "--limit", "1")
	if len(evs) != 1 {
		t.Fatalf("events: %+v", evs)
	}

	// watch from after the last event: three admin events, one line each,
	// across a dropped connection.
	w := startCLI(t, c, "event", "watch", "--server", proxy.URL, "--kind", "admin", "--after", strconv.FormatInt(evs[0].ID, 10), "--count", "3")
	for _, m := range []string{mac1, mac2, "52:54:00:00:00:04"} {
		c.ok(t, "device", "add", m)
	}
	r := w.wait(t)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if r.code != 0 || len(lines) != 3 || !strings.Contains(lines[0], mac1) || !strings.Contains(lines[1], mac2) ||
		!strings.Contains(lines[2], "52:54:00:00:00:04") || !strings.Contains(lines[0], "admin") {
		t.Fatalf("event watch: %s", r)
	}
	p.mu.Lock()
	ids := slices.Clone(p.lastEventID)
	p.mu.Unlock()
	if len(ids) < 2 || ids[1] == "" || ids[1] == strconv.FormatInt(evs[0].ID, 10) {
		t.Fatalf("reconnection Last-Event-ID: %q", ids)
	}
	contains(t, r.stderr, "reconnecting")

	// list --follow: the listed events, then live ones, as JSON lines.
	var before []store.Event
	c.json(t, &before, "event", "list", "--device", mac3)
	f := startCLI(t, c, "event", "list", "--device", mac3, "--follow", "--count", strconv.Itoa(len(before)+1), "-o", "json")
	c.ok(t, "device", "edit", mac3, "--name", "followed")
	r = f.wait(t)
	lines = strings.Split(strings.TrimSpace(r.stdout), "\n")
	if r.code != 0 || len(lines) != len(before)+1 {
		t.Fatalf("event list --follow: %s", r)
	}
	var last store.Event
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &last); err != nil || last.MAC != mac3 || last.ID <= before[0].ID {
		t.Fatalf("last followed event %q: %+v %v", lines[len(lines)-1], last, err)
	}

	// Bounded retries: a server that is gone.
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	r = c.run(t, "event", "watch", "--server", dead.URL, "--retries", "1")
	if r.code == 0 || !strings.Contains(r.stderr, "giving up after 1") {
		t.Fatalf("watch on a dead server: %s", r)
	}
}

func TestMenuSettingsTokens(t *testing.T) {
	s := newServer(t)
	c := newCLI(t, "PREBOOT_SOCKET="+s.sock)
	c.ok(t, "bundle", "create", "inv", "--kind", "inventory")

	contains(t, c.ok(t, "menu", "show"), "Mode:", "Shell:")
	contains(t, c.ok(t, "menu", "set", "--mode", "always", "--timeout", "9s", "--bundle", "inv", "--title", "Lab"), "default menu: always, timeout 9s, bundles inv")
	var m store.Menu
	c.json(t, &m, "menu", "show")
	if m.Mode != "always" || !slices.Equal(m.Bundles, []string{"inv"}) || m.Title != "Lab" {
		t.Fatalf("menu: %+v", m)
	}
	c.fails(t, "", "menu", "set", "--mode", "hotkey", "--hotkey", "f13") // 422
	c.fails(t, "nothing to change", "menu", "set")

	contains(t, c.ok(t, "settings", "show"), "Default menu:", "always", "Unregistered devices:")
	var st store.Settings
	c.json(t, &st, "settings", "set", "--unregistered-action", "bundle", "--unregistered-bundle", "inv", "--naming-prefix", "pc-", "--naming-from", "serial")
	if st.Unregistered.Action != "bundle" || st.Unregistered.Bundle != "inv" || st.Naming.Prefix != "pc-" || st.Naming.From != "serial" || st.Menu.Mode != "always" {
		t.Fatalf("settings set: %+v", st)
	}
	c.fails(t, "", "settings", "set", "--unregistered-action", "bundle", "--unregistered-bundle", "nope")
	file := filepath.Join(t.TempDir(), "s.json")
	if err := os.WriteFile(file, []byte(`{"unregistered":{"action":"local"},"menu":{"mode":"never","timeout":"5s","shell":true}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	contains(t, c.ok(t, "settings", "set", "--file", file), "Unregistered devices:", "local", "Naming:", "pc- + serial")
	c.json(t, &m, "menu", "show")
	if m.Mode != "never" {
		t.Fatalf("menu after settings file: %+v", m)
	}
	if err := os.WriteFile(file, []byte(`{"menu":{"mode":"never","colour":"red"}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	c.fails(t, "colour", "settings", "set", "--file", file) // 400: unknown field

	// Tokens: created once, listed by prefix, removed.
	r := c.run(t, "token", "create", "ci")
	tok := strings.TrimSpace(r.stdout)
	if r.code != 0 || !strings.HasPrefix(tok, "pba_") || !strings.Contains(r.stderr, "not shown again") {
		t.Fatalf("token create: %s", r)
	}
	var nt struct {
		store.Token
		Secret string `json:"token"`
	}
	c.json(t, &nt, "token", "create", "ci2")
	if !strings.HasPrefix(nt.Secret, "pba_") || nt.Name != "ci2" || nt.ID == 0 {
		t.Fatalf("token create -o json: %+v", nt)
	}
	var ts []store.Token
	c.json(t, &ts, "token", "list")
	if len(ts) != 2 || !strings.HasPrefix(tok, ts[0].Prefix) {
		t.Fatalf("token list: %+v", ts)
	}
	contains(t, c.ok(t, "token", "list"), "ci", "ci2", ts[0].Prefix)
	contains(t, c.ok(t, "token", "rm", strconv.FormatInt(nt.ID, 10)), "removed")
	c.fails(t, "", "token", "create", "ci") // 409
	c.fails(t, "not found", "token", "rm", strconv.FormatInt(nt.ID, 10))
}

// Where the server and the token come from: flags, then PREBOOT_SERVER
// and PREBOOT_TOKEN, then the CLI config file (`preboot login`).
func TestConnectionPrecedence(t *testing.T) {
	s := newServer(t)
	strict := s.url // TCP: a token is needed
	admin := newCLI(t, "PREBOOT_SOCKET="+s.sock)
	tok := strings.TrimSpace(admin.ok(t, "token", "create", "ops"))

	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()

	// Nothing: 401 with a hint.
	c := newCLI(t, "PREBOOT_SERVER="+strict)
	c.fails(t, "preboot login", "device", "list")
	// Flags: --token works, with a warning; --token-file.
	if r := c.run(t, "device", "list", "--token", tok); r.code != 0 || !strings.Contains(r.stderr, "process list") {
		t.Fatalf("--token: %s", r)
	}
	tokFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokFile, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := c.run(t, "device", "list", "--token-file", tokFile); r.code != 0 || r.stderr != "" {
		t.Fatalf("--token-file: %s", r)
	}
	// Env.
	c = newCLI(t, "PREBOOT_SERVER="+strict, "PREBOOT_TOKEN="+tok)
	c.ok(t, "device", "list")
	// A flag beats env.
	c.fails(t, "", "device", "list", "--token", "pba_wrong")
	c.fails(t, "cannot reach", "device", "list", "--server", dead.URL)

	// The config file, written by login (which checks the token first).
	cfgFile := filepath.Join(t.TempDir(), "sub", "cli.yaml")
	c = newCLI(t, "PREBOOT_CLI_CONFIG="+cfgFile)
	c.fails(t, "not saved", "login", "--server", strict, "--token", "pba_wrong")
	if _, err := os.Stat(cfgFile); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("login with a bad token wrote the file: %v", err)
	}
	contains(t, c.ok(t, "login", "--server", strict+"/", "--token", tok), "saved server "+strict, cfgFile, "0600")
	fi, err := os.Stat(cfgFile)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("config file mode: %v %v", fi, err)
	}
	b, _ := os.ReadFile(cfgFile)
	contains(t, string(b), "server: "+strict+"\n", "token: "+tok+"\n")
	c.ok(t, "device", "list")
	c.ok(t, "image", "list") // the image commands use the same token
	// Env beats the file, a flag beats both.
	c.env = append(c.env, "PREBOOT_TOKEN=pba_wrong")
	c.fails(t, "", "device", "list")
	c.ok(t, "device", "list", "--token", tok)
	c.env = append(c.env[:len(c.env)-1], "PREBOOT_SERVER="+dead.URL)
	c.fails(t, "cannot reach", "device", "list")
	c.ok(t, "device", "list", "--server", strict)

	// The default file under ~/.config, and the default server (no admin
	// socket at ./var/admin.sock here).
	c = newCLI(t)
	if conn, err := net.Dial("tcp", "127.0.0.1:8443"); err == nil {
		conn.Close() // something listens there: do not talk to it
	} else {
		c.fails(t, "127.0.0.1:8443", "device", "list")
	}
	home := strings.TrimPrefix(c.env[0], "HOME=")
	def := filepath.Join(home, ".config", "preboot", "cli.yaml")
	contains(t, c.ok(t, "login", "--server", s.url, "--token-file", tokFile), def)
	c.ok(t, "device", "list")
	c.fails(t, "want a URL", "device", "list", "--server", "ftp://x")
	c.fails(t, "--output", "device", "list", "-o", "yaml")
	if err := os.WriteFile(def, []byte("server: [\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c.fails(t, "CLI config", "device", "list")
}

func TestServerDown(t *testing.T) {
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	c := newCLI(t)
	c.fails(t, "cannot reach the Preboot server", "device", "list", "--server", dead.URL)
	r := c.run(t, "version")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "preboot ") {
		t.Fatalf("version: %s", r)
	}
}

// The first token can be written straight into the server's database
// (as the server's OS user), without the server.
func TestTokenCreateLocal(t *testing.T) {
	s := newServer(t)
	c := newCLI(t, "PREBOOT_SERVER="+s.url)
	c.fails(t, "preboot token create", "device", "list")
	c.fails(t, "no database", "token", "create", "first", "--local", "--data-dir", t.TempDir())
	tok := strings.TrimSpace(c.ok(t, "token", "create", "first", "--local", "--data-dir", s.cfg.DataDir))
	if !strings.HasPrefix(tok, "pba_") {
		t.Fatalf("token: %q", tok)
	}
	c.ok(t, "device", "list", "--token", tok)
	contains(t, c.ok(t, "token", "list", "--token", tok), "first")
	contains(t, c.ok(t, "event", "list", "--token", tok), "created (id 1) on the server host")
}
