package browsertest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/target"
	"github.com/chromedp/chromedp"

	"github.com/preboot/preboot/agent"
	"github.com/preboot/preboot/jobs"
	"github.com/preboot/preboot/store"
	"github.com/preboot/preboot/tlspin"
)

// Bounds of every wait: nothing here sleeps blindly, everything polls
// against a deadline.
const (
	waitTimeout   = 20 * time.Second // a page shows what the test waits for
	actionTimeout = 20 * time.Second // one browser action (navigate, type, click)
	pollEvery     = 100 * time.Millisecond
	httpTimeout   = 20 * time.Second
)

const (
	adminUser     = "admin"
	adminPassword = "console browser test 1"
)

var bin string // the preboot binary TestMain builds

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "preboot-browser-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = filepath.Join(dir, "preboot")
	build := exec.Command(goTool(), "build", "-o", bin, "github.com/preboot/preboot/cmd/preboot")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build preboot: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	if root := os.Getenv("GOROOT"); root != "" {
		return filepath.Join(root, "bin", "go")
	}
	return "go"
}

// chromium finds Debian's Chromium: $PREBOOT_CHROMIUM, the program of the
// chromium package (without its shell launcher), else chromium on PATH.
func chromium() (string, error) {
	if p := os.Getenv("PREBOOT_CHROMIUM"); p != "" {
		if fi, err := os.Stat(p); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			return "", fmt.Errorf("PREBOOT_CHROMIUM=%s is not an executable file", p)
		}
		return p, nil
	}
	if fi, err := os.Stat("/usr/lib/chromium/chromium"); err == nil && fi.Mode()&0o111 != 0 {
		return "/usr/lib/chromium/chromium", nil
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p, nil
	}
	return "", errors.New("Debian's chromium is not installed: the web console's browser tests need it " +
		"(`apt-get install chromium`, or `make test`, which installs it; or set PREBOOT_CHROMIUM to a Chromium binary)")
}

// TestConsole is the console as an administrator uses it: sign in (after a
// wrong password), see the machine a network boot registered, create an
// image-restore bundle and assign it from the device's page, watch the job
// the next boot starts move as its agent reports, see it succeed and its
// event arrive in the live tail, sign out.
func TestConsole(t *testing.T) {
	exe, err := chromium()
	if err != nil {
		t.Fatal(err)
	}
	s := startServer(t)
	s.seed(t)
	shots := screenshotDir(t)
	b := startBrowser(t, exe, s.url, s.spki)
	ui := b.first
	step := func(what string) { t.Logf("step: %s", what) }

	const mac = "52:54:00:aa:bb:01"
	machine := url.Values{"mac": {"52-54-00-aa-bb-01"}, "uuid": {"6f1c2a0e-5b7d-4c1e-9a53-0242ac120002"},
		"manufacturer": {"QEMU"}, "product": {"Standard PC (Q35 + ICH9, 2009)"}, "serial": {"QM-0001"},
		"asset": {"LAB-0042"}, "arch": {"i386"}, "platform": {"pcbios"}}

	step("without a session, a page goes to the login page")
	{
		// The server's answer, as any client sees it.
		resp := s.noRedirect(t, "/console/devices")
		if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/console/login?next=%2Fconsole%2Fdevices" {
			t.Fatalf("GET /console/devices without a session: %s, Location %q", resp.Status, resp.Header.Get("Location"))
		}
		// The browser lands on the login form, which comes back afterwards.
		ui.navigate("/console/devices")
		ui.waitFor("the login page", `document.body.dataset.page === "login" && location.pathname === "/console/login"`)
		if next := ui.str(`new URLSearchParams(location.search).get("next")`); next != "/console/devices" {
			ui.fatalf("the login page's next is %q, want /console/devices", next)
		}
		if v := ui.str(`document.querySelector('#login-form input[name="next"]').value`); v != "/console/devices" {
			ui.fatalf("the login form posts next=%q, want /console/devices", v)
		}
		ui.waitFor("the user name field to have the focus", `document.activeElement === document.querySelector("#login-user")`)
		ui.shot(shots, "login")
	}

	step("a wrong password is refused")
	{
		ui.typeIn("#login-user", adminUser)
		ui.typeIn("#login-password", "not the password")
		ui.click("#login-submit")
		ui.waitFor("the login page again, with failed=1", `location.pathname === "/console/login" && new URLSearchParams(location.search).get("failed") === "1"`)
		ui.waitFor("the error message", `(() => { const e = document.querySelector("#login-error"); return !!e && e.offsetParent !== null && e.textContent.includes("Wrong user name or password."); })()`)
		if c := ui.sessionCookie(s.url); c != "" {
			ui.fatalf("a session cookie after a wrong password")
		}
	}

	step("log in")
	{
		ui.typeIn("#login-user", adminUser)
		ui.typeIn("#login-password", adminPassword)
		ui.click("#login-submit")
		ui.waitFor("the devices page (the login's next)", `location.pathname === "/console/devices" && document.body.dataset.page === "devices"`)
		ui.waitFor("the signed-in user in the header", `document.querySelector("#session-user").textContent.trim() === "admin"`)
		if ui.sessionCookie(s.url) == "" {
			ui.fatalf("no session cookie after the login")
		}
		ui.waitFor("the devices the seed booted", `document.querySelectorAll("#devices-body tr.device-row").length === 3`)
	}

	step("a network boot registers a device, the list shows it live")
	{
		ui.markPage()
		if script := s.boot(t, machine); strings.Contains(script, "preboot.token=") {
			t.Fatalf("the first boot started a job:\n%s", script)
		}
		row := `document.querySelector('#devices-body tr.device-row[data-mac="` + mac + `"]')`
		ui.waitFor("the booted device in the list", `!!`+row)
		ui.samePage("the devices list updated itself")
		for _, want := range []string{"QEMU", "Standard PC", "127.0.0.1"} {
			if got := ui.str(row + `.textContent`); !strings.Contains(got, want) {
				ui.fatalf("the device's row %q does not show %q", got, want)
			}
		}
		if n := ui.num(`document.querySelectorAll("#devices-body tr.device-row").length`); n != 4 {
			ui.fatalf("%v devices listed, want 4", n)
		}
		ui.shot(shots, "devices")
	}

	step("create an image-restore bundle on the bundles page")
	{
		ui.navigate("/console/bundles")
		ui.waitFor("the bundles the seed created", `!!document.querySelector("#bundles-body tr#bundle-inventory")`)
		ui.choose("#bundle-kind", store.KindImageRestore)
		ui.typeIn("#bundle-name", "restore-lab")
		ui.typeIn("#bundle-description", "Lab machines: the current lab image, whole disk")
		// An image the repository does not have: the API's error shows
		// next to the image field.
		ui.typeIn("#restore-image", "no-such-image")
		ui.click("#bundle-submit")
		ui.waitFor("the API's error next to the image field",
			`(() => { const e = document.querySelector("#restore-image-error"); return !!e && !e.hidden && e.textContent.includes("does not exist"); })()`)
		if ui.truth(`!!document.querySelector("#bundle-restore-lab")`) {
			ui.fatalf("the refused bundle is listed")
		}
		ui.clear("#restore-image")
		ui.typeIn("#restore-image", "lab-base")
		ui.typeIn("#restore-grow", "3")
		ui.choose("#restore-boot-entry", "disk-first")
		ui.typeIn("#restore-disk-size", ">=100G")
		ui.typeIn("#restore-disk-model", "Samsung*")
		ui.click("#bundle-submit")
		ui.waitFor("the new bundle in the list", `(() => { const r = document.querySelector("#bundles-body tr#bundle-restore-lab"); return !!r && r.dataset.kind === "image-restore"; })()`)
		ui.waitFor("the image field's error to be gone", `document.querySelector("#restore-image-error").hidden`)
		var got struct {
			Kind   string `json:"kind"`
			Params struct {
				Image         string            `json:"image"`
				After         string            `json:"after"`
				GrowPartition int               `json:"grow_partition"`
				BootEntry     string            `json:"boot_entry"`
				Disk          map[string]string `json:"disk"`
			} `json:"params"`
		}
		s.api(t, "GET", "/bundles/restore-lab", nil, &got)
		if got.Kind != store.KindImageRestore || got.Params.Image != "lab-base" || got.Params.After != "reboot" ||
			got.Params.GrowPartition != 3 || got.Params.BootEntry != "disk-first" ||
			got.Params.Disk["size"] != ">=100G" || got.Params.Disk["model"] != "Samsung*" || len(got.Params.Disk) != 2 {
			t.Fatalf("the bundle the page created: %+v", got)
		}
		ui.scrollTop()
		ui.shot(shots, "bundles")
	}

	step("assign the bundle from the device's page")
	{
		ui.navigate("/console/devices/" + mac)
		ui.waitFor("the device's page", `document.body.dataset.page === "device" && document.body.dataset.mac === "`+mac+`"`)
		ui.waitFor("no assignment yet", `!!document.querySelector("#assignment-none")`)
		ui.waitFor("the bundle in the assign form", `!!document.querySelector('#assign-bundle option[value="restore-lab"]')`)
		ui.choose("#assign-bundle", "restore-lab")
		ui.click("#assign-submit")
		ui.waitFor("the assignment on the page", `(() => { const a = document.querySelector("#assignment-current"); return !!a && a.dataset.bundle === "restore-lab" && a.dataset.once === "true"; })()`)
		ui.waitFor("the next boot's decision: the bundle", `(() => { const d = document.querySelector("#device-decision"); return d.dataset.action === "bundle" && d.dataset.bundle === "restore-lab" && d.dataset.source === "device"; })()`)
	}

	// The next boot starts the job; a simulated agent reports.
	var job int64
	var ag *agentClient
	total := int64(6 << 30)
	report := func(pct int64) {
		ag.post(t, "/api/v1/agent/job/progress", jobs.Progress{State: "running", Phase: "restore partition 2 (ntfs)",
			BytesDone: total * pct / 100, BytesTotal: total, Rate: 118 << 20, Message: fmt.Sprintf("%d%% restored", pct)})
	}
	bar := func(page string) string {
		switch page {
		case "device":
			return fmt.Sprintf(`document.querySelector("#device-jobs-body tr#job-%d .progress")`, job)
		case "dashboard":
			return fmt.Sprintf(`document.querySelector("#dash-jobs-body tr#job-%d .progress")`, job)
		}
		return fmt.Sprintf(`document.querySelector("#job-%d .progress")`, job)
	}
	// movesTo waits for a page's progress bar to show pct, in its data and
	// in the width of the bar itself.
	movesTo := func(tb *tab, page string, state string, pct float64) {
		tb.t.Helper()
		p := strconv.FormatFloat(pct, 'f', 1, 64)
		tb.waitFor(fmt.Sprintf("the %s page's progress bar of job %d at %s%% (%s)", page, job, p, state),
			fmt.Sprintf(`(() => { const b = %s; return !!b && b.dataset.state === %q && b.dataset.percent === %q && Math.abs(parseFloat(b.querySelector(".progress-bar").style.width) - %s) < 0.01; })()`,
				bar(page), state, p, p))
	}

	step("the next boot starts the job, the agent reports, the progress bar moves")
	{
		script := s.boot(t, machine)
		ag = s.agentFor(t, script)
		job = ag.job
		ui.waitFor("the job on the device's page", fmt.Sprintf(`!!document.querySelector("#device-jobs-body tr#job-%d")`, job))
		var spec jobs.Spec
		ag.get(t, "/api/v1/agent/job", &spec)
		if spec.ID != job || spec.Kind != store.KindImageRestore || spec.Image != "lab-base@1" || spec.MAC != mac {
			t.Fatalf("the agent's job: %+v", spec)
		}
		ui.waitFor("the job booting", fmt.Sprintf(`%s.dataset.state === "booting"`, bar("device")))
		ag.post(t, "/api/v1/agent/info", deviceInfo(mac))
		ui.waitFor("the hardware the agent reported", `!!document.querySelector("#hardware-kv") && document.querySelector("#hardware-body").textContent.includes("Samsung SSD 870 EVO")`)

		report(10)
		movesTo(ui, "device", "running", 10)
		report(45)
		movesTo(ui, "device", "running", 45)
		ui.waitFor("the rate and the ETA", fmt.Sprintf(`%s.querySelector(".rate").textContent.includes("MiB/s") && %s.querySelector(".eta").textContent.startsWith("ETA")`, bar("device"), bar("device")))
		ui.scrollTop()
		ui.shot(shots, "device")

		// The dashboard's jobs in progress: the same bar, moving.
		ui.navigate("/console/")
		movesTo(ui, "dashboard", "running", 45)
		ui.markPage()
		report(80)
		movesTo(ui, "dashboard", "running", 80)
		ui.samePage("the dashboard's progress bar moved by itself")
		ui.waitFor("the server health", `!!document.querySelector('#service-http[data-up="true"]')`)
		ui.shot(shots, "dashboard")

		// The job's page: the bar and the log, live.
		ui.navigate(fmt.Sprintf("/console/jobs/%d", job))
		movesTo(ui, "job", "running", 80)
		ui.markPage()
		ag.post(t, "/api/v1/agent/job/log", map[string][]string{"lines": {
			"restore lab-base onto /dev/sda (6.00 GiB, 3 partitions)",
			"partition 1 (vfat, 512 MiB): 214 chunks, 189 already on the disk (delta)",
			"partition 2 (ntfs, 5.2 GiB): restoring",
		}})
		report(95)
		movesTo(ui, "job", "running", 95)
		ui.waitFor("the agent's log lines on the job's page", `document.querySelector("#job-log").dataset.lines === "3" && document.querySelector("#job-log").textContent.includes("189 already on the disk")`)
		ui.samePage("the job's page updated itself")
		ui.shot(shots, "job")
	}

	step("the result: the job succeeds, its event arrives in the live tail")
	{
		// The events page is open in a second tab while the job ends.
		events := b.newTab(t, "events")
		events.navigate("/console/events")
		events.waitFor("the events list", `document.querySelectorAll("#events-body tr.event-row").length > 0`)
		events.waitFor("the event stream connected", `document.querySelector("#stream-status").dataset.state === "live"`)
		events.markPage()
		if events.truth(fmt.Sprintf(`[...document.querySelectorAll("#events-body tr.event-row[data-job='%d']")].some(r => r.textContent.includes("succeeded"))`, job)) {
			events.fatalf("the job's success is listed before it happened")
		}
		ag.post(t, "/api/v1/agent/job/result", jobs.Result{OK: true, Image: "lab-base@1"})

		events.waitFor("the job's success in the live tail", fmt.Sprintf(
			`(() => { const r = document.querySelector("#events-body tr.event-row"); return !!r && r.dataset.job === "%d" && r.dataset.kind === "job" && r.textContent.includes("job %d succeeded"); })()`, job, job))
		events.samePage("the live tail added the event")
		ui.waitFor("the job's page: succeeded", fmt.Sprintf(`document.querySelector("#job-state .badge").textContent === "succeeded" && %s.dataset.state === "succeeded"`, bar("job")))
		movesTo(ui, "job", "succeeded", 100)
		ui.samePage("the job's page showed the success by itself")
		events.shot(shots, "events")
		events.close()

		ui.navigate("/console/devices/" + mac)
		movesTo(ui, "device", "succeeded", 100)
		ui.waitFor("the apply-once assignment cleared", `!!document.querySelector("#assignment-none")`)
		ui.waitFor("the next boot: no bundle", `document.querySelector("#device-decision").dataset.action !== "bundle"`)
	}

	step("the other pages")
	{
		pages := []struct{ path, name, ready string }{
			{"/console/jobs", "jobs", fmt.Sprintf(`document.querySelectorAll("#jobs-body tr.job-row").length === 3 && !!document.querySelector('#jobs-body tr#job-%d[data-state="succeeded"]')`, job)},
			// Without multicast configured, the sessions page says so.
			{"/console/sessions", "sessions", `document.body.dataset.sessions === "unavailable" && document.querySelector("#sessions-unavailable").textContent.includes("multicast is not configured")`},
			{"/console/rules", "rules", `document.querySelectorAll("#rules-list > li").length === 3`},
			{"/console/groups", "groups", `!!document.querySelector("#groups-body") && document.querySelector("#groups-body").textContent.includes("lab-a")`},
			{"/console/menu", "menu", `document.querySelector("#menu-preview").textContent.includes("inventory")`},
			{"/console/images", "images", `document.querySelector("#images-body").textContent.includes("lab-base-v2")`},
			{"/console/settings", "settings", `!document.querySelector("#server-config-body").textContent.includes("Loading")`},
		}
		for _, p := range pages {
			ui.navigate(p.path)
			ui.waitFor("the "+p.name+" page's content", p.ready)
			ui.shot(shots, p.name)
		}
	}

	step("log out")
	{
		ui.navigate("/console/")
		ui.click("#logout")
		ui.waitFor("the login page", `location.pathname === "/console/login" && document.body.dataset.page === "login"`)
		if ui.sessionCookie(s.url) != "" {
			ui.fatalf("the session cookie is still there after the logout")
		}
		ui.navigate("/console/devices")
		ui.waitFor("the login page for a page of the console", `location.pathname === "/console/login" && new URLSearchParams(location.search).get("next") === "/console/devices"`)
	}

	if ex := b.exceptions(); len(ex) > 0 {
		t.Errorf("the pages threw %d uncaught JavaScript exceptions:\n%s", len(ex), strings.Join(ex, "\n"))
	}
}

// deviceInfo is what an agent reports about the scenario's machine.
func deviceInfo(mac string) agent.Info {
	return agent.Info{
		Hostname: "lab-0042",
		Hardware: agent.Hardware{Vendor: "QEMU", Product: "Standard PC (Q35 + ICH9, 2009)", Serial: "QM-0001",
			BIOSVendor: "SeaBIOS", BIOSVersion: "1.16.2-debian-1.16.2-1", Firmware: "bios", CPUs: 4,
			CPUModel: "Intel Core i5-10500 CPU @ 3.10GHz", MemoryBytes: 8 << 30,
			NICs: []agent.NIC{{Name: "enp0s2", MAC: mac, State: "up", Speed: 1000, Driver: "e1000e"}}},
		Disks: []agent.DiskInfo{{Name: "sda", Path: "/dev/sda", Size: 250059350016, Model: "Samsung SSD 870 EVO 250GB",
			Serial: "S6PENL0T901234", Table: "gpt", Partitions: []agent.PartitionInfo{
				{Index: 1, Start: 1 << 20, Size: 512 << 20, Type: "efi", Name: "EFI system partition", FSType: "vfat"},
				{Index: 2, Start: 513 << 20, Size: 232 << 30, Type: "basic-data", Name: "Basic data partition", FSType: "ntfs"}}}},
		ImageSafe: &agent.ImageSafe{DeviceID: "LAB-0042", Hostname: "lab-0042",
			Network: &agent.NetworkSettings{Interface: "enp0s2", MAC: mac, Mode: "dhcp"}, LastImage: "lab-base"},
	}
}

// screenshotDir is where the pages' screenshots go: $PREBOOT_SCREENSHOTS
// (docs/screenshots when they are made for the README), else a temporary
// directory, so that a test run rewrites no file of the tree.
func screenshotDir(t *testing.T) string {
	if d := os.Getenv("PREBOOT_SCREENSHOTS"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.TempDir()
}

// ---- the server --------------------------------------------------------

// server is a `preboot serve` process on loopback with its own data
// directory, and an admin token for the test's own API calls.
type server struct {
	url, dir, token string
	// spki is the base64 SHA-256 of the server's public key: the browser
	// accepts the self-signed certificate by it (a pin, as agents do).
	spki   string
	env    []string
	client *http.Client

	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited

	mu  sync.Mutex
	out strings.Builder
}

// startServer prepares a data directory (two captured images, the first
// console user, an admin token, placeholders of the imaging environment)
// and starts `preboot serve` on loopback: HTTP and TFTP on ports the kernel
// picks, no proxyDHCP, loopback clients not trusted (the console's own
// session is its only way into the API).
func startServer(t *testing.T) *server {
	t.Helper()
	home := t.TempDir()
	s := &server{dir: t.TempDir(), env: []string{"HOME=" + home, "PATH=" + os.Getenv("PATH")},
		client: &http.Client{Timeout: httpTimeout, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}

	// The imaging environment: the boot policy only checks that it is
	// there; no machine boots it here.
	for _, f := range []string{"tftp/boot/kernel", "tftp/boot/initrd"} {
		p := filepath.Join(s.dir, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("placeholder"), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// Two images, captured by the agent from disk-image files; the second
	// is the first with its last MiB changed, so most chunks are shared.
	disk := make([]byte, 12<<20)
	if _, err := rand.Read(disk[:8<<20]); err != nil {
		t.Fatal(err)
	}
	for i, name := range []string{"lab-base", "lab-base-v2"} {
		if i == 1 {
			if _, err := rand.Read(disk[11<<20:]); err != nil {
				t.Fatal(err)
			}
		}
		f := filepath.Join(t.TempDir(), name+".img")
		if err := os.WriteFile(f, disk, 0o644); err != nil {
			t.Fatal(err)
		}
		s.run(t, "", "agent", "capture", "--repo", filepath.Join(s.dir, "images"), "--device", f, "--image", name, "--quiet")
	}

	s.run(t, adminPassword+"\n", "admin", "create", adminUser, "--password-stdin", "--data-dir", s.dir)
	s.token = strings.TrimSpace(s.run(t, "", "token", "create", "browser-test", "--local", "--data-dir", s.dir))
	if !strings.HasPrefix(s.token, "pb") {
		t.Fatalf("token create printed %q", s.token)
	}

	s.cmd = exec.Command(bin, "serve", "--data-dir", s.dir, "--copy-debian-files=false", "--log-format", "json",
		"--http-listen", "127.0.0.1:0", "--tls-listen", "127.0.0.1:0", "--tftp-listen", "127.0.0.1:0", "--proxydhcp=false")
	s.cmd.Env = s.env
	pipe, err := s.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	// Should the test process die without its cleanups (a test timeout
	// panics), the kernel stops the server. Pdeathsig fires when the
	// thread that started the process exits, so a goroutine locked to
	// its thread starts it and stays until the server has exited.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	s.done = make(chan struct{})
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := s.cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		read := make(chan struct{})
		go func() {
			defer close(read)
			sc := bufio.NewScanner(pipe)
			sc.Buffer(make([]byte, 64<<10), 1<<20)
			for sc.Scan() {
				s.mu.Lock()
				s.out.WriteString(sc.Text() + "\n")
				s.mu.Unlock()
			}
			io.Copy(io.Discard, pipe)
		}()
		<-read // Wait closes the pipe: read it to its end first
		s.cmd.Wait()
		close(s.done)
	}()
	if err := <-started; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.stop(t)
		if t.Failed() {
			lines := strings.Split(strings.TrimSpace(s.log()), "\n")
			t.Logf("the end of preboot serve's log:\n%s", strings.Join(lines[max(0, len(lines)-60):], "\n"))
		}
	})
	var fp string
	s.url, fp = s.waitListening(t)
	// Everything but the firmware's files is on HTTPS, with the server's
	// self-signed certificate: the test's client pins it.
	tc, err := tlspin.Config(fp)
	if err != nil {
		t.Fatal(err)
	}
	s.client.Transport = tlspin.Transport(tc)
	pemBytes, err := os.ReadFile(filepath.Join(s.dir, "tls", "cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(pemBytes)
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	s.spki = base64.StdEncoding.EncodeToString(sum[:])

	deadline := time.Now().Add(time.Minute)
	for {
		resp, err := s.client.Get(s.url + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s/healthz did not answer 200 within a minute: %v", s.url, err)
		}
		time.Sleep(pollEvery)
	}
	return s
}

func (s *server) log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.out.String()
}

// waitListening returns the URL and certificate fingerprint of the
// "https listening" log line.
func (s *server) waitListening(t *testing.T) (string, string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		for _, line := range strings.Split(s.log(), "\n") {
			var rec struct{ Msg, Addr, Fingerprint string }
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "https listening" {
				return "https://" + rec.Addr, rec.Fingerprint
			}
		}
		select {
		case <-s.done:
			t.Fatalf("preboot serve exited:\n%s", s.log())
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatalf("preboot serve did not listen within a minute:\n%s", s.log())
	return "", ""
}

// stop ends the server by its PID: SIGTERM, then SIGKILL after 30 s.
func (s *server) stop(t *testing.T) {
	select {
	case <-s.done:
		return
	default:
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		t.Errorf("preboot serve (pid %d) did not stop within 30 s of SIGTERM: killed", s.cmd.Process.Pid)
		s.cmd.Process.Kill()
		<-s.done
	}
}

// run runs the preboot binary (not the server) and returns its stdout.
func (s *server) run(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = s.env
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("preboot %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String()
}

// noRedirect is a GET without a cookie that does not follow redirects.
func (s *server) noRedirect(t *testing.T, path string) *http.Response {
	t.Helper()
	resp, err := s.client.Get(s.url + path)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

// call sends a JSON request with a bearer token and decodes a 2xx answer
// into out (when not nil); anything else fails the test.
func (s *server) call(t *testing.T, token, method, path string, in, out any) {
	t.Helper()
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, s.url+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		t.Fatalf("%s %s: %s\n%s", method, path, resp.Status, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v\n%s", method, path, err, b)
		}
	}
}

// api calls the admin API with the test's token.
func (s *server) api(t *testing.T, method, path string, in, out any) {
	t.Helper()
	s.call(t, s.token, method, "/api/v1"+path, in, out)
}

// promptFallback is the hotkey prompt's "no key pressed" branch.
var promptFallback = regexp.MustCompile(`(?m)^prompt .* \|\| chain (\S+)$`)

// boot is a network boot as iPXE makes it: /boot.ipxe with the machine's
// MAC and SMBIOS strings; at the hotkey prompt nobody presses the key, so
// iPXE follows the prompt's fallback chain. It returns the last script.
func (s *server) boot(t *testing.T, machine url.Values) string {
	t.Helper()
	// iPXE's :uristring sends a space as %20 (a "+" stays a "+").
	u := s.url + "/boot.ipxe?" + strings.ReplaceAll(machine.Encode(), "+", "%20")
	for range 3 {
		resp, err := s.client.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %s\n%s", u, resp.Status, b)
		}
		m := promptFallback.FindStringSubmatch(string(b))
		if m == nil {
			return string(b)
		}
		u = m[1]
	}
	t.Fatalf("boot %s: more than 3 chained scripts", machine.Get("mac"))
	return ""
}

var (
	tokenArg = regexp.MustCompile(`preboot\.token=(pbj_[0-9a-f]+)`)
	jobArg   = regexp.MustCompile(`preboot\.job=([0-9]+)`)
)

// agentClient is the imaging agent of one job, with its job token.
type agentClient struct {
	s     *server
	job   int64
	token string
}

// agentFor reads the job and its token from the imaging environment's
// kernel command line in a boot script.
func (s *server) agentFor(t *testing.T, script string) *agentClient {
	t.Helper()
	tok, id := tokenArg.FindStringSubmatch(script), jobArg.FindStringSubmatch(script)
	if tok == nil || id == nil {
		t.Fatalf("the boot script starts no job:\n%s", script)
	}
	n, err := strconv.ParseInt(id[1], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return &agentClient{s: s, job: n, token: tok[1]}
}

func (a *agentClient) get(t *testing.T, path string, out any) {
	t.Helper()
	a.s.call(t, a.token, "GET", path, nil, out)
}

func (a *agentClient) post(t *testing.T, path string, in any) {
	t.Helper()
	a.s.call(t, a.token, "POST", path, in, nil)
}

// seed gives the console something to show besides the scenario's machine:
// bundles, a group, rules, a menu, and three machines that booted: a Dell
// that a rule sent to an inventory (succeeded), a server whose wipe failed,
// a virtual machine nobody took charge of.
func (s *server) seed(t *testing.T) {
	t.Helper()
	s.api(t, "POST", "/bundles", map[string]any{"name": "inventory", "kind": "inventory", "description": "Report the hardware, then reboot", "params": map[string]any{}}, nil)
	s.api(t, "POST", "/bundles", map[string]any{"name": "wipe-disks", "kind": "wipe", "description": "Zero every fixed disk before the machine leaves",
		"params": map[string]any{"mode": "zero", "confirm": true, "after": "poweroff"}}, nil)
	s.api(t, "POST", "/bundles", map[string]any{"name": "capture-lab", "kind": "image-capture", "description": "Capture the reference machine",
		"params": map[string]any{"image": "lab-base", "compression": 6}}, nil)
	s.api(t, "POST", "/groups", map[string]any{"name": "lab-a", "description": "Classroom A", "priority": 10}, nil)
	s.api(t, "POST", "/rules", map[string]any{"name": "dell-inventory", "match": `maker ^= Dell`, "bundle": "inventory", "group": "lab-a"}, nil)
	s.api(t, "POST", "/rules", map[string]any{"name": "lab-subnet", "match": "ip in 10.20.0.0/16 and firmware = efi", "bundle": "inventory", "group": "lab-a"}, nil)
	s.api(t, "POST", "/rules", map[string]any{"name": "one-off", "match": `serial = "CZC1234XYZ"`, "bundle": "wipe-disks", "enabled": false}, nil)
	s.api(t, "PUT", "/menu", map[string]any{"mode": "hotkey", "hotkey": "ctrl-p", "timeout": "5s", "title": "Preboot", "bundles": []string{"inventory"}, "shell": true}, nil)

	// The Dell: the rule registers it and runs the inventory.
	dell := url.Values{"mac": {"3c-ec-ef-41-00-07"}, "manufacturer": {"Dell Inc."}, "product": {"OptiPlex 7090"},
		"serial": {"7XK2QL3"}, "arch": {"x86_64"}, "platform": {"efi"}}
	a := s.agentFor(t, s.boot(t, dell))
	a.get(t, "/api/v1/agent/job", nil)
	a.post(t, "/api/v1/agent/info", agent.Info{Hostname: "pc-7xk2ql3", Hardware: agent.Hardware{Vendor: "Dell Inc.", Product: "OptiPlex 7090",
		Serial: "7XK2QL3", Firmware: "uefi", CPUs: 8, MemoryBytes: 16 << 30}})
	a.post(t, "/api/v1/agent/job/result", jobs.Result{OK: true})

	// The server: a wipe assigned by hand, which fails.
	const srv = "0c:c4:7a:10:20:31"
	s.api(t, "POST", "/devices", map[string]any{"mac": srv, "name": "rack2-node07"}, nil)
	s.api(t, "POST", "/assignments", map[string]any{"bundle": "wipe-disks", "device": srv, "once": true}, nil)
	a = s.agentFor(t, s.boot(t, url.Values{"mac": {srv}, "manufacturer": {"Supermicro"}, "product": {"SYS-5019C-MR"},
		"serial": {"S3141592"}, "arch": {"x86_64"}, "platform": {"efi"}}))
	a.get(t, "/api/v1/agent/job", nil)
	a.post(t, "/api/v1/agent/job/progress", jobs.Progress{State: "running", Phase: "wipe /dev/sda", BytesDone: 61 << 30, BytesTotal: 480 << 30, Rate: 410 << 20})
	a.post(t, "/api/v1/agent/job/result", jobs.Result{OK: false, Error: "wipe /dev/sda: write at 65498251264: input/output error"})
	s.api(t, "PUT", "/groups/lab-a/members/"+srv, nil, nil)

	// A virtual machine: no rule matches it, it boots its disk.
	if script := s.boot(t, url.Values{"mac": {"00:50:56:9a:3b:10"}, "manufacturer": {"VMware, Inc."}, "product": {"VMware7,1"},
		"serial": {"VMware-42 1a 6c 3e"}, "arch": {"x86_64"}, "platform": {"efi"}}); strings.Contains(script, "preboot.token=") {
		t.Fatalf("the virtual machine got a job:\n%s", script)
	}
}

// ---- the browser -------------------------------------------------------

// browser is a headless Chromium the test started, and stops.
type browser struct {
	t    *testing.T
	base string // the server's URL
	// Its processes: the browser and its crash handlers carry marker in
	// their environment; the zygote and the processes it forks (which get
	// a clean environment) carry --user-data-dir=profile.
	marker  string
	profile string
	first   *tab

	mu     sync.Mutex
	thrown []string
	wg     sync.WaitGroup
}

// startBrowser starts Chromium, for the server at base, (headless, no sandbox: the tests run as
// root; a 1366x768 window, a laptop's screen) with its first tab. The
// cleanup closes it and checks that none of its processes is left.
func startBrowser(t *testing.T, exe, base, spki string) *browser {
	t.Helper()
	mark := make([]byte, 8)
	if _, err := rand.Read(mark); err != nil {
		t.Fatal(err)
	}
	b := &browser{t: t, base: base, marker: "PREBOOT_BROWSER_TEST=" + hex.EncodeToString(mark), profile: t.TempDir()}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.UserDataDir(b.profile),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.WindowSize(1366, 768),
		chromedp.Flag("lang", "en-US"),
		chromedp.Flag("ignore-certificate-errors-spki-list", spki), // the server's self-signed certificate, pinned
		chromedp.Env(b.marker))
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)

	err := start(ctx)
	browserPID := 0
	if c := chromedp.FromContext(ctx); c != nil && c.Browser != nil && c.Browser.Process() != nil {
		browserPID = c.Browser.Process().Pid
	}
	t.Cleanup(func() {
		// Close the browser (gracefully, then the allocator kills and
		// reaps what is left), then look for any process of it. The
		// close is bounded: chromedp's cancel waits for good on a
		// browser that never started.
		closed := make(chan struct{})
		go func() {
			defer close(closed)
			if err := chromedp.Cancel(ctx); err != nil && !errors.Is(err, context.Canceled) {
				t.Logf("close the browser: %v", err)
			}
			cancel()
			acancel()
			b.wg.Wait()
		}()
		select {
		case <-closed:
		case <-time.After(30 * time.Second):
			t.Errorf("the browser did not close within 30 s")
		}
		b.checkGone(t, browserPID)
	})
	if err != nil {
		t.Fatalf("start %s: %v", exe, err)
	}
	b.first = b.attach(ctx, cancel, t, "main")
	return b
}

// start runs the first action of a chromedp context: it starts the browser
// or opens the tab, and binds its life to ctx, which therefore must not be
// a timeout context. The wait is bounded here instead; on a timeout the
// caller cancels ctx.
func start(ctx context.Context) error {
	started := make(chan error, 1)
	go func() { started <- chromedp.Do(ctx) }()
	select {
	case err := <-started:
		return err
	case <-time.After(time.Minute):
		return errors.New("no answer within a minute")
	}
}

// checkGone fails the test if a process of the browser is still running;
// it kills those by PID.
func (b *browser) checkGone(t *testing.T, pid int) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		left := b.processes()
		if len(left) == 0 {
			t.Logf("the browser (pid %d) and its child processes are gone", pid)
			return
		}
		if time.Now().After(deadline) {
			for p, cmd := range left {
				syscall.Kill(p, syscall.SIGKILL)
				t.Errorf("a browser process was left running (killed now): pid %d: %s", p, cmd)
			}
			return
		}
		time.Sleep(pollEvery)
	}
}

// processes are the running processes of the browser (not the zombies,
// which exited and wait for their parent), with their command lines.
func (b *browser) processes() map[int]string {
	udd := []byte("--user-data-dir=" + b.profile)
	found := map[int]string{}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return found
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		env, _ := os.ReadFile("/proc/" + e.Name() + "/environ")
		cmd, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if !bytes.Contains(env, []byte(b.marker+"\x00")) && !hasArg(cmd, udd) {
			continue
		}
		if st, err := os.ReadFile("/proc/" + e.Name() + "/stat"); err == nil {
			if i := bytes.LastIndexByte(st, ')'); i > 0 && len(st) > i+2 && st[i+2] == 'Z' {
				continue // a zombie: exited, waiting for its parent
			}
		}
		found[pid] = strings.ReplaceAll(string(cmd), "\x00", " ")
	}
	return found
}

// hasArg reports whether a /proc/PID/cmdline holds arg: NUL-separated, or
// separated by spaces where a process rewrote its command line (Chromium's
// zygote and the processes it forks do).
func hasArg(cmdline, arg []byte) bool {
	for rest := cmdline; ; {
		i := bytes.Index(rest, arg)
		if i < 0 {
			return false
		}
		end := rest[i+len(arg):]
		if (i == 0 || rest[i-1] == 0 || rest[i-1] == ' ') && (len(end) == 0 || end[0] == 0 || end[0] == ' ') {
			return true
		}
		rest = end
	}
}

// exceptions are the uncaught JavaScript exceptions of every tab so far.
func (b *browser) exceptions() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.thrown...)
}

// newTab opens another tab in the same browser (sharing its cookies).
func (b *browser) newTab(t *testing.T, name string) *tab {
	t.Helper()
	ctx, cancel := chromedp.NewContext(b.first.ctx)
	if err := start(ctx); err != nil {
		cancel()
		t.Fatalf("open the %s tab: %v", name, err)
	}
	return b.attach(ctx, cancel, t, name)
}

// attach follows a tab's console: exceptions fail the test at its end,
// errors are logged.
func (b *browser) attach(ctx context.Context, cancel context.CancelFunc, t *testing.T, name string) *tab {
	msgs := chromedp.Console(ctx)
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for m, err := range msgs {
			if err != nil {
				return
			}
			where := ""
			if m.URL != "" {
				where = fmt.Sprintf(" (%s:%d:%d)", m.URL, m.Line+1, m.Column+1)
			}
			switch {
			case m.IsException():
				b.mu.Lock()
				b.thrown = append(b.thrown, name+" tab: "+m.Text+where)
				b.mu.Unlock()
			case m.Type == chromedp.ConsoleError || m.Type == chromedp.ConsoleWarning:
				b.t.Logf("%s tab console: %s%s", name, m, where)
			}
		}
	}()
	tb := &tab{b: b, t: t, name: name, ctx: ctx, cancel: cancel}
	// The page gets what a 1366x768 screen shows (the window's size
	// includes the browser's own bars).
	tb.do("set the viewport", chromedp.EmulateViewport(1366, 768))
	return tb
}

// tab is one browser tab; its methods fail the test (with the page's
// address, text and a screenshot) when the page does not do what they
// wait for.
type tab struct {
	b      *browser
	t      *testing.T
	name   string
	ctx    context.Context
	cancel context.CancelFunc
}

// close closes the tab.
func (tb *tab) close() {
	if err := chromedp.Cancel(tb.ctx); err != nil && !errors.Is(err, context.Canceled) {
		tb.t.Logf("close the %s tab: %v", tb.name, err)
	}
	tb.cancel()
}

// fatalf fails the test with what the tab shows.
func (tb *tab) fatalf(format string, args ...any) {
	tb.t.Helper()
	msg := fmt.Sprintf(format, args...)
	href, _ := eval[string](tb, `location.href`)
	text, _ := eval[string](tb, `(document.querySelector("main") || document.body).innerText`)
	if len(text) > 3000 {
		text = text[:3000] + "…"
	}
	shot := ""
	if png, err := tb.capture(); err == nil {
		dir, derr := os.MkdirTemp("", "preboot-browser-failure-")
		if derr == nil {
			shot = filepath.Join(dir, tb.name+".png")
			if os.WriteFile(shot, png, 0o644) != nil {
				shot = ""
			}
		}
	}
	tb.t.Fatalf("%s tab: %s\npage: %s\nscreenshot: %s\npage text:\n%s", tb.name, msg, href, shot, text)
}

// do runs browser actions with a deadline.
func (tb *tab) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, actionTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		tb.fatalf("%s: %v", what, err)
	}
}

func eval[T any](tb *tab, expr string) (T, error) {
	ctx, cancel := context.WithTimeout(tb.ctx, actionTimeout)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Evaluate[T](expr))
}

func (tb *tab) str(expr string) string {
	tb.t.Helper()
	v, err := eval[string](tb, expr)
	if err != nil {
		tb.fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

func (tb *tab) num(expr string) float64 {
	tb.t.Helper()
	v, err := eval[float64](tb, expr)
	if err != nil {
		tb.fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

func (tb *tab) truth(expr string) bool {
	tb.t.Helper()
	v, err := eval[bool](tb, expr)
	if err != nil {
		tb.fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// waitFor polls a JavaScript condition until it holds, at most
// waitTimeout. An evaluation that fails (a page being replaced) counts as
// "not yet".
func (tb *tab) waitFor(what, cond string) {
	tb.t.Helper()
	deadline := time.Now().Add(waitTimeout)
	var last error
	for {
		ok, err := eval[bool](tb, cond)
		if err == nil && ok {
			return
		}
		last = err
		if time.Now().After(deadline) {
			tb.fatalf("waited %s for %s: not so (condition: %s; last evaluation error: %v)", waitTimeout, what, cond, last)
		}
		time.Sleep(pollEvery)
	}
}

// navigate loads a page of the server (a path) and waits for its load.
func (tb *tab) navigate(path string) {
	tb.t.Helper()
	tb.do("open "+path, chromedp.Navigate(tb.b.base+path))
	tb.waitFor("the page "+path+" to load", `document.readyState === "complete"`)
}

// markPage marks the document: samePage fails if the tab loaded another
// one since (what the page showed came without a reload).
func (tb *tab) markPage() {
	tb.t.Helper()
	tb.do("mark the page", chromedp.Evaluate[chromedp.Void](`window.prebootTestMark = "unchanged"`))
}

func (tb *tab) samePage(what string) {
	tb.t.Helper()
	if !tb.truth(`window.prebootTestMark === "unchanged"`) {
		tb.fatalf("%s, but the page was reloaded", what)
	}
}

// typeIn types text into a field with the keyboard.
func (tb *tab) typeIn(sel, text string) {
	tb.t.Helper()
	tb.do("type into "+sel, chromedp.SendKeys(chromedp.CSS(sel), text))
}

// clear empties a text field, as select-all and delete do.
func (tb *tab) clear(sel string) {
	tb.t.Helper()
	js := fmt.Sprintf(`(() => { const e = document.querySelector(%s); if (!e) return false;
		e.focus(); e.select(); e.value = ""; e.dispatchEvent(new Event("input", {bubbles: true})); return true; })()`, jsString(sel))
	if !tb.truth(js) {
		tb.fatalf("no field %s to clear", sel)
	}
}

// click clicks an element with the mouse.
func (tb *tab) click(sel string) {
	tb.t.Helper()
	tb.do("click "+sel, chromedp.Click(chromedp.CSS(sel)))
}

// choose picks an option of a <select>, as a user's choice does (input
// and change events).
func (tb *tab) choose(sel, value string) {
	tb.t.Helper()
	js := fmt.Sprintf(`(() => { const s = document.querySelector(%s); if (!s || ![...s.options].some(o => o.value === %s)) return false;
		s.focus(); s.value = %s; s.dispatchEvent(new Event("input", {bubbles: true})); s.dispatchEvent(new Event("change", {bubbles: true})); return true; })()`,
		jsString(sel), jsString(value), jsString(value))
	if !tb.truth(js) {
		tb.fatalf("no option %q in %s", value, sel)
	}
}

func (tb *tab) scrollTop() {
	tb.t.Helper()
	tb.do("scroll to the top", chromedp.Evaluate[chromedp.Void](`window.scrollTo(0, 0)`))
}

// sessionCookie returns the value of the console's session cookie.
func (tb *tab) sessionCookie(serverURL string) string {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, actionTimeout)
	defer cancel()
	res, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{serverURL + "/console/"}})
	if err != nil {
		tb.fatalf("read the cookies: %v", err)
	}
	for _, c := range res.Cookies {
		if c.Name == "preboot_session" {
			if !c.HTTPOnly {
				tb.fatalf("the session cookie is not HttpOnly")
			}
			return c.Value
		}
	}
	return ""
}

func (tb *tab) capture() ([]byte, error) {
	ctx, cancel := context.WithTimeout(tb.ctx, actionTimeout)
	defer cancel()
	if tb.b.first != tb {
		// A screenshot is of the tab in front.
		if _, err := chromedp.CallBrowser(ctx, target.ActivateTarget, target.ActivateTargetParams{TargetID: chromedp.FromContext(tb.ctx).Target.TargetID}); err != nil {
			return nil, err
		}
	}
	return chromedp.Run(ctx, chromedp.CaptureScreenshot())
}

// shot saves a screenshot of the page (what a 1366x768 screen shows) as
// dir/name.png, once the page has settled: nothing says "Loading…" and
// the document stopped changing (bounded: after 5 s it is taken as is).
func (tb *tab) shot(dir, name string) {
	tb.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	prev := -1
	for time.Now().Before(deadline) {
		n, err := eval[int](tb, `document.body.innerText.includes("Loading…") ? -1 : document.body.innerHTML.length`)
		if err == nil && n >= 0 && n == prev {
			break
		}
		prev = n
		time.Sleep(300 * time.Millisecond)
	}
	png, err := tb.capture()
	if err != nil {
		tb.fatalf("screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		tb.t.Fatal(err)
	}
}

// jsString is s as a JavaScript string literal.
func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
